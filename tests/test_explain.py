"""Explain, simulate, score: the whole job with the real embedded LLM on a tiny trained model's
circuit, the prompt builders, the simulators' readings, and bad input."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
from click.testing import CliRunner

from explainer.explain import DEFAULT_PROMPT
from explainer.jobs.circuits import prune_job
from explainer.cli import main
from explainer.llm import CHAT, PREFILL, PROMPT_LOGPROBS, TOKEN_LOGPROBS, Backend, ChatResult, LLMClient, PromptLogprobsRequest
from explainer.llm.local import SMOLLM2, LocalBackend
from explainer.prompts import all_at_once_prompt, load_prompt, parse_explanation, records_text, show_token
from explainer.simulators import choose_simulator, expected_value, make_simulator
from explainer.store import Store
from sparse_model.errors import UserError
from sparse_model.prune import PruneSettings
from output import message_lines

# The job's plumbing on the fast SmolLM2 (it simulates too, not the default); the default explainer,
# Qwen2.5-Coder, is tested on a rule neuron in test_evaluation.py.
SMALL = ["--window", "12", "--explain-windows", "2", "--score-windows", "1", "--calibrate-windows", "1",
         "--explanations-per-node", "2", "--simulator", "all_at_once", "--model", "smollm2-135m"]


def _cli(db, *args):
    r = CliRunner().invoke(main, ["--db", str(db), *args])
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture(scope="module")
def explained(tmp_path_factory, tiny_run, embedded_llm):
    """A tiny model's random-label control circuit (always pruned), explained once by the embedded LLM."""
    db = tmp_path_factory.mktemp("explain") / "c.duckdb"
    with Store.open(db) as store:
        (row,) = prune_job(store, tiny_run, ["random_control"], PruneSettings(k_coef=5.5e-5), progress=False)
    assert row["n_nodes"] > 1
    code, out, err = _cli(db, "explain", str(tiny_run), "--task", "random_control", *SMALL)
    assert code == 0, err
    return db, row, out, err


def _q(db, sql, params=None):
    with Store.open(db, read_only=True) as s:
        return s.query(sql, params)[1]


# ---- the job, end to end -----------------------------------------------------------------------


def test_every_circuit_node_gets_records_explanations_and_scores(explained):
    db, row, _, err = explained
    n = row["n_nodes"]
    assert f"{n} nodes explained, 0 already done" in err
    circuit_nodes = {r[0] for r in _q(db, "SELECT node_id FROM circuit_nodes WHERE circuit_id = ?", [row["circuit_id"]])}
    # Records: stored once per node, 12-token windows, every kind present.
    recs = _q(db, "SELECT node_id, sampling, split, start, len(tokens), len(activations) FROM activation_records")
    assert {r[0] for r in recs} == circuit_nodes
    assert all(r[4] == r[5] == 12 for r in recs)
    assert {(r[1], r[2]) for r in recs} >= {("top", "explain"), ("top", "score"), ("random", "score"),
                                             ("top", "calibrate"), ("random", "calibrate"), ("quantile", "holdout")}
    # A window used to write an explanation is never used to score it.
    for nid in circuit_nodes:
        explain = {r[3] for r in recs if r[0] == nid and r[2] == "explain"}
        held_out = {r[3] for r in recs if r[0] == nid and r[2] in ("score", "calibrate")}
        assert explain and held_out and not explain & held_out
    # One selected LLM explanation and one token-lookup per node; a shuffled control (another node's
    # explanation) for every node that has a usable LLM explanation of its own to compare it with.
    kinds = _q(db, "SELECT kind, count(*), count(DISTINCT node_id) FROM explanations WHERE selected GROUP BY kind")
    usable = _q(db, "SELECT count(*) FROM explanations WHERE selected AND kind = 'llm' AND text IS NOT NULL")[0][0]
    assert usable >= 2, "too few usable explanations to test the shuffled control"
    assert sorted(kinds) == [("llm", n, n), ("shuffled", usable, usable), ("token_lookup", n, n)]
    # Best-of-2: both candidates stored, exactly one selected per node.
    assert _q(db, "SELECT count(*) FROM explanations WHERE kind = 'llm' AND writer = 'llm'")[0][0] == 2 * n
    # The other writers' candidates are in the same pool (one per writer with an LLM simulator).
    writers = {r[0] for r in _q(db, "SELECT DISTINCT writer FROM explanations WHERE kind = 'llm'")}
    assert {"llm", "token_list"} <= writers <= {"llm", "token_list", "lexer", "lexer+token_list"}


