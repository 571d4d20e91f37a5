"""Sample-space probes, the streaming solver and the memory planner for wide layers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from drprobe.errors import InvalidValueError
from drprobe.features.views import RowView
from drprobe.probes import ProbeBank, sklearn_objective
from drprobe.selectors import SubsetFamily, resolve_ks
from drprobe.wide import ColumnReader, StreamingProbes, plan_memory
from drprobe.wide.dual_probe import sample_space_probes
from drprobe.wide.memory import GIB, bank_bytes, materialised_bytes, streaming_bank_limit

L2 = (1e-2, 1e-1)


def _task(n: int, d: int, n_classes: int = 3, seed: int = 0):
    """Labels from a few latent factors, features = noisy mixtures of them (plus offsets)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 6))
    y = np.argmax(latent[:, :n_classes] + 0.7 * rng.normal(size=(n, n_classes)), axis=1)
    X = latent @ rng.normal(size=(6, d)) + rng.normal(size=(n, d)) + rng.uniform(0, 3, d)
    return X.astype(np.float32), y


def _bank() -> ProbeBank:
    return ProbeBank(l2_grid=L2, max_steps=3000, tol=1e-7, dtype="float64", progress=False,
                     keep_proba=True, n_threads=1)


def test_sample_space_probe_equals_feature_space_probe(tmp_path):
    n_tr, n_va, n_te, d = 90, 40, 120, 260
    X, y = _task(n_tr + n_va + n_te, d)
    tr, va, te = np.arange(n_tr), np.arange(n_tr, n_tr + n_va), np.arange(n_tr + n_va, len(y))
    order = np.random.default_rng(5).permutation(d)
    ks = [40, 130, 260]  # below and above n_train
    fam = SubsetFamily("random", 5, ks, indices=order)
    want = _bank().fit(X[tr], y[tr], X[va], y[va], [fam]).evaluate(X[te], y[te])
    np.save(tmp_path / "X.npy", X)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    readers = [ColumnReader(Xm, rows=r, scratch_dir=tmp_path, in_memory_bytes=0)
               for r in (tr, va, te)]
    got = sample_space_probes(_bank(), readers[0], y[tr], readers[1], y[va], readers[2], y[te],
                              [("random", 5, order)], ks, block=17)
    assert [g.k for g in got] == ks
    for g, w in zip(got, want):
        assert abs(g.test_acc - w.test_acc) <= 0.003
        assert g.l2 == w.l2
        np.testing.assert_allclose(g.test_proba, w.test_proba, atol=1e-4)
        np.testing.assert_allclose(g.val_acc, w.val_acc, atol=1e-12)


def _sklearn_probe(Z: np.ndarray, y: np.ndarray, lam: float) -> LogisticRegression:
    model = LogisticRegression(C=1.0 / (lam * len(y)), tol=1e-10, max_iter=5000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(Z, y)


def _objective(logits: np.ndarray, y: np.ndarray, W: np.ndarray, lam: float) -> float:
    """mean cross-entropy + (lam / 2)·‖W‖², written out."""
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean() + 0.5 * lam * np.sum(W * W))


# float64 to a tight tolerance; float32 (the bank's default dtype) to the bank's default tol
@pytest.mark.parametrize("dtype, tol, rel, atol", [("float64", 1e-6, 1e-8, 5e-3),
                                                   ("float32", 1e-4, 1e-5, 2e-2)])
