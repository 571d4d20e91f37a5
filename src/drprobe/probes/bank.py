"""The probe bank: every linear probe of one (features, task) trained together.

A probe is a multinomial logistic regression on the first k coordinates of one
:class:`~drprobe.selectors.SubsetFamily` basis. :class:`ProbeBank` trains all (family, k, L2)
probes of a set of families as batched torch programs (see :mod:`drprobe.probes.solver`) and
picks each probe's L2 strength on a validation split.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from drprobe.devices import resolve_device, torch_threads
from drprobe.errors import InvalidValueError
from drprobe.probes import design, inputs
from drprobe.probes.contract import ProbeTrainer
from drprobe.probes.dedupe import plan_probes
from drprobe.probes.products import single_threaded_blas
from drprobe.probes.results import ProbeResult, class_probabilities, probe_result
from drprobe.probes.solver import HISTORY, GroupProblem, preconditioner_factors, solve_group
from drprobe.selectors import SubsetFamily

DEFAULT_L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
#: Stopping tolerance on max |gradient| of every entry (configs, demo, API): 1e-3 costs a third
#: of scikit-learn's 1e-4 for accuracies within 0.3 point (docs/performance.md).
DEFAULT_TOL = 1e-3
DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEFAULT_MAX_MEMORY_GB = 2.0  # the working set of one group of families


def working_set_bytes(n_rows: int, width: int, n_classes: int, n_l2: int,
                      itemsize: int = 4) -> int:
    """Bytes the bank needs to train one family of ``width`` columns on n_rows rows (train and
    validation) for n_l2 penalties: the rows, the Gram and Cholesky factors per penalty, the
    weights with their L-BFGS history, and the logits (the rule that groups families)."""
    m = width + 1
    return int(itemsize * (n_rows * m + n_l2 * m * m + n_l2 * m * n_classes * (2 * HISTORY + 12)
                           + 6 * n_rows * n_l2 * n_classes) + 16 * n_l2 * m * m)


@dataclass
class _Fitted:
    coef: torch.Tensor  # (k + 1, C) on CPU, row 0 the bias, in standardised coordinates
    l2: float
    val_acc: float
    val_accs: np.ndarray  # (L,) validation accuracy for every L2 in the grid
    n_steps: int
    seconds: float


class ProbeBank(ProbeTrainer):
    """Multinomial logistic-regression probes for every (family, k), trained in batches.

    Objective per probe: mean cross-entropy + (lam / 2) * ||W||_F^2 with the bias unpenalised,
    i.e. scikit-learn's ``LogisticRegression(C=1 / (lam * n_train))``, minimised by a batched
    preconditioned L-BFGS until max |gradient| <= ``tol`` (scikit-learn's ``tol`` test) or
    ``max_steps``. Converged probes leave the active set and stop costing compute.

    Model selection: every lam in ``l2_grid`` is fitted on the training split; the probe keeps
    the lam with the highest validation accuracy, ties going to the *larger* lam (the simpler
    model). ``refit=False`` (default) returns that train-only model; ``refit=True`` retrains the
    chosen lam on train + val (warm-started, same standardisation statistics) and reports the
    refit's step count; ``val_acc`` is always the selection score of the train-only model.

    Standardisation (``standardize=True``): each family's basis coordinates are z-scored with
    training-split mean and standard deviation (constant columns keep scale 1) before the probe
    sees them. This changes the effective penalty relative to raw features (lam acts on weights
    of unit-variance inputs); a reference solver must be given the same standardised inputs.

    Early stopping: ``patience=None`` (default) trains each (probe, lam) to the optimum above;
    ``patience=p`` also stops it after p steps without a gain in validation accuracy and keeps
    its best-validation iterate (the paper's checkpoint rule) -- about twice as fast, slightly
    less accurate, and no longer the scikit-learn optimum.

    Speed: each basis is materialised once; sizes k of a family are its leading columns, solved
    from small to large k with each solution warm-starting the next; same-k probes of different
    families and all lam values are batched. Families are processed in groups that fit in
    ``max_memory_gb``. With ``dedupe=True`` identical bases (e.g. a deterministic selector under
    several seeds) and coordinate subsets that are equal as sets are trained once and share
    their result (and its time). The solver draws no random numbers: results are deterministic
    on CPU; ``random_state`` is kept for the estimator contract.

    ``n_threads`` sets torch's intra-op threads during fit and inference (restored afterwards;
    None leaves torch's setting); the solver's products run on a pool of that many threads.
    The results do not depend on it: the products are single-threaded BLAS calls on row blocks
    fixed by the shapes and summed in block order, the factorisation runs on one thread
    (docs/reliability.md).

    A :class:`~drprobe.probes.contract.ProbeTrainer` on features (protocol ``cached``), and
    the one the wide path takes (``wide_capable``): its sample-space probes are this bank on
    Gram coordinates, its streaming probes :class:`~drprobe.wide.streaming.StreamingProbes`
    built from this bank's settings.

    Learned attributes: ``classes_``, ``n_features_in_``, ``families_``, ``plan_``,
    ``l2_grid_`` (ascending), ``fitted_``, ``stats_``.
    """

    space = "features"
    protocol = "cached"
    wide_capable = True

    def __init__(
        self, l2_grid: Sequence[float] = DEFAULT_L2_GRID, max_steps: int = 300,
        tol: float = DEFAULT_TOL, patience: int | None = None, standardize: bool = True,
        refit: bool = False, device: str = "cpu", dtype: str = "float32",
        random_state: int | None = 0, max_memory_gb: float = DEFAULT_MAX_MEMORY_GB,
        keep_predictions: bool = False, keep_proba: bool = False, progress: bool = True,
        dedupe: bool = True, n_threads: int | None = None,
    ) -> None:
        self.l2_grid = l2_grid
        self.max_steps = max_steps
        self.tol = tol
        self.patience = patience
        self.standardize = standardize
        self.refit = refit
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.max_memory_gb = max_memory_gb
        self.keep_predictions = keep_predictions
        self.keep_proba = keep_proba
        self.progress = progress
        self.dedupe = dedupe
        self.n_threads = n_threads

    def n_penalties(self) -> int:
        """The size of ``l2_grid``: every head is trained for each value."""
        return len(np.atleast_1d(self.l2_grid))

    def compute_device(self) -> str:
        return str(self.device)

    # ------------------------------------------------------------------ configuration checks
    def _config(self) -> tuple[torch.device, torch.dtype, list[float]]:
        grid = [float(x) for x in np.atleast_1d(np.asarray(self.l2_grid, dtype=float))]
        if not grid or not all(math.isfinite(x) and x > 0 for x in grid):
            raise InvalidValueError(f"l2_grid={list(self.l2_grid)!r} must be positive numbers")
        if self.dtype not in DTYPES:
            raise InvalidValueError(f"dtype {self.dtype!r} invalid; valid choices: float32, "
                                    "float64")
        if int(self.max_steps) < 1 or not self.tol > 0 or not self.max_memory_gb > 0:
            raise InvalidValueError(f"max_steps={self.max_steps}, tol={self.tol}, max_memory_gb"
                                    f"={self.max_memory_gb} must all be positive")
        for name in ("patience", "n_threads"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise InvalidValueError(f"{name}={value} must be None or >= 1")
        device = resolve_device(self.device, mps=False)
        dtype = DTYPES[self.dtype]
        return device, dtype, sorted(set(grid))

    # --------------------------------------------------------------------------------- fit
    def fit(
        self, X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
        families: Sequence[SubsetFamily],
    ) -> ProbeBank:
        """Train every probe of ``families`` on (X_train, y_train), select lam on (X_val, y_val).

        X_train: (n_train, d), X_val: (n_val, d) numeric arrays or memmaps (any float dtype);
        y_*: matching label vectors. Returns self.
        """
        device, dtype, grid_values = self._config()
        X_train = inputs.check_features(X_train, "X_train")
        d = int(X_train.shape[1])
        X_val = inputs.check_features(X_val, "X_val", d)
        ytr = inputs.check_labels(y_train, X_train.shape[0], "y_train")
        yva = inputs.check_labels(y_val, X_val.shape[0], "y_val")
        self.classes_ = np.unique(ytr)
        if len(self.classes_) < 2:
            raise InvalidValueError(f"y_train has {len(self.classes_)} class; need at least 2")
        families = list(families)
        if not families:
            raise InvalidValueError("families is empty; pass at least one SubsetFamily")
        for i, fam in enumerate(families):
            inputs.check_family(fam, i, d)
        self.families_ = families
        self.n_features_in_ = d
        self.plan_ = plan_probes(families, self.dedupe)
        self.l2_grid_ = np.array(grid_values)
        grid = torch.tensor(grid_values, dtype=dtype, device=device)
        self.fitted_: dict[tuple[int, int], _Fitted] = {}
        self.stats_: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        y_all = np.concatenate([inputs.encode(ytr, self.classes_, "y_train"),
                                inputs.encode(yva, self.classes_, "y_val")])
        y_all_t = torch.as_tensor(y_all, device=device)
        n_total = sum(len(self.plan_.solved(c)) for c in self.plan_.ks)
        with torch_threads(self.n_threads), single_threaded_blas(), tqdm(
            total=n_total, desc="probes", unit="probe", file=sys.stderr, disable=not self.progress
        ) as bar:
            for cs in self._family_groups(len(y_all), len(grid), dtype):
                bases = [design.Basis(families[c], device, dtype) for c in cs]
                self._fit_group(cs, bases, (X_train, X_val), y_all_t, grid, bar)
        return self

    def _family_groups(self, n_rows: int, L: int, dtype: torch.dtype) -> list[list[int]]:
        """Split canonical families into groups whose working set fits in max_memory_gb."""
        size = torch.finfo(dtype).bits // 8
        budget, groups, used = self.max_memory_gb * 2**30, [[]], 0.0
        for c in self.plan_.ks:
            need = working_set_bytes(n_rows, self.families_[c].width, len(self.classes_), L, size)
            if groups[-1] and used + need > budget:
                groups.append([])
                used = 0.0
            groups[-1].append(c)
            used += need
        return groups

    def _fit_group(
        self, cs: list[int], bases: list[design.Basis], X: tuple[np.ndarray, np.ndarray],
        y_all: torch.Tensor, grid: torch.Tensor, bar: tqdm,
    ) -> None:
        """Materialise, standardise and precondition a group of families; solve k by k."""
        t0 = time.perf_counter()
        n_tr = int(X[0].shape[0])
        Zs = dict(zip(cs, design.materialize([(X[0], "X_train"), (X[1], "X_val")], bases,
                                         grid.device, grid.dtype)))
        factors = {}
        for c in cs:
            self.stats_[c] = tuple(t.cpu() for t in design.standardize_(Zs[c], n_tr,
                                                                     self.standardize))
            Zt = Zs[c][:n_tr]
            # softmax cross-entropy curvature at the uniform start is about 1/C per class
            factors[c] = preconditioner_factors(Zt.T @ Zt / n_tr, grid, 1.0 / len(self.classes_))
        setup = {c: (time.perf_counter() - t0) / len(cs) / max(1, len(self.plan_.solved(c)))
                 for c in cs}
        warm: dict[int, torch.Tensor] = {}
        for k in sorted({k for c in cs for k in self.plan_.solved(c)}):
            members = [c for c in cs if k in self.plan_.solved(c)]
            self._fit_size(k, members, Zs, factors, warm, y_all, n_tr, grid, setup)
            bar.update(len(members))

    def _fit_size(
        self, k: int, members: list[int], Zs: dict[int, torch.Tensor],
        factors: dict[int, torch.Tensor], warm: dict[int, torch.Tensor], y_all: torch.Tensor,
        n_tr: int, grid: torch.Tensor, setup: dict[int, float],
    ) -> None:
        """Train, select and optionally refit the size-k probes of ``members``."""
        t0 = time.perf_counter()
        p, F, L, C = k + 1, len(members), len(grid), len(self.classes_)
        v0 = torch.zeros(F, L, p, C, dtype=grid.dtype, device=grid.device)
        for i, c in enumerate(members):
            if c in warm:
                v0[i, :, : warm[c].shape[1]] = warm[c]
        prob = GroupProblem(
            Z=[Zs[c][:n_tr, :p] for c in members], y=y_all[:n_tr], n_classes=C,
            lams=grid.expand(F, L), factors=[factors[c][:, :p, :p].contiguous() for c in members],
            v0=v0, Z_val=[Zs[c][n_tr:, :p] for c in members], y_val=y_all[n_tr:],
        )
        sol = solve_group(prob, int(self.max_steps), float(self.tol), self.patience)
        y_val = y_all[n_tr:]
        best = []
        for i, c in enumerate(members):
            warm[c] = sol.v[i]
            logits = Zs[c][n_tr:, :p] @ sol.W[i].permute(1, 0, 2).reshape(p, L * C)
            correct = (logits.view(-1, L, C).argmax(2) == y_val[:, None]).sum(0)
            # highest validation accuracy; ties -> the larger lam (grid is ascending)
            best.append(int(L - 1 - torch.argmax(correct.flip(0)).item()))
            accs = (correct.to(torch.float64) / len(y_val)).cpu().numpy()
            self.fitted_[(c, k)] = _Fitted(
                coef=sol.W[i, best[-1]].cpu(), l2=float(self.l2_grid_[best[-1]]),
                val_acc=float(accs[best[-1]]), val_accs=accs,
                n_steps=int(sol.steps[i, best[-1]]), seconds=0.0)
        if self.refit:
            j = torch.as_tensor(best, device=grid.device)
            prob = GroupProblem(
                Z=[Zs[c][:, :p] for c in members], y=y_all, n_classes=C, lams=grid[j][:, None],
                factors=[factors[c][b:b + 1, :p, :p].contiguous()
                         for c, b in zip(members, best)],
                v0=sol.v[torch.arange(F, device=grid.device), j][:, None],
            )
            resol = solve_group(prob, int(self.max_steps), float(self.tol))
            for i, c in enumerate(members):
                self.fitted_[(c, k)].coef = resol.W[i, 0].cpu()
                self.fitted_[(c, k)].n_steps = int(resol.steps[i, 0])
        share = (time.perf_counter() - t0) / F
        for c in members:
            self.fitted_[(c, k)].seconds = share + setup[c]

    # --------------------------------------------------------------------------- inference
    def _check_fitted(self) -> None:
        if not hasattr(self, "fitted_"):
            raise InvalidValueError("this ProbeBank is not fitted; call fit(...) first")

    def _logits(self, X: np.ndarray, uids: Sequence[tuple[int, int]]
                ) -> dict[tuple[int, int], torch.Tensor]:
        """(n, C) logits of the given unique probes on features X (n, d), family by family."""
        device, dtype, _ = self._config()
        out = {}
        with torch_threads(self.n_threads):
            for c in sorted({u[0] for u in uids}):
                self._family_logits(X, c, uids, out, device, dtype)
        return out

    def _family_logits(
        self, X: np.ndarray, c: int, uids: Sequence[tuple[int, int]],
        out: dict[tuple[int, int], torch.Tensor], device: torch.device, dtype: torch.dtype,
    ) -> None:
        """Fill ``out`` with the (n, C) logits on X of the unique probes of family c."""
        (Z,) = design.materialize([(X, "X")], [design.Basis(self.families_[c], device, dtype)],
                              device, dtype)
        mean, scale = (t.to(device) for t in self.stats_[c])
        Z[:, 1:].sub_(mean).div_(scale)
        for u in uids:
            if u[0] == c:
                coef = self.fitted_[u].coef.to(device)
                out[u] = Z[:, : coef.shape[0]] @ coef

    def predict_proba(self, X: np.ndarray, family_index: int, k: int) -> np.ndarray:
        """Class probabilities (n, C) of probe (families[family_index], k) on features X (n, d)."""
        return self.predict_proba_many(X, [(family_index, k)])[0]

    def predict_proba_many(self, X: np.ndarray, probes: Sequence[tuple[int, int]]
                           ) -> list[np.ndarray]:
        """Class probabilities (n, C) for each (family_index, k) in ``probes``; X is (n, d).

        Each family's basis is computed once for all its requested sizes.
        """
        self._check_fitted()
        uids = []
        for family_index, k in probes:
            if not 0 <= family_index < len(self.families_):
                raise InvalidValueError(f"family_index={family_index} outside [0, "
                                        f"{len(self.families_)})")
            fam = self.families_[family_index]
            if k not in fam.ks:
                raise InvalidValueError(f"k={k} was not probed for family {family_index}; "
                                        f"valid choices: {list(fam.ks)}")
            uids.append(self.plan_.alias[(self.plan_.canon[family_index], int(k))])
        X = inputs.check_features(X, "X", self.n_features_in_)
        logits = self._logits(X, uids)
        return [class_probabilities(logits[u]) for u in uids]

    def evaluate(self, X_test: np.ndarray, y_test: np.ndarray) -> list[ProbeResult]:
        """Test every requested (family, k) probe; one ProbeResult per (family, k) in order."""
        self._check_fitted()
        X_test = inputs.check_features(X_test, "X_test", self.n_features_in_)
        y = inputs.encode(inputs.check_labels(y_test, X_test.shape[0], "y_test"), self.classes_,
                      "y_test")
        uids = sorted({u for _, _, u in self.plan_.requests})
        logits = self._logits(X_test, uids)
        shares = {u: sum(1 for *_, v in self.plan_.requests if v == u) for u in uids}
        return [probe_result(
            self.families_[i], j, l2=self.fitted_[u].l2, val_acc=self.fitted_[u].val_acc,
            logits=logits[u], y_test=y, classes=self.classes_, n_steps=self.fitted_[u].n_steps,
            fit_seconds=self.fitted_[u].seconds / shares[u],
            keep_predictions=self.keep_predictions, keep_proba=self.keep_proba,
        ) for i, j, u in self.plan_.requests]