def test_llm_explanations_record_versions_and_are_scored_or_say_why_not(explained):
    db = explained[0]
    rows = _q(db, "SELECT explanation_id, text, failure, raw_text, explainer, explain_prompt, simulate_prompt, simulator "
                  "FROM explanations WHERE kind = 'llm' AND writer = 'llm'")
    for eid, text, failure, raw, explainer, ep, sp, sim in rows:
        assert explainer == "local:SmolLM2-135M-Instruct" and sim == "all_at_once"
        assert ep == load_prompt(DEFAULT_PROMPT).version and sp == load_prompt("simulate").version
        if text is None:  # an unusable reply is a recorded failure with the raw text kept
            assert failure and raw is not None
    # Selected explanations with text were simulated on both held-out splits with one value per token.
    sims = _q(db, "SELECT s.split, len(s.predicted), list_min(s.predicted), list_max(s.predicted), s.failure "
                  "FROM simulations s JOIN explanations e USING (explanation_id) "
                  "WHERE e.selected AND e.kind = 'llm' AND e.text IS NOT NULL")
    assert sims and {s[0] for s in sims} == {"calibrate", "score"}
    for split, length, lo, hi, failure in sims:
        assert failure is None and length == 12 and 0.0 <= lo <= hi <= 9.0
    # Scores: correlations in [-1, 1] or NULL (undefined), never NaN.
    for method, value in _q(db, "SELECT method, value FROM scores"):
        assert value is None or (not math.isnan(value) and (method not in ("correlation", "mean_window_correlation")
                                                             or -1.0 <= value <= 1.0))


def test_token_lookup_baseline_beats_nothing_and_shuffled_uses_another_nodes_explanation(explained):
    db = explained[0]
    lookup = _q(db, "SELECT count(*) FROM node_scores WHERE kind = 'token_lookup' AND score IS NOT NULL")[0][0]
    assert lookup > 0
    shuffled = _q(db, "SELECT s.node_id, s.source_node_id, s.text, l.text FROM explanations s "
                      "JOIN explanations l ON l.node_id = s.source_node_id AND l.kind = 'llm' AND l.selected "
                      "WHERE s.kind = 'shuffled'")
    assert shuffled and all(nid != src and text == src_text for nid, src, text, src_text in shuffled)


def test_rerun_skips_nodes_already_done_and_writes_nothing_new(explained, tiny_run):
    db, row, _, _ = explained
    before = [_q(db, f"SELECT count(*) FROM {t}")[0][0] for t in ("explanations", "simulations", "scores")]
    code, out, err = _cli(db, "explain", str(tiny_run), "--task", "random_control", *SMALL)
    assert code == 0, err
    assert f"0 nodes explained, {row['n_nodes']} already done" in err
    assert [_q(db, f"SELECT count(*) FROM {t}")[0][0] for t in ("explanations", "simulations", "scores")] == before


