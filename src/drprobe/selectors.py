"""Selectors: maps from a d-neuron layer to k features (random subsets, prefixes, PCA, projections).

Every selector family is *nested*: for a fixed selector and seed, the k-feature map is the first k
columns of one d x m basis. :class:`SubsetFamily` is that basis; the probe bank and the CKA code
consume families so that all sizes k of one family share one computation.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler

from drprobe.errors import InvalidValueError, unknown


@dataclass
class SubsetFamily:
    """Nested feature maps: the map of size k is the first k columns of one basis.

    Exactly one of ``indices`` / ``components`` is set.

    Attributes:
        selector: selector name, e.g. ``"random"`` or ``"pca_top"``.
        seed: the seed that drew the basis (0 for deterministic selectors).
        ks: sizes to evaluate, strictly increasing, each in [1, m].
        indices: (m,) int array, column order for coordinate selectors; size k keeps
            ``X[:, indices[:k]]``.
        components: (d, m) float array for projection selectors; size k computes
            ``(X - mean) @ components[:, :k]``.
        mean: (d,) float array subtracted before projecting (None = no centring).
        fractions: optional (len(ks),) fractions that produced ``ks`` (for reporting).
    """

    selector: str
    seed: int
    ks: list[int]
    indices: np.ndarray | None = None
    components: np.ndarray | None = None
    mean: np.ndarray | None = None
    fractions: list[float] | None = field(default=None)

    @property
    def width(self) -> int:
        """m, the number of basis columns (the largest usable k)."""
        if self.indices is not None:
            return len(self.indices)
        assert self.components is not None
        return int(self.components.shape[1])

    def transform(self, X: np.ndarray, k: int | None = None) -> np.ndarray:
        """Map features (n, d) to the first ``k`` basis coordinates (n, k); k=None gives all m."""
        k = self.width if k is None else k
        if self.indices is not None:
            return np.asarray(X[:, self.indices[:k]])
        assert self.components is not None
        Xc = X if self.mean is None else X - self.mean
        return np.asarray(Xc @ self.components[:, :k])


# --------------------------------------------------------------------------- subset sizes

#: The paper's main fraction grid (SCIENCE.md).
PAPER_FRACTIONS: tuple[float, ...] = (
    0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 0.9, 1.0
)


def _floor_fd(f: float, d: int) -> int:
    """⌊f·d⌋ robust to float error: 0.29·100 = 28.999999999999996 counts as 29."""
    x = f * d
    r = round(x)
    return int(r) if abs(x - r) <= 1e-9 * max(1.0, x) else math.floor(x)


def resolve_ks(
    d: int, fractions: Sequence[float] | None = None, counts: Sequence[int] | None = None
) -> tuple[list[int], list[float]]:
    """Subset sizes k = max(1, ⌊f·d⌋) for fractions, and/or absolute counts (fraction = k/d).

    Fractions are taken first, then counts; a k already produced keeps the first fraction that
    produced it. With neither given, the paper's grid :data:`PAPER_FRACTIONS` is used.
    Returns (ks ascending, fraction of each k).

    >>> resolve_ks(10, [0.3, 0.01, 0.05, 1.0])
    ([1, 3, 10], [0.01, 0.3, 1.0])
    """
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise InvalidValueError(f"layer width d must be an integer >= 1; got {d!r}")
    if fractions is None and counts is None:
        fractions = PAPER_FRACTIONS
    chosen: dict[int, float] = {}
    for f in fractions or ():
        f = float(f)
        if not (0.0 < f <= 1.0):
            raise InvalidValueError(f"fraction {f!r} is outside the valid range (0, 1]")
        chosen.setdefault(max(1, _floor_fd(f, d)), f)
    for c in counts or ():
        if isinstance(c, bool) or not float(c).is_integer() or not (1 <= c <= d):
            raise InvalidValueError(f"count {c!r} is outside the valid range [1, {d}] (integers)")
        chosen.setdefault(int(c), int(c) / d)
    ks = sorted(chosen)
    return ks, [chosen[k] for k in ks]


# --------------------------------------------------------------------------- estimators

def _mean_and_cross(X: Any, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Column mean (d,) and centred cross-product X_cᵀX_c (d, d) in float64, two passes."""
    mean = np.mean(X, axis=0, dtype=np.float64)
    C = np.zeros((X.shape[1], X.shape[1]))
    for lo in range(0, X.shape[0], batch):
        Y = np.asarray(X[lo:lo + batch], dtype=np.float64) - mean
        C += Y.T @ Y
    return mean, C


