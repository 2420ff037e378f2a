"""Detection and fuzzing, the scorers that judge an explanation on whole excerpts (issue 35; the
definitions follow EleutherAI's delphi): the pure parts, on plain lists, with no LLM.

- detection: is this excerpt one the node is active on? The test set is activating excerpts drawn
  across activation quantiles plus as many non-activating ones.
- fuzzing: are the marked tokens of this excerpt the ones the node fires on? Activating excerpts have
  their tokens at or above FUZZ_THRESHOLD x the node's largest activation marked; non-activating
  ones have as many random tokens marked as the activating excerpts have on average.

Either way each excerpt gets a yes/no answer (label: True for activating excerpts, and for
fuzzing excerpts whose marks are right). The score is balanced accuracy, (TPR + TNR) / 2; where the
endpoint gives log-probabilities, also the AUROC of P(yes) / (P(yes) + P(no)). An answer that is
neither yes nor no is a failure (None): left out of both metrics, never counted as a wrong 0.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Sequence

from .scoring import auroc

FUZZ_THRESHOLD = 0.3  # of the node's largest activation: the tokens a correct fuzzing excerpt marks
YES, NO = "1", "0"  # the answers the prompts ask for


@dataclass(frozen=True)
class Excerpt:
    """One excerpt to judge: its tokens, the marked token positions (fuzzing; empty for detection),
    and whether the right answer is yes."""

    tokens: tuple[str, ...]
    marked: tuple[int, ...]
    label: bool
    source: int  # index of the record it was cut from


def parse_answer(text: str) -> bool | None:
    """'1' / 'yes' -> True, '0' / 'no' -> False, anything else None (a failure, kept with its text)."""
    t = text.strip().strip(".").strip().lower()
    if t in (YES, "yes", "true"):
        return True
    if t in (NO, "no", "false"):
        return False
    return None


def parse_numbered(text: str, n: int) -> list[bool | None]:
    """Answers to n numbered excerpts from lines like "1: 1", "2. 0" or "3) yes"; None where excerpt
    i has no usable answer (missing, or neither yes nor no)."""
    out: list[bool | None] = [None] * n
    for line in text.splitlines():
        m = re.match(r"\s*(?:excerpt\s*)?(\d+)\s*[:.)\-]\s*(\S+)", line, re.IGNORECASE)
        if m and 1 <= int(m.group(1)) <= n and out[int(m.group(1)) - 1] is None:
            out[int(m.group(1)) - 1] = parse_answer(m.group(2))
    return out


def p_yes(top_logprobs: dict[str, float] | None) -> float | None:
    """P(yes) / (P(yes) + P(no)) from the answer token's top log-probabilities (tokens stripped of
    spaces; several spellings of one answer add up); None when neither answer is among them."""
    if not top_logprobs:
        return None
    yes = no = 0.0
    for token, lp in top_logprobs.items():
        answer = parse_answer(token)
        if answer is True:
            yes += math.exp(lp)
        elif answer is False:
            no += math.exp(lp)
    return yes / (yes + no) if yes + no > 0 else None


def balanced_accuracy(answers: Sequence[bool | None], labels: Sequence[bool]) -> float | None:
    """(TPR + TNR) / 2 over the answered excerpts; None when either class has no answered excerpt."""
    pos = [a for a, y in zip(answers, labels, strict=True) if y and a is not None]
    neg = [a for a, y in zip(answers, labels, strict=True) if not y and a is not None]
    if not pos or not neg:
        return None
    return (sum(pos) / len(pos) + sum(not a for a in neg) / len(neg)) / 2


def probability_auroc(probabilities: Sequence[float | None], labels: Sequence[bool]) -> float | None:
    """AUROC of P(yes) for the right-yes excerpts against the right-no ones (None where undefined)."""
    pos = [p for p, y in zip(probabilities, labels, strict=True) if y and p is not None]
    neg = [p for p, y in zip(probabilities, labels, strict=True) if not y and p is not None]
    return auroc(pos, neg)


def detection_set(activations: Sequence[Sequence[float]], n: int, seed: int = 0, quantiles: int = 10,
                  threshold: float = 0.0) -> list[int]:
    """Record indices for a detection test: `n` activating records (largest activation above
    `threshold`) drawn evenly across `quantiles` bins of their largest activation (highest bin
    first), then `n` non-activating ones at random. Fewer when the records run out. A rule neuron
    is silent at 0; a real node that is never exactly 0 takes FUZZ_THRESHOLD x its largest
    activation (`activity_threshold`)."""
    rng = random.Random(f"detection-{seed}")
    peaks = [max(a) if len(a) else 0.0 for a in activations]
    active = sorted((i for i, p in enumerate(peaks) if p > threshold), key=lambda i: -peaks[i])
    silent = [i for i, p in enumerate(peaks) if p <= threshold]
    bins = [active[len(active) * b // quantiles: len(active) * (b + 1) // quantiles] for b in range(quantiles)]
    chosen: list[int] = []
    while len(chosen) < n and any(bins):
        for b in bins:
            if b and len(chosen) < n:
                chosen.append(b.pop(rng.randrange(len(b))))
    return chosen + rng.sample(silent, min(n, len(silent)))


def activity_threshold(activations: Sequence[Sequence[float]]) -> float:
    """The level above which a real node counts as active: FUZZ_THRESHOLD x its largest activation."""
    return FUZZ_THRESHOLD * max((max(a) for a in activations if len(a)), default=0.0)


def excerpt(tokens: Sequence[str], activations: Sequence[float], size: int) -> tuple[list[str], list[float]]:
    """`size` tokens around the record's peak (its middle when it has no positive activation)."""
    acts = list(activations)
    peak = max(range(len(acts)), key=lambda i: acts[i]) if acts and max(acts) > 0 else len(acts) // 2
    lo = max(0, min(peak - size // 2, len(acts) - size))
    return list(tokens[lo:lo + size]), acts[lo:lo + size]


def excerpt_sets(records: Sequence[tuple[Sequence[str], Sequence[float]]], n: int, size: int = 32, seed: int = 0,
              threshold: float = 0.0) -> tuple[list[Excerpt], list[Excerpt]]:
    """(detection, fuzzing) excerpts of `size` tokens from (tokens, activations) records: `n`
    activating across deciles and `n` silent ones (see `detection_set`), the same records for both."""
    cut = [excerpt(t, a, size) for t, a in records]
    acts = [a for _, a in cut]
    chosen = detection_set(acts, n, seed, threshold=threshold)
    active = [i for i in chosen if max(acts[i], default=0.0) > threshold]
    silent = [i for i in chosen if i not in set(active)]
    detection = [Excerpt(tuple(cut[i][0]), (), i in set(active), i) for i in chosen]
    return detection, fuzzing_set([t for t, _ in cut], acts, active, silent, seed)


def fuzz_marks(activations: Sequence[float], largest: float) -> tuple[int, ...]:
    """Positions a correct fuzzing excerpt marks: activation >= FUZZ_THRESHOLD x `largest`."""
    if largest <= 0:
        return ()
    return tuple(i for i, a in enumerate(activations) if a >= FUZZ_THRESHOLD * largest)


def fuzzing_set(tokens: Sequence[Sequence[str]], activations: Sequence[Sequence[float]], active: Sequence[int],
                silent: Sequence[int], seed: int = 0) -> list[Excerpt]:
    """Fuzzing excerpts: each `active` record with its correct marks (label True), each `silent`
    record with as many random marks as the active ones have on average (label False)."""
    rng = random.Random(f"fuzzing-{seed}")
    largest = max((max(activations[i]) for i in active if len(activations[i])), default=0.0)
    out = [Excerpt(tuple(tokens[i]), fuzz_marks(activations[i], largest), True, i) for i in active]
    mean_marks = round(sum(len(e.marked) for e in out) / len(out)) if out else 1
    for i in silent:
        k = max(1, min(mean_marks, len(tokens[i])))
        out.append(Excerpt(tuple(tokens[i]), tuple(sorted(rng.sample(range(len(tokens[i])), k))), False, i))
    return out


def marked_excerpt(excerpt: Excerpt, open_mark: str = "<<", close_mark: str = ">>") -> str:
    """The excerpt's text with its marked tokens wrapped (runs of marked tokens share one mark)."""
    parts: list[str] = []
    marked = set(excerpt.marked)
    for i, tok in enumerate(excerpt.tokens):
        starts = i in marked and (i - 1) not in marked
        ends = i in marked and (i + 1) not in marked
        parts.append((open_mark if starts else "") + tok + (close_mark if ends else ""))
    return "".join(parts)
