"""The streaming, mergeable accumulator behind every CKA of many subsets: :class:`CrossProductStats`.

One pass over the features (n, d) accumulates C = XᵀX (and, for the debiased estimator, two
more d x d moment matrices); the CKA of any coordinate subset or projection of X against X then
comes from slices of those matrices (docs/science.md), with no second pass over the data.
Peak memory: 2 (linear) or 4 (debiased) d x d float64 matrices, independent of n.
Numpy products run on one BLAS thread (:func:`~drprobe.devices.one_blas_thread`): the same bits
whatever the thread count or the machine's load.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from drprobe.devices import one_blas_thread
from drprobe.errors import InvalidValueError
from drprobe.metrics.cka import _as_f64, _host, _hsic_u, _on_device, _ratio
from drprobe.selectors import SubsetFamily


def _shift_moments(
    n: int, s1: np.ndarray, G: np.ndarray, T: np.ndarray | None, M: np.ndarray | None,
    delta: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Moments of y − δ from those of y: s1 = Σy, G = Σyyᵀ, T[a,b] = Σy_a²y_b, M = Σ(y∘y)(y∘y)ᵀ.

    Exact binomial expansion, e.g. Σ(y_a−δ_a)²(y_b−δ_b)² has nine terms in M, T, G, s1, s2 = diag G.
    """
    dd, d2 = np.outer(delta, delta), delta * delta
    s2 = np.diag(G).copy()
    s1n = s1 - n * delta
    Gn = G - np.outer(s1, delta) - np.outer(delta, s1) + n * dd
    if T is None or M is None:
        return s1n, Gn, None, None
    ds1 = delta * s1
    Tn = (
        T - np.outer(s2, delta) - 2.0 * delta[:, None] * G + 2.0 * dd * s1[:, None]
        + np.outer(d2, s1) - n * np.outer(d2, delta)
    )
    Mn = (
        M - 2.0 * T * delta[None, :] - 2.0 * T.T * delta[:, None]
        + np.outer(s2, d2) + np.outer(d2, s2) + 4.0 * G * dd
        - 2.0 * np.outer(ds1, d2) - 2.0 * np.outer(d2, ds1) + n * np.outer(d2, d2)
    )
    return s1n, Gn, Tn, Mn


def _count_matrix(indices_list: Iterable[Sequence[int] | np.ndarray], d: int) -> np.ndarray:
    """(n_subsets, d) multiplicity of each neuron in each subset (duplicates count twice)."""
    rows = []
    for i, sub in enumerate(indices_list):
        idx = np.asarray(sub).ravel()
        if idx.size == 0:
            raise InvalidValueError(f"subset {i} is empty; every subset needs at least 1 index")
        if not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= d:
            raise InvalidValueError(f"subset {i} has indices outside [0, {d - 1}] or non-integer")
        rows.append(np.bincount(idx, minlength=d).astype(np.float64))
    if not rows:
        return np.zeros((0, d))
    return np.stack(rows)


def _prefix_block_sums(A: np.ndarray, ks: Sequence[int]) -> np.ndarray:
    """Σ_{i,j<k} A[i, j] for each k in ks, A (m, m)."""
    cum = np.cumsum(np.cumsum(A, axis=0), axis=1)
    idx = np.asarray(ks) - 1
    return cum[idx, idx]


