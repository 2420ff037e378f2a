"""Activation records: which text windows a node is explained and scored on (docs/method.md, "Activation records").

An activation record is one window of held-out text (the validation token split) with one
activation per token for one node. Three steps, each a plain function:

1. `capture_activations` runs the model once over fixed, non-overlapping windows and reads every
   requested node in that one pass (one hook per location, gathering the node indices there).
2. `sample_records` picks one node's windows: the top windows by maximum activation, uniformly
   random windows, and quantile windows spread over the range of window maxima.
3. `split_records` deals them into the explain / score / calibrate splits, interleaved so each
   split sees a similar spread of activations, with no window shared between splits.

    acts, starts = capture_activations(model, val_tokens, [("L1.mlp.neuron", 37), ...])
    table = token_table(tokenizer)  # decode every id once, reused for every node
    records = sample_records(acts[0], starts, val_tokens, table, seed=0)
    splits = split_records(records)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

from typing import TYPE_CHECKING

import numpy as np

from sparse_model.errors import UserError
from sparse_model.nodes import Node

if TYPE_CHECKING:  # torch and the model are imported where records are captured: the rest starts without them
    import torch

    from sparse_model.model import SparseGPT

SAMPLINGS = ("top", "random", "quantile")  # how a record's window was picked
# The splits a node's records are dealt into: shown to the explainer; used to calibrate and to pick
# the best of k candidates; used to score (the held-out score); kept for later analyses.
EXPLAIN, CALIBRATE, SCORE, HOLDOUT = "explain", "calibrate", "score", "holdout"
SPLITS = (EXPLAIN, SCORE, CALIBRATE, HOLDOUT)

DEFAULT_WINDOW = 64  # tokens per window, as in the paper
MAX_WINDOWS = 1024  # windows captured by default (64k tokens), spread over the whole split
N_TOP = 40  # -> 20 explain, 10 score, 10 calibrate
N_RANDOM = 20  # -> 10 score, 10 calibrate
N_QUANTILE_BINS = 5
N_PER_QUANTILE_BIN = 4


@dataclass
class ActivationRecord:
    """One text window and one node's activation at each of its tokens.

    sampling: "top" (rank 0 = the window with the largest maximum), "random" (rank = draw order) or
    "quantile" (rank = bin·per_bin + i, bin 0 the lowest maxima, i by window order). start: the window's offset in
    the token array it was cut from, so every record can be traced back to its text.
    """

    tokens: list[str]
    activations: list[float]
    sampling: str
    rank: int
    start: int
    label: str | None = None  # how the explainer is told what the window is (in-task records: its variant)

    @property
    def max_activation(self) -> float:
        return max(self.activations) if self.activations else 0.0

    def to_dict(self) -> dict:
        return asdict(self)


# ---- 1. capture ------------------------------------------------------------------------------


class _StopForward(Exception):
    """Raised by the capture hook at the last location needed, so later layers are not run."""


def window_starts(n_tokens: int, window: int, n_windows: int | None = None) -> np.ndarray:
    """Offsets of non-overlapping windows of `window` tokens in an array of `n_tokens`.

    All windows that fit are slots 0, window, 2·window, ...; `n_windows` of them (default: all,
    capped at MAX_WINDOWS) are taken evenly spaced over the slots, so a capped capture still
    covers the whole split rather than its first files. Deterministic.
    """
    slots = n_tokens // window
    n = min(slots, MAX_WINDOWS) if n_windows is None else n_windows
    if n > slots:
        raise UserError(f"{n} windows of {window} tokens need {n * window} tokens but the split has {n_tokens}; "
                        f"pass fewer windows or a shorter window")
    picked = (np.arange(n, dtype=np.int64) * slots) // max(n, 1)  # strictly increasing since n <= slots
    return picked * window


def capture_activations(model: SparseGPT, tokens: np.ndarray, nodes: Sequence[tuple[str, int]],
                        window: int | None = None, n_windows: int | None = None,
                        batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Activations of many nodes over windows of held-out text, read in ONE pass over the text.

    tokens: the token ids to cut windows from (the validation split). nodes: (location, index)
    pairs, e.g. ("L1.mlp.neuron", 37). window: tokens per window, default 64 or the model's
    context if shorter. n_windows: default all non-overlapping windows that fit, capped at
    MAX_WINDOWS (see `window_starts`). Each window is a separate sequence, so a token's
    activation depends only on the tokens before it inside its window.

    Returns (acts, starts): acts float32 (n_nodes, n_windows, window), with acts[i] belonging to
    nodes[i]; starts int64 (n_windows,), each window's offset in `tokens`.
    """
    import torch

    with torch.no_grad():
        return _capture(model, tokens, nodes, window, n_windows, batch_size)


