"""Scoring functions against numbers worked out by hand (shown in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from explainer.records import ActivationRecord
from explainer.scoring import (
    absolute_deviation_explained,
    apply_calibration,
    auroc,
    correlation,
    fit_calibration,
    mean_window_correlation,
    normalize_activations,
    per_window_correlations,
    pooled_correlation,
    r_squared,
    score_summary,
    token_lookup_predictions,
)


def test_correlation_by_hand():
    # t - t̄ = [-1, 0, 1]; p̄ = 7/3, p - p̄ = [-4/3, -1/3, 5/3]
    # Σ = 4/3 + 5/3 = 3; Σdt² = 2; Σdp² = 42/9 -> r = 3 / sqrt(2 * 42/9)
    assert correlation([1, 2, 3], [1, 2, 4]) == pytest.approx(3 / math.sqrt(28 / 3))
    assert correlation([1, 2, 3], [1, 2, 4]) == pytest.approx(0.9819805060619657)
    assert correlation([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert correlation(np.array([0.0, 1.0, 0.0, 2.0]), np.array([0.0, 1.0, 0.0, 2.0])) == 1.0


def test_correlation_undefined_is_none_not_zero_or_nan():
    assert correlation([1, 2, 3], [5, 5, 5]) is None
    assert correlation([0, 0, 0], [1, 2, 3]) is None
    assert correlation([0.1, 0.1, 0.1], [1, 2, 3]) is None
    assert correlation([], []) is None
    assert correlation([1.0], [2.0]) is None
    with pytest.raises(ValueError):
        correlation([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        correlation([1, np.nan], [1, 2])


def test_pooled_correlation_differs_from_mean_of_windows():
    # Right shape inside each window, wrong level between windows.
    true = [np.array([0.0, 1.0]), np.array([5.0, 6.0])]
    pred = [np.array([0.0, 1.0]), np.array([0.0, 1.0])]
    assert per_window_correlations(true, pred) == [pytest.approx(1.0), pytest.approx(1.0)]
    assert mean_window_correlation(true, pred) == pytest.approx(1.0)
    # pooled: t - t̄ = [-3, -2, 2, 3], p - p̄ = [-.5, .5, -.5, .5]; Σ = 1.5 - 1 - 1 + 1.5 = 1;
    # Σdt² = 26, Σdp² = 1 -> r = 1 / sqrt(26)
    assert pooled_correlation(true, pred) == pytest.approx(1 / math.sqrt(26))
    assert pooled_correlation(true, pred) == pytest.approx(0.19611613513818404)


def test_window_correlations_skip_constant_windows_but_pooled_counts_them():
    true = [[0.0, 0.0, 0.0], [0.0, 2.0, 0.0]]
    pred = [[1.0, 1.0, 1.0], [0.0, 3.0, 1.0]]
    rs = per_window_correlations(true, pred)
    assert rs[0] is None
    # window 2: dt = [-2/3, 4/3, -2/3], dp = [-4/3, 5/3, -1/3]; Σ = 8/9 + 20/9 + 2/9 = 30/9;
    # Σdt² = 24/9, Σdp² = 42/9 -> r = 30 / sqrt(24 * 42)
    assert rs[1] == pytest.approx(30 / math.sqrt(24 * 42))
    assert mean_window_correlation(true, pred) == pytest.approx(30 / math.sqrt(24 * 42))
    pooled = np.corrcoef(np.concatenate(true), np.concatenate(pred))[0, 1]
    assert pooled_correlation(true, pred) == pytest.approx(pooled)
    assert pooled_correlation(true, pred) != pytest.approx(rs[1])


def test_undefined_pooled_and_mean():
    assert pooled_correlation([], []) is None
    assert pooled_correlation([[0, 0], [0, 0]], [[1, 2], [3, 4]]) is None
    assert mean_window_correlation([[0, 0], [1, 1]], [[1, 2], [3, 4]]) is None
    assert mean_window_correlation([], []) is None
    with pytest.raises(ValueError):
        pooled_correlation([[1, 2]], [[1, 2], [3, 4]])


def test_fit_calibration_by_hand():
    # true rises by 2 over pred 0..10 -> slope 0.2, intercept 1
    assert fit_calibration([0, 5, 10], [1, 2, 3]) == pytest.approx((0.2, 1.0))
    # p̄ = 1.5, dp = [-1.5, -.5, .5, 1.5]; t̄ = 2.75, dt = [-1.75, .25, -.75, 2.25]
    # slope = (2.625 - .125 - .375 + 3.375) / 5 = 1.1; intercept = 2.75 - 1.1 * 1.5 = 1.1
    assert fit_calibration([0, 1, 2, 3], [1, 3, 2, 5]) == pytest.approx((1.1, 1.1))
    assert fit_calibration([0, 1, 2, 3], [1, 3, 2, 5]) == pytest.approx(tuple(np.polyfit([0, 1, 2, 3], [1, 3, 2, 5], 1)))
    # windows are pooled
    assert fit_calibration([[0, 1], [2, 3]], [[1, 3], [2, 5]]) == pytest.approx((1.1, 1.1))


def test_fit_calibration_degenerate():
    assert fit_calibration([3, 3, 3], [1, 2, 6]) == (0.0, 3.0)
    assert fit_calibration([], []) is None


def test_apply_calibration():
    np.testing.assert_allclose(apply_calibration([0, 5, 10], 0.1, 1.0), [1.0, 1.5, 2.0])
    out = apply_calibration([np.array([0.0, 10.0]), np.array([5.0])], 2.0, -1.0)
    assert len(out) == 2
    np.testing.assert_allclose(out[0], [-1.0, 19.0])
    np.testing.assert_allclose(out[1], [9.0])


def test_r_squared_uses_mean_square_not_variance():
    # mean((y-ŷ)²) = 1/3, mean(y²) = 14/3 -> 1 - 1/14. (With the variance, 2/3, it would be 0.5.)
    assert r_squared([1, 2, 3], [1, 2, 2]) == pytest.approx(13 / 14)
    assert r_squared([1, 2, 3], [0, 0, 0]) == pytest.approx(0.0)
    assert r_squared([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert r_squared([0, 0, 0], [1, 2, 3]) is None
    assert r_squared([], []) is None


def test_absolute_deviation_explained():
    # mean|y-ŷ| = (0 + 1 + 2)/3 = 1, mean|y| = 2
    assert absolute_deviation_explained([1, -2, 3], [1, -1, 1]) == pytest.approx(0.5)
    assert absolute_deviation_explained([1, -2, 3], [0, 0, 0]) == pytest.approx(0.0)
    assert absolute_deviation_explained([0, 0], [1, 1]) is None
    assert absolute_deviation_explained([], []) is None


def test_normalize_activations():
    assert normalize_activations([-1.0, 0.0, 0.5, 0.99, 1.0, 2.0], 1.0) == [0, 0, 5, 9, 10, 10]
    assert normalize_activations([0.0, 0.7, 3.4, 6.8], 6.8) == [0, 1, 5, 10]
    assert normalize_activations(np.array([1.0, 2.0]), 0.0) == [0, 0]
    assert normalize_activations([1.0, 2.0], -3.0) == [0, 0]
    assert normalize_activations([], 1.0) == []
    # In floats 10·x/x < 10 and 10·(x/2)/x < 5 for this x; exact multiples must not drop a step.
    x = 0.42268722119765845
    assert math.floor(10 * x / x) == 9 and math.floor(10 * (x / 2) / x) == 4
    assert normalize_activations([x, x / 2, x * 0.29], x) == [10, 5, 2]
    assert all(isinstance(v, int) for v in normalize_activations([0.3, 0.6], 0.6))


def test_token_lookup_baseline():
    explain = [(["a", "b", "a"], [1.0, 0.0, 3.0]), (["c"], [2.0])]
    score = [(["a", "d", "b"], [0.0, 0.0, 0.0]), (["c"], [9.0])]
    # a: (1 + 3)/2 = 2, b: 0, c: 2; unseen d: global mean 6/4 = 1.5
    preds = token_lookup_predictions(explain, score)
    assert len(preds) == 2
    np.testing.assert_allclose(preds[0], [2.0, 1.5, 0.0])
    np.testing.assert_allclose(preds[1], [2.0])


def test_token_lookup_accepts_activation_records():
    explain = [ActivationRecord(["x", "y"], [4.0, 0.0], "top", 0, 0)]
    score = [ActivationRecord(["y", "x", "z"], [0.0, 1.0, 0.0], "random", 0, 64)]
    np.testing.assert_allclose(token_lookup_predictions(explain, score)[0], [0.0, 4.0, 2.0])
    assert token_lookup_predictions([], score) is None


def test_auroc():
    assert auroc([3, 4], [1, 2]) == 1.0
    assert auroc([1, 2], [3, 4]) == 0.0
    assert auroc([1, 1], [1, 1]) == 0.5
    # pairs (2,1)=1, (2,2)=.5, (3,1)=1, (3,2)=1 -> 3.5/4
    assert auroc([2, 3], [1, 2]) == pytest.approx(0.875)
    assert auroc([], [1]) is None
    assert auroc([1], []) is None


def test_auroc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, 30).astype(float), rng.integers(0, 5, 40).astype(float)
    pairwise = np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))
    assert auroc(pos, neg) == pytest.approx(pairwise)


def test_score_summary():
    true = [np.array([0.0, 1.0]), np.array([5.0, 6.0])]
    pred = [np.array([0.0, 1.0]), np.array([0.0, 1.0])]
    s = score_summary(true, pred)
    assert set(s) == {"pooled_correlation", "mean_window_correlation"}
    assert s["pooled_correlation"] == pytest.approx(1 / math.sqrt(26))
    assert s["mean_window_correlation"] == pytest.approx(1.0)

    s = score_summary(true, pred, calib=(2.0, 1.0))
    # calibrated ŷ = [1, 3, 1, 3]; y = [0, 1, 5, 6]
    # mean((y-ŷ)²) = (1 + 4 + 16 + 9)/4 = 7.5, mean(y²) = 62/4 = 15.5 -> 1 - 7.5/15.5
    assert s["r_squared"] == pytest.approx(1 - 7.5 / 15.5)
    # mean|y-ŷ| = (1 + 2 + 4 + 3)/4 = 2.5, mean|y| = 3 -> 1 - 2.5/3
    assert s["absolute_deviation_explained"] == pytest.approx(1 - 2.5 / 3)


def test_score_summary_undefined_values_are_none():
    s = score_summary([np.zeros(3)], [np.ones(3)], calib=(1.0, 0.0))
    assert s == {"pooled_correlation": None, "mean_window_correlation": None,
                 "r_squared": None, "absolute_deviation_explained": None}
