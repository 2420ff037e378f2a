"""Detection and fuzzing scorers end to end: a real detection score from the embedded model on one
rule neuron of the ground-truth suite, and our handling of a server's unusable answers (against
the FAKE fault server, which answers "OK" to these prompts: a test of our fault handling, not of an LLM)."""

from __future__ import annotations

import asyncio

from explainer.excerpt_scorers import NO_LOGPROBS, DetectionScorer, FuzzingScorer
from explainer.excerpt_scores import Excerpt, detection_set
from explainer.ground_truth import RULES
from explainer.llm import TOKEN_LOGPROBS, LLMClient, make_client
from explainer.llm.client import RetryPolicy
from explainer.llm.openai_compat import OpenAIBackend
from explainer.records import EXPLAIN
from explainer.suite import SuiteData, rule_records
from fault_server import MODEL, FaultServer

EXCERPTS = [Excerpt(("def", " f", "(", "x", "):", "\n", "    ", "return", " x"), (7,), True, 0),
            Excerpt(("import", " os", "\n"), (1,), False, 1)]


async def _no_wait(_seconds: float) -> None:
    return None


def _judge(client, scorer_cls, explanation, excerpts):
    async def go():
        try:
            await client.probe()
            scorer = scorer_cls(client)
            return await scorer.judge(explanation, excerpts), scorer.prompt.version
        finally:
            await client.close()
    return asyncio.run(go())


def test_a_real_detection_score_from_the_embedded_model_on_a_rule_neuron(tiny_run, embedded_llm):
    rule = RULES["return_keyword"]
    splits = rule_records(SuiteData.from_run(tiny_run), rule, 64, seed=0)
    records = [r for split, recs in splits.items() if split != EXPLAIN for r in recs]
    chosen = detection_set([r.activations for r in records], n=3, seed=0)
    excerpts = [Excerpt(tuple(records[i].tokens[:32]), (), max(records[i].activations[:32]) > 0, i) for i in chosen]
    assert any(e.label for e in excerpts) and not all(e.label for e in excerpts)
    result, version = _judge(make_client("local"), DetectionScorer, rule.explanation, excerpts)
    assert version.startswith("detect-")
    assert len(result.answers) == len(excerpts) and not result.failures
    assert result.balanced_accuracy is not None and 0.0 <= result.balanced_accuracy <= 1.0
    assert result.auroc is not None and result.note is None  # read from the embedded model's logits
    assert result.prompt_tokens > 50 * len(excerpts)  # counted by the model: the prompt and the excerpt


def test_an_answer_that_is_neither_yes_nor_no_is_a_failure_with_its_text_never_a_zero():
    with FaultServer() as server:
        server.add_rule("500", path="/chat/completions", contains="active on", times=1)  # retried, then answered
        client = LLMClient(OpenAIBackend(model=MODEL, base_url=server.base_url, api_key="sk-test", timeout=5.0),
                           retry=RetryPolicy(max_attempts=3), sleep=_no_wait)
        result, _ = _judge(client, FuzzingScorer, "the keyword return", EXCERPTS)
        assert TOKEN_LOGPROBS in client.capabilities
    assert result.answers == [None, None]
    assert result.balanced_accuracy is None and result.auroc is None  # undefined, not 0
    assert result.failures == ["not 1 or 0: 'OK'"] * 2


def test_an_endpoint_without_log_probabilities_gets_balanced_accuracy_and_says_why():
    with FaultServer() as server:
        server.add_rule("missing-logprobs", path="/chat/completions", when=lambda r: bool(r.body.get("logprobs")))
        client = LLMClient(OpenAIBackend(model=MODEL, base_url=server.base_url, api_key="sk-test", timeout=5.0),
                           retry=RetryPolicy(max_attempts=2), sleep=_no_wait)
        result, _ = _judge(client, DetectionScorer, "the keyword return", EXCERPTS)
        assert TOKEN_LOGPROBS not in client.capabilities
    assert result.note == NO_LOGPROBS and result.auroc is None
    assert not any(r.body.get("logprobs") for r in server.requests if "active on" in str(r.body))


def test_the_prompt_shows_the_excerpt_and_the_marks():
    client = make_client("openai", model="m", base_url="http://127.0.0.1:9/v1")
    fuzz = FuzzingScorer(client).request("the keyword return", EXCERPTS[0])
    user = fuzz.messages[-1][1]
    assert "def f(x):\n    <<return>> x" in user and "active on the keyword return" in user
    assert user.index("def f") < user.index("active on")  # the excerpt first: shared across explanations
    detect = DetectionScorer(client).request("the keyword return", EXCERPTS[0]).messages[-1][1]
    assert "<<" not in detect and "def f(x):\n    return x" in detect


def test_explain_with_detection_and_fuzzing_stores_both_beside_the_correlation(tmp_path, tiny_run, embedded_llm):
    from click.testing import CliRunner

    import duckdb
    from explainer.cli import main

    db = tmp_path / "c.duckdb"
    r = CliRunner().invoke(main, ["--db", str(db), "explain", str(tiny_run), "--node", "L0.mlp.neuron[0]",
                                  "--explanations-per-node", "1", "--score-windows", "2", "--no-shuffled",
                                  "--scorer", "simulation,detection,fuzzing"])
    assert r.exit_code == 0, r.stderr
    con = duckdb.connect(str(db), read_only=True)
    rows = con.execute("SELECT kind, score, detection, fuzzing, detection_auroc, fuzzing_auroc FROM node_scores "
                       "ORDER BY kind").fetchall()
    methods = con.execute("SELECT s.method, s.n_tokens FROM scores s JOIN explanations e USING (explanation_id) "
                          "WHERE e.selected AND e.kind = 'llm' AND s.split = 'score' AND s.method IN "
                          "('correlation', 'detection', 'detection_auroc', 'fuzzing', 'fuzzing_auroc') "
                          "ORDER BY 1").fetchall()
    con.close()
    (llm, lookup) = rows
    assert llm[0] == "llm" and lookup[0] == "token_lookup"
    assert [m for m, _ in methods] == ["correlation", "detection", "detection_auroc", "fuzzing", "fuzzing_auroc"]
    assert all(n > 0 for _, n in methods)
    for value in llm[2:]:  # balanced accuracy and AUROC, or undefined when a class had no excerpt: never made up
        assert value is None or 0.0 <= value <= 1.0
    assert lookup[2:] == (None, None, None, None)  # token lookup has no text for an LLM to judge
    r = CliRunner().invoke(main, ["--db", str(db), "explain", str(tiny_run), "--scorer", "simulation,telepathy"])
    assert r.exit_code == 1 and "unknown scorer 'telepathy'" in r.stderr


def test_several_excerpts_per_prompt_share_one_request_and_say_why_auroc_is_missing():
    with FaultServer() as server:
        client = LLMClient(OpenAIBackend(model=MODEL, base_url=server.base_url, api_key="sk-test", timeout=5.0),
                           retry=RetryPolicy(max_attempts=2), sleep=_no_wait)

        async def go():
            try:
                await client.probe()
                return await DetectionScorer(client, per_prompt=2).judge("the keyword return", EXCERPTS)
            finally:
                await client.close()
        result = asyncio.run(go())
        asked = [r for r in server.requests if "active on" in str(r.body)]
    assert len(asked) == 1 and "Excerpt 2:" in str(asked[0].body)
    assert result.answers == [None, None] and len(result.failures) == 2  # the fake's "OK" answers neither
    assert result.auroc is None and "several excerpts per prompt" in result.note
