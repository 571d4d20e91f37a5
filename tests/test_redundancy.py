"""δ-diffused redundancy: hand-computed curves, interpolation, bootstrap CIs, adaptive bisection."""

from __future__ import annotations

import numpy as np
import pytest

from drprobe.errors import InvalidValueError
from drprobe.metrics.redundancy import (
    adaptive_critical_fraction,
    bootstrap_dr,
    critical_fraction,
    critical_fraction_interpolated,
    critical_mass,
    diffused_redundancy,
    dr_summary,
)

FRACS = [0.1, 0.2, 0.5, 1.0]
ACC = [0.5, 0.85, 0.9, 0.92]


def test_hand_made_curve():
    # δ·full = 0.9 · 0.92 = 0.828: 0.5 < 0.828 ≤ 0.85 → f* = 0.2, DR = 0.8
    assert critical_fraction(FRACS, ACC, 0.92, 0.9) == 0.2
    assert diffused_redundancy(FRACS, ACC, 0.92, 0.9) == pytest.approx(0.8)
    # δ = 0.95: 0.874 → first at/above is 0.9 at f = 0.5
    assert critical_fraction(FRACS, ACC, 0.92, 0.95) == 0.5
    # δ = 1: only the full layer (0.92) reaches 0.92
    assert critical_fraction(FRACS, ACC, 0.92, 1.0) == 1.0
    assert np.isnan(critical_fraction(FRACS, ACC, 0.95, 1.0))
    assert np.isnan(diffused_redundancy(FRACS, ACC, 0.95, 1.0))
    # order of the grid does not matter; 2-D scores are averaged over seeds
    assert critical_fraction(FRACS[::-1], ACC[::-1], 0.92, 0.9) == 0.2
    by_seed = [[0.4, 0.80, 0.9, 0.92], [0.6, 0.90, 0.9, 0.92]]
    assert critical_fraction(FRACS, by_seed, 0.92, 0.9) == 0.2


def test_min_over_grid_not_last_crossing():
    # a noisy curve that dips after first passing: f* is the smallest passing fraction
    assert critical_fraction([0.1, 0.2, 0.3], [0.95, 0.7, 1.0], 1.0, 0.9) == 0.1


def test_threshold_equality_counts_despite_rounding():
    assert critical_fraction([0.5, 1.0], [0.9 * 0.92, 0.92], 0.92, 0.9) == 0.5


def _slow_log_interp(fracs, scores, full, delta):
    """Reference f*: walk the grid; at the first point at/above δ·full, bisect the straight line
    through the two bracketing points drawn in (log f, score) for the fraction where it meets
    δ·full (the first grid point is returned as is; NaN if never reached)."""
    thr = delta * full
    pts = sorted(zip(fracs, np.mean(np.atleast_2d(scores), axis=0)))
    for i, (f1, s1) in enumerate(pts):
        if s1 >= thr - 1e-12:
            if i == 0:
                return f1
            f0, s0 = pts[i - 1]
            lo, hi = np.log(f0), np.log(f1)
            for _ in range(200):
                mid = (lo + hi) / 2
                if s0 + (s1 - s0) * (mid - np.log(f0)) / (np.log(f1) - np.log(f0)) < thr:
                    lo = mid
                else:
                    hi = mid
            return float(np.exp((lo + hi) / 2))
    return float("nan")


