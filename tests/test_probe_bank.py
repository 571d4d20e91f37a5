"""Probe bank vs scikit-learn, direct formulas and slow one-probe-at-a-time paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, make_classification
from sklearn.linear_model import LogisticRegression

from drprobe.errors import InvalidValueError
from drprobe.probes import ProbeBank, sklearn_objective, sklearn_probe
from drprobe.selectors import SubsetFamily

GRID = (1e-3, 1e-2, 1e-1, 1.0)


def split(X: np.ndarray, y: np.ndarray, n_train: int, n_val: int, seed: int = 0):
    order = np.random.default_rng(seed).permutation(len(y))
    X, y = X[order].astype(np.float32), y[order]
    a, b = n_train, n_train + n_val
    return X[:a], y[:a], X[a:b], y[a:b], X[b:], y[b:]


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return split(X, y, 900, 300)


@pytest.fixture(scope="module")
def synth():
    X, y = make_classification(n_samples=900, n_features=24, n_informative=10, n_redundant=6,
                               n_classes=4, n_clusters_per_class=1, class_sep=0.8,
                               random_state=3)
    return split(X * 3.0 + 1.0, y + 10, 500, 200)  # non-zero mean, labels not 0..C-1


def coordinate(seed: int, ks: list[int], d: int = 64) -> SubsetFamily:
    max_k = ks[-1]
    idx = np.random.default_rng(seed).permutation(d)[:max_k]
    return SubsetFamily(selector="random", seed=seed, ks=ks, indices=idx)


def projection(d: int, m: int, ks: list[int], seed: int = 7, mean=None) -> SubsetFamily:
    comp = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, m)))[0]
    return SubsetFamily(selector="randproj_gauss", seed=seed, ks=ks, components=comp, mean=mean)


def standardized(fam: SubsetFamily, k: int, X_train: np.ndarray, *Xs: np.ndarray):
    Z = fam.transform(X_train.astype(np.float64), k)
    mean, sd = Z.mean(0), Z.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    return [(fam.transform(X.astype(np.float64), k) - mean) / sd for X in (X_train, *Xs)]


def bank_objective(coef: torch.Tensor, Z: np.ndarray, y_idx: np.ndarray, lam: float) -> float:
    W = coef.double().numpy()
    logits = Z @ W[1:] + W[0]
    logits -= logits.max(1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return float(-logp[np.arange(len(y_idx)), y_idx].mean() + 0.5 * lam * np.sum(W[1:] ** 2))


# ----------------------------------------------------------------------- agreement with sklearn
@pytest.mark.parametrize("data", ["digits", "synth"])
def test_every_probe_matches_sklearn_reference(data, request):
    Xtr, ytr, Xva, yva, Xte, yte = request.getfixturevalue(data)
    d = Xtr.shape[1]
    ks = [2, 5, 12, 30, d] if d == 64 else [1, 3, 8, d]
    fams = [coordinate(s, ks, d) for s in (1, 2)]
    fams.append(projection(d, ks[-2], ks[:-1], mean=Xtr.mean(0)))
    bank = ProbeBank(l2_grid=GRID, tol=1e-4, progress=False).fit(Xtr, ytr, Xva, yva, fams)
    results = bank.evaluate(Xte, yte)
    assert len(results) == sum(len(f.ks) for f in fams)
    diffs = []
    for (i, _, _), r in zip(bank.plan_.requests, results):
        fam = fams[i]
        Zs = [fam.transform(X, r.k) for X in (Xtr, Xva, Xte)]
        ref = sklearn_probe(Zs[0], ytr, Zs[1], yva, Zs[2], yte, GRID)
        assert abs(r.test_acc - ref["test_acc"]) <= 0.01, (fam.selector, fam.seed, r.k)
        diffs.append(abs(r.test_acc - ref["test_acc"]))
        assert r.selector == fam.selector and r.seed == fam.seed
    assert np.mean(diffs) < 0.005


def test_converged_objective_equals_sklearn_optimum(digits):
    Xtr, ytr, Xva, yva, _, _ = digits
    fams = [coordinate(4, [10, 40]), projection(64, 20, [20], mean=Xtr.mean(0))]
    for lam in (1e-3, 1e-1):
        bank = ProbeBank(l2_grid=(lam,), dtype="float64", tol=1e-8, max_steps=3000,
                         progress=False).fit(Xtr, ytr, Xva, yva, fams)
        for c, k in [(0, 10), (0, 40), (1, 20)]:
            (Z,) = standardized(fams[c], k, Xtr)
            model = LogisticRegression(C=1 / (lam * len(ytr)), tol=1e-10, max_iter=20000)
            model.fit(Z, ytr)
            f_sk = sklearn_objective(model, Z, ytr, lam)
            coef = bank.fitted_[(c, k)].coef
            f_bank = bank_objective(coef, Z, np.searchsorted(bank.classes_, ytr), lam)
            assert abs(f_bank - f_sk) < 1e-8 * max(1.0, f_sk), (lam, c, k)
            # the penalised weights are unique at the optimum
            np.testing.assert_allclose(coef[1:].numpy(), model.coef_.T, atol=2e-4)


def test_refit_solves_train_plus_val_objective(synth):
    Xtr, ytr, Xva, yva, _, _ = synth
    fam = coordinate(0, [6, 24], 24)
    bank = ProbeBank(l2_grid=GRID, refit=True, dtype="float64", tol=1e-8, max_steps=3000,
                     progress=False).fit(Xtr, ytr, Xva, yva, [fam])
    plain = ProbeBank(l2_grid=GRID, dtype="float64", tol=1e-8, max_steps=3000,
                      progress=False).fit(Xtr, ytr, Xva, yva, [fam])
    for k in fam.ks:
        fit = bank.fitted_[(0, k)]
        assert fit.l2 == plain.fitted_[(0, k)].l2 and fit.val_acc == plain.fitted_[(0, k)].val_acc
        Z, Zv = standardized(fam, k, Xtr, Xva)  # refit keeps the training statistics
        Zall, yall = np.vstack([Z, Zv]), np.concatenate([ytr, yva])
        model = LogisticRegression(C=1 / (fit.l2 * len(yall)), tol=1e-10, max_iter=20000)
        model.fit(Zall, yall)
        f_bank = bank_objective(fit.coef, Zall, np.searchsorted(bank.classes_, yall), fit.l2)
        assert abs(f_bank - sklearn_objective(model, Zall, yall, fit.l2)) < 1e-8


# ------------------------------------------------------------------------- model selection
def test_chosen_l2_is_best_validation_accuracy(digits):
    Xtr, ytr, Xva, yva, _, _ = digits
    fams = [coordinate(s, [3, 8, 20]) for s in (5, 6)]
    kw = {"dtype": "float64", "tol": 1e-7, "max_steps": 2000, "progress": False}
    bank = ProbeBank(l2_grid=GRID, **kw).fit(Xtr, ytr, Xva, yva, fams)
    single = {lam: ProbeBank(l2_grid=(lam,), **kw).fit(Xtr, ytr, Xva, yva, fams)
              for lam in GRID}
    for uid, fit in bank.fitted_.items():
        accs = [single[lam].fitted_[uid].val_acc for lam in GRID]
        np.testing.assert_allclose(fit.val_accs, accs)
        best = max(a for a in accs)
        expected = max(lam for lam, a in zip(GRID, accs) if a == best)  # ties -> larger lam
        assert fit.l2 == pytest.approx(expected) and fit.val_acc == best


def test_tie_rule_in_reference_prefers_larger_l2():
    Z = np.array([[0.0], [1.0], [2.0], [3.0]])
    y = np.array([0, 0, 1, 1])
    ref = sklearn_probe(Z, y, Z, y, Z, y, (1e-3, 1e-2))  # both separate the 4 points
    assert ref["val_accs"].tolist() == [1.0, 1.0] and ref["l2"] == 1e-2


def test_batched_nested_bank_equals_one_probe_alone(digits):
    Xtr, ytr, Xva, yva, Xte, yte = digits
    kw = {"l2_grid": GRID, "dtype": "float64", "tol": 1e-8, "max_steps": 3000, "progress": False}
    fams = [coordinate(s, [2, 9, 25, 40]) for s in (1, 2, 3)]
    fams.append(projection(64, 30, [4, 30]))
    big = ProbeBank(**kw).fit(Xtr, ytr, Xva, yva, fams)
    big_res = big.evaluate(Xte, yte)
    for fi, k in [(1, 25), (3, 30), (0, 2)]:
        fam = fams[fi]
        sub = {"indices": fam.indices, "components": fam.components, "mean": fam.mean}
        alone_fam = SubsetFamily(fam.selector, fam.seed, [k], **sub)
        alone = ProbeBank(**kw).fit(Xtr, ytr, Xva, yva, [alone_fam])
        (r,) = alone.evaluate(Xte, yte)
        j = next(n for n, (i, _, _) in enumerate(big.plan_.requests)
                 if i == fi and big_res[n].k == k)
        assert r.l2 == big_res[j].l2 and r.val_acc == big_res[j].val_acc
        assert r.test_acc == big_res[j].test_acc
        np.testing.assert_allclose(alone.fitted_[(0, k)].coef, big.fitted_[(fi, k)].coef,
                                   atol=1e-4)


def test_memory_groups_and_dedupe_do_not_change_results(digits):
    Xtr, ytr, Xva, yva, Xte, yte = digits
    fams = [coordinate(1, [5, 64]), coordinate(2, [5, 64]), coordinate(1, [5, 64])]
    kw = {"l2_grid": GRID, "progress": False}
    a = ProbeBank(**kw).fit(Xtr, ytr, Xva, yva, fams)
    b = ProbeBank(max_memory_gb=1e-6, **kw).fit(Xtr, ytr, Xva, yva, fams)
    c = ProbeBank(dedupe=False, **kw).fit(Xtr, ytr, Xva, yva, fams)
    ra, rb, rc = (m.evaluate(Xte, yte) for m in (a, b, c))
    # family 2 is family 0 again; k = 64 is the same full set for every permutation
    assert len(a.fitted_) == 3 and len(c.fitted_) == 6
    assert [r.test_acc for r in ra] == [r.test_acc for r in rb]
    assert ra[4].test_acc == ra[0].test_acc and ra[5].test_acc == ra[1].test_acc
    assert ra[3].test_acc == ra[1].test_acc  # set-equal coordinate subsets share one probe
    assert ra[1].fit_seconds == pytest.approx(ra[3].fit_seconds)
    for x, z in zip(ra, rc):
        assert abs(x.test_acc - z.test_acc) <= 0.01


# ----------------------------------------------------------------------- outputs and inputs
def test_determinism_outputs_and_float16_memmap(digits, tmp_path):
    Xtr, ytr, Xva, yva, Xte, yte = digits
    fams = [coordinate(3, [4, 16, 64]), projection(64, 16, [8, 16], mean=Xtr.mean(0))]
    fams[0].fractions = [4 / 64, 0.25, 1.0]
    kw = {"l2_grid": GRID, "keep_predictions": True, "keep_proba": True, "progress": False}
    r1 = ProbeBank(**kw).fit(Xtr, ytr, Xva, yva, fams).evaluate(Xte, yte)
    r2 = ProbeBank(**kw).fit(Xtr, ytr, Xva, yva, fams).evaluate(Xte, yte)
    for a, b in zip(r1, r2):
        np.testing.assert_array_equal(a.test_proba, b.test_proba)
        assert a.l2 == b.l2 and a.n_steps == b.n_steps
    assert [r.fraction for r in r1] == [4 / 64, 0.25, 1.0, None, None]
    classes = np.unique(ytr)
    for r in r1:
        np.testing.assert_allclose(r.test_proba.sum(1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(r.test_pred, classes[r.test_proba.argmax(1)])
        direct = [np.mean(r.test_pred[yte == c] == c) for c in classes]
        np.testing.assert_allclose(r.per_class_acc, direct)
        assert r.test_acc == pytest.approx(np.mean(r.test_pred == yte))
        assert r.n_steps >= 1 and r.fit_seconds > 0

    paths = {}
    for name, X in [("tr", Xtr), ("va", Xva), ("te", Xte)]:
        np.save(tmp_path / f"{name}.npy", X.astype(np.float16))
        paths[name] = np.load(tmp_path / f"{name}.npy", mmap_mode="r")
    m = ProbeBank(**kw).fit(paths["tr"], ytr, paths["va"], yva, fams)
    mem = m.evaluate(paths["te"], yte)
    half = [X.astype(np.float16).astype(np.float32) for X in (Xtr, Xva, Xte)]
    dense = ProbeBank(**kw).fit(half[0], ytr, half[1], yva, fams).evaluate(half[2], yte)
    for a, b in zip(mem, dense):
        np.testing.assert_array_equal(a.test_proba, b.test_proba)
    proba = m.predict_proba(paths["te"], 1, 8)
    np.testing.assert_allclose(proba, mem[3].test_proba, rtol=1e-6)


def test_thread_setting_is_applied_and_restored(synth):
    Xtr, ytr, Xva, yva, Xte, yte = synth
    fams = [coordinate(0, [4, 24], 24)]
    before = torch.get_num_threads()
    kw = {"l2_grid": GRID, "dtype": "float64", "progress": False}
    one = ProbeBank(n_threads=1, **kw).fit(Xtr, ytr, Xva, yva, fams)
    assert torch.get_num_threads() == before
    ref = ProbeBank(**kw).fit(Xtr, ytr, Xva, yva, fams)
    for a, b in zip(one.evaluate(Xte, yte), ref.evaluate(Xte, yte)):
        assert a.l2 == b.l2 and a.test_acc == b.test_acc


def test_per_class_accuracy_is_nan_for_classes_absent_from_test(synth):
    Xtr, ytr, Xva, yva, Xte, yte = synth
    keep = yte != 12
    bank = ProbeBank(l2_grid=GRID, progress=False).fit(Xtr, ytr, Xva, yva,
                                                      [coordinate(0, [5], 24)])
    (r,) = bank.evaluate(Xte[keep], yte[keep])
    assert np.isnan(r.per_class_acc[2]) and np.isfinite(r.per_class_acc[[0, 1, 3]]).all()


def _one_line_error(fn) -> str:
    with pytest.raises(InvalidValueError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg and msg
    return msg


def test_bad_inputs_raise_one_line_errors(digits):
    Xtr, ytr, Xva, yva, Xte, yte = digits
    fam = [coordinate(0, [3, 10])]
    bank = ProbeBank(progress=False)
    assert "y_train" in _one_line_error(lambda: bank.fit(Xtr, ytr[:-1], Xva, yva, fam))
    assert "empty" in _one_line_error(lambda: bank.fit(Xtr, ytr, Xva, yva, []))
    wide = SubsetFamily("random", 0, ks=[3, 70], indices=np.arange(64))
    assert "k=70" in _one_line_error(lambda: bank.fit(Xtr, ytr, Xva, yva, [wide]))
    outside = SubsetFamily("random", 0, ks=[3], indices=np.array([0, 1, 64]))
    assert "indices" in _one_line_error(lambda: bank.fit(Xtr, ytr, Xva, yva, [outside]))
    bad = Xtr.copy()
    bad[5, 3] = np.nan
    assert "NaN" in _one_line_error(lambda: bank.fit(bad, ytr, Xva, yva, fam))
    assert "X_val" in _one_line_error(lambda: bank.fit(Xtr, ytr, Xva[:, :10], yva, fam))
    assert "dtype" in _one_line_error(
        lambda: ProbeBank(dtype="int8").fit(Xtr, ytr, Xva, yva, fam))
    assert "l2_grid" in _one_line_error(
        lambda: ProbeBank(l2_grid=(0.0, 1.0)).fit(Xtr, ytr, Xva, yva, fam))
    assert "not fitted" in _one_line_error(lambda: ProbeBank().evaluate(Xte, yte))
    fitted = ProbeBank(l2_grid=(0.1,), progress=False).fit(Xtr, ytr, Xva, yva, fam)
    assert "k=4" in _one_line_error(lambda: fitted.predict_proba(Xte, 0, 4))
    assert "y_test" in _one_line_error(lambda: fitted.evaluate(Xte, yte + 100))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(digits):
    Xtr, ytr, Xva, yva, Xte, yte = digits
    fams = [coordinate(s, [4, 20, 64]) for s in (1, 2)] + [projection(64, 12, [12])]
    kw = {"l2_grid": GRID, "progress": False, "dtype": "float64", "tol": 1e-7, "max_steps": 2000}
    cpu = ProbeBank(**kw).fit(Xtr, ytr, Xva, yva, fams).evaluate(Xte, yte)
    gpu = ProbeBank(device="cuda", **kw).fit(Xtr, ytr, Xva, yva, fams).evaluate(Xte, yte)
    for a, b in zip(cpu, gpu):
        assert a.l2 == b.l2 and abs(a.test_acc - b.test_acc) <= 0.005
