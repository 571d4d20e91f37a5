"""Selectors: subset sizes, nesting, PCA against scikit-learn, projections, ranked and greedy."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler

from drprobe.errors import InvalidValueError, UnknownNameError
from drprobe.metrics.cka_stats import CrossProductStats
from drprobe.selectors import (
    PAPER_FRACTIONS,
    SELECTORS,
    GreedyForward,
    PCALeast,
    PCATop,
    PrefixSubset,
    RandomProjectionGauss,
    RandomProjectionUniform,
    RandomSubset,
    VarianceRanked,
    WeightNormRanked,
    is_seeded,
    make_family,
    resolve_ks,
    wide_selectors,
)


def _data(n: int = 240, d: int = 12, n_classes: int = 3, seed: int = 0):
    """Features with distinct variances (n, d) and labels that depend on a few columns."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.linspace(4.0, 0.5, d) @ np.linalg.qr(
        rng.normal(size=(d, d))
    )[0] + 2.0
    y = (X[:, 0] + 2 * X[:, 3] > np.quantile(X[:, 0] + 2 * X[:, 3], 0.5)).astype(int)
    y = y + (n_classes > 2) * (X[:, 5] > np.median(X[:, 5]))
    return X, y


# ----------------------------------------------------------------------------- resolve_ks


def test_resolve_ks_floor_dedup_sort():
    assert resolve_ks(10, [0.3]) == ([3], [0.3])  # 0.3·10 must not floor to 2
    assert resolve_ks(100, [0.29, 0.57]) == ([29, 57], [0.29, 0.57])
    ks, fr = resolve_ks(10, [0.5, 0.0005, 0.001, 0.05, 1.0])
    assert ks == [1, 5, 10] and fr == [0.0005, 0.5, 1.0]  # k = 1 kept from the first fraction
    assert resolve_ks(8, counts=[4, 2, 2]) == ([2, 4], [0.25, 0.5])
    assert resolve_ks(10, [0.5], counts=[5, 7]) == ([5, 7], [0.5, 0.7])
    ks, fr = resolve_ks(2048)
    assert ks[0] == 1 and ks[-1] == 2048 and fr[-1] == 1.0
    assert ks == [max(1, int(np.floor(f * 2048 + 1e-9))) for f in PAPER_FRACTIONS]


@pytest.mark.parametrize(
    "kwargs,match",
    [({"fractions": [0.0]}, r"fraction 0\.0 .*\(0, 1\]"),
     ({"fractions": [1.5]}, r"fraction 1\.5 .*\(0, 1\]"),
     ({"fractions": [float("nan")]}, "fraction nan"),
     ({"counts": [0]}, r"count 0 .*\[1, 10\]"),
     ({"counts": [11]}, r"count 11 .*\[1, 10\]"),
     ({"counts": [2.5]}, "count 2.5")],
)
def test_resolve_ks_errors(kwargs, match):
    with pytest.raises(InvalidValueError, match=match):
        resolve_ks(10, **kwargs)
    with pytest.raises(InvalidValueError, match="d must"):
        resolve_ks(0, [0.5])


# ----------------------------------------------------------------------------- coordinate


def test_random_subset_is_seeded_permutation_prefix_and_nested():
    X, _ = _data()
    perm = np.random.default_rng(5).permutation(12)
    small = RandomSubset(3, random_state=5).fit(X)
    big = RandomSubset(9, random_state=5).fit(X)
    np.testing.assert_array_equal(big.indices_, perm[:9])
    np.testing.assert_array_equal(small.indices_, big.indices_[:3])
    np.testing.assert_array_equal(small.transform(X), X[:, perm[:3]])
    assert not np.array_equal(RandomSubset(9, random_state=6).fit(X).indices_, big.indices_)


