"""Tokens an explanation names literally: "`==`", "the tokens `os` and `path`", "'rst'".

Real nodes of a small code model are often detectors of a few particular BPE pieces ("rst", "J",
"('"), which no fact of the embedding simulator describes: the facts name whole identifiers ("the
name firstname"), never a piece of one. An explanation that names the pieces it means in quotes or
backticks says exactly where the node fires, so a faithful simulator predicts those tokens
(docs/method.md, "Literal tokens"). Only quoted or backticked text counts, and a whole explanation
of the form "the token X" (what `prompts.parse_explanation` makes of a bare token reply): a word of
a sentence ("the names right after self") is a description, not a token.

With `lists` (the embedding simulator's option, docs/method.md, "Tokens named without quotes"), a
plain list of examples also names tokens: "type names such as int, str and List", "loop counters
like i, j or k", "e.g. os, sys". The list starts after "such as", "like", "e.g.", "i.e.", "for
example", "for instance", "including" or "namely", its items are separated by commas, "and", "or"
or "/", and it ends at ";", ")", the end of a sentence, or the first item of several words (whose
first word still counts, unless it is an article: "such as the name of a class" names nothing).

A list said to be in order ("the tokens `a`, `b` and `c`, strongest first") is graded: the first
named token weighs 1, the last GRADED_LAST, linearly in between (`literal_weights`); a plain list
weighs 1 for every token it names.

    named_tokens("the tokens `os` and 'path'")  ->  {"os", "path"}
    named_tokens("names such as int, str and List", lists=True)  ->  {"int", "str", "List"}
    literal_weights("the tokens `a`, `b` and `c`, strongest first")  ->  {"a": 1.0, "b": 0.75, "c": 0.5}
    literal_hits(["import", " os", "."], {"os"})  ->  [False, True, False]
"""

from __future__ import annotations

import re
from typing import Collection, Sequence

MAX_NAME = 24  # characters: longer quoted text is a phrase, not a token
_BACKTICKED = re.compile(r"`([^`\n]+)`")
# Quotes that are not apostrophes: not preceded or followed by a letter or digit ("don't").
_QUOTED = re.compile(r"""(?<![A-Za-z0-9])(['"])([^'"\n]+?)\1(?![A-Za-z0-9])""")
_THE_TOKEN = re.compile(r"^the token (\S+?)\.?$", re.I)
_LIST_START = re.compile(r"(?<![A-Za-z])(?:such as|like|e\.g\.|eg\.|i\.e\.|for example|for instance|including|namely)"
                         r"[,:]?\s+", re.I)
_LIST_END = re.compile(r"[;)]|\.(?:\s|$)|:\s")
_LIST_SEPARATOR = re.compile(r"\s*(?:,|/|\s(?:and|or)\s)\s*")
_ARTICLES = frozenset("a an the any all some each every those these this that other their its one".split())


def listed_tokens(explanation: str) -> frozenset[str]:
    """The tokens named in plain lists of examples ("such as int, str and List"; module docstring)."""
    found: list[str] = []
    for start in _LIST_START.finditer(explanation):
        rest = explanation[start.end():]
        end = _LIST_END.search(rest)
        for item in _LIST_SEPARATOR.split(rest[:end.start()] if end else rest):
            words = item.strip().strip("`'\"").split()
            if not words or words[0].lower() in _ARTICLES:
                break
            found.append(words[0])
            if len(words) > 1:
                break
    return frozenset(n for n in found if len(n) <= MAX_NAME)


def named_tokens(explanation: str, lists: bool = False) -> frozenset[str]:
    """The token texts (stripped of surrounding spaces) `explanation` names literally; with
    `lists`, also those of its plain lists of examples (`listed_tokens`)."""
    text = explanation.strip()
    found = [m.group(1) for m in _BACKTICKED.finditer(text)]
    rest = _BACKTICKED.sub(" ", text)
    found += [m.group(2) for m in _QUOTED.finditer(rest)]
    whole = _THE_TOKEN.match(text)
    if whole and "`" not in text:
        found.append(whole.group(1).strip("'\""))
    named = frozenset(n.strip() for n in found if n.strip() and len(n.strip()) <= MAX_NAME)
    return named | listed_tokens(rest) if lists else named


GRADED_LAST = 0.5  # the weight of the last token of a list said to be in order of strength
STRONGEST_FIRST = "strongest first"
_ORDERED = re.compile(r"strongest first|in order of strength", re.I)


def literal_weights(explanation: str, lists: bool = False) -> dict[str, float]:
    """Each named token's weight: 1, or in a list said to be in order of strength, from 1 for the
    first backticked or quoted name down to GRADED_LAST for the last."""
    names = named_tokens(explanation, lists)
    if not _ORDERED.search(explanation):
        return {n: 1.0 for n in names}
    order = list(dict.fromkeys(n.strip() for n in _BACKTICKED.findall(explanation) if n.strip() in names))
    step = (1.0 - GRADED_LAST) / (len(order) - 1) if len(order) > 1 else 0.0
    out = {n: 1.0 for n in names}
    out.update({n: 1.0 - i * step for i, n in enumerate(order)})
    return out


def literal_hits(tokens: Sequence[str], names: Collection[str]) -> list[bool]:
    """Whether each token, stripped of surrounding spaces, is one of `names`."""
    return [bool(names) and tok.strip() in names for tok in tokens]
