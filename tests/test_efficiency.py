"""Efficiency: parameter and FLOP counts, Pareto frontier against a brute-force dominance check."""

from __future__ import annotations

import numpy as np
import pytest

from drprobe.errors import InvalidValueError, UnknownNameError
from drprobe.metrics.efficiency import inference_flops, pareto_frontier, probe_params


def test_probe_params_and_flops():
    assert probe_params(10, 5) == 55
    np.testing.assert_array_equal(probe_params(np.array([1, 2]), 10), [20, 30])
    assert inference_flops("random", 2048, 100, 10) == 2 * 100 * 10
    assert inference_flops("prefix", 2048, 100, 10) == 2000
    assert inference_flops("pca_top", 2048, 100, 10) == 2000 + 2 * 2048 * 100
    assert inference_flops("randproj_uniform", 64, 8, 3) == 48 + 1024
    np.testing.assert_array_equal(inference_flops("variance", 10, np.array([1, 10]), 2), [4, 40])
    with pytest.raises(UnknownNameError, match="unknown selector 'pcaa'"):
        inference_flops("pcaa", 10, 1, 2)
    with pytest.raises(InvalidValueError, match=r"\[1, 10\]"):
        inference_flops("random", 10, 11, 2)


def test_pareto_hand_made():
    cost = [1, 2, 3, 2, 5, 1, 4]
    acc = [0.5, 0.6, 0.55, 0.6, 0.9, 0.4, 0.9]
    # (1,.5) best at cost 1; (2,.6) twice (exact duplicates, both kept); (3,.55) dominated;
    # (4,.9) dominates (5,.9); (1,.4) dominated by (1,.5)
    np.testing.assert_array_equal(pareto_frontier(cost, acc), [0, 1, 3, 6])
    assert pareto_frontier([1.0, np.nan], [0.2, 0.9]).tolist() == [0]
    assert pareto_frontier([], []).tolist() == []


def _brute_pareto(c: np.ndarray, a: np.ndarray) -> set[int]:
    keep = set()
    for i in range(len(c)):
        dominated = any(
            c[j] <= c[i] and a[j] >= a[i] and (c[j] < c[i] or a[j] > a[i]) for j in range(len(c))
        )
        if not dominated:
            keep.add(i)
    return keep


def test_pareto_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(30):
        c = rng.integers(0, 8, 25).astype(float)
        a = rng.integers(0, 8, 25) / 8
        got = pareto_frontier(c, a)
        assert set(got.tolist()) == _brute_pareto(c, a)
        assert np.all(np.diff(c[got]) >= 0)
