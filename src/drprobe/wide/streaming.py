"""Streaming first-order probes: for when neither the n×n Gram nor the d×d moments fit.

:class:`StreamingProbes` trains the probe bank's objective — per probe mean cross-entropy +
(λ/2)‖W‖²_F with an unpenalised bias on standardised columns, i.e. scikit-learn's
``LogisticRegression(C = 1/(λ·n))`` — for every nested prefix order[:k] and every λ of a grid at
once. The objective and its gradient are *full-batch*, accumulated over row chunks of the
(memory-mapped) features, so each evaluation is one sequential pass over the file. Because the
probes are independent, their objectives are summed and minimised jointly by L-BFGS with a
strong-Wolfe line search (torch.optim.LBFGS); it stops when max |gradient| ≤ ``tol`` over every
probe (scikit-learn's test) or after ``max_passes`` objective evaluations. ``converged_`` says
which happened. λ is then chosen per size on validation accuracy, ties to the larger λ, as the
bank does.

Peak memory: one row chunk of the permuted columns (``chunk_bytes``, O(b·m)) and its logits,
plus the parameters and L-BFGS history, O(Σk·L·C·(2·history + 4)) floats — linear in d, with
no n×n or d×d term.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from tqdm.auto import tqdm

from drprobe.errors import InvalidValueError
from drprobe.probes import DEFAULT_L2_GRID
from drprobe.probes.bank import torch_threads
from drprobe.wide.columns import release
from drprobe.wide.gram import CONSTANT_RTOL, check_nested
from drprobe.wide.memory import STREAM_CHUNK_BYTES, STREAM_HISTORY


class StreamingProbes(BaseEstimator):
    """Logistic probes on nested column prefixes × an L2 grid, trained by streaming L-BFGS.

    Learned: ``classes_``, ``ks_``, ``l2_grid_`` (ascending), ``mean_`` and ``scale_`` (m,)
    standardisation of the columns order[:m], ``coef_`` (list over ks of (L, k, C) tensors),
    ``intercept_`` (F, L, C), ``n_passes_``, ``converged_``, ``grad_max_``.

    ``n_threads``: torch intra-op threads while training (None: torch's setting), as for
    :class:`~drprobe.probes.ProbeBank`.
    """

    def __init__(
        self, l2_grid: Sequence[float] = DEFAULT_L2_GRID, tol: float = 1e-4,
        max_passes: int = 300, chunk_bytes: int = STREAM_CHUNK_BYTES, dtype: str = "float64",
        progress: bool = False, n_threads: int | None = None,
    ) -> None:
        self.l2_grid = l2_grid
        self.n_threads = n_threads
        self.tol = tol
        self.max_passes = max_passes
        self.chunk_bytes = chunk_bytes
        self.dtype = dtype
        self.progress = progress

    def _chunks(self, X: Any, rows: np.ndarray):
        """Standardised (b, m) torch chunks of X[rows][:, order[:m]], in the working dtype.

        ``np.take`` along axis 1 gathers the columns several times faster than fancy indexing.
        """
        step = max(1, int(self.chunk_bytes) // (8 * int(X.shape[1])))
        dtype = np.dtype(self.dtype)
        mean, scale = self.mean_.astype(dtype), self.scale_.astype(dtype)
        for r0 in range(0, len(rows), step):
            R = np.take(np.asarray(X[rows[r0:r0 + step]], dtype=dtype), self._order, axis=1)
            release(X)
            R -= mean
            R /= scale
            yield r0, torch.from_numpy(R)

    def _logits(self, Z: torch.Tensor, params: list[torch.Tensor], bias: torch.Tensor):
        """(F, L, b, C) logits of every probe on a standardised chunk Z (b, m)."""
        return torch.stack([torch.einsum("bk,lkc->lbc", Z[:, :k], W) for k, W in
                            zip(self.ks_, params)]) + bias[:, :, None, :]

    def fit(self, X: Any, y: Any, order: Any, ks: Sequence[int], rows: Any = None
            ) -> StreamingProbes:
        """Train on rows ``rows`` (default all) of X (n_all, d); sizes ks are prefixes of order."""
        if self.dtype not in ("float32", "float64"):
            raise InvalidValueError(f"dtype {self.dtype!r} invalid; valid choices: float32, "
                                    "float64")
        if not self.tol > 0 or int(self.max_passes) < 1:
            raise InvalidValueError(f"tol={self.tol} and max_passes={self.max_passes} must be "
                                    "positive")
        rows = np.arange(X.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
        order, self.ks_ = check_nested(order, ks, int(X.shape[1]))
        self._order = order[: self.ks_[-1]]
        y = np.asarray(y)
        if y.shape != (len(rows),):
            raise InvalidValueError(f"y has shape {y.shape}; expected ({len(rows)},)")
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise InvalidValueError("y has a single class; a probe needs at least two")
        self.l2_grid_ = np.array(sorted({float(v) for v in np.atleast_1d(self.l2_grid)}))
        if not self.l2_grid_.size or self.l2_grid_.min() <= 0:
            raise InvalidValueError(f"l2_grid={list(self.l2_grid)!r} must be positive numbers")
        self._standardisation(X, rows)
        tdtype = torch.float64 if self.dtype == "float64" else torch.float32
        F, L, C, n = len(self.ks_), len(self.l2_grid_), len(self.classes_), len(rows)
        params = [torch.zeros(L, k, C, dtype=tdtype, requires_grad=True) for k in self.ks_]
        bias = torch.zeros(F, L, C, dtype=tdtype, requires_grad=True)
        lam = torch.as_tensor(self.l2_grid_, dtype=tdtype)
        target = torch.as_tensor(y_idx, dtype=torch.int64)
        opt = torch.optim.LBFGS(params + [bias], lr=1.0, max_iter=int(self.max_passes),
                                max_eval=int(self.max_passes), tolerance_grad=float(self.tol),
                                tolerance_change=0.0, history_size=STREAM_HISTORY,
                                line_search_fn="strong_wolfe")
        bar = tqdm(total=int(self.max_passes), desc="streaming passes", unit="pass",
                   file=sys.stderr, disable=not self.progress)
        self.n_passes_ = 0

        def closure() -> torch.Tensor:
            opt.zero_grad()
            total = torch.zeros((), dtype=tdtype)
            for r0, Z in self._chunks(X, rows):
                logits = self._logits(Z, params, bias)
                t = target[r0:r0 + Z.shape[0]].expand(F, L, -1)
                ce = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, C), t.reshape(-1), reduction="sum") / n
                ce.backward()
                total += ce.detach()
            pen = sum((0.5 * lam * (W * W).sum(dim=(1, 2))).sum() for W in params)
            pen.backward()
            self.n_passes_ += 1
            bar.update(1)
            return total + pen.detach()

        with torch.enable_grad(), torch_threads(self.n_threads):
            opt.step(closure)
        bar.close()
        grads = [p.grad.abs().max() for p in params + [bias] if p.grad is not None]
        self.grad_max_ = float(torch.stack(grads).max())
        self.converged_ = self.grad_max_ <= float(self.tol)
        self.coef_ = [W.detach() for W in params]
        self.intercept_ = bias.detach()
        return self

    def _standardisation(self, X: Any, rows: np.ndarray) -> None:
        """Column mean and standard deviation of the train rows (two streaming passes)."""
        m = len(self._order)
        self.mean_, self.scale_ = np.zeros(m), np.ones(m)
        s1, n = np.zeros(m), len(rows)
        for _, Z in self._chunks(X, rows):
            s1 += Z.sum(0, dtype=torch.float64).numpy()
        self.mean_ = s1 / n
        s2 = np.zeros(m)
        for _, Z in self._chunks(X, rows):
            s2 += (Z * Z).sum(0, dtype=torch.float64).numpy()
        sd = np.sqrt(s2 / n)
        self.scale_ = np.where(sd > CONSTANT_RTOL * np.maximum(np.abs(self.mean_), 1.0), sd, 1.0)

    def decision_function(self, X: Any, rows: Any = None) -> np.ndarray:
        """(F, L, n, C) logits of every probe on rows ``rows`` of X (n_all, d)."""
        if not hasattr(self, "coef_"):
            raise InvalidValueError("this StreamingProbes is not fitted; call fit(...) first")
        rows = np.arange(X.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
        F, L, C = len(self.ks_), len(self.l2_grid_), len(self.classes_)
        out = np.empty((F, L, len(rows), C))
        with torch.no_grad():
            for r0, Z in self._chunks(X, rows):
                out[:, :, r0:r0 + Z.shape[0]] = self._logits(Z, self.coef_, self.intercept_)
        return out

    def select(self, X_val: Any, y_val: Any, rows: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(F,) index of the chosen λ per size — best validation accuracy, ties to the larger
        λ — and the (F, L) validation accuracies."""
        pred = self.classes_[self.decision_function(X_val, rows).argmax(axis=3)]
        acc = (pred == np.asarray(y_val)[None, None, :]).mean(axis=2)  # (F, L)
        L = acc.shape[1]
        return L - 1 - np.argmax(acc[:, ::-1], axis=1), acc
