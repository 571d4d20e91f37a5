"""Sample-space CKA: linear and debiased CKA of nested neuron subsets from n×n Gram matrices.

For column-centred X (n, d) and a subset S of its columns, K_S = X_S X_Sᵀ = Σ_{j∈S} x_j x_jᵀ.
Along one ordering of the neurons (a seed's permutation) the subsets are nested, so a single pass
over the columns in that order accumulates K_S for every size k in turn, and the full layer's
Gram K is the end of the same pass. Then (see :mod:`drprobe.metrics.cka`)

    CKA(X, X_S) = tr(K_S K) / (‖K_S‖_F ‖K‖_F),

and the debiased form uses the unbiased HSIC on the same Grams with q = diag K, p = diag K_S.
Both are exact (no approximation), equal to the feature-space values up to rounding.

Peak memory of :func:`nested_gram_cka`: (F + 2)·n² float64 for F sizes (one snapshot of K_S per
size, kept until K is known at the end of the pass) plus one column block n·b; with
``full_gram`` given (a two-pass use) it is 3·n² + n·b. Time: n²·max(k) multiply-adds.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from drprobe.errors import InvalidValueError
from drprobe.metrics.cka import _hsic_u, _ratio
from drprobe.wide.columns import ColumnReader, block_bounds

DEFAULT_BLOCK = 2048  # neurons per column block


def check_nested(order: Any, ks: Sequence[int], d: int) -> tuple[np.ndarray, list[int]]:
    """Validate a neuron order (m,) and strictly increasing sizes ks within it; return both."""
    order = np.asarray(order, dtype=np.int64)
    ks = [int(k) for k in ks]
    if order.ndim != 1 or (order.size and (order.min() < 0 or order.max() >= d)):
        raise InvalidValueError(f"order must be neuron indices in [0, {d}); got shape "
                                f"{order.shape}")
    if not ks or ks[0] < 1 or ks[-1] > order.size or any(b <= a for a, b in pairwise(ks)):
        raise InvalidValueError(
            f"ks must be strictly increasing integers in [1, {order.size}]; got {ks}"
        )
    return order, ks


def _gram_terms(K: np.ndarray, L: np.ndarray) -> dict[str, float]:
    """tr(KL), tr(KK), tr(LL), Σq p, Σq q, Σp p, Σq, Σp for centred Grams K, L (n, n)."""
    q, p = np.diag(K), np.diag(L)
    return {
        "kl": float(np.vdot(K, L)), "kk": float(np.vdot(K, K)), "ll": float(np.vdot(L, L)),
        "qp": float(q @ p), "qq": float(q @ q), "pp": float(p @ p),
        "tq": float(q.sum()), "tp": float(p.sum()),
    }


def _cka_of_terms(t: dict[str, float], n: int, debiased: bool) -> float:
    if not debiased:
        return float(_ratio(t["kl"], t["kk"], t["ll"]))
    h_kl = _hsic_u(t["kl"], t["qp"], t["tq"], t["tp"], n)
    h_kk = _hsic_u(t["kk"], t["qq"], t["tq"], t["tq"], n)
    h_ll = _hsic_u(t["ll"], t["pp"], t["tp"], t["tp"], n)
    return float(_ratio(h_kl, h_kk, h_ll))


def cka_from_grams(K: Any, L: Any, debiased: bool = False) -> float:
    """Linear (or debiased) CKA from the Grams of two *column-centred* feature sets (n, n).

    Linear CKA needs n ≥ 2, debiased n ≥ 4. NaN when one side is constant.
    """
    K, L = np.asarray(K, dtype=np.float64), np.asarray(L, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape != L.shape:
        raise InvalidValueError(f"Grams must be square and equal in shape; got {K.shape}, "
                                f"{L.shape}")
    n = K.shape[0]
    if n < (4 if debiased else 2):
        raise InvalidValueError(f"need at least {4 if debiased else 2} examples; got n={n}")
    return _cka_of_terms(_gram_terms(K, L), n, debiased)


def centred_block(B: np.ndarray) -> np.ndarray:
    """Columns of B (n, b) centred over its rows, in place (B must be a private float64 copy)."""
    B -= B.mean(axis=0)
    return B


def nested_gram_cka(
    X: Any, order: Any, ks: Sequence[int], *, block: int = DEFAULT_BLOCK,
    full_gram: Any = None, progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear and debiased CKA of X[:, order[:k]] against X for every k in ks, in one pass.

    Args:
        X: (n, d) features (array or memmap) or a :class:`ColumnReader` over them.
        order: (m,) neuron indices (e.g. a seed's permutation of range(d)); subsets are prefixes.
        ks: strictly increasing sizes in [1, m].
        block: neurons per column block.
        full_gram: the centred Gram of the full layer (n, n) when already known; then no
            snapshots are kept. Otherwise ``order`` must cover all d neurons, and K is the end
            of the pass.

    Returns:
        (linear (F,), debiased (F,), K (n, n)): debiased values are NaN when n < 4.
    """
    reader = X if isinstance(X, ColumnReader) else ColumnReader(X)
    order, ks = check_nested(order, ks, reader.d)
    n = reader.n
    if n < 2:
        raise InvalidValueError(f"need at least 2 examples for CKA; got n={n}")
    stop = ks[-1]
    if full_gram is None:
        if order.size != reader.d or np.unique(order).size != reader.d:
            raise InvalidValueError("without full_gram, order must be a permutation of all "
                                    f"{reader.d} neurons (the full layer ends the pass)")
        stop = reader.d
    K = np.zeros((n, n))
    terms: list[dict[str, float] | np.ndarray] = []
    bounds = block_bounds(sorted(set(ks) | {stop}), block)
    for lo, hi, k in tqdm(bounds, desc="gram", unit="block", file=sys.stderr,
                          disable=not progress):
        B = centred_block(reader.columns(order[lo:hi]))
        K += B @ B.T
        if k is not None and k in ks:
            terms.append(_gram_terms(np.asarray(full_gram), K) if full_gram is not None
                         else K.copy())
    if full_gram is None:
        terms = [_gram_terms(K, S) for S in terms]  # the last pass block gave the full layer
        full = K
    else:
        full = np.asarray(full_gram, dtype=np.float64)
    lin = np.array([_cka_of_terms(t, n, False) for t in terms])
    deb = np.array([_cka_of_terms(t, n, True) if n >= 4 else np.nan for t in terms])
    return lin, deb, full


