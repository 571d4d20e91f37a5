"""Multiplicity and power for variant comparisons (metrics.compare, analysis.variants) against
direct, slow implementations and hand-checked cases."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_compare import synthetic
from test_variants import fake_results

from drprobe.analysis.variants import task_table, variant_table
from drprobe.errors import InvalidValueError
from drprobe.metrics.compare import Difference, compare_difference, compare_variants
from drprobe.metrics.multiplicity import benjamini_hochberg, holm


def slow_holm(p: list[float]) -> list[float]:
    """Holm by its definition: rank r_i of p_i among the sorted p's (ties in input order);
    adj_i = max over j with rank ≤ r_i of min(1, (m − rank_j + 1)·p_j)."""
    m = len(p)
    order = sorted(range(m), key=lambda i: (p[i], i))
    rank = {i: r for r, i in enumerate(order, start=1)}
    return [max(min(1.0, (m - rank[j] + 1) * p[j]) for j in range(m) if rank[j] <= rank[i])
            for i in range(m)]


def slow_bh(p: list[float]) -> list[float]:
    """Benjamini–Hochberg by its definition: adj_(i) = min over j ≥ i of min(1, m·p_(j)/j)."""
    m = len(p)
    order = sorted(range(m), key=lambda i: (p[i], i))
    rank = {i: r for r, i in enumerate(order, start=1)}
    return [min(min(1.0, m * p[j] / rank[j]) for j in range(m) if rank[j] >= rank[i])
            for i in range(m)]


def test_hand_checked_cases():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    # sorted 0.01, 0.03, 0.04, 0.2 -> m p / rank = 0.04, 0.06, 0.0533, 0.2 -> running min from top
    np.testing.assert_allclose(benjamini_hochberg([0.01, 0.04, 0.03, 0.2]),
                               [0.04, 0.16 / 3, 0.16 / 3, 0.2])
    assert holm([0.3]) == pytest.approx([0.3]) and holm([0.6, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([]).size == 0 and benjamini_hochberg([]).size == 0


@pytest.mark.parametrize("seed", range(12))
def test_adjustments_match_the_definitions_and_their_properties(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 15))
    p = rng.random(m) ** 3
    p[rng.random(m) < 0.3] = p[0]  # ties
    h, bh = holm(p), benjamini_hochberg(p)
    np.testing.assert_allclose(h, slow_holm(p.tolist()), rtol=0, atol=1e-15)
    np.testing.assert_allclose(bh, slow_bh(p.tolist()), rtol=0, atol=1e-12)
    for adj in (h, bh):
        assert np.all(adj >= p - 1e-15) and np.all(adj <= 1.0)
        for i, j in itertools.product(range(m), repeat=2):  # monotone in the raw p-values
            if p[i] < p[j]:
                assert adj[i] <= adj[j] + 1e-15
    assert np.all(h >= bh - 1e-15)  # family-wise control is the stricter one


def test_bad_pvalues_are_one_line_errors():
    for bad in ([0.1, np.nan], [0.1, 1.5], [[0.1, 0.2]], [-0.01]):
        with pytest.raises(InvalidValueError, match="p-values must be a 1-D array"):
            holm(bad)
        with pytest.raises(InvalidValueError, match="p-values must be a 1-D array"):
            benjamini_hochberg(bad)


def test_pvalues_and_intervals_are_dual_and_match_direct_formulas():
    a, b = synthetic([0.1, 0.2, 0.2], seed=1), synthetic([0.2, 0.2, 0.5], seed=2)
    d = compare_difference(a, b, 0.9, n_boot=300, random_state=3)
    reps = d.reps
    # the bootstrap p by counting, as its definition says
    le = sum(r <= 0 for r in reps) / len(reps)
    ge = sum(r >= 0 for r in reps) / len(reps)
    out = compare_variants(a, b, 0.9, n_boot=300, random_state=3)
    assert out["p_le_0"] == pytest.approx(le) and out["p_ge_0"] == pytest.approx(ge)
    assert out["p_boot"] == pytest.approx(min(1.0, 2 * min(le, ge)))
    # t: df = 3 + 3 - 2 networks; the p-value of the t statistic
    assert d.df == 4
    t = abs(d.diff) / d.se
    assert out["p_value"] == pytest.approx(2 * stats.t.sf(t, 4))
    assert out["min_detectable"] == pytest.approx((stats.t.ppf(0.975, 4) + stats.t.ppf(0.8, 4))
                                                  * d.se)
    # duality: the interval at level 1 - p has 0 on its edge
    low, high = d.interval(1 - out["p_value"])
    assert min(abs(low), abs(high)) == pytest.approx(0, abs=1e-9)
    # Bonferroni over m = 7 comparisons: a wider interval with the t quantile of 1 - 0.05/14
    adj = d.interval(1 - 0.05 / 7)
    assert adj == pytest.approx((d.diff - stats.t.ppf(1 - 0.05 / 14, 4) * d.se,
                                 d.diff + stats.t.ppf(1 - 0.05 / 14, 4) * d.se))
    assert adj[0] <= out["low"] and adj[1] >= out["high"]


def test_the_standard_error_inflates_each_arms_seed_variance():
    ra = np.array([0.1, 0.3, 0.2, 0.4, 0.0])
    rb = np.array([0.2, 0.2, 0.1, 0.3, 0.2])
    from drprobe.metrics.compare import difference

    d = difference(0.5, 0.4, ra, rb, 5, 3)
    va, vb = np.var(ra, ddof=1), np.var(rb, ddof=1)
    cov = np.sum((ra - ra.mean()) * (rb - rb.mean())) / 4
    assert d.se == pytest.approx(np.sqrt(5 / 4 * va + 3 / 2 * vb - 2 * cov)) and d.df == 6
    paired = difference(0.5, 0.4, ra, rb, 5, 5, paired_seeds=True)
    assert paired.se == pytest.approx(np.sqrt(5 / 4 * np.var(ra - rb, ddof=1)))
    assert paired.df == 4
    single = difference(0.5, 0.4, ra, rb, 1, 1)  # no seed level: normal quantiles
    assert single.df == np.inf
    assert single.interval(0.95)[1] == pytest.approx(0.1 + stats.norm.ppf(0.975) * single.se)
    flat = Difference(0.0, 0.5, 0.5, np.zeros(10), 0.0, 4.0)
    assert flat.p_value() == 1.0 and flat.interval() == (0.0, 0.0)
    with pytest.raises(InvalidValueError, match="valid choices: t, percentile"):
        flat.interval(0.95, "bca")


def _family_checks(table: pd.DataFrame, stat: str, ci: float = 0.95) -> None:
    """Holm and Bonferroni columns of ``stat`` against the definitions, per (stat, δ) family;
    intervals clipped to the differences the statistic can take (k* of 4..40 neurons here)."""
    bound = 36.0 if stat == "k_star" else 1.0
    for _, fam in table.groupby("delta"):
        rows = fam[fam[f"{stat}_diff_p"].notna()]
        m = len(rows)
        assert m > 0 and (rows[f"{stat}_diff_family"] == m).all()
        np.testing.assert_allclose(rows[f"{stat}_diff_p_holm"],
                                   slow_holm(rows[f"{stat}_diff_p"].tolist()), atol=1e-12)
        q = stats.t.ppf(1 - (1 - ci) / (2 * m), rows[f"{stat}_diff_df"])
        half = q * rows[f"{stat}_diff_se"]
        np.testing.assert_allclose(rows[f"{stat}_diff_adj_low"],
                                   np.maximum(-bound, rows[f"{stat}_diff"] - half), atol=1e-12)
        np.testing.assert_allclose(rows[f"{stat}_diff_adj_high"],
                                   np.minimum(bound, rows[f"{stat}_diff"] + half), atol=1e-12)
        assert (rows[f"{stat}_diff_adj_low"] <= rows[f"{stat}_diff_low"] + 1e-12).all()
        df = rows[f"{stat}_diff_df"]
        np.testing.assert_allclose(rows[f"{stat}_min_detectable"], (stats.t.ppf(0.975, df)
                                   + stats.t.ppf(0.8, df)) * rows[f"{stat}_diff_se"])
        excludes = (rows[f"{stat}_diff_low"] > 0) | (rows[f"{stat}_diff_high"] < 0)
        assert ((rows[f"{stat}_diff_p"] < 1 - ci) == excludes).all()  # duality, row by row


def test_variant_table_adjusts_over_its_family():
    res = fake_results()
    table = variant_table(res, [0.8, 0.9], reference="steep", n_boot=200)
    for stat in ("dr", "dr_interp", "dr_chance"):
        _family_checks(table, stat)
        # the family: every row but the reference's own, per delta (2 variants x 2 datasets)
        assert table.loc[table["variant"] == "steep", f"{stat}_diff_p_holm"].isna().all()
        assert (table[f"{stat}_diff_family"].dropna() == 4).all()
    flat = table[(table["variant"] == "flat") & (table["delta"] == 0.9)]
    assert (flat["dr_diff_p_holm"] < 0.05).all() and (flat["dr_diff_adj_high"] < 0).all()


def test_task_table_adjusts_over_its_family():
    table = task_table(fake_results(2, harder=0.3), [0.8, 0.9], n_boot=200)
    for stat in ("k_star", "dr", "dr_interp", "dr_chance"):
        _family_checks(table, stat)
        assert (table[f"{stat}_diff_family"] == 3).all()  # steep, flat, steep [random]
