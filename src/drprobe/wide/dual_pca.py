"""PCA top / least directions restricted to non-zero training variance, in both spaces.

The centred training matrix X_c (n, d) has rank r ≤ min(n − 1, d). Its d − r null directions have
exactly zero training variance; a "least-variance" selector that took them would feed every probe
constant zeros. Both paths here therefore keep only the r directions whose variance is above
rounding level (``nonnull_count``), and order them by decreasing (top) or increasing (least)
variance.

- Feature space (d ≤ n): eigh of C = X_cᵀX_c (d, d) → directions V (d, r).
- Sample space (d > n, dual PCA): eigh of the Gram K = X_c X_cᵀ = U Λ Uᵀ (n, n). The same
  directions are V = X_cᵀ U Λ^{-1/2}, never formed: the train coordinates are X_c V = U Λ^{1/2}
  and the coordinates of other rows (validation, test; centred by the *train* mean) are
  (X_o − μ) V = K_ot U Λ^{-1/2}, with K_ot = (X_o − μ) X_cᵀ.

Peak memory: feature space 3·d² float64 (C, its eigenvectors, workspace); sample space
3·n² + n_o·n float64, plus the Gram pass's block (see :func:`~drprobe.wide.gram.nested_cross_grams`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from drprobe.devices import one_blas_thread
from drprobe.errors import InvalidValueError
from drprobe.selectors.pca import nonnull_count, nonnull_order, sign_fix, symmetric_eigh
from drprobe.wide.columns import ColumnReader
from drprobe.wide.gram import DEFAULT_BLOCK, nested_cross_grams


@dataclass
class DualPCA:
    """Dual PCA of the training rows, as coordinates (the d×m directions are never formed).

    Attributes:
        train: (n, m) coordinates of the training rows, U_m Λ_m^{1/2}.
        others: per other row set, (n_o, m) coordinates K_ot U_m Λ_m^{-1/2}.
        explained_variance: (m,) Λ_m / (n − 1).
        rank: r, the number of non-null directions (m = min(requested, r)).
    """

    train: np.ndarray
    others: list[np.ndarray]
    explained_variance: np.ndarray
    rank: int


def dual_pca(K_tt: Any, K_others: Sequence[Any], m: int, least: bool, d: int) -> DualPCA:
    """PCA coordinates from the centred train Gram K_tt (n, n) and cross-Grams K_ot (n_o, n).

    ``m``: the number of directions wanted (capped at the rank); ``d``: the layer width (for
    the rounding tolerance).
    """
    K = np.asarray(K_tt, dtype=np.float64)
    n = K.shape[0]
    if K.ndim != 2 or K.shape != (n, n) or n < 2:
        raise InvalidValueError(f"K_tt must be a square Gram with n >= 2; got {K.shape}")
    w, U = symmetric_eigh(K)
    r = nonnull_count(w, n, d)
    idx = nonnull_order(w, r, int(m), least)
    U, lam = sign_fix(U[:, idx]), w[idx]
    root = np.sqrt(lam)
    others = []
    for Ko in K_others:
        Ko = np.asarray(Ko, dtype=np.float64)
        if Ko.ndim != 2 or Ko.shape[1] != n:
            raise InvalidValueError(f"cross-Gram must have {n} columns; got {Ko.shape}")
        with one_blas_thread():  # the same bits whatever the thread count
            others.append((Ko @ U) / root)
    return DualPCA(train=U * root, others=others, explained_variance=lam / (n - 1), rank=r)


def dual_pca_from_features(
    train: ColumnReader, others: Sequence[ColumnReader], m: int, least: bool,
    block: int = DEFAULT_BLOCK, progress: bool = False,
) -> DualPCA:
    """Dual PCA straight from column readers: one pass over the d columns for the Grams."""
    order = np.arange(train.d)
    for _, K, Ko in nested_cross_grams(train, others, order, [train.d], standardize=False,
                                       block=block, progress=progress):
        return dual_pca(K, Ko, m, least, train.d)
    raise InvalidValueError("no columns to read")  # unreachable: ks=[d] always yields
