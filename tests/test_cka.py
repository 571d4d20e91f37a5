"""Linear / debiased CKA: known values, invariances, and fast paths against slow direct ones."""

from __future__ import annotations

import numpy as np
import pytest
from cka_reference import debiased_cka_gram
from scipy.stats import ortho_group

from drprobe.errors import InvalidValueError
from drprobe.metrics.cka import debiased_linear_cka, linear_cka
from drprobe.metrics.cka_stats import CrossProductStats
from drprobe.selectors import SubsetFamily, make_family


def _features(n: int = 120, d: int = 16, seed: int = 0, offset: float = 4.0) -> np.ndarray:
    """Correlated, non-centred features (n, d) with an uneven spectrum."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, d)) * np.linspace(3.0, 0.2, d)
    return Z @ rng.normal(size=(d, d)) + offset


def _slow_linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Kornblith et al.'s definition via explicitly centred n×n Grams, HSIC = tr(KHLH)."""
    n = X.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    K, L = H @ X @ X.T @ H, H @ Y @ Y.T @ H
    return float(np.trace(K @ L) / np.sqrt(np.trace(K @ K) * np.trace(L @ L)))


def _subsets(d: int, rng: np.random.Generator, sizes=(1, 2, 5, 9, 16)) -> list[np.ndarray]:
    return [rng.choice(d, size=s, replace=False) for s in sizes]


# ----------------------------------------------------------------------------- functional


@pytest.mark.parametrize("fn", [linear_cka, debiased_linear_cka])
def test_self_similarity_is_one(fn):
    X = _features()
    assert fn(X, X) == pytest.approx(1.0, abs=1e-12)


def test_linear_cka_matches_gram_definition_both_shapes():
    X = _features(n=60, d=10)
    Y = X[:, :4] ** 2
    assert linear_cka(X, Y) == pytest.approx(_slow_linear_cka(X, Y), abs=1e-12)
    Xw = _features(n=12, d=40, seed=1)  # n < d: Gram form is chosen
    Yw = np.sin(Xw[:, :30])
    assert linear_cka(Xw, Yw) == pytest.approx(_slow_linear_cka(Xw, Yw), abs=1e-12)


