"""Scoring explanations: pure functions over numpy arrays (docs/method.md, "Score").

Vocabulary. `true` are a node's real activations, `pred` the simulator's expected values on the
0..10 scale. A "record" argument is a list of 1-D arrays, one per text window (its tokens'
activations); a single array is also accepted wherever a pooled vector is meant.

Undefined results (a constant vector, no data, a zero denominator) are `None`, to be stored as
NULL: never 0 and never NaN. Non-finite inputs are a bug upstream and raise `ValueError`.

    from explainer.scoring import pooled_correlation, fit_calibration, score_summary
    score = pooled_correlation(true_windows, simulated_windows)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

ArrayLike = Any  # np.ndarray, or a list of numbers
Windows = Sequence[ArrayLike]  # one 1-D array per window


# ---- helpers ---------------------------------------------------------------------------------


def _vector(x: ArrayLike) -> np.ndarray:
    """A flat float64 copy of `x`; a list of per-window arrays is concatenated (pooled)."""
    if isinstance(x, (list, tuple)) and any(np.ndim(w) > 0 for w in x):
        parts = [np.asarray(w, dtype=np.float64).ravel() for w in x]
        v = np.concatenate(parts) if parts else np.empty(0)
    else:
        v = np.asarray(x, dtype=np.float64).ravel()
    if not np.all(np.isfinite(v)):
        raise ValueError("activations must be finite numbers (got NaN or infinity)")
    return v


def _pair(true: ArrayLike, pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t, p = _vector(true), _vector(pred)
    if t.shape != p.shape:
        raise ValueError(f"true and pred differ in length ({t.size} vs {p.size})")
    return t, p


def _windows(records_true: Windows, records_pred: Windows) -> list[tuple[np.ndarray, np.ndarray]]:
    if len(records_true) != len(records_pred):
        raise ValueError(f"{len(records_true)} true windows but {len(records_pred)} predicted ones")
    return [_pair(t, p) for t, p in zip(records_true, records_pred)]


# ---- correlation -----------------------------------------------------------------------------


def correlation(true: ArrayLike, pred: ArrayLike) -> float | None:
    """Pearson r = Σ(t-t̄)(p-p̄) / sqrt(Σ(t-t̄)² · Σ(p-p̄)²).

    None if either vector is constant (including a single value) or empty.
    """
    t, p = _pair(true, pred)
    if t.size < 2 or np.all(t == t[0]) or np.all(p == p[0]):
        return None
    dt, dp = t - t.mean(), p - p.mean()
    denom = math.sqrt(float(dt @ dt) * float(dp @ dp))
    if denom == 0.0:  # deviations too small to square (subnormal)
        return None
    return float(np.clip(float(dt @ dp) / denom, -1.0, 1.0))


def pooled_correlation(records_true: Windows, records_pred: Windows) -> float | None:
    """The explanation score: Pearson r over all tokens of all windows pooled together.

    This is `correlation(concat(records_true), concat(records_pred))`, NOT the mean of per-window
    correlations: a window where the node never fires still counts (its tokens should be
    predicted low), and windows are weighted by their number of tokens.
    """
    pairs = _windows(records_true, records_pred)
    if not pairs:
        return None
    return correlation(np.concatenate([t for t, _ in pairs]), np.concatenate([p for _, p in pairs]))


def per_window_correlations(records_true: Windows, records_pred: Windows) -> list[float | None]:
    """Pearson r of each window on its own (None for a window where either side is constant)."""
    return [correlation(t, p) for t, p in _windows(records_true, records_pred)]


def mean_window_correlation(records_true: Windows, records_pred: Windows) -> float | None:
    """Mean of the defined per-window correlations; None if no window has one."""
    rs = [r for r in per_window_correlations(records_true, records_pred) if r is not None]
    return float(np.mean(rs)) if rs else None


# ---- calibration and calibrated scores -------------------------------------------------------


def fit_calibration(pred: ArrayLike, true: ArrayLike) -> tuple[float, float] | None:
    """Least-squares line true ≈ slope·pred + intercept, mapping the simulator's 0..10 scale to
    activation units. Fit it on the calibration split, apply it to the score split.

    slope = Σ(p-p̄)(t-t̄) / Σ(p-p̄)², intercept = t̄ - slope·p̄.
    A constant `pred` carries no information: slope 0, intercept mean(true).
    None if there is no data at all.
    """
    p, t = _pair(pred, true)
    if p.size == 0:
        return None
    dp = p - p.mean()
    ss = float(dp @ dp)
    if np.all(p == p[0]) or ss == 0.0:
        return 0.0, float(t.mean())
    slope = float(dp @ (t - t.mean())) / ss
    return slope, float(t.mean() - slope * p.mean())


def apply_calibration(pred: ArrayLike | Windows, slope: float, intercept: float):
    """slope·pred + intercept; a list of per-window arrays gives a list of arrays back."""
    if isinstance(pred, (list, tuple)) and any(np.ndim(w) > 0 for w in pred):
        return [slope * np.asarray(w, dtype=np.float64) + intercept for w in pred]
    return slope * np.asarray(pred, dtype=np.float64) + intercept


def r_squared(true: ArrayLike, pred: ArrayLike) -> float | None:
    """1 - mean((y-ŷ)²) / mean(y²), as in the paper: the denominator is the mean SQUARE of the
    activations, not their variance, so predicting all zeros scores 0.

    Only meaningful after `apply_calibration` has put `pred` in activation units (on the raw
    0..10 scale the number is arbitrary). None if empty or mean(y²) == 0.
    """
    y, yhat = _pair(true, pred)
    if y.size == 0:
        return None
    denom = float(np.mean(y * y))
    if denom == 0.0:
        return None
    return float(1.0 - np.mean((y - yhat) ** 2) / denom)


def absolute_deviation_explained(true: ArrayLike, pred: ArrayLike) -> float | None:
    """1 - mean|y-ŷ| / mean|y|. Like `r_squared`, only meaningful after calibration.
    None if empty or mean|y| == 0."""
    y, yhat = _pair(true, pred)
    if y.size == 0:
        return None
    denom = float(np.mean(np.abs(y)))
    if denom == 0.0:
        return None
    return float(1.0 - np.mean(np.abs(y - yhat)) / denom)


# ---- the explanation prompt's scale ----------------------------------------------------------

_STEP_TOLERANCE = 1e-9


def normalize_activations(values: ArrayLike, max_value: float | None) -> list[int]:
    """The explanation prompt's integers: min(10, floor(10·relu(x)/max)) for each x.

    `max_value` is the maximum over all the windows shown in one prompt. Negative values show as
    0, values at (or above) the maximum as 10. All zeros if max_value is None or <= 0.
    Float division can land just under an exact step (10·(x/2)/x = 4.999...); a quotient within
    1e-9 below an integer is counted as that integer.
    """
    x = _vector(values)
    if max_value is None or not max_value > 0:
        return [0] * x.size
    scaled = np.floor(10.0 * np.maximum(x, 0.0) / max_value + _STEP_TOLERANCE)
    scaled[x >= max_value] = 10
    return [int(v) for v in np.minimum(scaled, 10)]


# ---- baselines -------------------------------------------------------------------------------


def _tokens_and_acts(record: Any) -> tuple[Sequence[str], Sequence[float]]:
    """(tokens, activations) of an ActivationRecord-like object or a (tokens, activations) pair."""
    if hasattr(record, "tokens") and hasattr(record, "activations"):
        return record.tokens, record.activations
    tokens, acts = record
    return tokens, acts


def token_lookup_predictions(explain_records: Sequence[Any], score_records: Sequence[Any]) -> list[np.ndarray] | None:
    """The token-lookup baseline (docs/method.md, "Score"): predict each token's activation as the mean
    activation of that same token string over all tokens of the explanation windows; a token
    never seen there gets the global mean over the explanation windows.

    Records are ActivationRecords or (tokens, activations) pairs. Returns one prediction array
    per score record (score them with `pooled_correlation`), or None if the explanation windows
    hold no tokens.
    """
    means, _, global_mean = token_means(explain_records)
    if global_mean is None:
        return None
    out = []
    for rec in score_records:
        tokens, _ = _tokens_and_acts(rec)
        out.append(np.array([means.get(t, global_mean) for t in tokens], dtype=np.float64))
    return out


def token_means(records: Sequence[Any], key: Callable[[str], str] | None = None
                ) -> tuple[dict[str, float], dict[str, int], float | None]:
    """Each token's mean activation over `records` (tokens grouped by `key(token)`, by their text
    when None), how often each appears, and the mean over all tokens (None when there are none).
    Token lookup predicts with these; the token-list writer names the tokens with the highest."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    total, n = 0.0, 0
    for rec in records:
        tokens, acts = _tokens_and_acts(rec)
        acts = _vector(acts)
        if len(tokens) != acts.size:
            raise ValueError(f"record has {len(tokens)} tokens but {acts.size} activations")
        for tok, a in zip(tokens, acts):
            k = key(tok) if key else tok
            sums[k] = sums.get(k, 0.0) + float(a)
            counts[k] = counts.get(k, 0) + 1
        total += float(acts.sum())
        n += acts.size
    return {k: sums[k] / counts[k] for k in sums}, counts, (total / n if n else None)


