"""Chance-corrected DR (metrics.redundancy, metrics.compare, analysis.variants) against the direct
formula: f* on (acc − chance)/(full − chance)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_compare import FRACTIONS, KS, synthetic
from test_variants import fake_results

from drprobe.analysis.variants import variant_table
from drprobe.errors import InvalidValueError
from drprobe.metrics.compare import Variant, network_stats
from drprobe.metrics.redundancy import (
    chance_corrected,
    chance_corrected_dr,
    chance_level,
    diffused_redundancy,
)

GRID = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


def slow_dr_chance(fractions, curve, full, delta, chance):
    """1 − the first fraction whose (acc − chance)/(full − chance) reaches δ, by a loop."""
    for f, acc in sorted(zip(fractions, curve)):
        if (acc - chance) / (full - chance) >= delta - 1e-12:
            return 1.0 - f
    return math.nan


def test_hand_checked_curve_where_raw_and_corrected_dr_differ():
    # two classes: chance 0.5; accuracy climbs linearly from chance to 0.9 at the full layer
    curve = [0.5 + 0.4 * f for f in GRID]
    # raw: 0.85 x 0.9 = 0.765 is reached at f = 0.7 (0.78), not 0.6 (0.74) -> DR 0.3
    assert diffused_redundancy(GRID, curve, 0.9, 0.85) == pytest.approx(0.3)
    # corrected: the curve maps to f itself, which reaches 0.85 at f = 0.9 -> DR 0.1
    assert chance_corrected_dr(GRID, curve, 0.9, 0.85, chance_level(2)) == pytest.approx(0.1)
    np.testing.assert_allclose(chance_corrected(curve, 0.9, 0.5), GRID)


@pytest.mark.parametrize("seed", range(8))
def test_linear_curves_move_by_the_predicted_amount(seed):
    """acc = c + (full − c)·f: corrected f* = the first grid point ≥ δ, raw f* = the first
    ≥ 1 − (1 − δ)·full/(full − c); a higher chance level widens the gap."""
    rng = np.random.default_rng(seed)
    c, full, delta = rng.uniform(0.05, 0.5), rng.uniform(0.6, 0.95), rng.uniform(0.6, 0.95)
    grid = np.round(np.arange(1, 41) / 40, 6)
    curve = c + (full - c) * grid

    def first(x: float) -> float:
        return grid[np.searchsorted(grid, x - 1e-9)]

    assert chance_corrected_dr(grid, curve, full, delta, c) == pytest.approx(1 - first(delta))
    raw_target = 1 - (1 - delta) * full / (full - c)
    assert diffused_redundancy(grid, curve, full, delta) == pytest.approx(1 - first(raw_target))
    assert diffused_redundancy(grid, curve, full, delta) >= chance_corrected_dr(
        grid, curve, full, delta, c)


@pytest.mark.parametrize("seed", range(10))
def test_random_curves_match_the_direct_formula(seed):
    rng = np.random.default_rng(seed)
    curve = np.sort(rng.uniform(0.1, 0.9, len(GRID)))
    chance = rng.uniform(0.0, 0.09)
    for delta in (0.5, 0.8, 0.9, 0.99):
        got = chance_corrected_dr(GRID, curve, curve[-1], delta, chance)
        assert got == pytest.approx(slow_dr_chance(GRID, curve, curve[-1], delta, chance))
    # chance 0 is the raw DR
    assert chance_corrected_dr(GRID, curve, curve[-1], 0.9, 0.0) == diffused_redundancy(
        GRID, curve, curve[-1], 0.9)


def test_network_stats_use_the_variants_chance_level():
    v = synthetic([0.1, 0.3, 0.5], n_test=400, full=0.6, seed=4)  # n_classes = 10
    for chance, variant in ((0.1, v), (0.4, Variant(v.correct, FRACTIONS, KS, chance=0.4))):
        for delta in (0.8, 0.9):
            got = network_stats(variant, delta, "dr_chance")
            for p in range(3):
                curve = v.correct[p].mean(axis=(0, 2))
                assert got[p] == pytest.approx(
                    slow_dr_chance(FRACTIONS, curve, curve[-1], delta, chance))
    # a higher chance level asks for more of the curve: corrected DR never above the raw one
    high = Variant(v.correct, FRACTIONS, KS, chance=0.4)
    assert np.all(network_stats(high, 0.9, "dr_chance") <= network_stats(v, 0.9, "dr"))


def test_full_layer_at_or_below_chance():
    below = Variant(np.zeros((1, 1, len(FRACTIONS), 20), bool), FRACTIONS, KS, n_classes=4)
    assert network_stats(below, 0.9, "dr_chance")[0] == 0.0  # only the full layer qualifies
    with pytest.raises(InvalidValueError, match="must exceed the chance level"):
        chance_corrected([0.2, 0.25], 0.25, 0.25)


def test_missing_or_bad_chance_is_a_one_line_error():
    v = synthetic([0.1], n_test=20)
    bare = Variant(v.correct, FRACTIONS, KS)
    with pytest.raises(InvalidValueError, match="dr_chance needs the chance level"):
        network_stats(bare, 0.9, "dr_chance")
    with pytest.raises(InvalidValueError, match="n_classes must be >= 2"):
        Variant(v.correct, FRACTIONS, KS, n_classes=1)
    with pytest.raises(InvalidValueError, match=r"chance must be in \[0, 1\)"):
        Variant(v.correct, FRACTIONS, KS, chance=1.2)
    with pytest.raises(InvalidValueError, match="chance needs n_classes >= 2"):
        chance_level()
    assert chance_level(10) == 0.1 and chance_level(10, majority=0.3) == 0.3


def test_variant_table_reports_dr_chance_beside_dr():
    res = fake_results(3)
    table = variant_table(res, [0.9], n_boot=50, chance={"digits": 0.5})
    for r in table.itertuples():
        sub = res[(res["dataset"] == r.dataset) & (res["model"].str.split("/").str[0]
                                                    == r.variant.split(" ")[0])
                  & ((res["weights"] == "random") == r.variant.endswith("[random]"))]
        chance = 0.1 if r.dataset == "mnist" else 0.5  # 1/n_classes, or the given rate
        nets = []
        for _, net in sub.groupby("model"):
            curve = net.groupby("fraction")["test_acc"].mean()
            nets.append(slow_dr_chance(curve.index, curve.to_numpy(), curve[1.0], 0.9, chance))
        assert r.dr_chance == pytest.approx(np.mean(nets))
        assert r.dr_chance_low <= r.dr_chance_high
    bare = variant_table(res.drop(columns="n_classes"), [0.9], n_boot=20)
    assert bare["dr_chance"].isna().all() and bare["dr"].notna().all()