def test_node_scores_answers_the_first_question_in_one_line(explained):
    db = explained[0]
    code, out, err = _cli(db, "sql", "SELECT task, kind, avg(score) AS mean FROM node_scores GROUP BY ALL", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert {r["kind"] for r in rows} == {"llm", "token_lookup", "shuffled"}
    assert {r["task"] for r in rows} == {"random_control"}


# ---- prompts ---------------------------------------------------------------------------------------


def test_all_at_once_slots_sit_right_after_each_tokens_tab():
    p = load_prompt("simulate")
    tokens = ["    ", " return", " '", "\n", "a\tb"]
    text, slots = all_at_once_prompt(p, "the keyword return", tokens)
    assert len(slots) == len(tokens)
    for tok, slot in zip(tokens, slots):
        line_start = text.rindex("\n", 0, slot) + 1
        assert text[line_start:slot] == show_token(tok) + "\t" and text[slot:slot + 8] == "unknown\n"
    assert "the keyword return" in text[:slots[0]]


def test_explanation_records_are_normalised_to_0_10_and_sparse_ones_repeated_without_zeros():
    text = records_text([{"tokens": list("abcdefghij"), "activations": [0.0, 2.0] + [0.0] * 8},
                         {"tokens": ["x", "y"], "activations": [1.0, -3.0]}])
    assert "a\t0\nb\t10\nc\t0" in text and "x\t5\ny\t0" in text  # 2 of 12 values nonzero: sparse
    repeat = text.split("zeros left out")[1]
    assert "b\t10" in repeat and "x\t5" in repeat and "a\t0" not in repeat


def test_parse_explanation_strips_the_prefix_and_refuses_copies_and_junk():
    p = load_prompt("explain")
    assert parse_explanation(" the main thing this neuron does is find commas in calls.\nmore", p) == "commas in calls."
    assert parse_explanation("digits inside numbers", p) == "digits inside numbers"
    for bad in ("", "10", p["examples"][0]["explanation"].upper()):
        with pytest.raises(Exception) as e:
            parse_explanation(bad, p)
        assert type(e.value).__name__ == "LLMOutputError"


def test_prompt_version_changes_with_the_file(tmp_path):
    for name in ("explain", "simulate", "simulate_text"):
        (tmp_path / f"{name}.json").write_text(load_prompt(name).data and json.dumps(load_prompt(name).data))
    a = load_prompt("simulate", str(tmp_path)).version
    data = load_prompt("simulate").data | {"system": "changed"}
    (tmp_path / "simulate.json").write_text(json.dumps(data))
    load_prompt.cache_clear()
    assert load_prompt("simulate", str(tmp_path)).version != a


# ---- simulators -------------------------------------------------------------------------------------


def test_expected_value_renormalises_over_the_digits_present():
    # p(1) = 0.25, p(3) = 0.75 after renormalisation: 0.25·1 + 0.75·3 = 2.5
    lp = {"1": math.log(0.1), "3": math.log(0.3), " the": math.log(0.6)}
    assert expected_value(lp, 9) == pytest.approx(2.5)
    assert expected_value({"x": -1.0}, 9) is None
    assert expected_value({"12": -0.1, "2": -3.0}, 9) == pytest.approx(2.0)  # out of scale ignored


def test_choose_simulator_picks_what_the_endpoint_supports():
    assert choose_simulator(frozenset({CHAT, PROMPT_LOGPROBS})) == "all_at_once"
    assert choose_simulator(frozenset({CHAT, TOKEN_LOGPROBS})) == "chat_logprobs"
    assert choose_simulator(frozenset({CHAT})) == "text"
    with pytest.raises(UserError, match="cannot run the all_at_once"):
        choose_simulator(frozenset({CHAT}), "all_at_once")


class FakeChatBackendWithScriptedReplies(Backend):
    """A fake: returns fixed text, to test our parsing of misaligned simulator output (not an LLM)."""

    name, model, capabilities = "fake", "scripted", frozenset({CHAT})

    def __init__(self, reply: str):
        self.reply = reply

    async def chat(self, request):
        return ChatResult(text=self.reply)


@pytest.mark.parametrize("reply,ok", [
    ("1\t3\n2\t0\n3\t9\n", True),
    ("1\t3\n2\t0\n", False),  # a token missing
    ("1\t3\n3\t0\n2\t9\n", False),  # out of order
    ("Sure! Here you go: 3 0 9", False),
])
def test_text_simulator_records_misaligned_output_as_a_failure_with_the_raw_text(reply, ok):
    sim = make_simulator(LLMClient(FakeChatBackendWithScriptedReplies(reply)), "text")
    result = asyncio.run(sim.simulate("anything", ["a", "b", "c"]))
    if ok:
        assert result.predicted == [3.0, 0.0, 9.0] and result.failure is None
    else:
        assert result.predicted is None and "line up" in result.failure and result.raw_text == reply


def test_local_prompt_scoring_reuses_the_context_without_changing_results(embedded_llm):
    backend = LocalBackend(SMOLLM2)  # the reuse is the backend's; the smallest model keeps the test short
    p = load_prompt("simulate")
    tokens = [" x", " =", " '", "a", "'", "\n"]

    def score(explanation):
        text, slots = all_at_once_prompt(p, explanation, tokens)
        req = PromptLogprobsRequest(prompt=text, slots=tuple(slots), candidates=tuple("0123456789"))
        return asyncio.run(backend.prompt_logprobs(req)).logprobs

    first = score("quote characters")
    other = score("the keyword return")  # shares the few-shot prefix, differs from the explanation on
    again = score("quote characters")  # reuses what `other` left in the cache up to the explanation
    for a, b in zip(first, again):
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-3 for k in a)
    assert any(abs(a[k] - b[k]) > 1e-3 for a, b in zip(first, other) for k in a)  # the explanation is read


