"""Linear CKA (Kornblith et al. 2019) and its debiased form: functions and a streaming accumulator.

With column-centred features X (n, d) and Y (n, k), K = X Xᵀ and L = Y Yᵀ:

    CKA(X, Y) = ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) = tr(KL) / (‖K‖_F ‖L‖_F).

The debiased variant replaces every tr(KL) by the unbiased HSIC estimator (Song et al. 2012),

    HSIC_u(K, L) = [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1/((n−1)(n−2)) − 2/(n−2)·1ᵀK̃L̃1] / (n(n−3)),

K̃, L̃ the Grams with zeroed diagonals. For centred data (K1 = L1 = 0) and row norms
q_i = ‖x_i‖², p_i = ‖y_i‖², the three terms reduce to tr(KL) − Σqp, (Σq)(Σp) and Σqp, so

    HSIC_u = [tr(KL) − Σ_i q_i p_i + Σq·Σp/((n−1)(n−2)) − 2/(n−2)·Σ_i q_i p_i] / (n(n−3)).

HSIC_u is a U-statistic and therefore exactly invariant to shifting the data; centring first only
helps rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from drprobe.errors import InvalidValueError


def _as_f64(X: Any, name: str = "X") -> np.ndarray:
    """Any 2-D array-like (numpy, memmap, float16/32, a torch tensor on any device) as float64."""
    if hasattr(X, "detach"):
        X = X.detach().cpu().numpy()
    A = np.asarray(X, dtype=np.float64)
    if A.ndim != 2:
        raise InvalidValueError(f"{name} must be a 2-D array (n, d); got shape {A.shape}")
    return A


def _on_device(X: Any, device: str) -> Any:
    """X (b, d) as a float64 torch tensor on ``device``."""
    import torch

    X = X if isinstance(X, torch.Tensor) else torch.from_numpy(np.asarray(X))
    if X.ndim != 2:
        raise InvalidValueError(f"X_batch must be a 2-D array (n, d); got shape {tuple(X.shape)}")
    return X.to(device=device, dtype=torch.float64)


def _host(t: Any) -> np.ndarray:
    """A torch tensor (any device) or array as a float64 numpy array."""
    return np.asarray(t.cpu() if hasattr(t, "cpu") else t, dtype=np.float64)


def _centred_pair(X: Any, Y: Any, min_n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    Xc, Yc = _as_f64(X, "X"), _as_f64(Y, "Y")
    if Xc.shape[0] != Yc.shape[0]:
        raise InvalidValueError(
            f"X and Y must have the same number of rows; got {Xc.shape[0]} and {Yc.shape[0]}"
        )
    if Xc.shape[0] < min_n:
        raise InvalidValueError(f"need at least {min_n} examples; got n={Xc.shape[0]}")
    return Xc - Xc.mean(axis=0), Yc - Yc.mean(axis=0)


def _kernel_sums(Xc: np.ndarray, Yc: np.ndarray) -> tuple[float, float, float]:
    """tr(KL), tr(KK), tr(LL) from centred Xc (n, d), Yc (n, k) via the cheaper form.

    Feature form costs about n(d² + k² + dk) multiply-adds, the n×n Gram form n²(d + k).
    """
    n, d = Xc.shape
    k = Yc.shape[1]
    if d * d + k * k + d * k <= n * (d + k):
        tr_kl = np.sum((Yc.T @ Xc) ** 2)
        tr_kk = np.sum((Xc.T @ Xc) ** 2)
        tr_ll = np.sum((Yc.T @ Yc) ** 2)
    else:
        K, L = Xc @ Xc.T, Yc @ Yc.T
        tr_kl, tr_kk, tr_ll = np.sum(K * L), np.sum(K * K), np.sum(L * L)
    return float(tr_kl), float(tr_kk), float(tr_ll)


def _ratio(num: np.ndarray | float, a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """num / sqrt(a·b), NaN where a·b ≤ 0 (a constant input, or a negative HSIC_u)."""
    num, prod = np.asarray(num, dtype=np.float64), np.asarray(a, np.float64) * np.asarray(b)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / np.sqrt(np.where(prod > 0, prod, np.nan))
    return out


def _hsic_u(tr_kl: Any, qp: Any, tq: Any, tp: Any, n: int) -> Any:
    """HSIC_u for centred data from tr(KL), Σq_i p_i, Σq_i and Σp_i (module docstring)."""
    return (tr_kl - qp + tq * tp / ((n - 1) * (n - 2)) - 2.0 * qp / (n - 2)) / (n * (n - 3))


def linear_cka(X: Any, Y: Any) -> float:
    """Linear CKA between X (n, d) and Y (n, k); both are column-centred here. NaN if one is constant.

    >>> X = np.random.default_rng(0).normal(size=(50, 5))
    >>> round(linear_cka(X, 3 * X), 12)
    1.0
    """
    Xc, Yc = _centred_pair(X, Y)
    tr_kl, tr_kk, tr_ll = _kernel_sums(Xc, Yc)
    return float(_ratio(tr_kl, tr_kk, tr_ll))


def debiased_linear_cka(X: Any, Y: Any) -> float:
    """Linear CKA from the unbiased HSIC estimator for X (n, d), Y (n, k), n ≥ 4.

    NaN when HSIC_u(K, K)·HSIC_u(L, L) ≤ 0 (possible for tiny n).
    """
    Xc, Yc = _centred_pair(X, Y, min_n=4)
    n = Xc.shape[0]
    tr_kl, tr_kk, tr_ll = _kernel_sums(Xc, Yc)
    q, p = np.einsum("ij,ij->i", Xc, Xc), np.einsum("ij,ij->i", Yc, Yc)
    h_kl = _hsic_u(tr_kl, q @ p, q.sum(), p.sum(), n)
    h_kk = _hsic_u(tr_kk, q @ q, q.sum(), q.sum(), n)
    h_ll = _hsic_u(tr_ll, p @ p, p.sum(), p.sum(), n)
    return float(_ratio(h_kl, h_kk, h_ll))