def mean_defined(values: Sequence[float | None]) -> float | None:
    """Mean of the defined values (None left out); None if none is defined."""
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


# ---- comparing explanations ------------------------------------------------------------------


def auroc(scores_pos: ArrayLike, scores_neg: ArrayLike) -> float | None:
    """P(a positive scores above a negative), ties counting 1/2 (the Mann-Whitney statistic over
    all positive-negative pairs). None if either side is empty."""
    pos, neg = np.sort(_vector(scores_pos)), np.sort(_vector(scores_neg))
    if pos.size == 0 or neg.size == 0:
        return None
    below = np.searchsorted(neg, pos, side="left")  # negatives strictly below each positive
    at_or_below = np.searchsorted(neg, pos, side="right")
    wins = below.sum() + 0.5 * (at_or_below - below).sum()
    return float(wins / (pos.size * neg.size))


# ---- everything at once ----------------------------------------------------------------------


@dataclass(frozen=True)
class SplitScore:
    """The scores of one explanation on one split of windows (None where undefined).

    correlation is the headline score; r_squared and absolute_deviation_explained exist only when
    the predictions were calibrated (see `score_summary`). n_tokens: the tokens scored."""

    correlation: float | None
    mean_window_correlation: float | None
    r_squared: float | None
    absolute_deviation_explained: float | None
    n_tokens: int


