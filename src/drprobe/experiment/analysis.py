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
from drprobe.errors import InvalidValueError
from drprobe.metrics.cka import CrossProductStats, debiased_linear_cka
from drprobe.metrics.efficiency import probe_params
from drprobe.metrics.fairness import gini
from drprobe.metrics.redundancy import bootstrap_dr, dr_summary
from drprobe.probes import ProbeBank
from drprobe.selectors import SELECTORS, make_family, resolve_ks
from drprobe.sources.datasets import train_val_split
from drprobe.wide import MemoryPlan, plan_memory
from drprobe.wide.columns import release
from drprobe.wide.layer import analyze_wide
from drprobe.wide.memory import GIB

PAPER_FRACTIONS = (0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5,
                   0.8, 0.9, 1.0)
DEFAULT_DELTAS = (0.8, 0.9, 0.95, 0.99)
# Selectors whose basis does not depend on the seed: one family is enough.
DETERMINISTIC = {"prefix", "pca_top", "pca_least", "variance", "weight_norm", "greedy"}


@dataclass
class LayerAnalysis:
    """Output of :func:`analyze_layer`.

    Attributes:
        results: one row per probe (results-contract columns).
        summary: one row per (selector, delta): full-layer accuracy, f*, DR, k* and a bootstrap CI.
    """

    results: pd.DataFrame
    summary: pd.DataFrame
    plan: MemoryPlan | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _check_xy(X: np.ndarray, y: np.ndarray, what: str) -> None:
    if X.ndim != 2 or len(X) != len(y):
        raise InvalidValueError(
            f"{what} features must be (n, d) with one label per row; got X {X.shape}, y {y.shape}"
        )
    if len(y) == 0:
        raise InvalidValueError(f"{what} split is empty")


