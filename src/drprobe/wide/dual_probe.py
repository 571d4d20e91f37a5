"""Sample-space probes: an L2-penalised linear probe trained exactly from the subset's Gram.

The bank's probe on subset S minimises mean CE(Z W + b) + (λ/2)‖W‖²_F over W (k, C) and an
unpenalised bias b, with Z (n, k) the subset's train columns standardised by train statistics,
i.e. scikit-learn's ``LogisticRegression(C = 1/(λ·n))`` on those columns. The loss sees W only
through Z W, and any part of W orthogonal to the rows of Z only adds penalty, so the optimum lies
in the row space of Z. With the train Gram K = Z Zᵀ (rank r ≤ n − 1, Z being centred) and any M (n, r) with
Mᵀ K M = I and Φ = K M a factor of K (Φ Φᵀ = K), W = Zᵀ M B for B (r, C) gives

    Z W = K M B = Φ B,    ‖W‖_F = ‖B‖_F,    Z_o W = (Z_o Zᵀ) M B = Φ_o B,

so the probe is *exactly* the same linear model on Φ (n, r), with the same penalty and bias,
and other rows (validation, test) map through their cross-Gram K_ot = Z_o Zᵀ. Φ = U Λ^{1/2}
(M = U Λ^{-1/2}, the eigendecomposition) is one choice; the pivoted Cholesky factor is another,
several times cheaper to compute (docs/performance.md), and is the one used. Φ's columns are already centred,
so the bank trains on them with ``standardize=False``.

Peak memory per size k: the Grams (n + n_o)·n float64, the factor n², and Φ, Φ_o
(n + n_o)·r float64; the probe bank then works on width r ≤ n − 1 instead of k.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.linalg import lapack, solve_triangular
from sklearn.base import clone

from drprobe.devices import one_blas_thread
from drprobe.errors import InvalidValueError
from drprobe.probes import ProbeBank, ProbeResult
from drprobe.selectors import SubsetFamily
from drprobe.wide.columns import ColumnReader
from drprobe.wide.gram import DEFAULT_BLOCK, nested_cross_grams


def nested_probe_grams(
    train: ColumnReader, others: Sequence[ColumnReader], order: Any, ks: Sequence[int], *,
    block: int = DEFAULT_BLOCK, progress: bool = False,
) -> Iterator[tuple[int, np.ndarray, list[np.ndarray]]]:
    """(k, K_tt, [K_ot]) of the standardised columns order[:k] for every k, in one pass.

    Live accumulators (see :func:`~drprobe.wide.gram.nested_cross_grams`).
    """
    return nested_cross_grams(train, others, order, ks, standardize=True, block=block,
                              progress=progress)


def sample_space_features(
    K_tt: Any, K_others: Sequence[Any], k: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Φ (n, r) and Φ_o (n_o, r) from the standardised subset's Grams; k is the subset size.

    Any factor with Φ Φᵀ = K_tt serves (module docstring): Φ is the pivoted Cholesky factor,
    P K_tt Pᵀ = L Lᵀ with L (n, r) and its leading (r, r) block L₁₁ invertible, rows put back
    in their order (Φ = Pᵀ L); with M = Pᵀ [L₁₁^{-T}; 0], Mᵀ K_tt M = I and K_tt M = Φ, so
    Φ_o = K_ot M = K_ot[:, pivots] L₁₁^{-T}. r stops where the largest remaining pivot falls to
    rounding level (max(n, k)·ε·max diag K_tt) and never exceeds min(n − 1, k). About n³/3
    multiply-adds, a fraction of an eigendecomposition's; on one BLAS thread (the same bits
    whatever the thread count).
    """
    K = np.asarray(K_tt, dtype=np.float64)
    n = K.shape[0]
    if K.ndim != 2 or K.shape != (n, n) or n < 2:
        raise InvalidValueError(f"K_tt must be a square Gram with n >= 2; got {K.shape}")
    tol = max(n, int(k)) * np.finfo(np.float64).eps * float(np.max(np.diag(K), initial=0.0))
    with one_blas_thread():
        factor, piv, rank, info = lapack.dpstrf(K, lower=1, tol=tol)
        if info < 0:
            raise InvalidValueError(f"the Gram could not be factorised (LAPACK info {info})")
        r = max(1, min(int(rank), n - 1, int(k)))
        piv = piv - 1  # LAPACK counts from 1; row i of L is row piv[i] of K
        L = np.tril(factor)[:, :r]
        Phi = np.empty_like(L)
        Phi[piv] = L
        others = []
        for Ko in K_others:
            Ko = np.asarray(Ko, dtype=np.float64)
            if Ko.ndim != 2 or Ko.shape[1] != n:
                raise InvalidValueError(f"cross-Gram must have {n} columns; got {Ko.shape}")
            others.append(solve_triangular(L[:r], Ko[:, piv[:r]].T, lower=True).T)
    return Phi, others