class _Selector(BaseEstimator, TransformerMixin):
    """Common base: ``n_components`` = k, ``random_state`` = seed. Subclasses set ``kind``."""

    kind: str = "coordinate"  # or "projection"
    needs_labels: bool = False

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
            return np.asarray(X[:, self.indices_])
        Xf = np.asarray(X, dtype=np.float64)
        return (Xf - self.mean_) @ self.components_


class RandomSubset(_Selector):
    """k random neurons: ``indices_`` (k,) = first k of ``default_rng(seed).permutation(d)``."""

    def fit(self, X: Any, y: Any = None) -> RandomSubset:
        d = self._width(X)
        self.indices_ = np.random.default_rng(self.random_state).permutation(d)[: self._k(d)]
        return self


class PrefixSubset(_Selector):
    """The first k neurons (Matryoshka / fixed-feature models): ``indices_`` = arange(k)."""

    def fit(self, X: Any, y: Any = None) -> PrefixSubset:
        d = self._width(X)
        self.indices_ = np.arange(self._k(d))
        return self


def _pca_basis(C: np.ndarray, k: int, least: bool) -> tuple[np.ndarray, np.ndarray]:
    """k eigenvectors (d, k) of symmetric C and their eigenvalues (k,), by decreasing (top) or
    increasing (least) eigenvalue; each column's largest-|·| entry is made positive."""
    w, V = np.linalg.eigh(C)
    order = np.arange(k) if least else np.arange(len(w) - 1, len(w) - 1 - k, -1)
    V, w = V[:, order], w[order]
    pivot = V[np.argmax(np.abs(V), axis=0), np.arange(k)]
    return V * np.where(pivot < 0, -1.0, 1.0), w


