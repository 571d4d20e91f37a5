"""The card's statistics against direct, loop-by-loop computations (synthetic scores: math only)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from drprobe.card.build import check_sizes, storage_sizes
from drprobe.card.summary import summarize_task, verdict
from drprobe.card.tasks import TaskScores
from drprobe.errors import InvalidValueError
from drprobe.metrics import bootstrap_critical_mass

KS = [8, 16, 32, 64]


def _task(rng, n=300, statistic="mean"):
    """Scores that rise with k; random-k has three seeds, first-k one; two groups."""
    points = {}
    for strat, seeds, base in (("first-k", [0], 0.55), ("random-k", [0, 1, 2], 0.5)):
        for seed in seeds:
            for j, k in enumerate(KS):
                p = min(0.95, base + 0.12 * j)
                if statistic == "mean":
                    points[(strat, seed, k)] = (rng.random(n) < p).astype(float)
                else:
                    points[(strat, seed, k)] = rng.normal(size=n) * (1 - p) + np.arange(n) / n
    if statistic == "mean":
        full = (rng.random(n) < 0.9).astype(float)
        return TaskScores("knn", "accuracy", "mean", full, points, groups=rng.integers(0, 2, n),
                          group_names=["a", "b"])
    return TaskScores("sts", "spearman", "spearman", np.arange(n) / n + 0.01 * rng.normal(size=n),
                      points, gold=np.arange(n, dtype=float))


def test_bootstrap_critical_mass_equals_a_loop_over_replicates():
    rng = np.random.default_rng(0)
    curves = np.sort(rng.random((400, 4)), axis=1)
    full = rng.uniform(0.8, 1.0, 400)
    lo, hi = bootstrap_critical_mass(KS, curves, full, 0.9, ci=0.9)
    ks = []
    for b in range(400):
        hit = [k for k, q in zip(KS, curves[b]) if q >= 0.9 * full[b]]
        ks.append(hit[0] if hit else math.inf)
    ks = sorted(ks)
    # inverted-CDF order statistics: the smallest value whose CDF reaches the tail share
    assert lo == ks[math.ceil(0.05 * 400) - 1]
    assert hi == ks[math.ceil(0.95 * 400) - 1]


def test_bootstrap_critical_mass_refuses_bad_shapes():
    with pytest.raises(InvalidValueError, match="ascending ks"):
        bootstrap_critical_mass([16, 8], np.zeros((3, 2)), np.ones(3), 0.9)


def test_summary_of_a_mean_task_equals_direct_computation():
    rng = np.random.default_rng(1)
    scores = _task(rng)
    s = summarize_task(scores, keeps=(0.9, 0.8), n_boot=200, ci=0.9, seed=7)
    idx = np.random.default_rng(7).integers(0, 300, size=(200, 300))
    assert s.full["quality"] == pytest.approx(scores.full.mean())
    full_rep = np.array([scores.full[i].mean() for i in idx])
    assert s.full["low"] == pytest.approx(np.percentile(full_rep, 5))
    for strat in ("first-k", "random-k"):
        seeds = [0] if strat == "first-k" else [0, 1, 2]
        quality = {k: np.mean([scores.points[(strat, sd, k)].mean() for sd in seeds]) for k in KS}
        reps = {k: np.array([np.mean([scores.points[(strat, sd, k)][i].mean() for sd in seeds])
                             for i in idx]) for k in KS}
        curve = s.curve[s.curve["strategy"] == strat].set_index("k")
        for k in KS:
            assert curve.loc[k, "quality"] == pytest.approx(quality[k])
            assert curve.loc[k, "high"] == pytest.approx(np.percentile(reps[k], 95))
        for keep in (0.9, 0.8):
            direct = next((k for k in KS if quality[k] >= keep * scores.full.mean()), None)
            row = s.critical[(s.critical["strategy"] == strat) & (s.critical["keep"] == keep)]
            got = row["k_star"].iloc[0]
            assert (direct is None and np.isnan(got)) or got == direct
            if direct is not None:  # the worst group at k*, directly
                v = np.mean([scores.points[(strat, sd, direct)] for sd in seeds], axis=0)
                means = [v[scores.groups == g].mean() for g in (0, 1)]
                assert row["worst_group"].iloc[0] == "ab"[int(np.argmin(means))]
                assert row["worst_quality"].iloc[0] == pytest.approx(min(means))


def test_summary_of_a_spearman_task_uses_the_rank_correlation():
    rng = np.random.default_rng(2)
    scores = _task(rng, n=120, statistic="spearman")
    s = summarize_task(scores, keeps=(0.9,), n_boot=50, seed=0)
    assert s.full["quality"] == pytest.approx(spearmanr(scores.full, scores.gold).statistic)
    curve = s.curve[s.curve["strategy"] == "random-k"].set_index("k")
    for k in KS:
        direct = np.mean([spearmanr(scores.points[("random-k", sd, k)], scores.gold).statistic
                          for sd in (0, 1, 2)])
        assert curve.loc[k, "quality"] == pytest.approx(direct)
    assert s.critical["worst_group"].isna().all()


def test_verdict_names_each_strategy_and_the_width():
    s = summarize_task(_task(np.random.default_rng(3)), keeps=(0.8,), n_boot=20)
    line = verdict(s, 0.8, 64)
    assert "first-k" in line and "random-k" in line and "(of 64)" in line


def test_storage_sizes_hold_the_usual_sizes_and_the_width():
    assert storage_sizes(384) == [8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384]
    assert storage_sizes(50) == [8, 12, 16, 24, 32, 48, 50]
    assert check_sizes([32, 8], 64) == [8, 32, 64]
    with pytest.raises(InvalidValueError, match=r"\[1, 64\]"):
        check_sizes([0, 65], 64)