def _check_finite(X: np.ndarray, what: str, block_bytes: int = 64 * 2**20) -> None:
    """Refuse NaN or infinite features (X (n, d), read about ``block_bytes`` at a time)."""
    rows = max(1, block_bytes // (4 * max(1, X.shape[1])))
    for lo in range(0, len(X), rows):
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
    fractions: Sequence[float] = PAPER_FRACTIONS,
    seeds: Sequence[int] = (1, 2, 3),
    deltas: Sequence[float] = DEFAULT_DELTAS,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    n_boot: int = 500,
    context: Mapping[str, object] | None = None,
    bank: ProbeBank | None = None,
    progress: bool = True,
    protocol: str = "cached",
    memory_budget_gb: float | None = None,
    scratch_dir: str | None = None,
) -> LayerAnalysis:
    """Probe random subsets (and other selectors) of one layer and measure diffused redundancy.

    Args:
        X_train, y_train: (n_train, d) features and (n_train,) labels; validation is carved from them.
        X_test, y_test: (n_test, d) and (n_test,).
        selectors: names from :data:`drprobe.selectors.SELECTORS`.
        fractions: fractions of d in (0, 1]; 1.0 (the full layer) is always added.
        seeds: seeds of the random selectors (deterministic ones use the first seed only).
        deltas: thresholds of DR_delta.
        context: extra constant columns for every row (model, layer, dataset, ...).
        bank: a configured :class:`ProbeBank` (default: ``ProbeBank(keep_predictions=True)``),
            or any object with its ``fit(X_train, y_train, X_val, y_val, families)`` and
            ``evaluate(X_test, y_test)`` returning probe results with test predictions.
        protocol: recorded in every row (``"faithful"`` when ``bank`` trains through the
            backbone on augmented images).
        memory_budget_gb: the memory plan's budget (:func:`drprobe.wide.plan_memory`; default
            a third of the machine's memory). Stages whose d×d form is larger than their n×n
            form, or over the budget, run in sample space or streaming
            (:func:`drprobe.wide.layer.analyze_wide`); no path under the budget: refused
            before any work.
        scratch_dir: folder for the sample-space path's neuron-major copies (default: temp).

    Returns:
        :class:`LayerAnalysis` with the per-probe table and the DR summary.
    """
    check_layer_inputs(X_train, y_train, X_test, y_test)
    unknown = [s for s in selectors if s not in SELECTORS]
    if unknown:
        raise InvalidValueError(
            f"unknown selector {unknown[0]!r}; valid choices: {', '.join(sorted(SELECTORS))}"
        )
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    d = X_train.shape[1]
    ks, fracs = resolve_ks(d, fractions=sorted(set(fractions) | {1.0}))

    tr_idx, va_idx = train_val_split(y_train, val_fraction, split_seed)
    bank = bank if bank is not None else ProbeBank(keep_predictions=True, progress=progress)
    plan = plan_memory(
        n_train=len(tr_idx), n_val=len(va_idx), n_test=len(y_test), d=d, n_classes=n_classes,
        selectors=selectors, n_l2=len(np.atleast_1d(getattr(bank, "l2_grid", (1.0,)))),
        ks=ks, budget_bytes=None if memory_budget_gb is None
        else int(memory_budget_gb * GIB))
    if isinstance(bank, ProbeBank) and any(s.path != "feature" for s in plan.stages):
        t0 = time.perf_counter()
        wide = analyze_wide(
            X_train, y_train, X_test, y_test, tr_idx, va_idx, selectors=selectors, ks=ks,
            fractions=fracs, seeds=seeds, bank=bank, probes_path=plan.path("probes")
            if plan.path("probes") != "feature" else "sample", budget_bytes=plan.budget_bytes,
            scratch_dir=scratch_dir, progress=progress)
        wide.seconds["total"] = time.perf_counter() - t0
        return _assemble(wide.probes, wide.cka, wide.cka_debiased, 0.0, d, n_classes,
                         len(tr_idx), len(va_idx), y_test, protocol, context, deltas, n_boot,
                         plan, wide.seconds)
    Xtr = np.asarray(X_train[tr_idx], dtype=np.float32)
    Xva = np.asarray(X_train[va_idx], dtype=np.float32)
    ytr, yva = y_train[tr_idx], y_train[va_idx]
    Xte = np.asarray(X_test, dtype=np.float32)

    device = str(getattr(bank, "device", "cpu"))
    cka_device = None if device == "cpu" else device  # the cross-products run there too
    t0 = time.perf_counter()
    train_stats = CrossProductStats.from_array(Xtr, debiased=False, device=cka_device)  # for PCA
    families = [
        make_family(sel, Xtr, ks, seed=seed, y_train=ytr, X_val=Xva, y_val=yva,
                    fractions=fracs, cross=train_stats)
        for sel in selectors
        for seed in (seeds[:1] if sel in DETERMINISTIC else seeds)
    ]
    select_seconds = time.perf_counter() - t0

    bank.fit(Xtr, ytr, Xva, yva, families)
    probes = bank.evaluate(Xte, y_test)

    test_stats = CrossProductStats.from_array(Xte, device=cka_device)
    cka = {(f.selector, f.seed): dict(zip(f.ks, test_stats.family_cka(f))) for f in families}
    cka_db = {(f.selector, f.seed): _debiased_family_cka(test_stats, f, Xte) for f in families}
    return _assemble(probes, cka, cka_db, select_seconds, d, n_classes, len(tr_idx),
                     len(va_idx), y_test, protocol, context, deltas, n_boot, plan, {})


