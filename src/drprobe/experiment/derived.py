"""What a study derives from its per-probe table: efficiency, the fairness trend, null baselines
and an adaptive search for the critical fraction.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from drprobe.errors import InvalidValueError
from drprobe.experiment.analysis import LayerAnalysis, analyze_layer
from drprobe.metrics.efficiency import inference_flops, pareto_frontier, probe_params
from drprobe.metrics.fairness import gini_trend_test
from drprobe.metrics.redundancy import adaptive_critical_fraction
from drprobe.probes import ProbeBank
from drprobe.selectors import make_family
from drprobe.sources.datasets import train_val_split

NULLS = ("gaussian", "shuffled_labels")


def efficiency_table(results: pd.DataFrame) -> pd.DataFrame:
    """Accuracy against probe size, one row per (selector, k), with the Pareto frontier marked.

    Columns: selector, k, d, mean test_acc, probe_params ((k+1)·C), inference_flops (per example,
    including the d×k projection for projection selectors), on_frontier (no other row is both
    cheaper in parameters and more accurate).
    """
    n_classes = int(results["n_classes"].iloc[0])
    table = (results.groupby(["selector", "k"], sort=True)
             .agg(d=("d", "first"), test_acc=("test_acc", "mean")).reset_index())
    table["probe_params"] = probe_params(table["k"].to_numpy(), n_classes)
    table["inference_flops"] = [inference_flops(s, int(d), int(k), n_classes)
                                for s, d, k in table[["selector", "d", "k"]].itertuples(False)]
    frontier = pareto_frontier(table["probe_params"], table["test_acc"])
    table["on_frontier"] = False
    table.loc[frontier, "on_frontier"] = True
    return table


def fairness_trend(results: pd.DataFrame) -> pd.DataFrame:
    """Per selector, the paired test of "Gini rises as the fraction falls" (seeds paired).

    The full-layer Gini is the k = d probe of the same seed. Selectors with a single fraction
    below 1 are skipped (no trend to test).
    """
    rows = []
    for sel, df in results.groupby("selector", sort=False):
        curve = df.pivot_table(index="seed", columns="fraction", values="gini")
        full = curve[curve.columns.max()].to_numpy()
        part = curve.drop(columns=curve.columns.max())
        if part.shape[1] < 2:
            continue
        test = gini_trend_test(part.columns.to_numpy(), part.to_numpy(), full)
        rows.append({"selector": sel, **{k: v for k, v in test.items() if k != "spearman_rho"}})
    return pd.DataFrame(rows)


def null_inputs(
    kind: str, X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train features, train labels and test features of a null baseline.

    ``"gaussian"``: i.i.d. N(0, 1) features of the same shape (no information about the labels);
    ``"shuffled_labels"``: the real features with the training labels permuted.
    """
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        return (rng.standard_normal(X_train.shape, dtype=np.float32), y_train,
                rng.standard_normal(X_test.shape, dtype=np.float32))
    if kind == "shuffled_labels":
        return X_train, rng.permutation(y_train), X_test
    raise InvalidValueError(f"unknown null baseline {kind!r}; valid choices: {', '.join(NULLS)}")


def analyze_with_nulls(
    X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, *,
    nulls: Sequence[str] = NULLS, null_seed: int = 0, **kwargs: Any,
) -> LayerAnalysis:
    """:func:`analyze_layer` on the real features and on each null baseline.

    Rows and summary rows carry a ``baseline`` column: ``"none"`` for the real run, else the
    null's name; a score can then be read as excess over its null.
    """
    runs = [("none", (X_train, y_train, X_test))]
    runs += [(kind, null_inputs(kind, X_train, y_train, X_test, null_seed)) for kind in nulls]
    results, summaries = [], []
    for name, (xtr, ytr, xte) in runs:
        out = analyze_layer(xtr, ytr, xte, y_test, **kwargs)
        results.append(out.results.assign(baseline=name))
        summaries.append(out.summary.assign(baseline=name))
    return LayerAnalysis(pd.concat(results, ignore_index=True),
                         pd.concat(summaries, ignore_index=True))


def refine_critical_fraction(
    X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, *,
    delta: float = 0.9, tol: float = 0.01, seeds: Sequence[int] = (1, 2, 3),
    grid: Sequence[float] = (0.01, 0.1, 0.5, 1.0), val_fraction: float = 0.1,
    split_seed: int = 0, bank: ProbeBank | None = None,
) -> dict[str, Any]:
    """Find f*_δ of random subsets to within ``tol`` by adding fractions where the curve crosses.

    Each evaluation trains one probe per seed at k = max(1, floor(f·d)) and scores the mean test
    accuracy; bisection (:func:`~drprobe.metrics.redundancy.adaptive_critical_fraction`)
    proceeds until the bracket is narrower than ``tol``. Returns that function's dict plus
    ``full_acc`` and ``k_star``.
    """
    d = X_train.shape[1]
    tr, va = train_val_split(y_train, val_fraction, split_seed)
    Xtr, Xva = np.asarray(X_train[tr], np.float32), np.asarray(X_train[va], np.float32)
    Xte = np.asarray(X_test, np.float32)
    bank = bank if bank is not None else ProbeBank(progress=False)

    @functools.cache
    def evaluate(fraction: float) -> float:
        k = max(1, int(np.floor(fraction * d + 1e-9)))
        fams = [make_family("random", Xtr, [k], seed=s) for s in seeds]
        bank.fit(Xtr, y_train[tr], Xva, y_train[va], fams)
        return float(np.mean([p.test_acc for p in bank.evaluate(Xte, y_test)]))

    full = evaluate(1.0)
    out = adaptive_critical_fraction(evaluate, full, delta, tol=tol, grid=grid)
    f_star = out["f_star"]
    out["full_acc"] = full
    out["k_star"] = None if np.isnan(f_star) else max(1, int(np.floor(f_star * d + 1e-9)))
    return out