def test_interpolated_in_log_f_by_hand():
    # between (0.1, 0.5) and (0.2, 0.85), δ·full = 0.828: a share t = 0.328/0.35 of the way in
    # log f, i.e. f = 0.1·2^t; a straight line in f would give 0.1 + 0.1·t ≈ 0.1937
    t = 0.328 / 0.35
    got = critical_fraction_interpolated(FRACS, ACC, 0.92, 0.9)
    assert got == pytest.approx(0.1 * 2**t, abs=1e-12)
    assert got == pytest.approx(_slow_log_interp(FRACS, ACC, 0.92, 0.9), abs=1e-12)
    # δ = 0.95 (0.874) between (0.2, 0.85) and (0.5, 0.9): t = 0.48, f = 0.2·2.5^0.48 ≈ 0.3105,
    # clearly left of the straight-in-f 0.2 + 0.3·0.48 = 0.344
    got = critical_fraction_interpolated(FRACS, ACC, 0.92, 0.95)
    assert got == pytest.approx(0.2 * 2.5**0.48, abs=1e-12)
    assert abs(got - 0.344) > 0.03
    # crossing at the first grid point: no interpolation below the grid
    assert critical_fraction_interpolated(FRACS, ACC, 0.92, 0.5) == 0.1
    assert np.isnan(critical_fraction_interpolated(FRACS, ACC, 0.95, 1.0))
    # a curve straight in log f is recovered exactly: score = 2 + log10 f on 0.01, 0.1, 1
    # (full 2), δ = 0.75 → score 1.5 at f = 10^-0.5 (a straight line in f would give 0.55)
    g = np.array([0.01, 0.1, 1.0])
    assert critical_fraction_interpolated(g, 2 + np.log10(g), 2.0, 0.75) == pytest.approx(
        10**-0.5, abs=1e-12)
    # random geometric-ish grids and seed-by-fraction curves against the bisection reference
    rng = np.random.default_rng(0)
    grid = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
    for _ in range(50):
        scores = np.sort(rng.random((3, len(grid))), axis=1)
        full, delta = scores[:, -1].mean(), rng.uniform(0.3, 1.0)
        want = _slow_log_interp(grid, scores, full, delta)
        assert critical_fraction_interpolated(grid, scores, full, delta) == pytest.approx(
            want, abs=1e-12)


def test_critical_mass_and_summary():
    ks = [5, 10, 25, 50]
    assert critical_mass(ks, ACC, 0.92, 0.9) == 10
    assert critical_mass(ks, ACC, 0.95, 1.0) is None
    rows = dr_summary(FRACS, ks, [ACC, ACC], 0.92)
    assert [r["delta"] for r in rows] == [0.8, 0.9, 0.95, 0.99]
    # δ = 0.8 → 0.736: 0.85 first; 0.99 → 0.9108: only 0.92 at f = 1
    assert [r["f_star"] for r in rows] == [0.2, 0.2, 0.5, 1.0]
    assert [r["k_star"] for r in rows] == [10, 10, 25, 50]
    assert rows[1]["dr"] == pytest.approx(0.8)
    assert rows[1]["f_star_interp"] == pytest.approx(0.1 * 2 ** ((0.828 - 0.5) / 0.35))  # log f
    with pytest.raises(InvalidValueError, match="ks"):
        dr_summary(FRACS, ks[:2], [ACC], 0.92)


def test_input_errors():
    with pytest.raises(InvalidValueError, match="delta"):
        critical_fraction(FRACS, ACC, 0.92, -0.1)
    with pytest.raises(InvalidValueError, match="do not match"):
        critical_fraction(FRACS, ACC[:3], 0.92, 0.9)


def _simulate(n_test: int, seed: int, fracs: np.ndarray, p: np.ndarray, n_seeds: int = 3):
    rng = np.random.default_rng(seed)
    correct = rng.random((n_seeds, len(fracs), n_test)) < p[None, :, None]
    full = rng.random((n_seeds, n_test)) < 0.9
    return correct, full


