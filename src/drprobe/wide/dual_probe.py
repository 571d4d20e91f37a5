"""Sample-space probes: an L2-penalised linear probe trained exactly from the subset's Gram.

The bank's probe on subset S minimises mean CE(Z W + b) + (λ/2)‖W‖²_F over W (k, C) and an
unpenalised bias b, with Z (n, k) the subset's train columns standardised by train statistics,
i.e. scikit-learn's ``LogisticRegression(C = 1/(λ·n))`` on those columns. The loss sees W only
through Z W, and any part of W orthogonal to the rows of Z only adds penalty, so the optimum lies
in the row space of Z. With the train Gram K = Z Zᵀ = U Λ Uᵀ (rank r ≤ n − 1, Z being centred)
and W = Zᵀ U Λ^{-1/2} B for B (r, C):

    Z W = U Λ^{1/2} B = Φ B,    ‖W‖_F = ‖B‖_F,    Z_o W = (Z_o Zᵀ) U Λ^{-1/2} B = Φ_o B,

so the probe is *exactly* the same linear model on Φ = U Λ^{1/2} (n, r), with the same penalty
and bias, and other rows (validation, test) map through their cross-Gram K_ot = Z_o Zᵀ. Φ's
columns are already centred, so the bank trains on them with ``standardize=False``.

Peak memory per size k: the Grams (n + n_o)·n float64, eigh workspace 2·n², and Φ, Φ_o
(n + n_o)·r float64; the probe bank then works on width r ≤ n − 1 instead of k.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from drprobe.probes import ProbeBank, ProbeResult
from drprobe.selectors import SubsetFamily
from drprobe.wide.columns import ColumnReader
from drprobe.wide.dual_pca import dual_pca
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

    Φ = U Λ^{1/2} over the r non-null eigenpairs of K_tt, Φ_o = K_ot U Λ^{-1/2}.
    """
    n = np.asarray(K_tt).shape[0]
    pca = dual_pca(K_tt, K_others, m=n, least=False, d=int(k))
    return pca.train, pca.others


def probe_on_features(
    bank: ProbeBank, Phi: np.ndarray, y_train: np.ndarray, Phi_val: np.ndarray,
    y_val: np.ndarray, Phi_test: np.ndarray, y_test: np.ndarray, *, selector: str, seed: int,
    k: int, fraction: float | None = None,
) -> ProbeResult:
    """Train ``bank``'s probe (its L2 grid, solver and selection rule) on Φ, score on Φ_test.

    The bank is copied with ``standardize=False`` (Φ is centred and its scale is the model's);
    the result is labelled with the subset size ``k`` and ``fraction``.
    """
    b = copy.copy(bank)
    b.standardize = False
    r = Phi.shape[1]
    fam = SubsetFamily(selector, int(seed), [r], indices=np.arange(r),
                       fractions=None if fraction is None else [float(fraction)])
    b.fit(Phi, y_train, Phi_val, y_val, [fam])
    (result,) = b.evaluate(Phi_test, y_test)
    result.k = int(k)
    return result


def sample_space_probes(
    bank: ProbeBank, train: ColumnReader, y_train: np.ndarray, val: ColumnReader,
    y_val: np.ndarray, test: ColumnReader, y_test: np.ndarray, order: Any, ks: Sequence[int],
    *, selector: str, seed: int, fractions: Sequence[float] | None = None,
    block: int = DEFAULT_BLOCK, progress: bool = False,
) -> list[ProbeResult]:
    """One probe per k on the standardised columns order[:k], all from one pass over order."""
    fr = dict(zip(ks, fractions)) if fractions is not None else {}
    out = []
    for k, K, (K_val, K_test) in nested_probe_grams(train, [val, test], order, ks, block=block,
                                                     progress=progress):
        Phi, (Phi_val, Phi_test) = sample_space_features(K, [K_val, K_test], k)
        out.append(probe_on_features(bank, Phi, y_train, Phi_val, y_val, Phi_test, y_test,
                                     selector=selector, seed=seed, k=k, fraction=fr.get(k)))
    return out