def test_prefix_and_variance_ranked():
    X, _ = _data()
    np.testing.assert_array_equal(PrefixSubset(4).fit(X).indices_, [0, 1, 2, 3])
    var = np.array([np.var(X[:, j]) for j in range(12)])
    top = VarianceRanked(5).fit(X).indices_
    np.testing.assert_array_equal(top, np.argsort(var)[::-1][:5])


def test_n_components_out_of_range():
    X, _ = _data()
    with pytest.raises(InvalidValueError, match=r"n_components 13 .*\[1, 12\]"):
        RandomSubset(13).fit(X)
    with pytest.raises(InvalidValueError, match="n_components 0"):
        PCATop(0).fit(X)


# ----------------------------------------------------------------------------- PCA


def test_pca_top_and_least_against_full_eigendecomposition_and_sklearn():
    X, _ = _data(n=300, d=10)
    top, least = PCATop(4).fit(X), PCALeast(4).fit(X)
    for est in (top, least):
        np.testing.assert_allclose(est.components_.T @ est.components_, np.eye(4), atol=1e-12)
        np.testing.assert_allclose(est.mean_, X.mean(axis=0), atol=1e-12)
    var_top = np.var((X - X.mean(0)) @ top.components_, axis=0, ddof=1)
    var_least = np.var((X - X.mean(0)) @ least.components_, axis=0, ddof=1)
    assert np.all(np.diff(var_top) < 0) and np.all(np.diff(var_least) > 0)
    np.testing.assert_allclose(var_top, top.explained_variance_, rtol=1e-10)
    ref = PCA(n_components=10, svd_solver="full").fit(X).components_  # rows, decreasing
    for got, want in ((top.components_.T, ref[:4]), (least.components_.T, ref[::-1][:4])):
        np.testing.assert_allclose(np.abs(np.sum(got * want, axis=1)), 1.0, atol=1e-9)
    # pca_least is the last components of the full decomposition, least first
    full_least = PCALeast(10).fit(X).components_
    np.testing.assert_allclose(full_least[:, :4], least.components_, atol=1e-12)
    np.testing.assert_allclose(PCATop(10).fit(X).components_[:, ::-1][:, :4], least.components_,
                               atol=1e-12)


def test_pca_reuses_cross_product_stats():
    X, _ = _data()
    stats = CrossProductStats.from_array(X, batch_size=50, debiased=False)
    a = PCATop(5).fit(X)
    b = PCATop(5).fit(X, cross=stats)
    np.testing.assert_allclose(a.components_, b.components_, atol=1e-10)
    fam = make_family("pca_top", X, [2, 5], cross=stats)
    np.testing.assert_allclose(fam.components, a.components_, atol=1e-10)
    np.testing.assert_allclose(fam.transform(X, 2), a.transform(X)[:, :2], atol=1e-10)


# ----------------------------------------------------------------------------- projections


@pytest.mark.parametrize("cls", [RandomProjectionUniform, RandomProjectionGauss])
def test_random_projection_columns_nested_reproducible(cls):
    X, _ = _data()
    a = cls(8, random_state=3).fit(X)
    P = a.components_
    assert P.shape == (12, 8)
    np.testing.assert_allclose(np.linalg.norm(P, axis=0), 1.0, atol=1e-12)
    np.testing.assert_array_equal(cls(3, random_state=3).fit(X).components_, P[:, :3])
    np.testing.assert_array_equal(cls(8, random_state=3).fit(X).components_, P)
    assert not np.allclose(cls(8, random_state=4).fit(X).components_, P)
    np.testing.assert_allclose(a.transform(X), X @ P, atol=1e-12)  # no centring
    if cls is RandomProjectionUniform:
        assert np.all(P >= 0)
        raw = np.random.default_rng(3).random((8, 12)).T
        np.testing.assert_allclose(P, raw / np.linalg.norm(raw, axis=0), atol=1e-15)
    else:
        assert np.any(P < 0)


# ----------------------------------------------------------------------------- ranked


