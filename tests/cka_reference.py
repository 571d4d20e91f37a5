"""Slow, literal references for the CKA tests (not part of drprobe): Song et al.'s unbiased
HSIC written out on n x n Gram matrices, O(n^3)."""

from __future__ import annotations

from typing import Any

import numpy as np


def hsic_u_gram(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al.'s HSIC_u written out literally on n×n Grams (reference only, O(n³))."""
    n = K.shape[0]
    Kt, Lt = K.copy(), L.copy()
    np.fill_diagonal(Kt, 0.0)
    np.fill_diagonal(Lt, 0.0)
    one = np.ones(n)
    total = (
        np.trace(Kt @ Lt)
        + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ Kt @ Lt @ one)
    )
    return float(total / (n * (n - 3)))


def debiased_cka_gram(X: Any, Y: Any) -> float:
    """Slow reference: debiased CKA from literal uncentred linear Grams (tests only)."""
    Xf, Yf = np.asarray(X, dtype=np.float64), np.asarray(Y, dtype=np.float64)
    K, L = Xf @ Xf.T, Yf @ Yf.T
    return float(hsic_u_gram(K, L) / np.sqrt(hsic_u_gram(K, K) * hsic_u_gram(L, L)))