class PCATop(_Selector):
    """k principal directions of largest variance of the centred train features.

    Learned: ``components_`` (d, k) orthonormal, ``mean_`` (d,), ``explained_variance_`` (k,).
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
        self.components_, w = _pca_basis(C, k, least=self._least)
        self.explained_variance_ = np.maximum(w, 0.0) / max(n - 1, 1)
        return self


class PCALeast(PCATop):
    """k principal directions of smallest variance, ordered from the least upwards (nested)."""

    _least = True


class RandomProjectionUniform(_Selector):
    """The paper's projection: i.i.d. Uniform[0, 1) entries, unit-norm columns, no centring.

    Column j is the j-th block of d draws of ``default_rng(seed)``, so the first k columns of the
    d×d matrix are drawn without building it and are nested across k.
    """

    kind = "projection"

    def _draw(self, rng: np.random.Generator, k: int, d: int) -> np.ndarray:
        return rng.random((k, d)).T

    def fit(self, X: Any, y: Any = None) -> RandomProjectionUniform:
        d = self._width(X)
        W = self._draw(np.random.default_rng(self.random_state), self._k(d), d)
        self.components_ = W / np.linalg.norm(W, axis=0)
        self.mean_ = np.zeros(d)
        return self


class RandomProjectionGauss(RandomProjectionUniform):
    """i.i.d. N(0, 1) columns scaled to unit norm (the textbook random projection), no centring."""

    def _draw(self, rng: np.random.Generator, k: int, d: int) -> np.ndarray:
        return rng.standard_normal((k, d)).T


class VarianceRanked(_Selector):
    """The k neurons of highest train variance (ties by index); ``variances_`` (d,)."""

    def fit(self, X: Any, y: Any = None) -> VarianceRanked:
        d = self._width(X)
        self.variances_ = np.var(X, axis=0, dtype=np.float64)
        self.indices_ = np.argsort(-self.variances_, kind="stable")[: self._k(d)]
        return self


def _need_labels(name: str, y: Any) -> None:
    if y is None:
        raise InvalidValueError(f"selector {name!r} needs training labels y; got None")


class WeightNormRanked(_Selector):
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
            _need_labels("weight_norm", y)
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


class GreedyForward(_Selector):
    """Forward selection of neurons on a validation split, nested by construction.

    Proxy [ours]: ridge regression from standardised train features to centred one-hot labels
    (intercept = class frequencies, penalty λ = ``alpha``·n_train), evaluated on the validation
    split. ``criterion="mse"`` adds the neuron that most lowers the validation squared error;
    ``"accuracy"`` the one that most raises validation accuracy of argmax(prediction), ties broken
    by squared error. Every candidate's score is *exact* (equal to refitting the ridge on S ∪ {j}):
    the method is Gram–Schmidt in the metric G = XᵀX + λI, keeping the Schur complement G_res,
    the residual targets β = XᵀY − G[:, S]W_S and the residualised validation features R, each
    updated by one rank-one step per added neuron (O(d² + n_val·d·C) per step).
    Without ``X_val``, a ``val_fraction`` of the training rows (drawn with ``random_state``) is held
    out. Learned: ``indices_`` (k,), ``val_mse_`` (k,) and ``val_accuracy_`` (k,) after each step.
    """

    needs_labels = True

    def __init__(
        self, n_components: int, random_state: Any = None, alpha: float = 1e-3,
        criterion: str = "mse", val_fraction: float = 0.2,
    ) -> None:
        super().__init__(n_components, random_state)
        self.alpha = alpha
        self.criterion = criterion
        self.val_fraction = val_fraction

    def _split(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
        n = X.shape[0]
        n_val = round(self.val_fraction * n)
        if not (0.0 < self.val_fraction < 1.0) or n_val < 1 or n - n_val < 2:
            raise InvalidValueError(
                f"val_fraction {self.val_fraction!r} must be in (0, 1) and leave >= 1 validation "
                f"and >= 2 training rows; got n={n}"
            )
        perm = np.random.default_rng(self.random_state).permutation(n)
        return X[perm[n_val:]], y[perm[n_val:]], X[perm[:n_val]], y[perm[:n_val]]

    def fit(self, X: Any, y: Any = None, X_val: Any = None, y_val: Any = None) -> GreedyForward:
        d = self._width(X)
        k = self._k(d)
        _need_labels("greedy", y)
        if self.criterion not in ("mse", "accuracy"):
            raise InvalidValueError(f"criterion {self.criterion!r}; valid choices: accuracy, mse")
        Xt, yt = np.asarray(X, dtype=np.float64), np.asarray(y)
        if X_val is None:
            Xt, yt, Xv, yv = self._split(Xt, yt)
        elif y_val is None:
            raise InvalidValueError("greedy got X_val without y_val; pass both or neither")
        else:
            Xv, yv = np.asarray(X_val, dtype=np.float64), np.asarray(y_val)
        classes = np.unique(yt)
        Yt, Yv = ((v[:, None] == classes[None, :]).astype(np.float64) for v in (yt, yv))
        yv_idx = np.where(Yv.any(axis=1), Yv.argmax(axis=1), -1)  # unseen class: never right
        mu, sd = Xt.mean(axis=0), Xt.std(axis=0)
        sd[sd == 0] = 1.0
        Xs, R = (Xt - mu) / sd, (Xv - mu) / sd
        G = Xs.T @ Xs + self.alpha * Xs.shape[0] * np.eye(d)
        beta = Xs.T @ (Yt - Yt.mean(axis=0))
        pred = np.tile(Yt.mean(axis=0), (Xv.shape[0], 1))
        avail = np.ones(d, dtype=bool)
        chosen, mses, accs = [], [], []
        for _ in range(k):
            gam = np.where(avail, np.diag(G), 1.0)  # ≥ λ > 0 for unselected columns
            W = beta / gam[:, None]
            # drop in validation SSE from adding j: 2 r_jᵀE w_j − ‖r_j‖²‖w_j‖², E = Y_val − pred
            gain = 2.0 * np.sum((R.T @ (Yv - pred)) * W, axis=1) - np.sum(R * R, axis=0) * np.sum(
                W * W, axis=1)
            gain[~avail] = -np.inf
            if self.criterion == "accuracy":
                acc = self._candidate_accuracy(pred, R, W, yv_idx, avail)
                gain = np.where(acc >= acc.max() - 1e-12, gain, -np.inf)
            j = int(np.argmax(gain))
            g = G[:, j].copy()
            pred += np.outer(R[:, j], W[j])
            R -= np.outer(R[:, j], g / g[j])
            beta -= np.outer(g, beta[j] / g[j])
            G -= np.outer(g, g / g[j])
            avail[j] = False
            chosen.append(j)
            mses.append(float(np.mean(np.sum((Yv - pred) ** 2, axis=1))))
            accs.append(float(np.mean(pred.argmax(axis=1) == yv_idx)))
        self.indices_ = np.asarray(chosen, dtype=np.int64)
        self.val_mse_, self.val_accuracy_ = np.asarray(mses), np.asarray(accs)
        return self

    @staticmethod
    def _candidate_accuracy(
        pred: np.ndarray, R: np.ndarray, W: np.ndarray, yv_idx: np.ndarray, avail: np.ndarray,
        chunk: int = 64,
    ) -> np.ndarray:
        """(d,) validation accuracy after adding each available neuron (−inf for the others)."""
        acc = np.full(R.shape[1], -np.inf)
        cand = np.flatnonzero(avail)
        for lo in range(0, len(cand), chunk):
            J = cand[lo:lo + chunk]
            P = pred[:, None, :] + R[:, J, None] * W[None, J, :]  # (n_val, |J|, C)
            acc[J] = np.mean(P.argmax(axis=2) == yv_idx[:, None], axis=0)
        return acc


# --------------------------------------------------------------------------- families

SELECTORS: dict[str, type[_Selector]] = {
    "random": RandomSubset,
    "prefix": PrefixSubset,
    "pca_top": PCATop,
    "pca_least": PCALeast,
    "randproj_uniform": RandomProjectionUniform,
    "randproj_gauss": RandomProjectionGauss,
    "variance": VarianceRanked,
    "weight_norm": WeightNormRanked,
    "greedy": GreedyForward,
}

_SEEDED = {"random", "randproj_uniform", "randproj_gauss"}


def make_family(
    name: str, X_train: Any, ks: Sequence[int], seed: int = 0, y_train: Any = None,
    X_val: Any = None, y_val: Any = None, fractions: Sequence[float] | None = None,
    cross: Any = None,
) -> SubsetFamily:
    """Fit selector ``name`` once at width m = max(ks) on X_train (n, d) and wrap it as a family.

    ``cross``: optional :class:`~drprobe.metrics.cka.CrossProductStats` of X_train, reused by
    the PCA selectors. The family's seed is ``seed`` for randomised selectors (and for greedy
    when it draws its own validation split), else 0.
    """
    if name not in SELECTORS:
        raise unknown("selector", name, SELECTORS)
    cls = SELECTORS[name]
    d = int(X_train.shape[1])
    ks = [int(k) for k in ks]
    if not ks or ks[0] < 1 or ks[-1] > d or any(b <= a for a, b in pairwise(ks)):
        raise InvalidValueError(f"ks must be strictly increasing integers in [1, {d}]; got {ks}")
    if fractions is not None and len(fractions) != len(ks):
        raise InvalidValueError(f"got {len(fractions)} fractions for {len(ks)} ks; need one each")
    if cls.needs_labels:
        _need_labels(name, y_train)
    est = cls(n_components=ks[-1], random_state=seed)
    if isinstance(est, GreedyForward):
        est.fit(X_train, y_train, X_val=X_val, y_val=y_val)
    elif isinstance(est, PCATop):
        est.fit(X_train, cross=cross)
    else:
        est.fit(X_train, y_train)
    seeded = name in _SEEDED or (name == "greedy" and X_val is None)
    fam_seed = int(seed) if seeded and seed is not None else 0
    fracs = None if fractions is None else [float(f) for f in fractions]
    if est.kind == "coordinate":
        return SubsetFamily(name, fam_seed, ks, indices=np.asarray(est.indices_), fractions=fracs)
    mean = est.mean_ if isinstance(est, PCATop) else None
    return SubsetFamily(name, fam_seed, ks, components=est.components_, mean=mean, fractions=fracs)