# ---- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("args,needle", [
    (["--node", "L9.mlp.neuron[0]"], "has no node"),
    (["--node", "nonsense"], "not a node name"),
    (["--task", "single_double_quote"], "no circuit for single_double_quote"),
    (["--concurrency", "0"], "--concurrency"),
    (["--explanations-per-node", "0"], "--explanations-per-node"),
    (["--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--node", "L0.mlp.neuron[0]"], "cannot reach"),
])
def test_explain_bad_input_is_one_line(tmp_path, tiny_run, args, needle, monkeypatch):
    models = tmp_path / "models"  # an empty model cache: a bad argument is refused before the 1 GB join
    monkeypatch.setenv("CIRCUITS_MODEL_CACHE", str(models))
    code, _, err = _cli(tmp_path / "c.duckdb", "explain", str(tiny_run), *args)
    assert code == 1 and needle in err and "Traceback" not in err
    assert len(message_lines(err)) == 1
    assert not models.exists() or not any(models.iterdir())


# ---- the openai backend against a real OpenAI-compatible server ---------------------------------------


def test_the_probe_finds_prompt_logprobs_on_a_real_server_so_auto_picks_all_at_once(llama_server):
    # The all-at-once job itself through this server (echoed prompt log-probabilities, slow here) runs in
    # bench/fault_matrix.py; the job below uses chat_logprobs.
    from explainer.llm.openai_compat import OpenAIBackend

    backend = OpenAIBackend(model="smollm2", base_url=llama_server)
    caps = asyncio.run(backend.probe())
    assert {CHAT, PROMPT_LOGPROBS} <= caps
    assert choose_simulator(caps) == "all_at_once"


@pytest.mark.parametrize("simulator", ["chat_logprobs"])
def test_openai_backend_explains_and_simulates_through_a_real_server(tmp_path, tiny_run, llama_server, simulator,
                                                                      small_prompts):
    db = tmp_path / "c.duckdb"
    prompts = small_prompts
    code, out, err = _cli(db, "explain", str(tiny_run), "--backend", "openai", "--base-url", llama_server,
                          "--model", "smollm2", "--node", "L0.mlp.neuron[1]", "--window", "6", "--explain-windows", "1",
                          "--score-windows", "1", "--calibrate-windows", "1", "--explanations-per-node", "1",
                          "--simulator", simulator, "--prompts", str(prompts), "--explain-prompt", "explain",
                          "--no-shuffled")
    assert code == 0, err
    expected = "all_at_once" if simulator == "auto" else "chat_logprobs"  # the server echoes prompt log-probs
    (row,) = _q(db, "SELECT explainer, simulator, text, failure, raw_text, explain_prompt FROM explanations "
                    "WHERE kind = 'llm' AND writer = 'llm'")
    assert row[0] == "openai:smollm2" and row[1] == expected
    assert row[5] == load_prompt("explain", str(prompts)).version
    # The reply came through the chat endpoint: an explanation, or SmolLM2's echo of the prompt
    # refused with its raw text kept.
    assert row[2] is not None or (row[3] and row[4]), row
    sims = _q(db, "SELECT len(s.predicted), s.failure, s.raw_text FROM simulations s JOIN explanations e "
                  "USING (explanation_id) WHERE e.kind = 'llm' AND e.selected")
    assert len(sims) == 4  # 1 top + 1 random window on each of the calibrate and score splits
    for length, failure, raw in sims:  # one value per token, or a recorded failure saying why
        assert length == 6 or failure
        if failure and simulator == "chat_logprobs":
            assert raw is not None  # the misaligned reply is kept for inspection