@dataclass
class FeatureBlock:
    """One family's probe features in its own coordinates, for :func:`probe_blocks`.

    Attributes:
        selector, seed: reported on every result.
        ks: probe widths, prefixes of the block's columns (strictly increasing).
        train, val, test: (n_*, m) features of the three splits.
        sizes: the subset size reported for each entry of ks (default: ks itself; for Φ the
            width is the rank r while the subset has k neurons).
        fractions: optional fraction per entry of ks.
    """

    selector: str
    seed: int
    ks: list[int]
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    sizes: list[int] | None = None
    fractions: list[float] | None = None


def probe_blocks(
    bank: ProbeBank, blocks: Sequence[FeatureBlock], y_train: np.ndarray, y_val: np.ndarray,
    y_test: np.ndarray, *, standardize: bool | None = None,
) -> list[ProbeResult]:
    """Train every block's probes in one call of a clone of ``bank`` and test them.

    The blocks' columns are laid side by side, one family per block, so same-width probes of
    different blocks are batched. ``standardize`` (None: the bank's own setting) is the
    clone's (False for Φ, which is centred and whose scale is the model's). Results come in
    block order, each labelled with its block's ``sizes``.
    """
    b = clone(bank) if standardize is None else clone(bank).set_params(standardize=standardize)
    cat = [_side_by_side([getattr(blk, part) for blk in blocks])
           for part in ("train", "val", "test")]
    families, offset = [], 0
    for blk in blocks:
        m = blk.train.shape[1]
        families.append(SubsetFamily(blk.selector, int(blk.seed), list(blk.ks),
                                     indices=offset + np.arange(m), fractions=blk.fractions))
        offset += m
    results = b.fit(cat[0], y_train, cat[1], y_val, families).evaluate(cat[2], y_test)
    sizes = [int(k) for blk in blocks for k in (blk.sizes or blk.ks)]
    return [replace(r, k=k) for r, k in zip(results, sizes, strict=True)]


def _side_by_side(parts: Sequence[Any]) -> np.ndarray:
    """The blocks' columns side by side in float32 (a single float32 block is not copied)."""
    parts = [np.asarray(x, dtype=np.float32) for x in parts]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def sample_space_probes(
    bank: ProbeBank, train: ColumnReader, y_train: np.ndarray, val: ColumnReader,
    y_val: np.ndarray, test: ColumnReader, y_test: np.ndarray,
    orders: Sequence[tuple[str, int, Any]], ks: Sequence[int], *,
    fractions: Sequence[float] | None = None, block: int = DEFAULT_BLOCK, progress: bool = False,
) -> list[ProbeResult]:
    """One probe per (order, k) on the standardised columns order[:k].

    ``orders``: (selector, seed, neuron order) per family. The families' passes run in lockstep
    (one Gram per family at a time), and at each size k their Φ are trained in one bank call.
    Results are ordered by k, then by family.
    """
    fr = dict(zip(ks, fractions)) if fractions is not None else {}
    passes = [nested_probe_grams(train, [val, test], order, ks, block=block, progress=progress)
              for _, _, order in orders]
    out = []
    for steps in zip(*passes):
        blocks = []
        for (sel, seed, _), (k, K, (K_val, K_test)) in zip(orders, steps):
            Phi, (Phi_val, Phi_test) = sample_space_features(K, [K_val, K_test], k)
            blocks.append(FeatureBlock(sel, seed, [Phi.shape[1]], Phi, Phi_val, Phi_test,
                                       sizes=[k], fractions=[fr[k]] if k in fr else None))
        out += probe_blocks(bank, blocks, y_train, y_val, y_test, standardize=False)
    return out
