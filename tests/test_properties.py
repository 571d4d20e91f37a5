"""Property-based tests of the metrics (hypothesis): bounds, invariances, identities, monotonicity.

Feature matrices are hypothesis-drawn arrays (repeated values, outliers, mixed scales) plus a
small seeded jitter, so that no draw is exactly constant (CKA is undefined, NaN, for constant
features). Sizes stay small so every test runs in about a second.

What is true, and tested:
- linear CKA lies in [0, 1]: tr(KL) >= 0 for two PSD Grams, and <= 1 by Cauchy-Schwarz;
- debiased CKA lies in [-1, 1], not [0, 1]: the unbiased HSIC is an inner product of
  U-centred Grams, so Cauchy-Schwarz bounds it by 1 in absolute value, but it is negative for
  about half of all pairs of independent features at small n (checked on a seeded draw);
- both are invariant to orthogonal maps, isotropic scaling and permutation of the features of
  either argument, and equal 1 for CKA(X, X);
- subset CKA read from the cross-product accumulator equals the direct formula on X[:, S];
- Gini of per-class accuracies lies in [0, 1 - 1/C], is 0 when all are equal, 1 - 1/C when a
  single class holds all the accuracy, and does not depend on the class order or on a common
  scale;
- DR_delta is non-increasing in delta (no crossing, NaN, counts as the lowest), and the critical
  mass k*_delta is non-decreasing.
"""

from __future__ import annotations

import math
from itertools import pairwise

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drprobe.metrics import (
    CrossProductStats,
    critical_fraction,
    critical_mass,
    debiased_linear_cka,
    diffused_redundancy,
    gini,
    linear_cka,
)

SETTINGS = settings(max_examples=50, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])
ELEMENT = st.floats(-100, 100, allow_nan=False, allow_infinity=False, allow_subnormal=False)
TOL = {"rtol": 1e-7, "atol": 1e-9}
CKAS = {"linear": linear_cka, "debiased": debiased_linear_cka}


@st.composite
def features(draw, min_n: int = 5, max_n: int = 14, max_d: int = 6) -> np.ndarray:
    """(n, d) float64: a hypothesis array plus a seeded jitter of 1e-2 (never constant)."""
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(1, max_d))
    base = draw(hnp.arrays(np.float64, (n, d), elements=ELEMENT))
    seed = draw(st.integers(0, 2**32 - 1))
    return base + 1e-2 * np.random.default_rng(seed).standard_normal((n, d))


@st.composite
def pairs(draw) -> tuple[np.ndarray, np.ndarray]:
    """Two feature matrices with the same number of rows."""
    X = draw(features())
    Y = draw(features(min_n=X.shape[0], max_n=X.shape[0]))
    return X, Y


def orthogonal(d: int, seed: int) -> np.ndarray:
    Q, R = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return Q * np.sign(np.diag(R))


def well_conditioned(X: np.ndarray, Y: np.ndarray) -> bool:
    """Denominators far from zero relative to the data scale (for relative tolerances)."""
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    return bool(np.linalg.norm(Xc) > 1e-3 * (1 + np.abs(X).max())
                and np.linalg.norm(Yc) > 1e-3 * (1 + np.abs(Y).max()))


# ------------------------------------------------------------------------------- CKA bounds


@SETTINGS
@given(pairs())
def test_linear_cka_within_unit_interval(pair):
    X, Y = pair
    value = linear_cka(X, Y)
    assert -1e-12 <= value <= 1 + 1e-12


@SETTINGS
@given(pairs())
def test_debiased_cka_within_minus_one_and_one(pair):
    X, Y = pair
    value = debiased_linear_cka(X, Y)
    assert math.isnan(value) or -1 - 1e-9 <= value <= 1 + 1e-9


def test_debiased_cka_is_negative_for_many_independent_pairs():
    """The debiased estimator is not confined to [0, 1]: independent data at n = 8 often
    gives negative values, while the biased one never does."""
    rng = np.random.default_rng(0)
    draws = [(rng.standard_normal((8, 3)), rng.standard_normal((8, 2))) for _ in range(200)]
    debiased = np.array([debiased_linear_cka(X, Y) for X, Y in draws])
    biased = np.array([linear_cka(X, Y) for X, Y in draws])
    assert (debiased < 0).sum() > 50 and debiased.min() >= -1
    assert (biased >= 0).all()


@SETTINGS
@given(features(), st.sampled_from(sorted(CKAS)))
def test_self_similarity_is_one(X, name):
    assert CKAS[name](X, X) == pytest.approx(1.0, abs=1e-9)


# ---------------------------------------------------------------------------- invariances


@SETTINGS
@given(pairs(), st.integers(0, 2**32 - 1), st.sampled_from(sorted(CKAS)), st.booleans())
def test_invariant_to_orthogonal_maps(pair, seed, name, first):
    X, Y = pair
    fn = CKAS[name]
    base = fn(X, Y)
    if first:
        moved = fn(X @ orthogonal(X.shape[1], seed), Y)
    else:
        moved = fn(X, Y @ orthogonal(Y.shape[1], seed))
    np.testing.assert_allclose(moved, base, **TOL)