def _assemble(probes, cka, cka_db, select_seconds, d, n_classes, n_tr, n_va, y_test, protocol,
              context, deltas, n_boot, plan, timings) -> LayerAnalysis:
    """The per-probe table and the DR summary from probe results and CKA per (selector, seed)."""
    ctx = dict(context or {})
    rows = []
    for p in probes:
        rows.append({
            **ctx,
            "n_train": n_tr, "n_val": n_va, "n_test": len(y_test),
            "n_classes": n_classes, "selector": p.selector, "fraction": p.fraction, "k": p.k,
            "d": d, "seed": p.seed, "protocol": protocol, "l2": p.l2, "val_acc": p.val_acc,
            "test_acc": p.test_acc, "per_class_acc": [float(a) for a in p.per_class_acc],
            "gini": float(gini(p.per_class_acc)),
            "worst_class_acc": float(np.nanmin(p.per_class_acc)),
            "cka": float(cka[(p.selector, p.seed)][p.k]),
            "cka_debiased": float(cka_db[(p.selector, p.seed)][p.k]),
            "probe_params": probe_params(p.k, n_classes), "fit_seconds": p.fit_seconds,
            "select_seconds": select_seconds / max(len(probes), 1),
            "drprobe_version": __version__,
        })
    results = pd.DataFrame(rows)
    summary = summarize(results, probes, y_test, deltas=deltas, n_boot=n_boot, context=ctx)
    return LayerAnalysis(results=results, summary=summary, plan=plan, timings=timings)


def _debiased_family_cka(stats: CrossProductStats, family, X: np.ndarray) -> dict[int, float]:
    """Debiased CKA per k: exact from moments for coordinate subsets, directly for projections."""
    if family.indices is not None:
        values = stats.subset_cka_debiased([family.indices[:k] for k in family.ks])
        return dict(zip(family.ks, values))
    return {k: debiased_linear_cka(X, family.transform(X, k)) for k in family.ks}


def summarize(
    results: pd.DataFrame,
    probes: Sequence,
    y_test: np.ndarray,
    *,
    deltas: Sequence[float] = DEFAULT_DELTAS,
    n_boot: int = 500,
    context: Mapping[str, object] | None = None,
) -> pd.DataFrame:
    """DR summary per (selector, delta) from the per-probe rows and the probes' test predictions.

    The full-layer accuracy is the mean test accuracy of the k = d probes of the ``random``
    selector when present (else of the first selector). Confidence intervals resample test
    examples and seeds (:func:`drprobe.metrics.redundancy.bootstrap_dr`).
    """
    ctx = dict(context or {})
    full_sel = "random" if "random" in set(results["selector"]) else results["selector"].iloc[0]
    full_rows = [p for p in probes if p.selector == full_sel and p.k == results["d"].iloc[0]]
    full_acc = float(np.mean([p.test_acc for p in full_rows]))
    full_correct = np.stack([p.test_pred == y_test for p in full_rows])
    out = []
    for sel, df in results.groupby("selector", sort=False):
        curve = df.pivot_table(index="seed", columns="fraction", values="test_acc")
        fr = np.asarray(curve.columns, dtype=float)
        ks = df.groupby("fraction")["k"].first().reindex(fr).to_numpy()
        cka_curve = df.groupby("fraction")["cka"].mean().reindex(fr).to_numpy()
        sel_probes = [p for p in probes if p.selector == sel]
        correct = np.stack([
            np.stack([p.test_pred == y_test for p in sorted(sel_probes, key=lambda q: q.k)
                      if p.seed == s])
            for s in curve.index
        ])
        acc_rows = dr_summary(fr, ks, curve.to_numpy(), full_acc, deltas=deltas)
        cka_rows = dr_summary(fr, ks, cka_curve[None, :], 1.0, deltas=deltas)
        for acc_row, cka_row in zip(acc_rows, cka_rows):
            ci = bootstrap_dr(correct, full_correct, fr, acc_row["delta"], n_boot=n_boot)
            out.append({
                **ctx, "selector": sel, "d": int(df["d"].iloc[0]), "full_acc": full_acc,
                "delta": acc_row["delta"], "f_star": acc_row["f_star"],
                "f_star_interp": acc_row["f_star_interp"], "dr": acc_row["dr"],
                "k_star": acc_row["k_star"], "dr_low": ci["low"], "dr_high": ci["high"],
                "dr_cka": cka_row["dr"], "k_star_cka": cka_row["k_star"],
            })
    return pd.DataFrame(out)
