"""Store rows of the method's results: one builder per table, shared by the explain job and the
ground-truth suite, so both write exactly the same shapes (see `store.schema` for the columns)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence

from ..pipeline import ScoredExplanation, Windows
from ..records import CALIBRATE, SCORE, ActivationRecord

Item = tuple[dict, list[dict], list[dict]]  # an explanations row, its simulations rows, its scores rows
SCORE_METHODS = ("correlation", "mean_window_correlation", "r_squared", "absolute_deviation_explained")


def settings_key(settings: dict[str, Any]) -> str:
    """A short hash of every setting that changes a result; reruns find finished work by it."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def row_id(*parts: Any) -> str:
    """A stable id made of the parts that make a row unique."""
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:20]


def record_rows(splits: dict[str, Sequence[ActivationRecord]], seed: int) -> list[dict]:
    """activation_records rows of one node's records, dealt into splits."""
    return [{"sampling": r.sampling, "rank": r.rank, "split": split, "start": r.start,
             "max_activation": r.max_activation, "tokens": r.tokens, "activations": r.activations,
             "sample_seed": seed} for split, recs in splits.items() for r in recs]


def records_by_split(rows: Sequence[dict]) -> dict[str, list[ActivationRecord]]:
    """Stored activation_records rows back as records, by split (store order kept)."""
    out: dict[str, list[ActivationRecord]] = {}
    for r in rows:
        out.setdefault(r["split"], []).append(
            ActivationRecord(list(r["tokens"]), list(r["activations"]), r["sampling"], r["rank"], r["start"]))
    return out


def _score_rows(scored: ScoredExplanation) -> list[dict]:
    out = []
    for split, s in scored.scores.items():
        methods = SCORE_METHODS if split == SCORE else ("correlation",)  # calibrate: best-of-k selection only
        out += [{"split": split, "method": m, "value": getattr(s, m), "n_tokens": s.n_tokens} for m in methods]
    return out


def explanation_item(row: dict, windows: Windows, scored: ScoredExplanation | None) -> Item:
    """An explanation as stored: `row` (the explanations columns the caller knows) completed with
    the calibration and failure of `scored`, with its simulations and scores rows. `scored` None:
    an explanation that was never simulated (an unusable LLM answer)."""
    if scored is None:
        return row, [], []
    row = dict(row, calibration_slope=scored.calibration[0] if scored.calibration else None,
               calibration_intercept=scored.calibration[1] if scored.calibration else None)
    if SCORE in scored.simulations:
        row["failure"] = scored.failure
    sims = [{"sampling": r.sampling, "rank": r.rank, "split": split, "predicted": s.predicted,
             "simulator": row.get("simulator"), "failure": s.failure, "raw_text": s.raw_text}
            for split in (CALIBRATE, SCORE) if split in scored.simulations
            for r, s in zip(windows.split(split), scored.simulations[split])]
    return row, sims, _score_rows(scored)


def value_item(row: dict, method: str, value: float | None, n_tokens: int = 0) -> Item:
    """An explanation row that carries one number (the suite's AUROC), scored on the score split."""
    return row, [], [{"split": SCORE, "method": method, "value": value, "n_tokens": n_tokens}]