def _capture(model: SparseGPT, tokens: np.ndarray, nodes: Sequence[tuple[str, int]], window: int | None,
             n_windows: int | None, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from sparse_model.model import node_locations

    cfg = model.cfg
    window = min(DEFAULT_WINDOW, cfg.n_ctx) if window is None else window
    if not 1 <= window <= cfg.n_ctx:
        raise UserError(f"window of {window} tokens does not fit the model's context of {cfg.n_ctx}; "
                        f"pass a window between 1 and {cfg.n_ctx}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    tokens = np.asarray(tokens)
    starts = window_starts(len(tokens), window, n_windows)

    # Group the nodes by location: one hook per location gathers all its indices at once.
    locs = node_locations(cfg)
    by_loc: dict[str, tuple[list[int], list[int]]] = {}  # location -> (rows in output, unit indices)
    for row, (loc, idx) in enumerate(nodes):
        if loc not in locs:
            raise UserError(f"unknown node location {loc!r}; known: {', '.join(locs)}")
        if not 0 <= idx < locs[loc]:
            raise UserError(f"node {Node(loc, idx).name} is out of range: {loc} has {locs[loc]} units")
        rows, units = by_loc.setdefault(loc, ([], []))
        rows.append(row)
        units.append(int(idx))

    out = np.zeros((len(nodes), len(starts), window), dtype=np.float32)
    if not nodes or len(starts) == 0:
        return out, starts

    device = next(model.parameters()).device
    last_loc = [loc for loc in locs if loc in by_loc][-1]  # locs are in forward order
    unit_index = {loc: torch.tensor(units, device=device) for loc, (_, units) in by_loc.items()}
    current: dict[str, torch.Tensor] = {}

    def reader(loc: str):
        def fn(x: torch.Tensor) -> None:  # x: (B, T, units)
            current[loc] = x.index_select(-1, unit_index[loc])  # (B, T, n_nodes_here)
            if loc == last_loc:
                raise _StopForward
        return fn

    offsets = torch.arange(window)
    was_training = model.training
    model.eval()
    try:
        with model.hooked({loc: reader(loc) for loc in by_loc}):
            for b in range(0, len(starts), batch_size):
                s = torch.from_numpy(starts[b:b + batch_size])
                ids = torch.from_numpy(np.asarray(tokens[(s[:, None] + offsets).numpy()], dtype=np.int64)).to(device)
                current.clear()
                try:
                    model(ids)
                except _StopForward:
                    pass
                for loc, (rows, _) in by_loc.items():
                    # (B, T, k) -> (k, B, T)
                    out[rows, b:b + len(s)] = current[loc].permute(2, 0, 1).float().cpu().numpy()
    finally:
        model.train(was_training)
    return out, starts


# ---- 2. sample -------------------------------------------------------------------------------


def token_table(tokenizer: Any) -> list[str]:
    """Every token id's text, decoded once (`token_strings` per id); pass it to `sample_records`
    instead of the tokenizer when sampling many nodes."""
    from sparse_model.tokenizer import token_strings

    return token_strings(tokenizer, range(tokenizer.get_vocab_size()))


def _decoder(tokenizer: Any):
    if isinstance(tokenizer, (list, tuple)):
        return lambda ids: [tokenizer[int(i)] for i in ids]
    from sparse_model.tokenizer import token_strings

    return lambda ids: token_strings(tokenizer, ids)


def sample_records(acts_for_node: np.ndarray, window_starts: np.ndarray, token_array: np.ndarray,
                   tokenizer: Any, n_top: int = N_TOP, n_random: int = N_RANDOM,
                   n_quantile: int = N_QUANTILE_BINS * N_PER_QUANTILE_BIN,
                   n_quantile_bins: int = N_QUANTILE_BINS, seed: int = 0) -> dict[str, list[ActivationRecord]]:
    """One node's records, by sampling. No window is picked twice across samplings.

    acts_for_node: (n_windows, window), one row of `capture_activations`; window_starts: its
    starts; tokenizer: a `tokenizers.Tokenizer` or a `token_table`.

    - "top": the n_top windows with the largest maximum activation (ties: earlier window first).
    - "random": n_random windows drawn uniformly without replacement from the rest (seeded).
    - "quantile": the windows left over (neither top nor random) are ordered by their maximum
      and cut into n_quantile_bins bins of equal count (bins by rank, so the many all-zero windows
      of a sparse node cannot collapse the bins); n_quantile // n_quantile_bins windows are drawn
      from each bin (seeded), so every bin is represented equally; bin = rank // per_bin.
    Fewer top or random windows than asked are returned when the capture is too small, and no
    quantile windows when fewer are left over than the bins need.
    """
    acts = np.asarray(acts_for_node, dtype=np.float64)
    starts = np.asarray(window_starts, dtype=np.int64)
    if acts.ndim != 2 or acts.shape[0] != starts.size:
        raise ValueError(f"expected acts (n_windows, window) matching {starts.size} starts, got {acts.shape}")
    n, window = acts.shape
    decode = _decoder(tokenizer)
    rng = np.random.default_rng(seed)
    maxima = acts.max(axis=1) if window else np.zeros(n)
    by_max = np.argsort(-maxima, kind="stable")  # descending, ties by window order

    top = by_max[:n_top]
    used = np.zeros(n, dtype=bool)
    used[top] = True
    rest = np.flatnonzero(~used)
    random = rng.choice(rest, size=min(n_random, rest.size), replace=False) if rest.size else rest
    used[random] = True

    quantile: list[int] = []
    per_bin = n_quantile // n_quantile_bins if n_quantile_bins > 0 else 0
    free = by_max[::-1][~used[by_max[::-1]]]  # windows not yet picked, by ascending maximum
    if per_bin > 0 and free.size >= n_quantile_bins * per_bin:
        for bin_windows in np.array_split(free, n_quantile_bins):
            picked = np.sort(rng.choice(bin_windows, size=per_bin, replace=False))  # keep window order in a bin
            quantile.extend(int(w) for w in picked)

    def make(sampling: str, windows) -> list[ActivationRecord]:
        recs = []
        for rank, w in enumerate(windows):
            s = int(starts[w])
            recs.append(ActivationRecord(tokens=decode(token_array[s:s + window]),
                                         activations=[float(a) for a in acts[w]],
                                         sampling=sampling, rank=rank, start=s))
        return recs

    return {"top": make("top", top), "random": make("random", random), "quantile": make("quantile", quantile)}


# ---- 3. split --------------------------------------------------------------------------------

# The deal, repeated over consecutive blocks of ranks (docs/method.md, "Activation records").
TOP_PATTERN = ("explain", "score", "explain", "calibrate")
RANDOM_PATTERN = ("score", "calibrate")


def _deal(records: list[ActivationRecord], pattern: tuple[str, ...],
          rng: np.random.Generator | None) -> dict[str, list]:
    out: dict[str, list] = {s: [] for s in pattern}
    ordered = sorted(records, key=lambda r: r.rank)
    for block in range(0, len(ordered), len(pattern)):
        slots = list(pattern) if rng is None else list(rng.permutation(pattern))
        for rec, split in zip(ordered[block:block + len(pattern)], slots):
            out[str(split)].append(rec)
    return out


def split_records(records: dict[str, list[ActivationRecord]],
                  seed: int | None = None) -> dict[str, list[ActivationRecord]]:
    """Deal one node's records into the splits "explain", "score", "calibrate" and "holdout".

    Top records, by rank, in blocks of four: explain, score, explain, calibrate (ranks 0, 2, 4, 6,
    ... explain; 1, 5, 9, ... score; 3, 7, 11, ... calibrate), so the explainer sees half the top
    windows, including the very top one, and each split gets a similar spread of maxima.
    Random records, by rank, in blocks of two: score, calibrate. Random windows are never
    explained on (the paper explains on top windows only).
    "score" holds top and random 1:1 (the paper's top-and-random scoring): the surplus of
    whichever sampling is longer moves to "calibrate" (so with the defaults, 40 top + 20 random:
    explain 20 top; score 10 top + 10 random; calibrate 10 top + 10 random).
    "holdout" holds the quantile records, used by neither explanation nor score by default (for
    later analyses over the whole range of activations).

    With a seed, each block's slots are permuted at random (still two explain, one score, one
    calibrate per block of four top ranks), for repeated experiments on different splits.

    Guarantee: no window (compared by start) of "explain" is in any other split, and no window
    is in two of the held-out splits; a duplicate is dropped from the later split.
    Within a split, top records come before random ones, each by rank.
    """
    rng = None if seed is None else np.random.default_rng(seed)
    top = _deal(records.get("top", []), TOP_PATTERN, rng)
    rand = _deal(records.get("random", []), RANDOM_PATTERN, rng)

    n_pairs = min(len(top["score"]), len(rand["score"]))
    score = top["score"][:n_pairs] + rand["score"][:n_pairs]
    calibrate = top["calibrate"] + top["score"][n_pairs:] + rand["calibrate"] + rand["score"][n_pairs:]
    calibrate.sort(key=lambda r: (r.sampling != "top", r.rank))
    holdout = sorted(records.get("quantile", []), key=lambda r: r.rank)

    seen: set[int] = set()
    out: dict[str, list[ActivationRecord]] = {}
    for split, recs in (("explain", top["explain"]), ("score", score), ("calibrate", calibrate), ("holdout", holdout)):
        kept = []
        for rec in recs:
            if rec.start not in seen:
                seen.add(rec.start)
                kept.append(rec)
        out[split] = kept
    return out