def test_weight_norm_matches_manual_probe_and_accepts_coef():
    X, y = _data(n_classes=3)
    est = WeightNormRanked(4, max_iter=500).fit(X, y)
    coef = LogisticRegression(max_iter=500).fit(StandardScaler().fit_transform(X), y).coef_
    np.testing.assert_allclose(est.weight_norms_, np.linalg.norm(coef, axis=0), rtol=1e-6)
    np.testing.assert_array_equal(est.indices_, np.argsort(-np.linalg.norm(coef, axis=0))[:4])
    fixed = np.zeros((3, 12))
    fixed[:, [7, 2, 9]] = [[3.0, 2.0, 1.0]] * 3
    np.testing.assert_array_equal(WeightNormRanked(3, coef=fixed).fit(X).indices_, [7, 2, 9])
    with pytest.raises(InvalidValueError, match="needs training labels"):
        WeightNormRanked(3).fit(X)


def _brute_force_greedy(Xt, yt, Xv, yv, k, alpha):
    """Refit a scikit-learn Ridge for every candidate at every step; pick the lowest val MSE."""
    classes = np.unique(yt)
    Yt, Yv = (yt[:, None] == classes).astype(float), (yv[:, None] == classes).astype(float)
    sc = StandardScaler().fit(Xt)
    Xs, Vs = sc.transform(Xt), sc.transform(Xv)
    chosen: list[int] = []
    for _ in range(k):
        best, best_j = np.inf, -1
        for j in range(Xt.shape[1]):
            if j in chosen:
                continue
            cols = chosen + [j]
            model = Ridge(alpha=alpha * len(Xt)).fit(Xs[:, cols], Yt)
            mse = np.sum((Yv - model.predict(Vs[:, cols])) ** 2)
            if mse < best:
                best, best_j = mse, j
        chosen.append(best_j)
    return chosen


def test_greedy_equals_brute_force_refits():
    X, y = _data(n=300, d=10, seed=4)
    Xt, yt, Xv, yv = X[:200], y[:200], X[200:], y[200:]
    est = GreedyForward(6, alpha=0.01).fit(Xt, yt, X_val=Xv, y_val=yv)
    assert est.indices_.tolist() == _brute_force_greedy(Xt, yt, Xv, yv, 6, 0.01)
    assert len(set(est.indices_.tolist())) == 6
    sc = StandardScaler().fit(Xt)  # the recorded proxy equals a fresh ridge fit on the subset
    cols = est.indices_[:4]
    onehot = (yt[:, None] == np.arange(3)).astype(float)
    ridge = Ridge(alpha=0.01 * 200).fit(sc.transform(Xt)[:, cols], onehot)
    resid = (yv[:, None] == np.arange(3)) - ridge.predict(sc.transform(Xv)[:, cols])
    assert est.val_mse_[3] == pytest.approx(np.mean(np.sum(resid**2, axis=1)), rel=1e-10)
    small = GreedyForward(3, alpha=0.01).fit(Xt, yt, X_val=Xv, y_val=yv)
    np.testing.assert_array_equal(small.indices_, est.indices_[:3])  # nested
    acc = GreedyForward(4, criterion="accuracy").fit(Xt, yt, X_val=Xv, y_val=yv)
    assert acc.val_accuracy_[-1] >= acc.val_accuracy_[0] - 1e-12
    with pytest.raises(InvalidValueError, match="criterion"):
        GreedyForward(2, criterion="f1").fit(Xt, yt)


def test_greedy_draws_its_own_split_reproducibly():
    X, y = _data(n=200, d=8, seed=5)
    a = GreedyForward(4, random_state=1).fit(X, y)
    b = GreedyForward(4, random_state=1).fit(X, y)
    np.testing.assert_array_equal(a.indices_, b.indices_)
    with pytest.raises(InvalidValueError, match="y_val"):
        GreedyForward(2).fit(X, y, X_val=X)


