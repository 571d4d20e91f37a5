"""Variant comparisons with pretraining-seed variance (metrics.compare) against slow loops."""

from __future__ import annotations

import numpy as np
import pytest

from drprobe.errors import InvalidValueError
from drprobe.metrics.compare import (
    Draws,
    Variant,
    compare_variants,
    draw,
    network_stats,
    replicate_stats,
    variant_interval,
)
from drprobe.metrics.redundancy import (
    chance_corrected_dr,
    critical_mass,
    diffused_redundancy,
)

FRACTIONS = np.array([0.05, 0.1, 0.2, 0.5, 1.0])
KS = np.array([5, 10, 20, 50, 100])


def synthetic(knees, n_test=300, n_probe=3, full=0.9, seed=0) -> Variant:
    """P networks (one per knee) of a 10-class task: accuracy rises linearly to ``full`` at
    f = knee, then flat; each probe seed's correctness is a Bernoulli draw per example."""
    rng = np.random.default_rng(seed)
    P, F = len(knees), len(FRACTIONS)
    acc = np.array([[full * min(1.0, f / k) for f in FRACTIONS] for k in knees])  # (P, F)
    u = rng.random((P, n_probe, F, n_test))
    return Variant(u < acc[:, None, :, None], FRACTIONS, KS, n_classes=10)


def slow_f_star_log(fractions, curve, full, delta) -> float:
    """f*_δ interpolated in log f, written out independently: the first grid point at/above
    δ·full and the one before it, np.interp of δ·full on the segment between them in log f
    (the first grid point as is)."""
    thr = delta * full
    i = next(j for j, s in enumerate(curve) if s >= thr - 1e-12)
    if i == 0:
        return float(fractions[0])
    logf = np.interp(thr, [curve[i - 1], curve[i]], np.log([fractions[i - 1], fractions[i]]))
    return float(np.exp(logf))


def slow_replicate(v: Variant, delta: float, stat: str, d: Draws, b: int) -> float:
    """The statistic of replicate b, by loops over the drawn networks and probe seeds."""
    values = []
    for j, p in enumerate(d.seeds[b]):
        curve = []
        for fi in range(len(v.fractions)):
            per_probe = [np.mean([v.correct[p, s, fi, n] for n in d.tests[b]])
                         for s in d.probes[b, j]]
            curve.append(np.mean(per_probe))
        curve = np.array(curve)
        if stat == "dr":
            values.append(diffused_redundancy(v.fractions, curve, curve[-1], delta))
        elif stat == "dr_chance":
            values.append(chance_corrected_dr(v.fractions, curve, curve[-1], delta, 0.1))
        elif stat == "dr_interp":
            values.append(1 - slow_f_star_log(v.fractions, curve, curve[-1], delta))
        else:
            values.append(critical_mass(v.ks, curve, curve[-1], delta))
    return float(np.mean(values))


@pytest.mark.parametrize("stat", ["dr", "k_star", "dr_interp", "dr_chance"])
def test_replicates_match_a_slow_loop(stat):
    v = synthetic([0.1, 0.2, 0.5], n_test=40)
    d = draw(np.random.default_rng(5), 12, 3, 3, 40)
    fast = replicate_stats(v, 0.9, stat, d, chunk=5)  # several chunks
    slow = [slow_replicate(v, 0.9, stat, d, b) for b in range(12)]
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)


def test_network_stats_are_the_redundancy_module_per_network():
    v = synthetic([0.1, 0.5], n_test=100)
    for delta in (0.8, 0.9, 0.95):
        got_dr, got_k = network_stats(v, delta, "dr"), network_stats(v, delta, "k_star")
        for p in range(2):
            scores = v.correct[p].mean(axis=2)  # (S, F)
            full = scores[:, -1].mean()
            assert got_dr[p] == pytest.approx(diffused_redundancy(FRACTIONS, scores, full, delta))
            assert got_k[p] == critical_mass(KS, scores, full, delta)


