"""Candidate explanations written without an LLM, from the same explain windows the LLM reads
(docs/method.md, "Writers"). Best-of-k pools them with the LLM's candidates and keeps the one with
the best calibrate score, so a node about a handful of tokens gets a faithful explanation even
when the LLM does not find it, and a node about a position or a meaning can still be won by the LLM.

Writers (the `writer` column of `explanations`):

- `llm`: the explainer LLM (`explain.Explainer`).
- `token_list`: the tokens that best account for the explain windows' activations (`top_tokens`),
  named in backticks so the simulator reads them literally: "the tokens `'`, `\"` and `('`". One
  candidate per list length (LIST_LENGTHS), and the same lists "strongest first" (in order of mean
  activation, which the simulator reads as graded); the calibrate split picks, as it picks any
  candidate.
- `lexer`: the lexer descriptions (`prompts.fact_counts`, the facts the embedding simulator reads)
  that fit the marked tokens best: "the token right after the keyword return".
- `lexer+token_list`: the best description and the top tokens in one phrase: "text inside a
  string literal, mostly `rst` and `J`".

Every text stays a phrase a person reads at a glance: no numbers, at most MAX_NAMED tokens.

    cheap_candidates(windows.explain, threshold=5)  ->  [Candidate("the token `self`", writer="token_list"), ...]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .prompts import fact_counts
from .scoring import token_means
from .simulators.literal import MAX_NAME, STRONGEST_FIRST

LLM_WRITER, TOKEN_LIST, LEXER, LEXER_TOKENS = "llm", "token_list", "lexer", "lexer+token_list"
WRITERS = (LLM_WRITER, TOKEN_LIST, LEXER, LEXER_TOKENS)
WRITERS_VERSION = 2  # part of the explain job's settings: a change here never mixes with earlier rows
MAX_NAMED = 8  # tokens a phrase names at most
LIST_LENGTHS = (1, 2, 3, 4, 6, 8)  # token_list candidates, one per length
FEW_LENGTHS = (3,)  # the token list when each candidate costs an LLM simulation
LEXER_FACTS = 2  # lexer candidates: the best-fitting descriptions
COMBINED_TOKENS = (2, 4)  # lexer+token_list candidates: the best description with this many tokens


@dataclass
class Candidate:
    """One candidate explanation of a node. `text` None: an unusable LLM reply (`failure` says why,
    `raw_text` is what it said)."""

    text: str | None
    failure: str | None = None
    raw_text: str | None = None
    writer: str = LLM_WRITER


def nameable(token: str) -> bool:
    """Whether a token can be named in backticks and found again by the simulator (stripped of
    spaces, as `literal.literal_hits` compares): not whitespace, no backtick, short."""
    name = token.strip()
    return bool(name) and "`" not in name and "\n" not in name and len(name) <= MAX_NAME


def top_tokens(records: Sequence[Any], n: int = MAX_NAMED) -> list[str]:
    """The n token texts (stripped of spaces) that best account for the activations of `records`,
    in order of evidence: each token's mean activation above the mean of all tokens
    (`scoring.token_means`, as token lookup computes them), times the square root of how often it
    appears, so that a token seen once at a high value does not outrank one seen often at nearly
    as high a value (docs/method.md, "Writers"). Only nameable tokens whose mean is above the mean
    of all tokens; ties: the more frequent, then the text."""
    means, counts, overall = token_means(records, key=str.strip)
    if overall is None:
        return []
    above = [t for t in means if nameable(t) and means[t] > overall]
    return sorted(above, key=lambda t: (-(means[t] - overall) * counts[t] ** 0.5, -counts[t], t))[:n]


def strongest_first(records: Sequence[Any], tokens: Sequence[str]) -> list[str]:
    """`tokens` reordered by their mean activation over `records`, highest first."""
    means, _, _ = token_means(records, key=str.strip)
    return sorted(tokens, key=lambda t: -means.get(t, float("-inf")))


def named_list(tokens: Sequence[str]) -> str:
    """`a`, `b` and `c`."""
    quoted = [f"`{t}`" for t in tokens]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def token_list_text(tokens: Sequence[str], ordered: bool = False) -> str:
    """"the token `a`", "the tokens `a`, `b` and `c`", or with `ordered` "..., strongest first"."""
    text = f"the token{'s' if len(tokens) > 1 else ''} {named_list(tokens)}"
    return f"{text}, {STRONGEST_FIRST}" if ordered and len(tokens) > 1 else text


def cheap_candidates(records: Sequence[Any], threshold: int, few: bool = False) -> list[Candidate]:
    """The candidates of every writer but the LLM, from the explain windows `records` (tokens at or
    above `threshold` on the 0..10 scale are the marked ones the lexer descriptions must fit).
    few: one candidate per writer (FEW_LENGTHS), for a simulator that costs an LLM pass per window."""
    tokens = top_tokens(records)
    lengths = sorted({min(n, len(tokens)) for n in (FEW_LENGTHS if few else LIST_LENGTHS)} - {0})
    out = [Candidate(token_list_text(tokens[:n]), writer=TOKEN_LIST) for n in lengths]
    if not few:  # the same lists in order of mean activation, which the simulator reads as graded
        out += [Candidate(token_list_text(strongest_first(records, tokens[:n]), ordered=True), writer=TOKEN_LIST)
                for n in lengths if n > 1]
    facts = [f for f, _, _ in fact_counts(records, threshold)[:1 if few else LEXER_FACTS]] if tokens else []
    out += [Candidate(f, writer=LEXER) for f in facts]
    if facts:
        out += [Candidate(f"{facts[0]}, mostly {named_list(tokens[:n])}", writer=LEXER_TOKENS)
                for n in sorted({min(n, len(tokens)) for n in COMBINED_TOKENS[:1 if few else None]})]
    return out