def test_streaming_probes_match_sklearn_and_the_bank(tmp_path, dtype, tol, rel, atol):
    n_tr, n_va, n_te, d = 160, 60, 100, 30
    X, y = _task(n_tr + n_va + n_te, d, seed=1)
    np.save(tmp_path / "X.npy", X)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    tr, va, te = np.arange(n_tr), np.arange(n_tr, n_tr + n_va), np.arange(n_tr + n_va, len(y))
    order = np.random.default_rng(2).permutation(d)
    ks = [5, 17, 30]
    fam = SubsetFamily("random", 2, ks, indices=order)
    sp = StreamingProbes(l2_grid=L2, tol=tol, max_passes=500, chunk_bytes=16_000, n_threads=1,
                         dtype=dtype)
    # the rows of one memmap, read in chunks of a few rows: many chunks per pass
    sp.fit(RowView(Xm, tr, None), y[tr], RowView(Xm, va, None), y[va], [fam])
    (fit,) = sp.fitted_
    assert fit.converged
    logits = sp.decision_function(RowView(Xm, te, None))
    X64 = X.astype(np.float64)
    for i, k in enumerate(ks):
        S = order[:k]
        mu, sd = X64[tr][:, S].mean(0), X64[tr][:, S].std(0)
        for j, lam in enumerate(L2):
            Z = (X64[tr][:, S] - mu) / sd
            ref = _sklearn_probe(Z, y[tr], lam)
            W = fit.coef[i][j].numpy().astype(np.float64)
            b = fit.intercept[i, j].numpy().astype(np.float64)
            assert sklearn_objective(ref, Z, y[tr], lam) == pytest.approx(
                _objective(Z @ W + b, y[tr], W, lam), rel=rel)
            want = ref.decision_function((X64[te][:, S] - mu) / sd)
            got = logits[i, j] - logits[i, j].mean(axis=1, keepdims=True)  # softmax shift
            np.testing.assert_allclose(got, want - want.mean(axis=1, keepdims=True), atol=atol)
    # fit + evaluate (λ selected on validation inside fit) against the bank on the same family
    got = sp.evaluate(Xm[n_tr + n_va:], y[te])
    bank = _bank().fit(X[tr], y[tr], X[va], y[va], [fam]).evaluate(X[te], y[te])
    assert [(g.selector, g.seed, g.k) for g in got] == [(b.selector, b.seed, b.k) for b in bank]
    for i, (g, b) in enumerate(zip(got, bank)):
        assert g.l2 == b.l2 == L2[fit.chosen[i]]
        assert g.val_acc == pytest.approx(b.val_acc, abs=1e-12)
        assert abs(g.test_acc - b.test_acc) <= 0.003
        assert g.n_steps == fit.n_passes
        z = logits[i, fit.chosen[i]]  # its test accuracy is the argmax of the chosen logits
        assert g.test_acc == float(np.mean(sp.classes_[z.argmax(1)] == y[te]))
        np.testing.assert_allclose(g.per_class_acc * np.bincount(y[te]) / len(te),
                                   [np.mean((z.argmax(1) == y[te]) & (y[te] == c))
                                    for c in range(3)], atol=1e-12)


def test_streaming_probes_train_each_family_as_alone_and_refuse_projections(tmp_path):
    X, y = _task(200, 24, seed=3)
    tr, va, te = np.arange(120), np.arange(120, 160), np.arange(160, 200)
    rng = np.random.default_rng(0)
    fams = [SubsetFamily("random", s, [4, 24], indices=rng.permutation(24), fractions=[0.2, 1])
            for s in (1, 2)]
    kw = {"l2_grid": L2, "tol": 1e-6, "max_passes": 200, "n_threads": 1}
    both = StreamingProbes(**kw).fit(X[tr], y[tr], X[va], y[va], fams).evaluate(X[te], y[te])
    alone = StreamingProbes(**kw).fit(X[tr], y[tr], X[va], y[va], fams[1:]).evaluate(X[te],
                                                                                     y[te])
    assert [(r.seed, r.k, r.fraction) for r in both] == [(1, 4, 0.2), (1, 24, 1.0),
                                                          (2, 4, 0.2), (2, 24, 1.0)]
    for a, b in zip(both[2:], alone):
        assert (a.l2, a.val_acc, a.test_acc, a.n_steps) == (b.l2, b.val_acc, b.test_acc,
                                                            b.n_steps)
    proj = SubsetFamily("pca_top", 0, [3], components=np.eye(24)[:, :3])
    with pytest.raises(InvalidValueError, match="projection.*coordinate families"):
        StreamingProbes(**kw).fit(X[tr], y[tr], X[va], y[va], [proj])
    with pytest.raises(InvalidValueError, match="not fitted"):
        StreamingProbes().evaluate(X[te], y[te])
    with pytest.raises(InvalidValueError, match="absent from y_train"):
        StreamingProbes(**kw).fit(X[tr], y[tr], X[va], y[va], fams[:1]).evaluate(
            X[te], np.full(len(te), 7))


