"""PCA restricted to directions with non-zero training variance (feature space).

The centred training matrix X_c (n, d) has rank r ≤ min(n − 1, d). Its d − r null directions
have exactly zero training variance; a "least-variance" selector that took them would feed every
probe constant zeros. :func:`pca_nonnull_basis` keeps only the r directions whose variance is above
rounding level (:func:`nonnull_count`), ordered by decreasing (top) or increasing (least)
variance, and :func:`clip_to_rank` turns the requested sizes into sizes within the rank. The
sample-space (dual) form is :mod:`drprobe.wide.dual_pca`, on the same rules.

Determinism: :func:`symmetric_eigh` runs LAPACK on one thread (:func:`~drprobe.devices.
one_blas_thread`) on an exactly symmetric matrix, and :func:`sign_fix` fixes each vector's sign,
so a basis is the same to the last bit whatever the thread count or the machine's load.

Memory: 3·d² float64 (C, its eigenvectors, the eigh workspace).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from drprobe.devices import one_blas_thread
from drprobe.errors import InvalidValueError

__all__ = ["clip_to_rank", "nonnull_count", "nonnull_order", "pca_nonnull_basis", "sign_fix",
           "symmetric_eigh"]


def nonnull_count(w: Any, n: int, d: int) -> int:
    """Number of eigenvalues of a centred second-moment matrix (C or the Gram) that are not
    rounding noise: w_i > max(w)·max(n, d)·ε (ε of float64), and never more than min(n − 1, d).
    """
    w = np.asarray(w, dtype=np.float64)
    if w.size == 0 or not np.max(w) > 0:
        return 0
    tol = float(np.max(w)) * max(n, d) * np.finfo(np.float64).eps
    return int(min(np.sum(w > tol), max(n - 1, 0), d))


def nonnull_order(w: np.ndarray, r: int, k: int, least: bool) -> np.ndarray:
    """Indices of the k eigenvalues among the r largest of ascending w, top or least first."""
    keep = np.arange(len(w) - r, len(w))  # ascending: the r non-null ones are at the end
    return keep[:k] if least else keep[::-1][:k]


def sign_fix(V: np.ndarray) -> np.ndarray:
    """Each column's largest-|·| entry made positive (a deterministic sign)."""
    if V.shape[1] == 0:
        return V
    pivot = V[np.argmax(np.abs(V), axis=0), np.arange(V.shape[1])]
    return V * np.where(pivot < 0, -1.0, 1.0)


def symmetric_eigh(A: Any) -> tuple[np.ndarray, np.ndarray]:
    """Ascending eigenvalues (m,) and eigenvectors (m, m) of the symmetric part of A (m, m),
    float64, computed on one LAPACK thread: the same bits whatever the thread count (a
    multi-threaded eigh rounds differently per thread count; ``(A + Aᵀ) / 2`` is exactly
    symmetric, so the triangle LAPACK reads does not matter)."""
    A = np.asarray(A, dtype=np.float64)
    with one_blas_thread():
        return np.linalg.eigh((A + A.T) / 2.0)


def pca_nonnull_basis(C: Any, k: int, least: bool, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Feature-space PCA: k' = min(k, r) eigenvectors (d, k') of C (d, d) with non-zero
    variance and their eigenvalues (k',), by decreasing (top) or increasing (least) eigenvalue.

    ``n`` is the number of training rows C was formed from (it bounds the rank by n − 1).
    """
    C = np.asarray(C, dtype=np.float64)
    w, V = symmetric_eigh(C)
    r = nonnull_count(w, n, C.shape[0])
    idx = nonnull_order(w, r, int(k), least)
    return sign_fix(V[:, idx]), w[idx]


def clip_to_rank(
    ks: Sequence[int], fractions: Sequence[float] | None, rank: int, d: int
) -> tuple[list[int], list[float] | None]:
    """PCA sizes restricted to the r non-null directions: every k < r, then r itself.

    A k ≥ r would add null directions (zero training variance); the sizes that reach the rank
    are replaced by one size r, whose fraction is r/d. Returns (ks, fractions).
    """
    if rank < 1:
        raise InvalidValueError("the training features have no variance: PCA has no direction")
    keep = [i for i, k in enumerate(ks) if k < rank]
    out_k = [int(ks[i]) for i in keep]
    out_f = None if fractions is None else [float(fractions[i]) for i in keep]
    if len(keep) < len(ks):
        out_k.append(int(rank))
        if out_f is not None:
            out_f.append(rank / d)
    return out_k, out_f
