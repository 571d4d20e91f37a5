"""Streaming first-order probes: for when neither the n×n Gram nor the d×d moments fit.

:class:`StreamingProbes` trains the probe bank's objective — per probe mean cross-entropy +
(λ/2)‖W‖²_F with an unpenalised bias on standardised columns, i.e. scikit-learn's
``LogisticRegression(C = 1/(λ·n))`` — for every size k of a coordinate family (the nested
prefixes indices[:k]) and every λ of a grid at once. The objective and its gradient are
*full-batch*, accumulated over row chunks of the (memory-mapped) features, so each evaluation is
one sequential pass over the file. Because the probes are independent, their objectives are
summed and minimised jointly by L-BFGS with a strong-Wolfe line search (torch.optim.LBFGS); it
stops when max |gradient| ≤ ``tol`` over every probe (scikit-learn's test) or after
``max_passes`` objective evaluations. Families are trained one after the other. λ is then chosen
per size on validation accuracy, ties to the larger λ, as the bank does.

Peak memory: one row chunk of the family's columns (``chunk_bytes``, O(b·m)) and its logits,
plus the parameters and L-BFGS history, O(Σk·L·C·(2·history + 4)) floats — linear in d, with
no n×n or d×d term.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from drprobe.devices import torch_threads
from drprobe.errors import InvalidValueError
from drprobe.features.views import release
from drprobe.probes import DEFAULT_L2_GRID, ProbeBank, ProbeResult, ProbeTrainer, probe_result
from drprobe.probes import inputs as probe_inputs
from drprobe.probes.bank import DEFAULT_TOL
from drprobe.selectors import SubsetFamily
from drprobe.wide.gram import CONSTANT_RTOL, check_nested
from drprobe.wide.memory import STREAM_CHUNK_BYTES, STREAM_HISTORY

__all__ = ["StreamingProbes"]


@dataclass
class StreamingFit:
    """One family trained by :class:`StreamingProbes`.

    ``order`` (m,) its columns order[:max k]; ``ks``; ``mean`` / ``scale`` (m,) the train
    standardisation; ``coef`` (per k an (L, k, C) tensor); ``intercept`` (F, L, C); ``chosen``
    (F,) index of the selected λ per size; ``val_acc`` (F, L) validation accuracies;
    ``n_passes``, ``converged``, ``grad_max`` of its L-BFGS run; ``seconds`` its wall time
    (training and selection).
    """

    order: np.ndarray
    ks: list[int]
    mean: np.ndarray
    scale: np.ndarray
    coef: list[torch.Tensor] | None = None
    intercept: torch.Tensor | None = None
    chosen: np.ndarray | None = None
    val_acc: np.ndarray | None = None
    n_passes: int = 0
    converged: bool = False
    grad_max: float = float("nan")
    seconds: float = 0.0


class StreamingProbes(ProbeTrainer):
    r"""Logistic probes on coordinate families × an L2 grid, trained by streaming L-BFGS.

    A :class:`~drprobe.probes.contract.ProbeTrainer` on features (protocol ``cached``):
    ``fit(X_train, y_train, X_val, y_val, families)`` takes coordinate families only (a
    :class:`~drprobe.selectors.SubsetFamily` with ``indices``; its sizes are nested prefixes),
    trains every family's probes and selects each size's λ on (X_val, y_val);
    ``evaluate(X_test, y_test)`` scores the selected probes. X_* are (n_*, d) matrices read by
    row slices (``X[a:b]``): arrays, memmaps or
    :class:`~drprobe.features.views.RowView`\ s (``dtype=None``: the rows' own dtype) — never
    loaded whole. :meth:`from_bank` gives the
    streaming trainer of a :class:`~drprobe.probes.ProbeBank`'s settings (the wide path's).

    ``n_threads``: torch intra-op threads while training (None: torch's setting), as for
    :class:`~drprobe.probes.ProbeBank`.

    Learned: ``classes_``, ``l2_grid_`` (ascending), ``n_features_in_``, ``families_``,
    ``fitted_`` (one :class:`StreamingFit` per family).
    """

    space = "features"
    protocol = "cached"

    def __init__(
        self, l2_grid: Sequence[float] = DEFAULT_L2_GRID, tol: float = DEFAULT_TOL,
        max_passes: int = 300, chunk_bytes: int = STREAM_CHUNK_BYTES, dtype: str = "float64",
        progress: bool = False, n_threads: int | None = None, keep_predictions: bool = False,
        keep_proba: bool = False,
    ) -> None:
        self.l2_grid = l2_grid
        self.n_threads = n_threads
        self.tol = tol
        self.max_passes = max_passes
        self.chunk_bytes = chunk_bytes
        self.dtype = dtype
        self.progress = progress
        self.keep_predictions = keep_predictions
        self.keep_proba = keep_proba

    @classmethod
    def from_bank(cls, bank: ProbeBank, **settings: Any) -> StreamingProbes:
        """The streaming trainer of ``bank``'s objective: its ``l2_grid``, ``tol``, ``dtype``,
        ``n_threads``, ``keep_predictions`` and ``keep_proba``, ``max_steps`` as
        ``max_passes``; ``settings`` override these or set the others. (It always
        standardises, never stops early on validation and never refits on train + val.)"""
        p = bank.get_params()
        own = {"l2_grid": p["l2_grid"], "tol": p["tol"], "max_passes": p["max_steps"],
               "dtype": p["dtype"], "n_threads": p["n_threads"],
               "keep_predictions": p["keep_predictions"], "keep_proba": p["keep_proba"]}
        return cls(**{**own, **settings})

    # -------------------------------------------------------------------------- reading
    def n_penalties(self) -> int:
        """The size of ``l2_grid``: every head is trained for each value."""
        return len(np.atleast_1d(self.l2_grid))

    def _chunks(self, X: Any, fit: StreamingFit) -> Iterator[tuple[int, torch.Tensor]]:
        """Standardised (b, m) torch chunks of X[:, fit.order], in the working dtype.

        ``np.take`` along axis 1 gathers the columns several times faster than fancy indexing.
        """
        step = max(1, int(self.chunk_bytes) // (8 * int(X.shape[1])))
        dtype = np.dtype(self.dtype)
        mean, scale = fit.mean.astype(dtype), fit.scale.astype(dtype)
        for r0 in range(0, int(X.shape[0]), step):
            R = np.take(np.asarray(X[r0:r0 + step], dtype=dtype), fit.order, axis=1)
            release(X)
            R -= mean
            R /= scale
            yield r0, torch.from_numpy(R)

    @staticmethod
    def _logits(fit: StreamingFit, Z: torch.Tensor, params: list[torch.Tensor],
                bias: torch.Tensor) -> torch.Tensor:
        """(F, L, b, C) logits of every probe of a family on a standardised chunk Z (b, m)."""
        return torch.stack([torch.einsum("bk,lkc->lbc", Z[:, :k], W) for k, W in
                            zip(fit.ks, params)]) + bias[:, :, None, :]

    # ------------------------------------------------------------------------------ fit
    def _check(self) -> None:
        if self.dtype not in ("float32", "float64"):
            raise InvalidValueError(f"dtype {self.dtype!r} invalid; valid choices: float32, "
                                    "float64")
        if not self.tol > 0 or int(self.max_passes) < 1:
            raise InvalidValueError(f"tol={self.tol} and max_passes={self.max_passes} must be "
                                    "positive")
        self.l2_grid_ = np.array(sorted({float(v) for v in np.atleast_1d(self.l2_grid)}))
        if not self.l2_grid_.size or self.l2_grid_.min() <= 0:
            raise InvalidValueError(f"l2_grid={list(self.l2_grid)!r} must be positive numbers")

    def fit(self, X_train: Any, y_train: Any, X_val: Any, y_val: Any,
            families: Sequence[SubsetFamily]) -> StreamingProbes:
        """Train every size of every coordinate family on (X_train (n_train, d), y_train) and
        select each size's λ on (X_val (n_val, d), y_val). Returns self."""
        self._check()
        X_train = probe_inputs.check_features(X_train, "X_train")
        d = int(X_train.shape[1])
        X_val = probe_inputs.check_features(X_val, "X_val", d)
        y = probe_inputs.check_labels(y_train, X_train.shape[0], "y_train")
        y_val = probe_inputs.check_labels(y_val, X_val.shape[0], "y_val")
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise InvalidValueError("y_train has a single class; a probe needs at least two")
        families = list(families)
        if not families:
            raise InvalidValueError("families is empty; pass at least one SubsetFamily")
        for i, fam in enumerate(families):
            if fam.indices is None:
                raise InvalidValueError(
                    f"family {i} ({fam.selector}, seed {fam.seed}) is a projection; the "
                    "streaming trainer takes coordinate families (indices) only")
            probe_inputs.check_family(fam, i, d)
        self.n_features_in_, self.families_ = d, families
        self.fitted_ = []
        for fam in families:
            t0 = time.perf_counter()
            order, ks = check_nested(fam.indices, fam.ks, d)
            m = ks[-1]
            fit = StreamingFit(order[:m], ks, np.zeros(m), np.ones(m))
            self._standardisation(X_train, fit)
            self._train(X_train, y_idx, fit)
            self._select(X_val, y_val, fit)
            fit.seconds = time.perf_counter() - t0
            self.fitted_.append(fit)
        return self

    def _train(self, X: Any, y_idx: np.ndarray, fit: StreamingFit) -> None:
        """Minimise the summed objectives of every (k, λ) probe of one family by L-BFGS."""
        tdtype = torch.float64 if self.dtype == "float64" else torch.float32
        F, L, C, n = len(fit.ks), len(self.l2_grid_), len(self.classes_), len(y_idx)
        params = [torch.zeros(L, k, C, dtype=tdtype, requires_grad=True) for k in fit.ks]
        bias = torch.zeros(F, L, C, dtype=tdtype, requires_grad=True)
        lam = torch.as_tensor(self.l2_grid_, dtype=tdtype)
        target = torch.as_tensor(y_idx, dtype=torch.int64)
        opt = torch.optim.LBFGS(params + [bias], lr=1.0, max_iter=int(self.max_passes),
                                max_eval=int(self.max_passes), tolerance_grad=float(self.tol),
                                tolerance_change=0.0, history_size=STREAM_HISTORY,
                                line_search_fn="strong_wolfe")
        bar = tqdm(total=int(self.max_passes), desc="streaming passes", unit="pass",
                   file=sys.stderr, disable=not self.progress)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            total = torch.zeros((), dtype=tdtype)
            for r0, Z in self._chunks(X, fit):
                logits = self._logits(fit, Z, params, bias)
                t = target[r0:r0 + Z.shape[0]].expand(F, L, -1)
                ce = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, C), t.reshape(-1), reduction="sum") / n
                ce.backward()
                total += ce.detach()
            pen = sum((0.5 * lam * (W * W).sum(dim=(1, 2))).sum() for W in params)
            pen.backward()
            fit.n_passes += 1
            bar.update(1)
            return total + pen.detach()

        with torch.enable_grad(), torch_threads(self.n_threads):
            opt.step(closure)
        bar.close()
        grads = [p.grad.abs().max() for p in params + [bias] if p.grad is not None]
        fit.grad_max = float(torch.stack(grads).max())
        fit.converged = fit.grad_max <= float(self.tol)
        fit.coef = [W.detach() for W in params]
        fit.intercept = bias.detach()

    def _standardisation(self, X: Any, fit: StreamingFit) -> None:
        """Column mean and standard deviation of the train rows (two streaming passes)."""
        m, n = len(fit.order), int(X.shape[0])
        s1 = np.zeros(m)
        for _, Z in self._chunks(X, fit):
            s1 += Z.sum(0, dtype=torch.float64).numpy()
        fit.mean = s1 / n
        s2 = np.zeros(m)
        for _, Z in self._chunks(X, fit):
            s2 += (Z * Z).sum(0, dtype=torch.float64).numpy()
        sd = np.sqrt(s2 / n)
        fit.scale = np.where(sd > CONSTANT_RTOL * np.maximum(np.abs(fit.mean), 1.0), sd, 1.0)

    def _select(self, X_val: Any, y_val: np.ndarray, fit: StreamingFit) -> None:
        """Per size, the λ of best validation accuracy, ties to the larger λ."""
        pred = self.classes_[self._decision(X_val, fit).argmax(axis=3)]
        fit.val_acc = (pred == y_val[None, None, :]).mean(axis=2)  # (F, L)
        L = fit.val_acc.shape[1]
        fit.chosen = L - 1 - np.argmax(fit.val_acc[:, ::-1], axis=1)

    # ------------------------------------------------------------------------ inference
    def _decision(self, X: Any, fit: StreamingFit) -> np.ndarray:
        F, L, C = len(fit.ks), len(self.l2_grid_), len(self.classes_)
        out = np.empty((F, L, int(X.shape[0]), C))
        with torch.no_grad():
            for r0, Z in self._chunks(X, fit):
                out[:, :, r0:r0 + Z.shape[0]] = self._logits(fit, Z, fit.coef, fit.intercept)
        return out

    def decision_function(self, X: Any, family_index: int = 0) -> np.ndarray:
        """(F, L, n, C) logits of every (k, λ) probe of family ``family_index`` on X (n, d)."""
        if not hasattr(self, "fitted_"):
            raise InvalidValueError("this StreamingProbes is not fitted; call fit(...) first")
        if not 0 <= family_index < len(self.fitted_):
            raise InvalidValueError(f"family_index={family_index} outside [0, "
                                    f"{len(self.fitted_)})")
        X = probe_inputs.check_features(X, "X", self.n_features_in_)
        return self._decision(X, self.fitted_[family_index])

    def evaluate(self, X_test: Any, y_test: Any) -> list[ProbeResult]:
        """Test each family's selected probes on X_test (n_test, d); one ProbeResult per
        (family, k) in order, ``n_steps`` its family's L-BFGS passes, ``fit_seconds`` the
        family's time shared among its sizes."""
        if not hasattr(self, "fitted_"):
            raise InvalidValueError("this StreamingProbes is not fitted; call fit(...) first")
        X_test = probe_inputs.check_features(X_test, "X_test", self.n_features_in_)
        y = probe_inputs.encode(probe_inputs.check_labels(y_test, X_test.shape[0], "y_test"),
                                self.classes_, "y_test")
        results = []
        for fam, fit in zip(self.families_, self.fitted_):
            logits = self._decision(X_test, fit)
            for j, c in enumerate(fit.chosen):
                results.append(probe_result(
                    fam, j, l2=self.l2_grid_[c], val_acc=fit.val_acc[j, c], logits=logits[j, c],
                    y_test=y, classes=self.classes_, n_steps=fit.n_passes,
                    fit_seconds=fit.seconds / len(fit.ks),
                    keep_predictions=self.keep_predictions, keep_proba=self.keep_proba))
        return results
