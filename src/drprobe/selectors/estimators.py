"""The selector estimators (scikit-learn contract): random and prefix subsets, PCA top/least,
random projections, and the variance and weight-norm rankings.

Every class declares ``seeded``: whether its basis depends on ``random_state`` (only then does
an experiment fit one family per seed), and ``kind``: ``coordinate`` (``indices_``) or
``projection`` (``components_``, ``mean_``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

from drprobe.errors import InvalidValueError
from drprobe.selectors.family import apply_basis
from drprobe.selectors.pca import pca_nonnull_basis
from drprobe.selectors.projections import projection_columns


def _mean_and_cross(X: Any, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Column mean (d,) and centred cross-product X_cᵀX_c (d, d) in float64, two passes."""
    mean = np.mean(X, axis=0, dtype=np.float64)
    C = np.zeros((X.shape[1], X.shape[1]))
    for lo in range(0, X.shape[0], batch):
        Y = np.asarray(X[lo:lo + batch], dtype=np.float64) - mean
        C += Y.T @ Y
    return mean, C


class Selector(BaseEstimator, TransformerMixin):
    """Common base: ``n_components`` = k, ``random_state`` = seed. Subclasses set ``kind``."""

    kind: str = "coordinate"  # or "projection"
    needs_labels: bool = False
    seeded: bool = False  # does the basis depend on random_state?

    def __init__(self, n_components: int, random_state: Any = None) -> None:
        self.n_components = n_components
        self.random_state = random_state

    def _k(self, d: int) -> int:
        k = self.n_components
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not (1 <= k <= d):
            raise InvalidValueError(f"n_components {k!r} is outside the valid range [1, {d}]")
        return int(k)

    def _width(self, X: Any) -> int:
        if len(getattr(X, "shape", ())) != 2:
            raise InvalidValueError(f"features must be a 2-D array (n, d); got {type(X).__name__}")
        return int(X.shape[1])

    def transform(self, X: Any) -> np.ndarray:
        """Map features (n, d) to (n, k)."""
        if self.kind == "coordinate":
            return np.asarray(apply_basis(X, indices=self.indices_))
        return apply_basis(np.asarray(X, dtype=np.float64), components=self.components_,
                           mean=self.mean_)


class RandomSubset(Selector):
    """k random neurons: ``indices_`` (k,) = first k of ``default_rng(seed).permutation(d)``."""

    seeded = True

    def fit(self, X: Any, y: Any = None) -> RandomSubset:
        d = self._width(X)
        self.indices_ = np.random.default_rng(self.random_state).permutation(d)[: self._k(d)]
        return self


class PrefixSubset(Selector):
    """The first k neurons (Matryoshka / fixed-feature models): ``indices_`` = arange(k)."""

    def fit(self, X: Any, y: Any = None) -> PrefixSubset:
        d = self._width(X)
        self.indices_ = np.arange(self._k(d))
        return self


class PCATop(Selector):
    """k principal directions of largest variance of the centred train features.

    Only directions with non-zero training variance are taken (:mod:`drprobe.selectors.pca`):
    with rank r of the centred features (r ≤ min(n − 1, d)), k' = min(k, r) directions.
    Learned: ``components_`` (d, k') orthonormal, ``mean_`` (d,), ``explained_variance_`` (k,).
    ``fit(X, cross=stats)`` reuses a precomputed :class:`~drprobe.metrics.cka.CrossProductStats`
    (its ``centred_cross`` and ``mean``) instead of recomputing XᵀX.
    """

    kind = "projection"
    _least = False

    def fit(self, X: Any, y: Any = None, cross: Any = None) -> PCATop:
        d = self._width(X)
        k = self._k(d)
        if cross is not None:
            mean, C, n = np.asarray(cross.mean), np.asarray(cross.centred_cross), cross.n
        else:
            (mean, C), n = _mean_and_cross(X), X.shape[0]
        self.mean_ = mean
        self.components_, w = pca_nonnull_basis(C, k, self._least, n)
        self.explained_variance_ = np.maximum(w, 0.0) / max(n - 1, 1)
        return self


class PCALeast(PCATop):
    """k principal directions of smallest *non-zero* variance, from the least upwards (nested);
    never the null directions of a rank-deficient training matrix."""

    _least = True


class RandomProjectionUniform(Selector):
    """The paper's projection: i.i.d. Uniform[0, 1) entries, unit-norm columns, no centring.

    Column j is the j-th block of d draws of ``default_rng(seed)``, so the first k columns of the
    d×d matrix are drawn without building it and are nested across k
    (:mod:`~drprobe.selectors.projections`).
    """

    kind = "projection"
    seeded = True
    draws = "randproj_uniform"

    def fit(self, X: Any, y: Any = None) -> RandomProjectionUniform:
        d = self._width(X)
        self.components_ = projection_columns(self.draws, self.random_state, d, 0, self._k(d))
        self.mean_ = np.zeros(d)
        return self


class RandomProjectionGauss(RandomProjectionUniform):
    """i.i.d. N(0, 1) columns scaled to unit norm (the textbook random projection), no centring."""

    draws = "randproj_gauss"


class VarianceRanked(Selector):
    """The k neurons of highest train variance (ties by index); ``variances_`` (d,)."""

    def fit(self, X: Any, y: Any = None) -> VarianceRanked:
        d = self._width(X)
        self.variances_ = np.var(X, axis=0, dtype=np.float64)
        self.indices_ = np.argsort(-self.variances_, kind="stable")[: self._k(d)]
        return self


def need_labels(name: str, y: Any) -> None:
    if y is None:
        raise InvalidValueError(f"selector {name!r} needs training labels y; got None")


class WeightNormRanked(Selector):
    """Neurons ranked by the L2 norm over classes of a full-layer logistic probe's weights.

    The probe is scikit-learn's multinomial LogisticRegression (``C``, ``max_iter``) on
    standardised train features, or pass ``coef`` (C, d) to skip fitting. Learned:
    ``weight_norms_`` (d,), ``indices_`` (k,) by decreasing norm.
    """

    needs_labels = True

    def __init__(
        self, n_components: int, random_state: Any = None, coef: Any = None,
        C: float = 1.0, max_iter: int = 200,
    ) -> None:
        super().__init__(n_components, random_state)
        self.coef = coef
        self.C = C
        self.max_iter = max_iter

    def fit(self, X: Any, y: Any = None) -> WeightNormRanked:
        d = self._width(X)
        if self.coef is not None:
            coef = np.asarray(self.coef, dtype=np.float64)
            if coef.ndim != 2 or coef.shape[1] != d:
                raise InvalidValueError(f"coef must have shape (n_classes, {d}); got {coef.shape}")
        else:
            need_labels("weight_norm", y)
            Xs = StandardScaler().fit_transform(np.asarray(X, dtype=np.float64))
            from sklearn.linear_model import LogisticRegression

            probe = LogisticRegression(C=self.C, max_iter=self.max_iter,
                                       random_state=self.random_state)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                coef = probe.fit(Xs, np.asarray(y)).coef_
        self.weight_norms_ = np.linalg.norm(coef, axis=0)
        self.indices_ = np.argsort(-self.weight_norms_, kind="stable")[: self._k(d)]
        return self

