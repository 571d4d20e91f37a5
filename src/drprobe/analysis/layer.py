"""One layer, one task: every selector x fraction x seed probe, with CKA, fairness and DR.

:func:`analyze_layer` is the engine behind ``drprobe demo`` and the Python API. It takes cached
train/test features, carves a validation split from train, builds one nested
:class:`~drprobe.selectors.SubsetFamily` per (selector, seed), trains all probes in one
:class:`~drprobe.probes.ProbeBank`, and returns the long results table (one row per probe, the
columns of the results contract in ``docs/architecture.md``) and the DR summary.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from drprobe import __version__
from drprobe.analysis.plan import layer_plan
from drprobe.analysis.protocol import FaithfulProtocol, as_trainer
from drprobe.analysis.summary import summarize
from drprobe.devices import one_blas_thread
from drprobe.errors import InvalidValueError
from drprobe.features.views import RowView, release
from drprobe.metrics.cka import debiased_linear_cka
from drprobe.metrics.cka_stats import CrossProductStats
from drprobe.metrics.efficiency import probe_params
from drprobe.metrics.fairness import gini
from drprobe.metrics.redundancy import DEFAULT_DELTAS
from drprobe.probes import ProbeTrainer
from drprobe.selectors import (
    SELECTORS,
    is_seeded,
    make_family,
)
from drprobe.selectors.family import DEFAULT_SEEDS
from drprobe.sources.datasets import train_val_split
from drprobe.wide import MemoryPlan
from drprobe.wide.layer import analyze_wide, materialised_dtype

#: Rows of the features read at a time by the finite check and the cross-product (CKA, PCA)
#: accumulators.
STATS_BLOCK_ROWS = 4096
FINITE_BLOCK_BYTES = 64 * 2**20


@dataclass
class LayerAnalysis:
    """Output of :func:`analyze_layer`.

    Attributes:
        results: one row per probe (results-contract columns).
        summary: one row per (selector, delta): full-layer accuracy, f*, DR, k* and a bootstrap CI.
        plan: the memory plan the analysis followed (path and peak of each stage).
        timings: seconds per phase of the wide path (scratch copies, CKA, PCA, probes by path);
            empty on the feature-space path, whose rows carry fit/select seconds.
    """

    results: pd.DataFrame
    summary: pd.DataFrame
    plan: MemoryPlan | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _check_xy(X: np.ndarray, y: np.ndarray, what: str) -> None:
    if len(X.shape) != 2 or X.shape[0] != len(y):
        raise InvalidValueError(
            f"{what} features must be (n, d) with one label per row; got X {X.shape}, y {y.shape}"
        )
    if len(y) == 0:
        raise InvalidValueError(f"{what} split is empty")


def _check_finite(X: np.ndarray, what: str) -> None:
    """Refuse NaN or infinite features (X (n, d), read :data:`STATS_BLOCK_ROWS` rows, or fewer
    for wide layers (about 64 MiB of float32), at a time; a memmap's pages are released after
    each block)."""
    rows = max(1, min(STATS_BLOCK_ROWS, FINITE_BLOCK_BYTES // (4 * max(1, X.shape[1]))))
    for lo in range(0, X.shape[0], rows):
        bad = ~np.isfinite(np.asarray(X[lo:lo + rows]))
        release(X)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise InvalidValueError(
                f"{what} features contain NaN or infinite values (first at row {lo + i}, "
                f"column {j}); valid: finite numbers"
            )


def check_layer_inputs(
    X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray
) -> None:
    """Refuse what :func:`analyze_layer` cannot probe: shapes, lengths, an empty split, NaN or
    infinite values, a single training class (one-line :class:`InvalidValueError`)."""
    _check_xy(X_train, y_train, "train")
    _check_xy(X_test, y_test, "test")
    if X_train.shape[1] != X_test.shape[1]:
        raise InvalidValueError(
            f"train and test features differ in width: {X_train.shape[1]} vs {X_test.shape[1]}"
        )
    _check_finite(X_train, "train")
    _check_finite(X_test, "test")
    if len(np.unique(y_train)) < 2:
        raise InvalidValueError("train split has a single class; a probe needs at least two")


def analyze_layer(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    *,
    selectors: Sequence[str] = ("random",),
    fractions: Sequence[float] | None = None,
    counts: Sequence[int] | None = None,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    deltas: Sequence[float] = DEFAULT_DELTAS,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    n_boot: int = 500,
    context: Mapping[str, object] | None = None,
    bank: ProbeTrainer | FaithfulProtocol | None = None,
    progress: bool = True,
    memory_budget_gb: float | None = None,
    scratch_dir: str | None = None,
) -> LayerAnalysis:
    """Probe random subsets (and other selectors) of one layer and measure diffused redundancy.

    Args:
        X_train, y_train: (n_train, d) features (an array or a memmap: read lazily, block by
            block) and (n_train,) labels; validation is carved from them.
        X_test, y_test: (n_test, d) and (n_test,).
        selectors: names from :data:`drprobe.selectors.SELECTORS`.
        fractions, counts: fractions of d in (0, 1] and/or neuron counts in [1, d]
            (:func:`~drprobe.selectors.resolve_ks`); neither: the paper's grid
            (:func:`~drprobe.selectors.family.probe_fractions`). The full layer is always added.
        seeds: seeds of the seeded selectors (the others use the first seed only).
        deltas: thresholds of DR_delta.
        context: extra constant columns for every row (model, layer, dataset, ...).
        bank: how heads are trained (:mod:`drprobe.analysis.protocol`): a probe trainer on
            features (:class:`~drprobe.probes.ProbeTrainer` with ``space = "features"``, e.g.
            a configured :class:`~drprobe.probes.ProbeBank` with ``keep_predictions=True``:
            the ``cached`` protocol; default ``ProbeBank(keep_predictions=True)``) or a
            :class:`FaithfulProtocol` (a trainer on images with its image splits). The
            trainer's ``protocol`` is recorded in every row.
        memory_budget_gb: the memory plan's budget in GiB (the one plan builder, shared with
            the dry run: :func:`drprobe.analysis.plan.layer_plan`; default
            a third of the machine's memory), decided before any work: when the probes' n×n
            (sample-space) form is the smaller, or their feature-space form is over the budget,
            a trainer that declares ``wide_capable`` (the probe bank) runs through
            :func:`drprobe.wide.layer.analyze_wide` (CKA, PCA and probes from Gram matrices, or
            the streaming solver built from the bank's settings); a stage with no path under
            the budget is refused on one line. ``plan`` and ``timings`` of the result say what
            ran.
        scratch_dir: folder of the sample-space path's neuron-major copies (default: temp).

    Memory: the features stay where they are (a memmap stays on disk) and are read in row
    blocks; on top of the protocol's own working set (for the probe bank, about
    ``max_memory_gb``), the cross products take two d x d float64 matrices for the train split
    and four for the test split (debiased CKA), and a projection selector's debiased CKA reads
    the test split whole (n_test x d). Nothing grows with n_train beyond the block size.
    That is the feature-space path; when the plan puts the probes in sample space or streaming
    (wide layers), no d x d matrix is made and the peak is the plan's
    (:mod:`drprobe.wide.memory`): O(n² + block·n + d·C) — see :attr:`LayerAnalysis.plan`.

    Returns:
        :class:`LayerAnalysis` with the per-probe table and the DR summary.
    """
    check_layer_inputs(X_train, y_train, X_test, y_test)
    unknown = [s for s in selectors if s not in SELECTORS]
    if unknown:
        raise InvalidValueError(
            f"unknown selector {unknown[0]!r}; valid choices: {', '.join(sorted(SELECTORS))}"
        )
    bank_ = as_trainer(bank, progress)  # the probe trainer
    n_classes = len(np.unique(y_train))  # the probes' classes (test labels must be among them)
    d = X_train.shape[1]
    tr_idx, va_idx = train_val_split(y_train, val_fraction, split_seed)
    sizes = layer_plan(
        d, n_train=len(tr_idx), n_val=len(va_idx), n_test=len(y_test), n_classes=n_classes,
        selectors=selectors, fractions=fractions, counts=counts, seeds=seeds,
        n_l2=bank_.n_penalties(),
        memory_budget_gb=memory_budget_gb, itemsize=materialised_dtype(X_train).itemsize)
    ks, fracs, plan = sizes.ks, sizes.fractions, sizes.memory
    if bank_.wide_capable and plan.path("probes") != "feature":
        t0 = time.perf_counter()
        wide = analyze_wide(
            X_train, y_train, X_test, y_test, tr_idx, va_idx, selectors=selectors, ks=ks,
            fractions=fracs, seeds=seeds, bank=bank_, probes_path=plan.path("probes"),
            budget_bytes=plan.budget_bytes, scratch_dir=scratch_dir, progress=progress)
        wide.seconds["total"] = time.perf_counter() - t0
        return _assemble(wide.probes, wide.cka, wide.cka_debiased, 0.0, bank_.protocol, d,
                         n_classes, (len(tr_idx), len(va_idx), len(y_test)), y_test, context,
                         deltas, n_boot, plan, wide.seconds)
    Xtr, Xva, Xte = RowView(X_train, tr_idx), RowView(X_train, va_idx), RowView(X_test)
    ytr, yva = y_train[tr_idx], y_train[va_idx]

    device = bank_.compute_device()
    cka_device = None if device == "cpu" else device  # cross products there
    t0 = time.perf_counter()
    train_stats = CrossProductStats.from_array(Xtr, STATS_BLOCK_ROWS, debiased=False,
                                               device=cka_device)  # also the PCA bases
    families = [
        make_family(sel, Xtr, ks, seed=seed, y_train=ytr, X_val=Xva, y_val=yva,
                    fractions=fracs, cross=train_stats)
        for sel in selectors
        for seed in (seeds if is_seeded(sel) else seeds[:1])
    ]
    select_seconds = time.perf_counter() - t0

    inputs = (Xtr, Xva, Xte) if bank_.space == "features" else \
        bank.inputs(y_train, tr_idx, va_idx, y_test)  # an images trainer: FaithfulProtocol
    probes = bank_.fit(inputs[0], ytr, inputs[1], yva, families).evaluate(inputs[2], y_test)

    test_stats = CrossProductStats.from_array(Xte, STATS_BLOCK_ROWS, device=cka_device)
    cka = {(f.selector, f.seed): dict(zip(f.ks, test_stats.family_cka(f))) for f in families}
    cka_db = {(f.selector, f.seed): _debiased_family_cka(test_stats, f, Xte) for f in families}
    return _assemble(probes, cka, cka_db, select_seconds, bank_.protocol, d, n_classes,
                     (len(tr_idx), len(va_idx), len(y_test)), y_test, context, deltas, n_boot,
                     plan, {})


def _assemble(probes, cka, cka_db, select_seconds, protocol_name, d, n_classes, sizes, y_test,
              context, deltas, n_boot, plan, timings) -> LayerAnalysis:
    """The per-probe table and the DR summary from probe results and CKA per (selector, seed);
    ``sizes`` = (n_train, n_val, n_test)."""
    ctx = dict(context or {})
    rows = []
    for p in probes:
        rows.append({
            **ctx,
            "n_train": sizes[0], "n_val": sizes[1], "n_test": sizes[2],
            "n_classes": n_classes, "selector": p.selector, "fraction": p.fraction, "k": p.k,
            "d": d, "seed": p.seed, "protocol": protocol_name, "l2": p.l2, "val_acc": p.val_acc,
            "test_acc": p.test_acc, "per_class_acc": [float(a) for a in p.per_class_acc],
            "test_correct": (np.asarray(p.test_pred) == y_test).tolist(),
            "gini": float(gini(p.per_class_acc)),
            "worst_class_acc": float(np.nanmin(p.per_class_acc)),
            "cka": float(cka[(p.selector, p.seed)][p.k]),
            "cka_debiased": float(cka_db[(p.selector, p.seed)][p.k]),
            "probe_params": probe_params(p.k, n_classes), "fit_seconds": p.fit_seconds,
            "select_seconds": select_seconds / max(len(probes), 1),
            "drprobe_version": __version__,
        })
    results = pd.DataFrame(rows)
    correct = {(p.selector, int(p.seed), int(p.k)): p.test_pred == y_test for p in probes}
    summary = summarize(results, correct, deltas=deltas, n_boot=n_boot, context=ctx)
    return LayerAnalysis(results=results, summary=summary, plan=plan, timings=timings)


def _debiased_family_cka(stats: CrossProductStats, family, X: RowView) -> dict[int, float]:
    """Debiased CKA per k: exact from moments for coordinate subsets, directly for projections
    (which read the test split ``X`` whole)."""
    if family.indices is not None:
        values = stats.subset_cka_debiased([family.indices[:k] for k in family.ks])
        return dict(zip(family.ks, values))
    X = np.asarray(X)
    with one_blas_thread():  # the same bits whatever the machine's thread count
        return {k: debiased_linear_cka(X, family.transform(X, k)) for k in family.ks}
