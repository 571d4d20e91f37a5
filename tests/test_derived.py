"""Derived tables on real (scikit-learn digits pixel) features: efficiency, fairness, nulls, adaptive."""

from __future__ import annotations

import numpy as np
import pytest

from drprobe.analysis.derived import analyze_with_nulls, null_inputs, refine_critical_fraction
from drprobe.analysis.layer import analyze_layer
from drprobe.metrics.fairness import gini
from drprobe.report.run_tables import efficiency_table, fairness_trend
from drprobe.sources.datasets import load_dataset

FRACTIONS = (0.05, 0.1, 0.25, 0.5, 1.0)


@pytest.fixture(scope="module")
def digits():
    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    flat = lambda ds: ds.images.reshape(len(ds.labels), -1).astype(np.float32) / 255
    return flat(tr), tr.labels, flat(te), te.labels


@pytest.fixture(scope="module")
def analysis(digits):
    Xtr, ytr, Xte, yte = digits
    return analyze_layer(Xtr, ytr, Xte, yte, selectors=("random", "pca_top"), fractions=FRACTIONS,
                         seeds=(1, 2), n_boot=50, progress=False)


def test_efficiency_table_frontier(analysis):
    table = efficiency_table(analysis.results)
    assert set(table["selector"]) == {"random", "pca_top"}
    row = table[(table["selector"] == "random") & (table["k"] == 64)].iloc[0]
    assert row["probe_params"] == 65 * 10 and row["inference_flops"] == 2 * 64 * 10
    pca = table[(table["selector"] == "pca_top") & (table["k"] == 3)].iloc[0]
    assert pca["inference_flops"] == 2 * 3 * 10 + 2 * 64 * 3
    front = table[table["on_frontier"]]
    # slow check: a frontier row is dominated by no row; every other row is dominated by one
    for _, r in table.iterrows():
        dominated = ((table["probe_params"] <= r["probe_params"]) & (table["test_acc"] >= r["test_acc"])
                     & ((table["probe_params"] < r["probe_params"]) | (table["test_acc"] > r["test_acc"])))
        assert dominated.any() != (r.name in front.index)


def test_fairness_trend_columns(analysis):
    trend = fairness_trend(analysis.results)
    assert list(trend["selector"]) == ["random", "pca_top"]
    rnd = analysis.results[analysis.results["selector"] == "random"]
    smallest = rnd[rnd["fraction"] == FRACTIONS[0]]
    full = rnd[rnd["fraction"] == 1.0]
    # digits: a random 3 pixels make some classes much worse than others
    assert smallest["gini"].mean() > full["gini"].mean()
    assert trend.iloc[0]["mean_rho"] < 0
    for g, accs in zip(rnd["gini"], rnd["per_class_acc"]):
        assert g == pytest.approx(gini(np.asarray(accs)))


def test_null_baselines_sit_at_chance(digits):
    Xtr, ytr, Xte, yte = digits
    out = analyze_with_nulls(Xtr, ytr, Xte, yte, fractions=(0.5, 1.0), seeds=(1,), n_boot=20,
                             progress=False)
    full = out.results[out.results["fraction"] == 1.0].set_index("baseline")["test_acc"]
    assert full["none"] > 0.9
    assert full["gaussian"] < 0.25 and full["shuffled_labels"] < 0.25
    g_tr, _, g_te = null_inputs("gaussian", Xtr, ytr, Xte, seed=3)
    assert g_tr.shape == Xtr.shape and g_te.shape == Xte.shape
    _, shuffled, _ = null_inputs("shuffled_labels", Xtr, ytr, Xte, seed=3)
    assert sorted(shuffled) == sorted(ytr) and (shuffled != ytr).mean() > 0.5
    with pytest.raises(Exception, match="gaussian, shuffled_labels"):
        null_inputs("uniform", Xtr, ytr, Xte)


@pytest.mark.slow  # one probe-bank fit per bisection step
def test_refine_critical_fraction_brackets_the_crossing(digits):
    Xtr, ytr, Xte, yte = digits
    out = refine_critical_fraction(Xtr, ytr, Xte, yte, delta=0.9, tol=0.02, seeds=(1, 2))
    assert out["converged"]
    assert out["f_star"] - out["f_low"] <= 0.02
    thr = 0.9 * out["full_acc"]
    scores = dict(zip(out["fractions"], out["scores"]))
    assert scores[out["f_star"]] >= thr
    assert all(s < thr for f, s in scores.items() if f < out["f_star"] and f >= out["f_low"])
