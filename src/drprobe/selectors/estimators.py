"""The selector estimators (scikit-learn contract): random and prefix subsets, PCA top/least,
random projections, and the variance and weight-norm rankings.

Every class declares the contract of :mod:`drprobe.selectors.base` (``yields``, ``seeded``,
``needs_labels``, ``wide_refusal``) and, for a coordinate selector that runs on wide layers,
its whole neuron order from column blocks (:meth:`~drprobe.selectors.base.Selector.order_from_columns`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

from drprobe.errors import InvalidValueError
from drprobe.selectors.base import Selector, need_labels, rank_descending
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


class RandomSubset(Selector):
    """k random neurons: ``indices_`` (k,) = first k of ``default_rng(seed).permutation(d)``."""

    seeded = True

    def fit(self, X: Any, y: Any = None) -> RandomSubset:
        d = self._width(X)
        self.indices_ = self.order_from_columns(d, (), y, self.random_state)[: self._k(d)]
        return self

    @classmethod
    def order_from_columns(
        cls, d: int, blocks: Iterable[np.ndarray], y: Any, seed: Any
    ) -> np.ndarray:
        """(d,) the seed's permutation; reads no column."""
        return np.random.default_rng(seed).permutation(d)


class PrefixSubset(Selector):
    """The first k neurons (Matryoshka / fixed-feature models): ``indices_`` = arange(k)."""

    def fit(self, X: Any, y: Any = None) -> PrefixSubset:
        d = self._width(X)
        self.indices_ = self.order_from_columns(d, (), y, self.random_state)[: self._k(d)]
        return self

    @classmethod
    def order_from_columns(
        cls, d: int, blocks: Iterable[np.ndarray], y: Any, seed: Any
    ) -> np.ndarray:
        """(d,) arange(d); reads no column."""
        return np.arange(d)


class PCATop(Selector):
    """k principal directions of largest variance of the centred train features.

    Only directions with non-zero training variance are taken (:mod:`drprobe.selectors.pca`):
    with rank r of the centred features (r ≤ min(n − 1, d)), k' = min(k, r) directions.
    Learned: ``components_`` (d, k') orthonormal, ``mean_`` (d,), ``explained_variance_`` (k,).
    ``fit(X, cross=stats)`` reuses a precomputed :class:`~drprobe.metrics.cka.CrossProductStats`
    (its ``centred_cross`` and ``mean``) instead of recomputing XᵀX.
    """

    yields = "pca"
    least = False  # top: decreasing variance

    def fit(self, X: Any, y: Any = None, cross: Any = None) -> PCATop:
        d = self._width(X)
        k = self._k(d)
        if cross is not None:
            mean, C, n = np.asarray(cross.mean), np.asarray(cross.centred_cross), cross.n
        else:
            (mean, C), n = _mean_and_cross(X), X.shape[0]
        self.mean_ = mean
        self.components_, w = pca_nonnull_basis(C, k, self.least, n)
        self.explained_variance_ = np.maximum(w, 0.0) / max(n - 1, 1)
        return self


class PCALeast(PCATop):
    """k principal directions of smallest *non-zero* variance, from the least upwards (nested);
    never the null directions of a rank-deficient training matrix."""

    least = True


class RandomProjectionUniform(Selector):
    """The paper's projection: i.i.d. Uniform[0, 1) entries, unit-norm columns, no centring.

    Column j is the j-th block of d draws of ``default_rng(seed)``, so the first k columns of the
    d×d matrix are drawn without building it and are nested across k
    (:mod:`~drprobe.selectors.projections`).
    """

    yields = "projection"
    seeded = True
    draws = "randproj_uniform"  # the kind of drprobe.selectors.projections

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
        self.indices_ = rank_descending(self.variances_)[: self._k(d)]
        return self

    @classmethod
    def order_from_columns(
        cls, d: int, blocks: Iterable[np.ndarray], y: Any, seed: Any
    ) -> np.ndarray:
        """(d,) neurons by decreasing variance over the blocks' rows, one block at a time
        (memory: d float64 variances and one block)."""
        return rank_descending(np.concatenate([np.var(b, axis=0) for b in blocks]))


class WeightNormRanked(Selector):
    """Neurons ranked by the L2 norm over classes of a full-layer logistic probe's weights.

    The probe is scikit-learn's multinomial LogisticRegression (``C``, ``max_iter``) on
    standardised train features, or pass ``coef`` (C, d) to skip fitting. Learned:
    ``weight_norms_`` (d,), ``indices_`` (k,) by decreasing norm.
    """

    needs_labels = True
    wide_refusal = ("it ranks neurons by a full-layer feature-space probe, which a wide layer "
                    "does not fit")

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
        self.indices_ = rank_descending(self.weight_norms_)[: self._k(d)]
        return self