#: a column whose train standard deviation is at most this times max(|mean|, 1) counts as
#: constant and keeps scale 1, as in the probe bank's standardisation (float32 rounding level)
CONSTANT_RTOL = 16 * float(np.finfo(np.float32).eps)


def _scale(centred: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Per-column train standard deviation of a centred block (constant columns: 1)."""
    sd = centred.std(axis=0)
    return np.where(sd > CONSTANT_RTOL * np.maximum(np.abs(mean), 1.0), sd, 1.0)


def nested_cross_grams(
    train: ColumnReader, others: Sequence[ColumnReader], order: Any, ks: Sequence[int], *,
    standardize: bool, block: int = DEFAULT_BLOCK, progress: bool = False,
):
    """Yield (k, K_tt, [K_ot, ...]) for every k in ks, accumulated along ``order`` in one pass.

    With Z the train rows' columns order[:k], centred by their train mean (and, when
    ``standardize``, divided by their train standard deviation; constant columns keep scale 1)
    and Z_o the same map applied to each reader in ``others``: K_tt = Z Zᵀ (n, n) and
    K_ot = Z_o Zᵀ (n_o, n). The yielded arrays are the live accumulators: copy them to keep them.

    Peak memory: (n + Σ n_o)·n float64 plus one block (n + Σ n_o)·b.
    """
    order, ks = check_nested(order, ks, train.d)
    if any(o.d != train.d for o in others):
        raise InvalidValueError(f"all feature sets must have d={train.d} columns")
    K = np.zeros((train.n, train.n))
    Ko = [np.zeros((o.n, train.n)) for o in others]
    for lo, hi, k in tqdm(block_bounds(ks, block), desc="gram", unit="block", file=sys.stderr,
                          disable=not progress):
        cols = order[lo:hi]
        B = train.columns(cols)
        mean = B.mean(axis=0)
        B -= mean
        scale = _scale(B, mean) if standardize else None
        if scale is not None:
            B /= scale
        K += B @ B.T
        for o, acc in zip(others, Ko):
            Bo = o.columns(cols) - mean
            if scale is not None:
                Bo /= scale
            acc += Bo @ B.T
        if k is not None:
            yield k, K, Ko
