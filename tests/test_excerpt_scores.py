"""Detection and fuzzing metrics and test sets on hand-made answers and records (delphi's
definitions: balanced accuracy (TPR + TNR) / 2; AUROC of P(yes) / (P(yes) + P(no)))."""

from __future__ import annotations

import math

import pytest

from explainer.excerpt_scores import (Excerpt, balanced_accuracy, detection_set, fuzz_marks, fuzzing_set,
                                      marked_excerpt, p_yes, parse_answer, probability_auroc)


def test_balanced_accuracy_is_the_mean_of_both_rates_and_leaves_failures_out():
    labels = [True, True, True, True, False, False]
    answers = [True, True, True, False, False, True]  # TPR 3/4, TNR 1/2
    assert balanced_accuracy(answers, labels) == pytest.approx((0.75 + 0.5) / 2)
    # a failed answer (None) is left out, never counted as a "no"
    assert balanced_accuracy([True, None, None, None, False, True], labels) == pytest.approx((1.0 + 0.5) / 2)
    # always "yes": chance, however unbalanced the classes
    assert balanced_accuracy([True] * 6, labels) == 0.5
    assert balanced_accuracy([None] * 4 + [False, False], labels) is None  # no answered positive


def test_answers_and_probabilities():
    assert [parse_answer(t) for t in ("1", " 0", "Yes.", "no", "maybe", "10", "")] == [
        True, False, True, False, None, None, None]
    assert p_yes({"1": math.log(0.6), "0": math.log(0.2), "x": math.log(0.2)}) == pytest.approx(0.75)
    assert p_yes({" 1": math.log(0.3), "yes": math.log(0.3), "0": math.log(0.4)}) == pytest.approx(0.6)
    assert p_yes({"a": 0.0}) is None and p_yes(None) is None
    labels = [True, True, False, False]
    assert probability_auroc([0.9, 0.6, 0.7, 0.1], labels) == pytest.approx(0.75)
    assert probability_auroc([0.9, None, None, None], labels) is None


def test_detection_draws_across_quantiles_and_as_many_silent_records():
    acts = [[float(i)] for i in range(1, 101)] + [[0.0]] * 50  # 100 active records with peaks 1..100
    chosen = detection_set(acts, n=10, seed=1)
    assert chosen == detection_set(acts, n=10, seed=1) and len(chosen) == 20
    active, silent = chosen[:10], chosen[10:]
    assert sorted(i // 10 for i in active) == list(range(10))  # one record from each decile
    assert all(i >= 100 for i in silent) and len(set(silent)) == 10


def test_fuzzing_marks_the_active_tokens_and_as_many_random_ones_on_silent_records():
    tokens = [["a", "b", "c", "d"], ["e", "f", "g", "h"], ["i", "j", "k", "l"], ["m", "n", "o", "p"]]
    acts = [[0, 10, 3, 0], [0, 0, 2.9, 5], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert fuzz_marks(acts[0], 10) == (1, 2) and fuzz_marks(acts[1], 10) == (3,)  # >= 0.3 x 10
    ex = fuzzing_set(tokens, acts, active=[0, 1], silent=[2, 3], seed=0)
    assert [e.label for e in ex] == [True, True, False, False]
    assert [len(e.marked) for e in ex] == [2, 1, 2, 2]  # silent ones: the active mean, 1.5, rounded to 2
    assert ex == fuzzing_set(tokens, acts, active=[0, 1], silent=[2, 3], seed=0)
    assert marked_excerpt(ex[0]) == "a<<bc>>d"
    assert marked_excerpt(Excerpt(("x", " =", " 1"), (0, 2), True, 0)) == "<<x>> =<< 1>>"


def test_numbered_answers_of_several_excerpts_per_prompt():
    from explainer.excerpt_scores import parse_numbered

    assert parse_numbered("1: 1\n2: 0\n3. yes\nExcerpt 4) no\n5: maybe", 5) == [True, False, True, False, None]
    assert parse_numbered("2: 1\n7: 0\n2: 0", 3) == [None, True, None]  # missing, out of range, repeated
    assert parse_numbered("yes", 2) == [None, None]