def test_the_wide_paths_streaming_trainer_takes_the_banks_settings():
    bank = ProbeBank(l2_grid=(0.5, 2.0), tol=1e-3, max_steps=77, dtype="float64", n_threads=1,
                     keep_predictions=True, keep_proba=True)
    sp = StreamingProbes.from_bank(bank, progress=True, chunk_bytes=1000)
    assert sp.get_params() == {
        "l2_grid": (0.5, 2.0), "tol": 1e-3, "max_passes": 77, "dtype": "float64",
        "n_threads": 1, "keep_predictions": True, "keep_proba": True, "progress": True,
        "chunk_bytes": 1000}


def test_planner_picks_the_smaller_space_and_streams_when_neither_fits():
    small_d = plan_memory(n_train=5000, n_val=500, n_test=1000, d=256, n_classes=10,
                          selectors=["random", "pca_least"], budget_bytes=8 * GIB)
    assert [s.path for s in small_d.stages] == ["feature", "feature", "feature"]
    wide = plan_memory(n_train=4500, n_val=500, n_test=1000, d=200_704, n_classes=10,
                       selectors=["random", "pca_top"], budget_bytes=8 * GIB)
    assert [s.stage for s in wide.stages] == ["pca", "cka", "probes"]
    assert [s.path for s in wide.stages] == ["sample", "sample", "sample"]
    for s in wide.stages:  # the chosen path is the smaller one, and under the budget
        assert s.peak_bytes == min(s.sizes["feature"], s.sizes["sample"]) <= 8 * GIB
    # d above n_train but below n_test: the probes decide, CKA follows them
    near = plan_memory(n_train=900, n_val=100, n_test=5000, d=3000, n_classes=10,
                       budget_bytes=8 * GIB)
    assert near.path("probes") == near.path("cka") == "sample"
    both = plan_memory(n_train=27_000, n_val=3000, n_test=1000, d=25_088, n_classes=10,
                       budget_bytes=8 * GIB)
    assert both.path("probes") == "streaming"
    assert min(both.stages[-1].sizes["feature"], both.stages[-1].sizes["sample"]) > 8 * GIB
    assert "streaming first-order" in both.describe()


def test_streaming_plan_counts_the_banks_share_and_every_familys_columns():
    ks = resolve_ks(25_088)[0]
    kw = {"n_train": 27_000, "n_val": 3000, "n_test": 1000, "d": 25_088, "n_classes": 10,
          "ks": ks, "budget_bytes": 8 * GIB}
    limits = {}
    for n_families in (1, 3):
        limit = streaming_bank_limit(30_000, 1000, 10, 5, 8 * GIB, ks, n_families)
        share = materialised_bytes(30_000, 1000, limit, 10, 5, n_families)
        larger = min(k for k in ks if k > limit)  # the next size does not fit half the budget
        assert share <= 4 * GIB < materialised_bytes(30_000, 1000, larger, 10, 5, n_families)
        # the bank, plus each family's float32 columns and (several families) their copy
        per_value = 4 if n_families == 1 else 8
        assert share - bank_bytes(30_000, limit, 10, 5, n_families) == (
            per_value * n_families * 31_000 * limit)
        probes = plan_memory(**kw, n_families=n_families).stages[-1]
        assert probes.path == "streaming" and share <= probes.peak_bytes <= 8 * GIB
        limits[n_families] = limit
    assert 0 < limits[3] < limits[1]  # three seeds' columns leave the bank less room


def test_planner_refuses_on_one_line_naming_size_and_option():
    with pytest.raises(InvalidValueError) as err:
        plan_memory(n_train=4500, n_val=500, n_test=200_000, d=200_704, n_classes=10,
                    budget_bytes=8 * GIB)
    msg = str(err.value)
    assert "\n" not in msg and "memory_budget_gb" in msg and "'cka'" in msg and "GiB" in msg
    with pytest.raises(InvalidValueError, match="memory_budget_gb"):
        plan_memory(n_train=10, n_val=0, n_test=10, d=10, n_classes=2, budget_bytes=0)


def test_planner_sample_space_size_grows_with_n_not_d():
    a = plan_memory(n_train=1000, n_val=100, n_test=200, d=100_000, n_classes=5,
                    budget_bytes=64 * GIB)
    b = plan_memory(n_train=1000, n_val=100, n_test=200, d=400_000, n_classes=5,
                    budget_bytes=64 * GIB)
    assert a.path("cka") == b.path("cka") == "sample"
    assert a.stages[0].peak_bytes == b.stages[0].peak_bytes
