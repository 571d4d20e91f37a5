"""A whole wide layer in sample space / streaming against the feature-space path."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import relu_task

from drprobe.errors import InvalidValueError
from drprobe.metrics import CrossProductStats, debiased_linear_cka
from drprobe.probes import ProbeBank
from drprobe.selectors import make_family, resolve_ks
from drprobe.wide.layer import analyze_wide

L2 = (1e-2, 1e-1)


def _bank() -> ProbeBank:
    return ProbeBank(l2_grid=L2, max_steps=3000, tol=1e-7, dtype="float64", progress=False,
                     keep_predictions=True, n_threads=1)


@pytest.mark.parametrize("path", ["sample", pytest.param("streaming", marks=pytest.mark.slow)])
def test_wide_layer_equals_feature_space(tmp_path, path):
    n_all, n_te, d = 140, 90, 220
    X, y = relu_task(n_all + n_te, d)
    np.save(tmp_path / "tr.npy", X[:n_all])
    np.save(tmp_path / "te.npy", X[n_all:])
    Xtr_m, Xte_m = (np.load(tmp_path / f, mmap_mode="r") for f in ("tr.npy", "te.npy"))
    ytr_all, yte = y[:n_all], y[n_all:]
    va = np.arange(0, n_all, 4)
    tr = np.setdiff1d(np.arange(n_all), va)
    ks, fr = resolve_ks(d, [0.05, 0.3, 0.7, 1.0])
    budget = 2**22 if path == "streaming" else 2**34  # streaming: a tiny budget
    got = analyze_wide(Xtr_m, ytr_all, Xte_m, yte, tr, va,
                       selectors=["random", "variance", "pca_top", "randproj_uniform"],
                       ks=ks, fractions=fr, seeds=[1, 2], bank=_bank(), probes_path=path,
                       budget_bytes=budget, block=31, scratch_dir=tmp_path)
    large = [k for k in ks if k > len(tr)] if path == "sample" else ks[-2:]
    assert got.routes[path] == large and large
    # the feature-space reference: the same families through the bank and the moment CKA
    Xtr, Xva, Xte = X[:n_all][tr], X[:n_all][va], X[n_all:]
    stats = CrossProductStats.from_array(Xte)
    fams = [make_family(sel, Xtr, ks, seed=s, fractions=fr)
            for sel in ("random", "randproj_uniform") for s in (1, 2)]
    fams.append(make_family("variance", Xtr, ks, fractions=fr))
    pca_ks = [k for k in ks if k < len(tr) - 1]
    fams.append(make_family("pca_top", Xtr, pca_ks, fractions=fr[: len(pca_ks)]))
    want = _bank().fit(Xtr, ytr_all[tr], Xva, ytr_all[va], fams).evaluate(Xte, yte)
    by_key = {(p.selector, p.seed, p.k): p for p in got.probes}
    for fam in fams:
        lin = dict(zip(fam.ks, stats.family_cka(fam)))
        for k in fam.ks:
            assert got.cka[(fam.selector, fam.seed)][k] == pytest.approx(lin[k], abs=1e-6)
    if path == "sample":  # debiased CKA of coordinate subsets, exact from the moments too
        for fam in (fams[0], fams[4]):
            deb = stats.subset_cka_debiased([fam.indices[:k] for k in ks])
            np.testing.assert_allclose(
                [got.cka_debiased[(fam.selector, fam.seed)][k] for k in ks], deb, atol=1e-6)
        proj = fams[2]  # debiased CKA of a projection, directly from the features
        for k in ks:
            want_deb = debiased_linear_cka(Xte, proj.transform(Xte, k))
            assert got.cka_debiased[("randproj_uniform", 1)][k] == pytest.approx(want_deb,
                                                                                abs=1e-6)
    for w in want:
        g = by_key[(w.selector, w.seed, w.k)]
        assert abs(g.test_acc - w.test_acc) <= 0.003, (w.selector, w.k)
        assert g.fraction == pytest.approx(w.fraction)
    assert by_key[("pca_top", 0, len(tr) - 1)].fraction == pytest.approx((len(tr) - 1) / d)


def test_wide_layer_refuses_selectors_without_a_sample_space_path():
    X, y = relu_task(30, 50)
    with pytest.raises(InvalidValueError, match="'greedy' has no sample-space path: its exact "
                       "scores need .*; valid choices here: random, prefix"):
        analyze_wide(X, y, X, y, np.arange(20), np.arange(20, 30), selectors=["greedy"],
                     ks=[5, 50], fractions=[0.1, 1.0], seeds=[1], bank=_bank(),
                     probes_path="sample", budget_bytes=2**30)


def test_analyze_layer_routes_wide_layers_through_sample_space(tmp_path):
    from drprobe.analysis.layer import analyze_layer

    X, y = relu_task(260, 700, seed=3)
    res = analyze_layer(X[:180], y[:180], X[180:], y[180:], selectors=["random", "pca_least"],
                        fractions=[0.01, 0.1, 0.5], seeds=[1, 2], bank=_bank(), n_boot=20,
                        progress=False, scratch_dir=str(tmp_path))
    assert res.plan.path("probes") == "sample" and res.plan.path("cka") == "sample"
    rnd = res.results[res.results["selector"] == "random"]
    assert sorted(set(rnd["k"])) == [7, 70, 350, 700] and set(rnd["seed"]) == {1, 2}
    assert np.allclose(rnd[rnd["k"] == 700]["cka"], 1.0)
    least = res.results[res.results["selector"] == "pca_least"]
    assert least["k"].max() == res.results["n_train"].iloc[0] - 1  # the non-null rank
    assert set(res.summary["selector"]) == {"random", "pca_least"}


def test_analyze_layer_refuses_over_budget_before_any_work():
    from drprobe.analysis.layer import analyze_layer

    X, y = relu_task(120, 300)
    with pytest.raises(InvalidValueError, match="memory_budget_gb"):
        analyze_layer(X[:80], y[:80], X[80:], y[80:], memory_budget_gb=1e-6, progress=False)


@pytest.mark.slow
def test_resnet50_middle_dry_run_lists_the_papers_17_layers_with_widths_and_paths(
        tmp_path, capsys):
    from pathlib import Path

    from drprobe.cli import main

    config = Path(__file__).resolve().parents[1] / "configs" / "paper" / "resnet50-middle.yaml"
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if "-cifar10-" in line]
    assert len(rows) == 17 and not out.exists()
    widths = {"layer1.0": 256 * 56 * 56, "layer2.3": 512 * 28 * 28, "layer3.5": 1024 * 14 * 14,
              "layer4.2": 2048 * 7 * 7, "avgpool": 2048}
    for layer, d in widths.items():
        (row,) = [r for r in rows if r.split()[1].endswith(f"-{layer}")]
        assert f"d={d:,}" in row
        assert ("probes: sample space" in row) == (d > 5000)  # wider than the training rows


def test_projected_rows_in_scratch_files_equal_in_memory(tmp_path, monkeypatch):
    X, y = relu_task(90, 60, seed=3)
    ks, fr = resolve_ks(60, [0.1, 0.5, 1.0])
    args = (X[:60], y[:60], X[60:], y[60:], np.arange(40), np.arange(40, 60))
    kw = {"selectors": ["randproj_gauss"], "ks": ks, "fractions": fr, "seeds": [4],
          "bank": _bank(), "probes_path": "sample", "budget_bytes": 2**30, "block": 7,
          "scratch_dir": tmp_path}
    memory = analyze_wide(*args, **kw)
    monkeypatch.setattr("drprobe.wide.layer.IN_MEMORY_BYTES", 0)
    scratch = analyze_wide(*args, **kw)
    assert memory.cka == scratch.cka and len(memory.probes) == len(ks)
    assert [p.test_acc for p in memory.probes] == [p.test_acc for p in scratch.probes]
    assert not list(tmp_path.glob("drprobe-projected-*"))  # scratch files removed