class CrossProductStats:
    """Streaming, mergeable second (and, for debiased CKA, fourth) moments of features X (n, d).

    State (float64): n, a shift c (d,), and moments of y = x − c: s1 = Σy (d,), G = Σyyᵀ (d, d),
    and when ``debiased``: T = Σ(y∘y)yᵀ (d, d) and M = Σ(y∘y)(y∘y)ᵀ (d, d). c defaults to the mean
    of the first batch, so y is nearly centred and raw-moment cancellation stays small; centring is
    then done *algebraically* by the exact binomial shift of the moments to the true mean (one
    pass over the data; passing the known mean as ``shift`` makes it a two-pass computation).
    Two accumulators merge by addition after shifting one to the other's c, so any batching or
    split across workers gives the same state up to rounding.

    ``device`` (e.g. ``"cuda"``): each batch's products, the O(b·d²) part, run in torch float64
    on that device (a torch batch already there stays there); the d×d state lives in numpy, and
    every CKA is then read from it on the CPU in O(d²) or less. None: numpy throughout.

    Exactness: linear CKA of every coordinate subset S and every projection P is exact from
    C = X_cᵀX_c alone. Debiased CKA of a coordinate subset is exact from C and M_c (M centred):
    with q_i = ‖x_i‖², p_i = ‖x_i[S]‖², Σ_i q_i p_i = Σ_{b∈S} Σ_a M_c[a, b] and Σ_i p_i² =
    Σ_{a,b∈S} M_c[a, b]; for a general projection Σ_i p_i² is a fourth-order contraction that no
    d×d moment holds, so debiased projection CKA needs the projected data itself.
    """

    def __init__(
        self, debiased: bool = True, shift: Any | None = None, device: str | None = None
    ) -> None:
        self.debiased = debiased
        self.shift = shift
        self.device = device
        self._n = 0
        self._c: np.ndarray | None = None
        self._s1: np.ndarray | None = None
        self._G: np.ndarray | None = None
        self._T: np.ndarray | None = None
        self._M: np.ndarray | None = None
        self._cache: dict[str, Any] = {}

    # ----------------------------------------------------------------- accumulation
    def _start(self, d: int, first: np.ndarray) -> None:
        c = first.mean(axis=0) if self.shift is None else np.asarray(self.shift, np.float64)
        if c.shape != (d,):
            raise InvalidValueError(f"shift must have shape ({d},); got {c.shape}")
        self._c, self._s1, self._G = c.copy(), np.zeros(d), np.zeros((d, d))
        if self.debiased:
            self._T, self._M = np.zeros((d, d)), np.zeros((d, d))

    @one_blas_thread()
    def update(self, X_batch: Any) -> CrossProductStats:
        """Add a batch of rows (b, d) (any float dtype, memmap or torch tensor); returns self."""
        Xb = _as_f64(X_batch, "X_batch") if self.device is None else _on_device(X_batch, self.device)
        if Xb.shape[0] == 0:
            return self
        if self._G is None:
            self._start(Xb.shape[1], _host(Xb.mean(0, keepdim=True)) if self.device else Xb)
        elif Xb.shape[1] != self.d:
            raise InvalidValueError(f"batch has {Xb.shape[1]} columns; this accumulator has {self.d}")
        Y = Xb - (self._c if self.device is None else _on_device(self._c[None], self.device))
        parts = [Y.sum(0), Y.T @ Y]
        if self.debiased:
            Y2 = Y * Y
            parts += [Y2.T @ Y, Y2.T @ Y2]
        parts = [_host(t) for t in parts]
        self._n += int(Y.shape[0])
        self._s1 += parts[0]
        self._G += parts[1]
        if self.debiased:
            self._T += parts[2]
            self._M += parts[3]
        self._cache.clear()
        return self

    @classmethod
    def from_array(
        cls, X: Any, batch_size: int = 4096, debiased: bool = True, shift: Any | None = None,
        device: str | None = None,
    ) -> CrossProductStats:
        """Accumulate X (n, d) in row batches of ``batch_size`` (bounded float64 memory)."""
        if batch_size < 1:
            raise InvalidValueError(f"batch_size must be >= 1; got {batch_size}")
        stats = cls(debiased=debiased, shift=shift, device=device)
        for start in range(0, int(X.shape[0]), batch_size):
            stats.update(X[start:start + batch_size])
        return stats

    def merge(self, other: CrossProductStats) -> CrossProductStats:
        """Add ``other``'s rows into this accumulator in place; returns self."""
        if not isinstance(other, CrossProductStats):
            raise InvalidValueError(f"can only merge CrossProductStats; got {type(other).__name__}")
        if other._n == 0:
            return self
        if self._n == 0:
            self.__dict__.update(copy.deepcopy(other.__dict__))
            return self
        if other.d != self.d:
            raise InvalidValueError(f"cannot merge d={other.d} into d={self.d}")
        if other.debiased != self.debiased:
            raise InvalidValueError(
                f"cannot merge debiased={other.debiased} into debiased={self.debiased}"
            )
        assert self._c is not None and other._c is not None and other._s1 is not None
        moments = _shift_moments(
            other._n, other._s1, other._G, other._T, other._M, self._c - other._c
        )
        self._n += other._n
        self._s1 += moments[0]
        self._G += moments[1]
        if self.debiased:
            self._T += moments[2]
            self._M += moments[3]
        self._cache.clear()
        return self

    def __add__(self, other: CrossProductStats) -> CrossProductStats:
        return copy.deepcopy(self).merge(other)

    def __radd__(self, other: Any) -> CrossProductStats:
        if isinstance(other, int) and other == 0:  # lets sum([...]) work
            return copy.deepcopy(self)
        return NotImplemented

    # ----------------------------------------------------------------- derived quantities
    @property
    def n(self) -> int:
        """Number of rows accumulated."""
        return self._n

    @property
    def d(self) -> int:
        """Number of features (0 before the first batch)."""
        return 0 if self._c is None else int(self._c.shape[0])

    def _need(self, n_min: int = 1) -> None:
        if self._n < n_min:
            raise InvalidValueError(f"need at least {n_min} accumulated rows; have n={self._n}")

    @property
    def mean(self) -> np.ndarray:
        """(d,) column means."""
        self._need()
        assert self._c is not None and self._s1 is not None
        return self._c + self._s1 / self._n

    @property
    def centred_cross(self) -> np.ndarray:
        """(d, d) C = X_cᵀX_c, the centred cross-product."""
        self._need()
        if "C" not in self._cache:
            assert self._s1 is not None and self._G is not None
            C = self._G - np.outer(self._s1, self._s1) / self._n
            self._cache["C"] = (C + C.T) / 2.0
        return self._cache["C"]

    @property
    def centred_square_cross(self) -> np.ndarray:
        """(d, d) M_c = Σ_i (x_c,i ∘ x_c,i)(x_c,i ∘ x_c,i)ᵀ; needs ``debiased=True``."""
        self._need()
        if not self.debiased:
            raise InvalidValueError("debiased CKA needs CrossProductStats(debiased=True)")
        if "Mc" not in self._cache:
            assert self._s1 is not None
            _, _, _, Mc = _shift_moments(
                self._n, self._s1, self._G, self._T, self._M, self._s1 / self._n
            )
            self._cache["Mc"] = (Mc + Mc.T) / 2.0
        return self._cache["Mc"]

    def _linear_parts(self) -> tuple[np.ndarray, np.ndarray, float]:
        if "C2" not in self._cache:
            C2 = self.centred_cross ** 2
            self._cache["C2"] = C2
            self._cache["rowsq"] = C2.sum(axis=1)
            self._cache["normC"] = float(np.sqrt(C2.sum()))
        return self._cache["C2"], self._cache["rowsq"], self._cache["normC"]

    # ----------------------------------------------------------------- CKA of many subsets
    @one_blas_thread()
    def subset_cka(
        self, indices_list: Iterable[Sequence[int] | np.ndarray], chunk: int = 256
    ) -> np.ndarray:
        """(n_subsets,) linear CKA(X, X[:, S]) = ‖C[S,:]‖²_F / (‖C[S,S]‖_F ‖C‖_F) for each S."""
        self._need(2)
        C2, rowsq, norm_c = self._linear_parts()
        B = _count_matrix(indices_list, self.d)
        out = np.empty(B.shape[0])
        for lo in range(0, B.shape[0], chunk):
            b = B[lo:lo + chunk]
            block = np.einsum("ij,ij->i", b @ C2, b)
            out[lo:lo + chunk] = _ratio(b @ rowsq, block, norm_c**2)
        return out

    @one_blas_thread()
    def subset_cka_debiased(
        self, indices_list: Iterable[Sequence[int] | np.ndarray], chunk: int = 256
    ) -> np.ndarray:
        """(n_subsets,) debiased CKA(X, X[:, S]) for coordinate subsets, exact from C and M_c."""
        self._need(4)
        n = self._n
        C2, rowsq, norm_c = self._linear_parts()
        Mc, diag_c = self.centred_square_cross, np.diag(self.centred_cross)
        colsum_m, tq = Mc.sum(axis=0), float(diag_c.sum())
        h_kk = _hsic_u(norm_c**2, Mc.sum(), tq, tq, n)
        B = _count_matrix(indices_list, self.d)
        out = np.empty(B.shape[0])
        for lo in range(0, B.shape[0], chunk):
            b = B[lo:lo + chunk]
            qp, tp = b @ colsum_m, b @ diag_c
            h_kl = _hsic_u(b @ rowsq, qp, tq, tp, n)
            h_ll = _hsic_u(
                np.einsum("ij,ij->i", b @ C2, b), np.einsum("ij,ij->i", b @ Mc, b), tp, tp, n
            )
            out[lo:lo + chunk] = _ratio(h_kl, h_kk, h_ll)
        return out

    @one_blas_thread()
    def family_cka(self, family: SubsetFamily, debiased: bool = False) -> np.ndarray:
        """(len(family.ks),) CKA of each nested map of ``family`` against the full layer.

        Coordinate families use running (prefix) sums over C[idx][:, idx]; projection families
        use A = PᵀC (m, d) and B = A P (m, m), P = components[:, :m]:
        ‖PᵀC‖²_F / (‖PᵀCP‖_F ‖C‖_F). Centring is consistent because CKA column-centres the
        subset too, so (X − mean)P and X_c P give the same value whatever ``family.mean`` is.
        ``debiased`` is available for coordinate families only (see the class docstring).
        """
        ks = list(family.ks)
        if not ks or min(ks) < 1 or max(ks) > family.width:
            raise InvalidValueError(f"family ks must lie in [1, {family.width}]; got {ks}")
        m = max(ks)
        if family.indices is not None:
            idx = np.asarray(family.indices[:m])
            if debiased:
                return self.subset_cka_debiased([idx[:k] for k in ks])
            self._need(2)
            C2, rowsq, norm_c = self._linear_parts()
            num = np.cumsum(rowsq[idx])[np.asarray(ks) - 1]
            return _ratio(num, _prefix_block_sums(C2[np.ix_(idx, idx)], ks), norm_c**2)
        if debiased:
            raise InvalidValueError(
                f"debiased CKA is exact only for coordinate selectors; got {family.selector!r}"
            )
        self._need(2)
        P = np.asarray(family.components, dtype=np.float64)[:, :m]
        if P.shape[0] != self.d:
            raise InvalidValueError(f"components have {P.shape[0]} rows; features have d={self.d}")
        _, _, norm_c = self._linear_parts()
        A = P.T @ self.centred_cross
        num = np.cumsum(np.einsum("ij,ij->i", A, A))[np.asarray(ks) - 1]
        return _ratio(num, _prefix_block_sums((A @ P) ** 2, ks), norm_c**2)
