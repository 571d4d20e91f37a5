"""Fairness metrics: per-class accuracy, Gini against the double sum, worst class, trend test."""

from __future__ import annotations

import numpy as np
import pytest

from drprobe.errors import InvalidValueError
from drprobe.metrics.fairness import (
    gini,
    gini_trend_test,
    per_class_accuracy,
    per_class_drop,
    worst_class,
)


def _slow_gini(a: np.ndarray) -> float:
    """The definition, literally: Σ_c Σ_c' |a_c − a_c'| / (2 C² ā)."""
    a = np.asarray(a, dtype=float)
    C = len(a)
    total = sum(abs(x - y) for x in a for y in a)
    return total / (2 * C * C * a.mean())


def test_per_class_accuracy_known_and_batched():
    y_true = np.array([0, 0, 1, 1, 1, 3])
    y_pred = np.array([0, 1, 1, 1, 0, 3])
    acc = per_class_accuracy(y_true, y_pred, 4)
    np.testing.assert_allclose(acc[[0, 1, 3]], [0.5, 2 / 3, 1.0])
    assert np.isnan(acc[2])  # class 2 absent
    batch = per_class_accuracy(y_true, np.stack([y_pred, y_true]), 4)
    assert batch.shape == (2, 4)
    np.testing.assert_allclose(batch[0], acc)
    np.testing.assert_allclose(batch[1, [0, 1, 3]], 1.0)
    with pytest.raises(InvalidValueError, match="labels"):
        per_class_accuracy([0, 5], [0, 5], 4)
    with pytest.raises(InvalidValueError, match="y_pred"):
        per_class_accuracy(y_true, y_pred[:3], 4)


def test_gini_known_vector_and_definition():
    assert gini([0.9, 0.8, 0.5, 0.2]) == pytest.approx(0.25, abs=1e-12)
    assert gini([0.7, 0.7, 0.7]) == 0.0
    assert gini([0.0, 0.0]) == 0.0
    rng = np.random.default_rng(0)
    A = rng.random((50, 7))
    np.testing.assert_allclose(gini(A), [_slow_gini(a) for a in A], atol=1e-12)
    B = A.reshape(5, 10, 7)  # any leading batch shape
    np.testing.assert_allclose(gini(B), gini(A).reshape(5, 10), atol=1e-15)


def test_gini_bounds_scale_invariance_and_nan():
    rng = np.random.default_rng(1)
    for C in (2, 5, 10):
        A = rng.random((200, C))
        g = gini(A)
        assert np.all(g >= 0) and np.all(g <= 1 - 1 / C + 1e-12)
        onehot = np.zeros(C)
        onehot[0] = 0.8
        assert gini(onehot) == pytest.approx(1 - 1 / C, abs=1e-12)  # the bound is attained
        np.testing.assert_allclose(gini(3.7 * A), g, atol=1e-12)
    assert gini([0.9, np.nan, 0.8, 0.5, 0.2]) == pytest.approx(0.25, abs=1e-12)
    assert np.isnan(gini([np.nan, np.nan]))


def test_worst_class_and_drop():
    assert worst_class([0.9, 0.3, np.nan, 0.5]) == (1, 0.3)
    idx, acc = worst_class(np.array([[0.9, 0.3], [0.1, 0.5]]))
    np.testing.assert_array_equal(idx, [1, 0])
    np.testing.assert_allclose(acc, [0.3, 0.1])
    np.testing.assert_allclose(per_class_drop([0.5, 0.9], [0.8, 0.9]), [0.3, 0.0])
    with pytest.raises(InvalidValueError, match="non-NaN"):
        worst_class([np.nan])


def test_gini_trend_rising_falling_and_flat():
    fr = np.array([0.01, 0.05, 0.1, 0.5, 1.0])
    rng = np.random.default_rng(2)
    rising = 0.05 + 0.3 * (1 - fr)[None, :] + rng.normal(0, 0.01, (6, 5))
    res = gini_trend_test(fr, rising, np.full(6, 0.05))
    assert res["direction"] == "rises as fraction falls"
    assert res["mean_rho"] < -0.5 and res["n_negative_rho"] == 6
    assert res["sign_test_p"] == pytest.approx(0.5**6)  # all 6 seeds agree, one-sided
    assert res["wilcoxon_p"] < 0.01 and res["median_increase"] > 0
    falling = 0.4 - 0.3 * (1 - fr)[None, :] + rng.normal(0, 0.01, (6, 5))
    res = gini_trend_test(fr, falling, np.full(6, 0.4))
    assert res["direction"] == "falls as fraction falls" and res["wilcoxon_p"] > 0.5
    flat = gini_trend_test(fr, np.full((3, 5), 0.2), np.full(3, 0.2))
    assert flat["direction"] == "no clear trend" and np.isnan(flat["wilcoxon_p"])
    with pytest.raises(InvalidValueError, match="gini_by_seed"):
        gini_trend_test(fr, rising[:, :3], np.zeros(6))