def test_greedy_is_fast_enough_for_a_real_layer():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1500, 1280)).astype(np.float32)
    y = rng.integers(0, 10, size=1500)
    est = GreedyForward(128, random_state=0).fit(X, y)
    assert len(np.unique(est.indices_)) == 128


# ----------------------------------------------------------------------------- families


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_make_family_is_nested_and_matches_estimator(name):
    X, y = _data()
    ks = [1, 3, 7]
    fam = make_family(name, X, ks, seed=2, y_train=y, fractions=[0.1, 0.25, 0.6])
    assert fam.selector == name and fam.ks == ks and fam.width == 7
    assert fam.fractions == [0.1, 0.25, 0.6]
    assert fam.seed == (2 if name in {"random", "randproj_uniform", "randproj_gauss", "greedy"}
                        else 0)
    est = SELECTORS[name](n_components=7, random_state=2)
    est = est.fit(X, y) if est.needs_labels else est.fit(X)
    np.testing.assert_allclose(fam.transform(X), est.transform(X), atol=1e-10)
    for k in ks:
        np.testing.assert_allclose(fam.transform(X, k), fam.transform(X)[:, :k], atol=1e-12)
    if name == "random":
        np.testing.assert_array_equal(fam.indices, np.random.default_rng(2).permutation(12)[:7])


@pytest.mark.parametrize("name", ["random", "prefix", "variance"])
def test_wide_neuron_order_from_column_blocks_is_the_fitted_order(name):
    X, y = _data(n=50, d=23)
    blocks = [X[:, lo:lo + 5] for lo in range(0, 23, 5)]  # the wide path's blocked train columns
    order = SELECTORS[name].order_from_columns(23, iter(blocks), y, 4)
    want = {"random": np.random.default_rng(4).permutation(23), "prefix": np.arange(23),
            "variance": np.argsort(-np.var(X, axis=0), kind="stable")}[name]
    np.testing.assert_array_equal(order, want)
    np.testing.assert_array_equal(
        SELECTORS[name](n_components=9, random_state=4).fit(X).indices_, want[:9])


def test_declarations_of_the_built_in_selectors():
    yields = {name: cls.yields for name, cls in SELECTORS.items()}
    assert yields == {"random": "coordinate", "prefix": "coordinate", "pca_top": "pca",
                      "pca_least": "pca", "randproj_uniform": "projection",
                      "randproj_gauss": "projection", "variance": "coordinate",
                      "weight_norm": "coordinate", "greedy": "coordinate"}
    assert {n for n in SELECTORS if is_seeded(n)} == {"random", "randproj_uniform",
                                                      "randproj_gauss"}
    assert (PCATop.least, PCALeast.least) == (False, True)
    assert {n: SELECTORS[n].draws for n in ("randproj_uniform", "randproj_gauss")} == {
        "randproj_uniform": "randproj_uniform", "randproj_gauss": "randproj_gauss"}
    assert wide_selectors() == ["random", "prefix", "pca_top", "pca_least", "randproj_uniform",
                                "randproj_gauss", "variance"]
    # the form of the map (indices or a basis) follows what a selector yields
    assert {n for n, cls in SELECTORS.items() if cls.kind == "projection"} == {
        "pca_top", "pca_least", "randproj_uniform", "randproj_gauss"}


def test_make_family_errors():
    X, _ = _data()
    with pytest.raises(UnknownNameError, match="unknown selector 'pca'; valid choices: greedy"):
        make_family("pca", X, [1])
    with pytest.raises(InvalidValueError, match="needs training labels"):
        make_family("greedy", X, [1, 2])
    with pytest.raises(InvalidValueError, match="strictly increasing"):
        make_family("random", X, [3, 2])
    with pytest.raises(InvalidValueError, match=r"\[1, 12\]"):
        make_family("random", X, [1, 13])
    with pytest.raises(InvalidValueError, match="fractions"):
        make_family("random", X, [1, 2], fractions=[0.1])
