"""The one DR-from-results function (analysis.summary.summarize) against the metric functions
called directly, and the small shared pieces: apply_basis, resolve_device, headline selector."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from drprobe.analysis.summary import summarize
from drprobe.devices import resolve_device
from drprobe.errors import InvalidValueError
from drprobe.metrics.redundancy import bootstrap_dr, dr_summary
from drprobe.probes.design import Basis
from drprobe.selectors import SELECTORS, apply_basis, headline_selector, make_family

FRACTIONS, D, SEEDS, N_TEST = (0.1, 0.5, 1.0), 10, (1, 2), 40


def fake_results(job: str, seed0: int) -> tuple[pd.DataFrame, dict]:
    """Per-probe rows of one job (selectors pca_top then random) and their test correctness."""
    rng = np.random.default_rng(seed0)
    rows, correct = [], {}
    for sel in ("pca_top", "random"):
        for seed in (SEEDS if sel == "random" else (0,)):
            for f in FRACTIONS:
                k = max(1, int(f * D))
                hits = rng.random(N_TEST) < 0.4 + 0.5 * f
                correct[(sel, seed, k)] = hits
                rows.append({"model": "m", "weights": job, "layer": "l", "dataset": "x",
                             "selector": sel, "seed": seed, "fraction": f, "k": k, "d": D,
                             "test_acc": hits.mean(), "cka": f ** 0.5})
    return pd.DataFrame(rows), correct


def test_summary_equals_the_metric_functions():
    results, correct = fake_results("a", 0)
    out = summarize(results, correct, deltas=(0.8, 0.9), n_boot=60)
    random = results[results["selector"] == "random"]
    full_acc = random.loc[random["k"] == D, "test_acc"].mean()  # the headline selector's
    assert out["full_acc"].tolist() == pytest.approx([full_acc] * 4)
    for sel, rows in results.groupby("selector", sort=False):
        curve = rows.pivot_table(index="seed", columns="fraction", values="test_acc")
        ks = [max(1, int(f * D)) for f in FRACTIONS]
        want = dr_summary(FRACTIONS, ks, curve.to_numpy(), full_acc, deltas=(0.8, 0.9))
        got = out[out["selector"] == sel]
        assert got["dr"].tolist() == pytest.approx([w["dr"] for w in want], nan_ok=True)
        assert got["k_star"].tolist() == pytest.approx(
            [np.nan if w["k_star"] is None else w["k_star"] for w in want], nan_ok=True)
        seeds = list(curve.index)
        grid = np.stack([np.stack([correct[(sel, s, k)] for k in ks]) for s in seeds])
        full = np.stack([correct[("random", s, D)] for s in SEEDS])
        ci = bootstrap_dr(grid, full, FRACTIONS, 0.9, n_boot=60)
        row = got[got["delta"] == 0.9].iloc[0]
        assert (row["dr_low"], row["dr_high"]) == pytest.approx((ci["low"], ci["high"]))


def test_summary_by_job_has_no_interval_and_one_block_per_job():
    a, _ = fake_results("a", 0)
    b, _ = fake_results("b", 1)
    both = summarize(pd.concat([a, b], ignore_index=True), by=["weights"], deltas=(0.9,))
    alone = summarize(b, deltas=(0.9,))
    assert both["weights"].tolist() == ["a", "a", "b", "b"]
    assert both["dr_low"].isna().all() and both["dr_high"].isna().all()
    pd.testing.assert_frame_equal(both[both["weights"] == "b"].drop(columns="weights")
                                  .reset_index(drop=True), alone, check_dtype=False)


def test_headline_selector_and_seeded_flags():
    assert headline_selector(["pca_top", "random"]) == "random"
    assert headline_selector(["pca_top", "variance"]) == "pca_top"
    seeded = {name for name, cls in SELECTORS.items() if cls.seeded}
    assert seeded == {"random", "randproj_uniform", "randproj_gauss"}
    X = np.random.default_rng(0).normal(size=(50, 8))
    for name in ("random", "randproj_gauss", "pca_top", "prefix"):  # seeded ⇔ depends on seed
        one, two = (make_family(name, X, [3], seed=s) for s in (1, 2))
        basis = (lambda f: f.indices) if one.indices is not None else (lambda f: f.components)
        assert (not np.array_equal(basis(one), basis(two))) == SELECTORS[name].seeded


@pytest.mark.parametrize("name", ["random", "pca_top", "randproj_uniform"])
def test_one_map_for_numpy_torch_and_the_estimators(name):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 12))
    fam = make_family(name, X, [2, 5], seed=3)
    est = SELECTORS[name](n_components=5, random_state=3).fit(X)
    np.testing.assert_allclose(fam.transform(X, 5), est.transform(X))
    slow = X[:, fam.indices[:5]] if fam.indices is not None else \
        (X - (0 if fam.mean is None else fam.mean)) @ fam.components[:, :5]
    np.testing.assert_allclose(fam.transform(X, 5), slow)
    basis = Basis(fam, torch.device("cpu"), torch.float64, m=5)
    np.testing.assert_allclose(basis(torch.as_tensor(X)).numpy(), slow)
    np.testing.assert_allclose(apply_basis(X, indices=[0, 3]), X[:, [0, 3]])


def test_resolve_device():
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InvalidValueError, match="'mps' serves feature extraction only"):
        resolve_device("mps", mps=False)  # banks: CPU or CUDA only
    auto = resolve_device("auto", mps=False)
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InvalidValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidValueError, match="no CUDA"):
            resolve_device("cuda")
    else:
        assert resolve_device("cuda").index == torch.cuda.current_device()
