"""In-task records: a node's activations on its task's own contrast pairs (docs/method.md, "Node roles").

Every prefix of every pair of the task is one record: the prefix's tokens and the node's activation
at each of them, labelled with its variant and the answer that follows it. Pairs, never single
prefixes, are dealt into the explain, calibrate and score splits (seeded), so an explanation is
judged on pairs it was not written from and both variants of a pair stay together.

    records = task_records(prefixes, activations, pairs=[0, 0, 1, 1, ...], variants=[0, 1, 0, 1, ...],
                           labels=["variant A: next token ')'", ...])
    windows = task_windows(records, split_of=deal_pairs(n_pairs, seed=0), explain_pairs=5)

Plain lists and arrays in, `pipeline.Windows` out: the same explain, simulate and score functions as
for text windows apply unchanged.
"""

from __future__ import annotations

import random
from typing import Sequence

import numpy as np

from .pipeline import Windows
from .records import CALIBRATE, EXPLAIN, SCORE, ActivationRecord

TASK_SAMPLING = "task"  # the `sampling` of an in-task record in simulations rows
SHARES = ((EXPLAIN, 0.4), (CALIBRATE, 0.2), (SCORE, 0.4))  # of the pairs


def deal_pairs(n_pairs: int, seed: int = 0) -> dict[int, str]:
    """Pair index -> split, a seeded shuffle cut in the SHARES proportions (each split gets at least
    one pair when there are three or more)."""
    order = list(range(n_pairs))
    random.Random(f"task-pairs-{seed}").shuffle(order)
    out: dict[int, str] = {}
    start = 0
    for j, (split, share) in enumerate(SHARES):
        size = n_pairs - start if j == len(SHARES) - 1 else max(1 if n_pairs >= len(SHARES) else 0,
                                                                  round(share * n_pairs))
        for p in order[start:start + size]:
            out[p] = split
        start += size
    return out


def task_records(tokens: Sequence[Sequence[str]], activations: Sequence[Sequence[float] | np.ndarray],
                 pairs: Sequence[int], variants: Sequence[int], labels: Sequence[str]) -> list[ActivationRecord]:
    """One record per prefix; rank = 2 * pair + variant, so a record names its prefix."""
    out = []
    for toks, acts, p, v, label in zip(tokens, activations, pairs, variants, labels, strict=True):
        acts = [float(a) for a in np.asarray(acts, dtype=float).reshape(-1)]
        if len(acts) != len(toks):
            raise ValueError(f"pair {p} variant {v}: {len(toks)} tokens but {len(acts)} activations")
        out.append(ActivationRecord(list(toks), acts, TASK_SAMPLING, 2 * p + v, 2 * p + v, label=label))
    return out


def task_windows(records: Sequence[ActivationRecord], split_of: dict[int, str], explain_pairs: int = 5) -> Windows:
    """The explainer sees both prefixes of the `explain_pairs` explain-split pairs where the node is
    most active (largest activation over the pair), pair by pair; calibrate and score hold every
    prefix of their pairs, in rank order."""
    by_split: dict[str, list[ActivationRecord]] = {EXPLAIN: [], CALIBRATE: [], SCORE: []}
    for r in sorted(records, key=lambda r: r.rank):
        by_split[split_of[r.rank // 2]].append(r)
    pairs: dict[int, list[ActivationRecord]] = {}
    for r in by_split[EXPLAIN]:
        pairs.setdefault(r.rank // 2, []).append(r)
    top = sorted(pairs.values(), key=lambda rs: (-max(x.max_activation for x in rs), rs[0].rank))[:explain_pairs]
    return Windows(explain=[r for rs in top for r in rs], calibrate=by_split[CALIBRATE], score=by_split[SCORE])


def variant_label(variant: int, answer: str) -> str:
    """How an excerpt is introduced to the explainer: its variant and the answer that follows it."""
    return f"variant {'AB'[variant]}, the next token is {answer!r}"
