"""Is an explainer's reply an explanation? Two checks on the phrase a reply was parsed into
(docs/method.md, "Replies that are not explanations"), both derived from the prompt's own fixed
text, so a new prompt file brings its own checks:

- `echo`: the reply repeats the prompt instead of describing the code: a run of ECHO_WORDS words of
  the prompt's fixed text, two of them content words ("neuron is strongly active"), one of the prompt's own
  terms (a word that recurs across its fixed pieces: "marked", "neuron"), a count in the format the
  prompt prints ("(3 of 5", "(marked 3"), or a list of quoted tokens cut off mid-quote.
- `vague`: the reply names nothing specific: no token in quotes or backticks, no symbol, no
  identifier-like word, and every other word is either the prompt's own or a word that fits any
  code ("General format.", "A single character.").

    fixed = FixedText(["You see code in which tokens are <<marked>> ...", "What do the marked tokens share?"])
    echo_reason("marked 'o'", fixed)  ->  "the reply repeats the prompt's term 'marked'"
"""

from __future__ import annotations

import keyword
import re
from typing import Sequence

ECHO_WORDS = 3  # a run of this many words shared with the prompt's fixed text is an echo
# Function words: never a prompt's term, never specific.
STOPWORDS = frozenset("""a an the and or of in on at to for from by with as is are be been being was were it its
this that these those there here which who whom whose what where when how why all any each every some no not
one two than then so such very more most less only just also but if into onto over under about after before
than have has had do does did can could may might must will would should shall their they them he she his her
we our you your i me my""".split())
# Words that fit any token of any code: a phrase of only these (and the prompt's words) names
# nothing a reader can look for.
GENERIC = frozenset("""general generic format formatting single character characters thing things something
anything stuff various different same similar certain specific particular part parts piece pieces element
elements item items kind kinds type types sort common usual usually often many much few several code codes
python source text texts read reads reading written write writes line lines token tokens word words
symbol symbols value values content contents data program programs file files""".split())
_WORD = re.compile(r"[a-z0-9]+")
_COUNT = re.compile(r"\(\s*(?:marked\s*)?\d+(?:\s+of\b|\s*\)|\s*$)", re.I)
_QUOTE = re.compile(r"""(?<![A-Za-z0-9])['"]|['"](?![A-Za-z0-9])""")  # a quote that is not an apostrophe
_NAMED = re.compile(r"""`[^`]+`|(?<![A-Za-z0-9])(['"])[^'"\n]+?\1(?![A-Za-z0-9])""")
_IDENTIFIER_LIKE = re.compile(r"[A-Za-z]\w*_\w*|[a-z]+[A-Z]\w*|[A-Z]{2,}\w*|\w+\(\)|\w+\.\w+")


def _stem(word: str) -> str:
    """A crude stem, enough to tell "reads" from "read" and "marked" from "mark"."""
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class FixedText:
    """A prompt's fixed text, piece by piece (its system message, its instruction, the labels it
    prints around the data, the leads it strips): everything in it but the node's data.

    runs: every run of ECHO_WORDS consecutive words of a piece with at least two content words. terms: the prompt's own terms
    (stems), content words that recur in at least two of its pieces and do not describe code in
    general ("marked", "neuron"). vocabulary: every word (stem) of the fixed text."""

    def __init__(self, pieces: Sequence[str]):
        self.pieces = tuple(p for p in pieces if p.strip())
        runs, seen = set(), {}
        for piece in self.pieces:
            w = words(piece)
            grams = (tuple(w[i:i + ECHO_WORDS]) for i in range(len(w) - ECHO_WORDS + 1))
            runs.update(g for g in grams if sum(x not in STOPWORDS for x in g) >= 2)
            for stem in {_stem(x) for x in w if x not in STOPWORDS and not x.isdigit()}:
                seen[stem] = seen.get(stem, 0) + 1
        generic = {_stem(x) for x in GENERIC}
        self.runs = frozenset(runs)
        self.terms = frozenset(s for s, n in seen.items() if n >= 2 and s not in generic)
        self.vocabulary = frozenset(_stem(x) for piece in self.pieces for x in words(piece))


def echo_reason(reply: str, fixed: FixedText) -> str | None:
    """Why `reply` repeats the prompt rather than explaining (None if it does not)."""
    w = words(_NAMED.sub(" ", reply))  # a quoted token is the node's data, never the prompt's
    for i in range(len(w) - ECHO_WORDS + 1):
        if tuple(w[i:i + ECHO_WORDS]) in fixed.runs:
            return f"the reply repeats the prompt's words {' '.join(w[i:i + ECHO_WORDS])!r}"
    for word in w:
        if _stem(word) in fixed.terms:
            return f"the reply repeats the prompt's term {word!r}"
    if _COUNT.search(reply):
        return "the reply copies a count the prompt prints"
    outside = re.sub(r"`[^`]*`", " ", reply)  # quotes inside backticks are the token's own
    cut = len(_QUOTE.findall(outside)) % 2 or outside.count("`") % 2
    if cut and (_NAMED.search(outside) or outside.rstrip(" .").endswith(("'", '"', "`"))):
        return "the reply is a list of quoted tokens cut off mid-quote"
    return None


def vague_reason(reply: str, fixed: FixedText) -> str | None:
    """Why `reply` names nothing specific (None if it names something a reader can look for)."""
    if _NAMED.search(reply) or _IDENTIFIER_LIKE.search(reply):
        return None
    if any(not c.isalnum() and not c.isspace() and c not in ".,;:'\"-!?" for c in reply):
        return None  # a symbol: "=", "#", "(", "->"
    plain = [x for x in reply.replace(".", " ").replace(",", " ").split() if x]
    if any((x in keyword.kwlist or x in keyword.softkwlist) and x.lower() not in STOPWORDS for x in plain):
        return None  # a keyword, as written in code
    generic = {_stem(g) for g in GENERIC} | fixed.vocabulary
    specific = [x for x in words(reply) if x not in STOPWORDS and _stem(x) not in generic]
    if specific:
        return None
    return f"the reply names nothing specific: {reply!r}"