def test_dr_interp_is_linear_in_log_f():
    # a network whose accuracy is straight in log f: acc = 0.2 + 0.7·(log f − log 0.05)/log 20,
    # 0.2 at f = 0.05 up to 0.9 at f = 1; δ = 0.9 → 0.81 at log f = log 0.05 + (0.61/0.7)·log 20,
    # f ≈ 0.6803 (a straight line in f between 0.5 and 1 would give ≈ 0.7222)
    acc = 0.2 + 0.7 * np.log(FRACTIONS / 0.05) / np.log(20)
    n = 10_000
    correct = np.arange(n)[None, None, None, :] < np.round(acc * n)[None, None, :, None]
    v = Variant(correct, FRACTIONS, KS, n_classes=10)
    exact = np.round(acc * n) / n
    assert exact[3] < 0.9 * exact[-1] <= exact[4]  # the crossing lies between f = 0.5 and 1
    want = 0.5 * 2 ** ((0.9 * exact[-1] - exact[3]) / (exact[-1] - exact[3]))
    assert want == pytest.approx(0.05 * 20 ** (0.61 / 0.7), abs=1e-3)
    got = network_stats(v, 0.9, "dr_interp")
    assert got[0] == pytest.approx(1 - want, abs=1e-12)
    assert got[0] == pytest.approx(1 - slow_f_star_log(FRACTIONS, exact, exact[-1], 0.9),
                                   abs=1e-12)
    assert abs(got[0] - (1 - 0.7222)) > 0.04


def test_pretraining_seed_variance_widens_the_interval():
    v = synthetic([0.1, 0.5, 0.1, 0.5], n_test=2000)  # networks at DR 0.9 and DR 0.5
    P, S, _, N = v.shape
    rng = np.random.default_rng(0)
    hier = replicate_stats(v, 0.9, "dr", draw(rng, 400, P, S, N))
    d = draw(rng, 400, P, S, N)
    fixed = replicate_stats(v, 0.9, "dr", Draws(np.tile(np.arange(P), (400, 1)), d.probes,
                                                d.tests))
    assert np.ptp(fixed) < 0.05  # test examples and probe seeds barely move it
    assert np.percentile(hier, 97.5) - np.percentile(hier, 2.5) >= 0.3
    out = variant_interval(v, 0.9, n_boot=400)
    assert out["value"] == pytest.approx(0.7) and out["low"] < 0.6 and out["high"] > 0.8
    assert out["sd_seeds"] == pytest.approx(np.std([0.9, 0.5, 0.9, 0.5], ddof=1))


def test_compare_finds_a_real_difference_and_not_a_null_one():
    wide = synthetic([0.1, 0.1, 0.2], seed=1)    # DR_0.9 0.9, 0.9, 0.8
    narrow = synthetic([0.5, 0.5, 0.5], seed=2)  # DR_0.9 0.5
    same = synthetic([0.1, 0.1, 0.2], seed=3)
    real = compare_variants(wide, narrow, 0.9, n_boot=300)
    assert real["diff"] == pytest.approx(real["a"] - real["b"])
    assert real["low"] > 0 and real["p_le_0"] < 0.05
    null = compare_variants(wide, same, 0.9, n_boot=300, paired_tests=False)
    assert null["low"] <= 0 <= null["high"]
    k = compare_variants(narrow, wide, 0.9, "k_star", n_boot=200, paired_seeds=True)
    assert k["diff"] > 0 and k["low"] > 0  # the narrow curve needs more neurons


def test_bad_inputs_are_one_line_errors():
    v = synthetic([0.1], n_test=10)
    with pytest.raises(InvalidValueError, match="end at 1.0"):
        Variant(v.correct, FRACTIONS * 0.5, KS)
    with pytest.raises(InvalidValueError, match=r"correct \(P, S, F, N\)"):
        Variant(v.correct[0], FRACTIONS, KS)
    with pytest.raises(InvalidValueError, match="valid choices: dr, k_star, dr_interp, dr_chance$"):
        network_stats(v, 0.9, "f_star")
    with pytest.raises(InvalidValueError, match="same test examples"):
        compare_variants(v, synthetic([0.1], n_test=11), 0.9)
    with pytest.raises(InvalidValueError, match="unknown interval method 'bca'; valid choices"):
        compare_variants(v, v, 0.9, n_boot=10, method="bca")


def test_variant_interval_methods():
    """t: value ± t_{P−1}·√(P/(P−1))·sd(replicates) clipped to [0, 1]; percentile: the
    replicates' quantiles."""
    from scipy import stats

    v = synthetic([0.1, 0.5, 0.2, 0.3], n_test=500)
    P, S, _, N = v.shape
    reps = replicate_stats(v, 0.9, "dr", draw(np.random.default_rng(4), 300, P, S, N))
    t = variant_interval(v, 0.9, n_boot=300, random_state=4)
    half = stats.t.ppf(0.975, 3) * np.sqrt(4 / 3) * np.std(reps, ddof=1)
    assert t["value"] + half > 1  # the clip matters here
    assert (t["low"], t["high"]) == pytest.approx((t["value"] - half, 1.0))
    pct = variant_interval(v, 0.9, n_boot=300, random_state=4, method="percentile")
    assert (pct["low"], pct["high"]) == pytest.approx(tuple(np.percentile(reps, [2.5, 97.5])))