@SETTINGS
@given(pairs(), st.floats(1e-3, 1e3), st.sampled_from(sorted(CKAS)), st.booleans())
def test_invariant_to_isotropic_scaling(pair, scale, name, first):
    X, Y = pair
    fn = CKAS[name]
    moved = fn(scale * X, Y) if first else fn(X, scale * Y)
    np.testing.assert_allclose(moved, fn(X, Y), **TOL)


@SETTINGS
@given(pairs(), st.randoms(use_true_random=False), st.sampled_from(sorted(CKAS)))
def test_invariant_to_permuting_features(pair, rnd, name):
    X, Y = pair
    fn = CKAS[name]
    px, py = list(range(X.shape[1])), list(range(Y.shape[1]))
    rnd.shuffle(px)
    rnd.shuffle(py)
    np.testing.assert_allclose(fn(X[:, px], Y[:, py]), fn(X, Y), **TOL)


@SETTINGS
@given(pairs(), st.floats(-1e3, 1e3))
def test_invariant_to_shifting_the_data(pair, shift):
    """Both estimators centre (or are U-statistics): adding a constant changes nothing."""
    X, Y = pair
    np.testing.assert_allclose(linear_cka(X + shift, Y), linear_cka(X, Y), rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------- cross-product accumulator


@st.composite
def with_subsets(draw) -> tuple[np.ndarray, list[list[int]]]:
    X = draw(features(min_n=6, max_d=8))
    d = X.shape[1]
    subset = st.lists(st.integers(0, d - 1), min_size=1, max_size=d, unique=True)
    return X, draw(st.lists(subset, min_size=1, max_size=4))


@SETTINGS
@given(with_subsets(), st.integers(1, 7))
def test_subset_cka_from_cross_product_equals_direct(case, batch):
    X, subsets = case
    stats = CrossProductStats.from_array(X, batch_size=batch)
    linear = stats.subset_cka(subsets)
    debiased = stats.subset_cka_debiased(subsets)
    for S, lin, deb in zip(subsets, linear, debiased):
        np.testing.assert_allclose(lin, linear_cka(X, X[:, S]), rtol=1e-7, atol=1e-9)
        direct = debiased_linear_cka(X, X[:, S])
        if math.isnan(direct):
            assert math.isnan(deb)
        else:
            np.testing.assert_allclose(deb, direct, rtol=1e-6, atol=1e-8)


# ------------------------------------------------------------------------------------ Gini

ACCURACIES = hnp.arrays(np.float64, st.integers(2, 12),
                        elements=st.floats(0, 1, allow_subnormal=False))


@SETTINGS
@given(ACCURACIES)
def test_gini_within_zero_and_one_minus_one_over_c(a):
    C = len(a)
    value = gini(a)
    assert -1e-12 <= value <= 1 - 1 / C + 1e-12


@SETTINGS
@given(st.integers(1, 12), st.floats(0, 1, allow_subnormal=False))
def test_gini_of_equal_accuracies_is_zero(C, acc):
    assert gini(np.full(C, acc)) == 0.0


@SETTINGS
@given(st.integers(2, 12), st.integers(0, 11), st.floats(1e-3, 1))
def test_gini_is_maximal_when_one_class_holds_everything(C, where, acc):
    a = np.zeros(C)
    a[where % C] = acc
    assert gini(a) == pytest.approx(1 - 1 / C, abs=1e-12)


@SETTINGS
@given(ACCURACIES, st.randoms(use_true_random=False), st.floats(1e-2, 1))
def test_gini_ignores_class_order_and_common_scale(a, rnd, scale):
    order = list(range(len(a)))
    rnd.shuffle(order)
    assert gini(a[order]) == pytest.approx(gini(a), abs=1e-12)
    assert gini(scale * a) == pytest.approx(gini(a), abs=1e-9)


# --------------------------------------------------------------------------- DR_delta


@st.composite
def curves(draw) -> tuple[list[float], list[int], np.ndarray, float]:
    """A fraction grid, its ks (d = 1000), per-seed scores (n_seeds, F) and a full score."""
    fracs = sorted(draw(st.sets(st.integers(1, 1000), min_size=1, max_size=10)))
    grid = [k / 1000 for k in fracs]
    n_seeds = draw(st.integers(1, 3))
    scores = draw(hnp.arrays(np.float64, (n_seeds, len(grid)),
                             elements=st.floats(0, 1, allow_subnormal=False)))
    full = draw(st.floats(0.05, 1))
    return grid, fracs, scores, full


def _rank(dr: float) -> float:
    return -math.inf if math.isnan(dr) else dr


@SETTINGS
@given(curves(), st.lists(st.floats(0.01, 1.2), min_size=2, max_size=6))
def test_dr_is_non_increasing_and_critical_mass_non_decreasing_in_delta(curve, deltas):
    grid, ks, scores, full = curve
    deltas = sorted(deltas)
    drs = [_rank(diffused_redundancy(grid, scores, full, dl)) for dl in deltas]
    masses = [critical_mass(ks, scores, full, dl) for dl in deltas]
    assert all(a >= b for a, b in pairwise(drs))
    masses = [math.inf if m is None else m for m in masses]
    assert all(a <= b for a, b in pairwise(masses))
    for dl, dr in zip(deltas, drs):  # and DR = 1 - f* with f* a grid point (or NaN)
        f_star = critical_fraction(grid, scores, full, dl)
        assert (math.isnan(f_star) and dr == -math.inf) or (
            f_star in grid and dr == pytest.approx(1 - f_star))