def score_windows(true_records: Windows, pred_records: Sequence[ArrayLike | None],
                  calib: tuple[float, float] | None = None) -> SplitScore:
    """`score_summary` over the windows that have a prediction (a failed simulation, None, is
    left out rather than counted as zeros)."""
    ok = [(np.asarray(t, dtype=np.float64), np.asarray(p, dtype=np.float64))
          for t, p in zip(true_records, pred_records) if p is not None]
    summary = score_summary([t for t, _ in ok], [p for _, p in ok], calib)
    return SplitScore(summary["pooled_correlation"], summary["mean_window_correlation"], summary.get("r_squared"),
                      summary.get("absolute_deviation_explained"), int(sum(t.size for t, _ in ok)))


def calibration_of(true_records: Windows, pred_records: Sequence[ArrayLike | None]) -> tuple[float, float] | None:
    """`fit_calibration` over the windows that have a prediction; None if none has."""
    ok = [(t, p) for t, p in zip(true_records, pred_records) if p is not None]
    if not ok:
        return None
    return fit_calibration(np.concatenate([np.asarray(p, dtype=np.float64) for _, p in ok]),
                           np.concatenate([np.asarray(t, dtype=np.float64) for t, _ in ok]))


def score_summary(true_records: Windows, pred_records: Windows,
                  calib: tuple[float, float] | None = None) -> dict[str, float | None]:
    """The scores of one explanation on one split of windows.

    Keys: `pooled_correlation` (the headline score), `mean_window_correlation`; with `calib`
    = (slope, intercept) from `fit_calibration` on the calibration split, also `r_squared` and
    `absolute_deviation_explained` of the calibrated predictions, pooled over all tokens.
    """
    out: dict[str, float | None] = {
        "pooled_correlation": pooled_correlation(true_records, pred_records),
        "mean_window_correlation": mean_window_correlation(true_records, pred_records),
    }
    if calib is not None:
        pairs = _windows(true_records, pred_records)
        y = np.concatenate([t for t, _ in pairs]) if pairs else np.empty(0)
        p = np.concatenate([p for _, p in pairs]) if pairs else np.empty(0)
        yhat = apply_calibration(p, *calib)
        out["r_squared"] = r_squared(y, yhat)
        out["absolute_deviation_explained"] = absolute_deviation_explained(y, yhat)
    return out
