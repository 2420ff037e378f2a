"""Tokens an explanation names literally: "`==`", "the tokens `os` and `path`", "'rst'".

Real nodes of a small code model are often detectors of a few particular BPE pieces ("rst", "J",
"('"), which no fact of the embedding simulator describes: the facts name whole identifiers ("the
name firstname"), never a piece of one. An explanation that names the pieces it means in quotes or
backticks says exactly where the node fires, so a faithful simulator predicts those tokens
(docs/method.md, "Literal tokens"). Only quoted or backticked text counts, and a whole explanation
of the form "the token X" (what `prompts.parse_explanation` makes of a bare token reply): a word of
a sentence ("the names right after self") is a description, not a token.

    named_tokens("the tokens `os` and 'path'")  ->  {"os", "path"}
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


def named_tokens(explanation: str) -> frozenset[str]:
    """The token texts (stripped of surrounding spaces) `explanation` names literally."""
    text = explanation.strip()
    found = [m.group(1) for m in _BACKTICKED.finditer(text)]
    rest = _BACKTICKED.sub(" ", text)
    found += [m.group(2) for m in _QUOTED.finditer(rest)]
    whole = _THE_TOKEN.match(text)
    if whole and "`" not in text:
        found.append(whole.group(1).strip("'\""))
    return frozenset(n.strip() for n in found if n.strip() and len(n.strip()) <= MAX_NAME)


def literal_hits(tokens: Sequence[str], names: Collection[str]) -> list[bool]:
    """Whether each token, stripped of surrounding spaces, is one of `names`."""
    return [bool(names) and tok.strip() in names for tok in tokens]
