"""Analyses beyond one :func:`~drprobe.analysis.layer.analyze_layer` call: null baselines
(the same analysis on features or labels without information) and an adaptive search for the
critical fraction.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from drprobe.analysis.layer import LayerAnalysis, analyze_layer
from drprobe.analysis.tasks import NULLS, null_inputs
from drprobe.features.views import RowView
from drprobe.metrics.redundancy import adaptive_critical_fraction
from drprobe.probes import ProbeBank
from drprobe.selectors import make_family
from drprobe.sources.datasets import train_val_split


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
    Xtr, Xva, Xte = RowView(X_train, tr), RowView(X_train, va), RowView(X_test)
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