def _slow_bootstrap(correct, full, fracs, delta, n_boot, seed, ci=0.95):
    """Loop version drawing the same random numbers: all example indices, then all seed indices."""
    rng = np.random.default_rng(seed)
    n_seeds, _, n_test = correct.shape
    ex = rng.integers(0, n_test, size=(n_boot, n_test))
    se = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    if full.shape[0] not in (1, n_seeds):  # unpaired full-layer probes: their own resample
        fs = rng.integers(0, full.shape[0], size=(n_boot, full.shape[0]))
    f_boot = []
    for b in range(n_boot):
        acc = correct[se[b]][:, :, ex[b]].mean(axis=(0, 2))
        if full.shape[0] == n_seeds:
            full_b = full[se[b]]
        elif full.shape[0] == 1:
            full_b = full
        else:
            full_b = full[fs[b]]
        f_boot.append(critical_fraction(fracs, acc, full_b[:, ex[b]].mean(), delta))
    a = 100 * (1 - ci) / 2
    return np.nanpercentile(f_boot, [a, 100 - a])


@pytest.mark.parametrize("n_full", [1, 3, 5])
def test_bootstrap_equals_slow_loop(n_full):
    fracs = np.array([0.1, 0.2, 0.4, 0.6, 0.8, 1.0])
    p = np.array([0.6, 0.75, 0.8, 0.83, 0.85, 0.9])
    correct, _ = _simulate(300, 3, fracs, p)  # 3 seeds; n_full = 3 is the paired case
    full = np.random.default_rng(9).random((n_full, 300)) < 0.9
    res = bootstrap_dr(correct, full, fracs, 0.9, n_boot=300, random_state=2, chunk=300)
    assert res["f_star"] == critical_fraction(fracs, correct.mean(axis=2), full.mean(), 0.9)
    lo, hi = _slow_bootstrap(correct, full, fracs, 0.9, 300, 2)
    assert (res["f_star_low"], res["f_star_high"]) == (lo, hi)
    assert lo < hi  # the test is not vacuous


def test_bootstrap_no_crossing_and_shape_errors():
    correct = np.zeros((2, 3, 50), dtype=bool)
    full = np.ones((1, 50), dtype=bool)
    res = bootstrap_dr(correct, full, [0.1, 0.5, 1.0], 0.9, n_boot=20)
    assert np.isnan(res["dr"]) and np.isnan(res["low"]) and np.isnan(res["high"])
    with pytest.raises(InvalidValueError, match="n_test"):
        bootstrap_dr(correct, np.ones((3, 49), dtype=bool), [0.1, 0.5, 1.0], 0.9)
    with pytest.raises(InvalidValueError, match="ci"):
        bootstrap_dr(correct, full, [0.1, 0.5, 1.0], 0.9, ci=1.5)


def test_adaptive_bisection_finds_known_crossing():
    calls: list[float] = []

    def curve(f: float) -> float:  # monotone, crosses 0.9 at f = 0.3
        calls.append(f)
        return float(np.tanh(f / 0.3 * np.arctanh(0.9)))

    res = adaptive_critical_fraction(curve, 1.0, 0.9, tol=0.001)
    assert res["converged"]
    assert res["f_low"] < 0.3 <= res["f_star"] <= res["f_low"] + 0.001 + 1e-12
    assert len(calls) == len(set(calls)) == res["n_evals"]
    assert res["fractions"] == sorted(res["fractions"])
    assert res["n_evals"] <= 4 + int(np.ceil(np.log2(0.4 / 0.001))) + 1


def test_adaptive_bracket_edges():
    # passes everywhere: bracket is (lo, first grid point), bisected towards lo
    res = adaptive_critical_fraction(lambda f: 1.0, 1.0, 0.9, tol=0.004)
    assert res["f_star"] <= 0.004 and res["f_low"] == 0.0
    # never passes
    res = adaptive_critical_fraction(lambda f: 0.1, 1.0, 0.9)
    assert np.isnan(res["f_star"]) and not res["converged"]
    # budget stops the search
    res = adaptive_critical_fraction(lambda f: f, 1.0, 0.5, tol=1e-9, max_evals=6)
    assert res["n_evals"] == 6 and not res["converged"]
    with pytest.raises(InvalidValueError, match="lo"):
        adaptive_critical_fraction(lambda f: f, 1.0, 0.5, lo=0.5, hi=0.2)