@pytest.mark.parametrize("n,d", [(50, 8), (10, 30)])
def test_debiased_matches_literal_gram_reference(n, d):
    X = _features(n=n, d=d, seed=2)
    Y = np.tanh(X[:, : d // 2]) + 0.3
    assert debiased_linear_cka(X, Y) == pytest.approx(debiased_cka_gram(X, Y), abs=1e-10)


@pytest.mark.parametrize("fn", [linear_cka, debiased_linear_cka])
def test_invariant_to_orthogonal_maps_and_isotropic_scaling(fn):
    X = _features(n=80, d=12, seed=3)
    Y = np.abs(X[:, :7]) + X[:, 7:].sum(axis=1, keepdims=True)
    Q1 = ortho_group.rvs(12, random_state=1)
    Q2 = ortho_group.rvs(7, random_state=2)
    base = fn(X, Y)
    assert fn(X @ Q1, Y @ Q2) == pytest.approx(base, abs=1e-10)
    assert fn(2.5 * X, 0.01 * Y) == pytest.approx(base, abs=1e-10)
    assert fn(X + 7.0, Y - 3.0) == pytest.approx(base, abs=1e-10)


@pytest.mark.parametrize("fn", [linear_cka, debiased_linear_cka])
def test_symmetric_and_bounded(fn):
    rng = np.random.default_rng(4)
    for trial in range(5):
        X = rng.normal(size=(40, 6))
        Y = rng.normal(size=(40, 3)) + (X[:, :3] if trial % 2 else 0.0)
        a, b = fn(X, Y), fn(Y, X)
        assert a == pytest.approx(b, abs=1e-12)
        if fn is linear_cka:
            assert 0.0 <= a <= 1.0
        else:  # the debiased estimate may dip slightly below 0 for independent data
            assert -0.2 <= a <= 1.0


def test_cka_accepts_low_precision_and_rejects_bad_shapes():
    X = _features().astype(np.float16)
    assert linear_cka(X, X[:, :3]) == pytest.approx(
        linear_cka(X.astype(np.float64), X[:, :3].astype(np.float64)), abs=1e-12
    )
    with pytest.raises(InvalidValueError, match="same number of rows"):
        linear_cka(X, X[:5])
    with pytest.raises(InvalidValueError, match="2-D"):
        linear_cka(X[:, 0], X)
    with pytest.raises(InvalidValueError, match="at least 4"):
        debiased_linear_cka(X[:3], X[:3])
    assert np.isnan(linear_cka(np.ones((10, 3)), X[:10]))


# ----------------------------------------------------------------------------- accumulator


def test_accumulator_batches_equal_one_shot_and_direct_moments():
    X32 = _features(n=203, d=9, seed=5).astype(np.float32)  # float32 input, float64 inside
    X = X32.astype(np.float64)
    one = CrossProductStats().update(X)
    many = CrossProductStats.from_array(X32, batch_size=17)
    Xc = X - X.mean(axis=0)
    assert one.n == many.n == 203
    np.testing.assert_allclose(many.mean, X.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(many.centred_cross, Xc.T @ Xc, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(one.centred_cross, Xc.T @ Xc, rtol=1e-12, atol=1e-9)
    M = (Xc**2).T @ (Xc**2)
    np.testing.assert_allclose(many.centred_square_cross, M, rtol=1e-11)


def test_merged_halves_equal_whole_and_sum_works():
    X = _features(n=150, d=8, seed=6)
    whole = CrossProductStats.from_array(X)
    a = CrossProductStats.from_array(X[:40])
    b = CrossProductStats.from_array(X[40:] * 1.0, batch_size=33)  # different shift
    c = CrossProductStats(shift=np.zeros(8)).update(X[:40])  # explicit raw-moment shift
    for merged in (a + b, b + a, sum([a, b]), c + b, CrossProductStats() + a + b):
        assert merged.n == 150
        np.testing.assert_allclose(merged.mean, whole.mean, atol=1e-12)
        np.testing.assert_allclose(merged.centred_cross, whole.centred_cross, rtol=1e-11, atol=1e-9)
        np.testing.assert_allclose(
            merged.centred_square_cross, whole.centred_square_cross, rtol=1e-10
        )
    assert a.n == 40 and b.n == 110  # __add__ leaves its operands alone
    with pytest.raises(InvalidValueError, match="d=3"):
        a.merge(CrossProductStats.from_array(X[:, :3]))
    with pytest.raises(InvalidValueError, match="debiased"):
        a.merge(CrossProductStats.from_array(X, debiased=False))


def test_subset_cka_matches_direct_to_1e10():
    X = _features(n=300, d=20, seed=7)
    stats = CrossProductStats.from_array(X, batch_size=64)
    rng = np.random.default_rng(0)
    subs = _subsets(20, rng, sizes=(1, 3, 8, 13, 20)) + [np.array([2, 2, 5])]
    fast = stats.subset_cka(subs)
    slow = np.array([linear_cka(X, X[:, s]) for s in subs])
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-10)
    assert fast[4] == pytest.approx(1.0, abs=1e-12)  # the whole layer


def test_subset_cka_debiased_matches_gram_reference():
    X = _features(n=60, d=10, seed=8)
    stats = CrossProductStats.from_array(X, batch_size=7)
    subs = _subsets(10, np.random.default_rng(1), sizes=(1, 2, 4, 7, 10)) + [[3, 3, 1]]
    fast = stats.subset_cka_debiased(subs)
    slow = np.array([debiased_cka_gram(X, X[:, s]) for s in subs])
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-8)
    direct = np.array([debiased_linear_cka(X, X[:, s]) for s in subs])
    np.testing.assert_allclose(fast, direct, rtol=0, atol=1e-10)


def test_subset_cka_validates_indices():
    stats = CrossProductStats.from_array(_features(d=6))
    with pytest.raises(InvalidValueError, match="outside"):
        stats.subset_cka([[0, 6]])
    with pytest.raises(InvalidValueError, match="empty"):
        stats.subset_cka([[]])
    with pytest.raises(InvalidValueError, match="debiased=True"):
        CrossProductStats.from_array(_features(d=6), debiased=False).subset_cka_debiased([[0]])


@pytest.mark.parametrize(
    "name", ["random", "prefix", "variance", "pca_top", "pca_least", "randproj_uniform",
             "randproj_gauss"]
)
def test_family_cka_matches_direct(name):
    X_train, X_test = _features(n=200, d=14, seed=9), _features(n=150, d=14, seed=10)
    fam = make_family(name, X_train, [1, 2, 5, 9, 14], seed=3)
    stats = CrossProductStats.from_array(X_test, batch_size=50)
    fast = stats.family_cka(fam)
    slow = [linear_cka(X_test, fam.transform(X_test, k)) for k in fam.ks]
    if fam.components is not None:  # also the formula (X − μ)P written out
        P, mu = fam.components, X_test.mean(axis=0)
        slow2 = [linear_cka(X_test, (X_test - mu) @ P[:, :k]) for k in fam.ks]
        np.testing.assert_allclose(fast, slow2, rtol=0, atol=1e-10)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-10)


def test_family_cka_debiased_for_coordinate_families_only():
    X = _features(n=80, d=12, seed=11)
    stats = CrossProductStats.from_array(X)
    fam = SubsetFamily("random", 1, [1, 4, 12], indices=np.random.default_rng(1).permutation(12))
    expected = [debiased_cka_gram(X, fam.transform(X, k)) for k in fam.ks]
    np.testing.assert_allclose(stats.family_cka(fam, debiased=True), expected, atol=1e-8)
    proj = SubsetFamily("pca_top", 0, [2], components=np.eye(12)[:, :3])
    with pytest.raises(InvalidValueError, match="coordinate"):
        stats.family_cka(proj, debiased=True)
    with pytest.raises(InvalidValueError, match="ks"):
        stats.family_cka(SubsetFamily("prefix", 0, [1, 5], indices=np.arange(3)))


def test_large_offset_keeps_precision():
    """Features far from the origin (ReLU-like offsets): shifted moments keep full accuracy."""
    X = _features(n=400, d=6, seed=12, offset=1e4)
    stats = CrossProductStats.from_array(X, batch_size=100)
    subs = [[0], [1, 2], [0, 3, 5]]
    np.testing.assert_allclose(
        stats.subset_cka(subs), [linear_cka(X, X[:, s]) for s in subs], atol=1e-9
    )
    np.testing.assert_allclose(
        stats.subset_cka_debiased(subs), [debiased_linear_cka(X, X[:, s]) for s in subs],
        atol=1e-8,
    )


def test_accumulator_reads_float16_memmap_and_torch_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    X = _features(n=90, d=7, seed=13).astype(np.float16)
    mm = np.memmap(tmp_path / "x.f16", dtype=np.float16, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    ref = CrossProductStats().update(X.astype(np.float64))
    from_mm = CrossProductStats.from_array(np.memmap(tmp_path / "x.f16", dtype=np.float16,
                                                     mode="r", shape=X.shape), batch_size=32)
    from_torch = CrossProductStats().update(torch.from_numpy(X.astype(np.float32)))
    for stats in (from_mm, from_torch):
        np.testing.assert_allclose(stats.centred_cross, ref.centred_cross, rtol=1e-12, atol=1e-9)
    assert linear_cka(torch.from_numpy(X.astype(np.float32)), X[:, :2]) == pytest.approx(
        linear_cka(X, X[:, :2]), abs=1e-12
    )


def _torch_path_matches_numpy_path(device: str) -> None:
    import torch

    X = np.random.default_rng(7).normal(size=(300, 24)) * np.linspace(0.5, 3, 24) + 4.0
    subsets = [np.random.default_rng(s).permutation(24)[: 3 + s] for s in range(6)]
    ref = CrossProductStats.from_array(X, batch_size=64)
    for batches in (X, torch.from_numpy(X).to(device)):
        dev = CrossProductStats.from_array(batches, batch_size=64, device=device)
        assert dev.n == ref.n and dev.d == ref.d
        np.testing.assert_allclose(dev.subset_cka(subsets), ref.subset_cka(subsets), atol=1e-12)
        np.testing.assert_allclose(dev.subset_cka_debiased(subsets),
                                   ref.subset_cka_debiased(subsets), atol=1e-12)
    # merging a device accumulator into a numpy one is the same state
    half = CrossProductStats.from_array(X[:150]).merge(
        CrossProductStats.from_array(X[150:], device=device))
    np.testing.assert_allclose(half.subset_cka(subsets), ref.subset_cka(subsets), atol=1e-12)
    direct = [linear_cka(X, X[:, s]) for s in subsets]
    np.testing.assert_allclose(ref.subset_cka(subsets), direct, atol=1e-10)


def test_device_accumulation_through_torch_equals_numpy():
    _torch_path_matches_numpy_path("cpu")


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_cuda_accumulation_equals_numpy():
    _torch_path_matches_numpy_path("cuda")
