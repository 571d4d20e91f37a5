"""Sample-space math for wide layers against the feature-space path and direct formulas."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import subspace_angles
from sklearn.decomposition import PCA

from drprobe.errors import InvalidValueError
from drprobe.metrics import CrossProductStats, debiased_linear_cka, linear_cka
from drprobe.selectors import RandomProjectionGauss, RandomProjectionUniform
from drprobe.selectors.pca import pca_nonnull_basis
from drprobe.wide import (
    ColumnReader,
    cka_from_grams,
    dual_pca,
    iter_projection_blocks,
    nested_gram_cka,
    project,
    projection_columns,
)
from drprobe.wide.dual_pca import dual_pca_from_features
from drprobe.wide.gram import nested_cross_grams


def _features(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # correlated, shifted, non-negative columns (like ReLU activations)
    X = rng.normal(size=(n, 8)) @ rng.normal(size=(8, d)) + 0.5 * rng.normal(size=(n, d))
    return np.maximum(X + 1.0, 0.0).astype(np.float32)


@pytest.fixture(params=[(40, 150), (90, 30)], ids=["d>n", "n>d"])
def memmapped(request, tmp_path):
    n, d = request.param
    np.save(tmp_path / "X.npy", _features(n, d))
    return np.load(tmp_path / "X.npy", mmap_mode="r")


def test_column_reader_scratch_copy_equals_gather(memmapped, tmp_path):
    rows = np.array([3, 0, 7, 5])
    with ColumnReader(memmapped, rows=rows, scratch_dir=tmp_path, in_memory_bytes=0) as r:
        assert r.path is not None
        cols = np.array([4, 1, 9, 2])
        np.testing.assert_array_equal(r.columns(cols), np.asarray(memmapped)[np.ix_(rows, cols)])
        path = r.path
    assert not (tmp_path / path).exists()


def test_nested_gram_cka_equals_feature_space(memmapped, tmp_path):
    X = np.asarray(memmapped, dtype=np.float64)
    d = X.shape[1]
    order = np.random.default_rng(1).permutation(d)
    ks = [1, 3, d // 4, d // 2, d - 1, d]
    reader = ColumnReader(memmapped, scratch_dir=tmp_path, in_memory_bytes=0)
    lin, deb, K = nested_gram_cka(reader, order, ks, block=7)
    stats = CrossProductStats.from_array(X)
    want_lin = stats.subset_cka([order[:k] for k in ks])
    want_deb = stats.subset_cka_debiased([order[:k] for k in ks])
    np.testing.assert_allclose(lin, want_lin, rtol=0, atol=1e-9)
    np.testing.assert_allclose(deb, want_deb, rtol=0, atol=1e-9)
    Xc = X - X.mean(0)
    np.testing.assert_allclose(K, Xc @ Xc.T, rtol=1e-10, atol=1e-8)
    # the two-pass form (full Gram given, no snapshots) gives the same numbers
    lin2, deb2, _ = nested_gram_cka(reader, order[: d // 2], ks[:4], full_gram=K, block=5)
    np.testing.assert_allclose(lin2, lin[:4], atol=1e-12)
    np.testing.assert_allclose(deb2, deb[:4], atol=1e-12)


def test_cka_from_grams_matches_functions():
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(30, 50)), rng.normal(size=(30, 7)) + 3.0
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    K, L = Xc @ Xc.T, Yc @ Yc.T
    assert cka_from_grams(K, L) == pytest.approx(linear_cka(X, Y), abs=1e-12)
    assert cka_from_grams(K, L, debiased=True) == pytest.approx(debiased_linear_cka(X, Y),
                                                                abs=1e-12)


def test_nested_gram_cka_refuses_partial_order_without_full_gram():
    X = _features(10, 20)
    with pytest.raises(InvalidValueError, match="permutation"):
        nested_gram_cka(X, np.arange(10), [5, 10])
    with pytest.raises(InvalidValueError, match="strictly increasing"):
        nested_gram_cka(X, np.arange(20), [5, 5])


def _spectrum_data(n: int, d: int, seed: int = 3) -> np.ndarray:
    """Rows with a well-separated spectrum: singular values 2^{-j/2}."""
    rng = np.random.default_rng(seed)
    r = min(n, d)
    U = np.linalg.qr(rng.normal(size=(n, r)))[0]
    V = np.linalg.qr(rng.normal(size=(d, r)))[0]
    return (U * 2.0 ** (-np.arange(r) / 4.0)) @ V.T + rng.normal(size=d)


@pytest.mark.parametrize("least", [False, True], ids=["top", "least"])
def test_dual_pca_equals_feature_space_pca(least):
    n, d, k = 40, 120, 6
    X = _spectrum_data(n, d)
    Xc = X - X.mean(0)
    V, w = pca_nonnull_basis(Xc.T @ Xc, k, least, n)
    rows = ColumnReader(X)
    X_other = np.random.default_rng(4).normal(size=(9, d))
    dual = dual_pca_from_features(rows, [ColumnReader(X_other)], k, least, block=16)
    lam = dual.explained_variance * (n - 1)
    np.testing.assert_allclose(lam, w, rtol=1e-8)
    V_dual = Xc.T @ dual.train / lam  # X_cᵀ U Λ^{-1/2}
    assert np.max(subspace_angles(V, V_dual)) < 1e-6
    # coordinates: the same up to the sign of each direction
    np.testing.assert_allclose(np.abs(dual.train), np.abs(Xc @ V), atol=1e-8)
    np.testing.assert_allclose(np.abs(dual.others[0]), np.abs((X_other - X.mean(0)) @ V),
                               atol=1e-8)


@pytest.mark.parametrize("n,d", [(20, 64), (64, 64), (30, 30)])
def test_pca_least_never_takes_null_directions(n, d):
    X = _features(n, d, seed=5).astype(np.float64)
    Xc = X - X.mean(0)
    V, _ = pca_nonnull_basis(Xc.T @ Xc, d, least=True, n=n)
    assert V.shape[1] <= min(n - 1, d)
    var = np.var(Xc @ V, axis=0)
    assert np.all(var > 1e-8 * np.var(Xc @ np.linalg.svd(Xc)[2][0]))
    K = Xc @ Xc.T
    dual = dual_pca(K, [], m=n, least=True, d=d)
    assert dual.rank == V.shape[1]
    assert np.all(np.var(dual.train, axis=0) > 1e-8 * dual.explained_variance.max())


def test_pca_least_is_sklearns_smallest_nondegenerate_components_when_n_exceeds_d():
    rng = np.random.default_rng(6)
    n, d, k = 200, 12, 4
    X = rng.normal(size=(n, d)) * np.linspace(1, 3, d)
    X[:, -1] = X[:, 0] + X[:, 1]  # one exactly degenerate direction
    Xc = X - X.mean(0)
    V, _ = pca_nonnull_basis(Xc.T @ Xc, k, least=True, n=n)
    sk = PCA(n_components=d, svd_solver="full").fit(X)
    keep = sk.explained_variance_ > sk.explained_variance_[0] * 1e-10
    smallest = sk.components_[keep][::-1][:k].T  # least variance first
    assert keep.sum() == d - 1
    for j in range(k):  # each direction, one by one (distinct eigenvalues)
        assert np.max(subspace_angles(V[:, j:j + 1], smallest[:, j:j + 1])) < 1e-6


def test_cross_grams_standardise_by_train_statistics():
    rng = np.random.default_rng(7)
    Xtr, Xo = rng.normal(size=(25, 40)) * 3 + 1, rng.normal(size=(6, 40))
    Xtr[:, 5] = 2.0  # a constant column keeps scale 1
    order = rng.permutation(40)
    got = [(k, K.copy(), Ko[0].copy()) for k, K, Ko in nested_cross_grams(
        ColumnReader(Xtr), [ColumnReader(Xo)], order, [10, 40], standardize=True, block=3)]
    mu, sd = Xtr.mean(0), Xtr.std(0)
    sd[sd == 0] = 1.0
    for k, K, Ko in got:
        S = order[:k]
        Z, Zo = (Xtr[:, S] - mu[S]) / sd[S], (Xo[:, S] - mu[S]) / sd[S]
        np.testing.assert_allclose(K, Z @ Z.T, atol=1e-9)
        np.testing.assert_allclose(Ko, Zo @ Z.T, atol=1e-9)


@pytest.mark.parametrize("cls,kind", [(RandomProjectionUniform, "randproj_uniform"),
                                      (RandomProjectionGauss, "randproj_gauss")])
def test_blocked_projection_equals_dense_generator(cls, kind):
    d, seed = 37, 11
    X = np.random.default_rng(0).normal(size=(9, d))
    dense = cls(n_components=d, random_state=seed).fit(X).components_
    np.testing.assert_array_equal(projection_columns(kind, seed, d, 10, 25), dense[:, 10:25])
    blocks = np.concatenate([P for _, _, P in iter_projection_blocks(kind, seed, d, 30, 8)],
                            axis=1)
    np.testing.assert_array_equal(blocks, dense[:, :30])
    np.testing.assert_allclose(project(X, kind, seed, 20, block=6, row_chunk=4),
                               X @ dense[:, :20], atol=1e-12)


def test_pca_least_selector_family_stays_in_the_training_span():
    from drprobe.selectors import make_family

    n, d = 30, 80
    X = _features(n, d, seed=9).astype(np.float64)
    fam = make_family("pca_least", X, [5, 40, 80], fractions=[5 / 80, 0.5, 1.0])
    assert fam.ks == [5, n - 1] and fam.fractions == [5 / 80, (n - 1) / d]
    Z = fam.transform(X, fam.ks[-1])
    assert np.all(np.var(Z, axis=0) > 1e-10 * np.var(Z, axis=0).max())
    top = make_family("pca_top", X, [5, 40, 80])
    assert top.ks == [5, n - 1]
