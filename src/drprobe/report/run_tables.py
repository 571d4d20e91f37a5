"""The tables written beside a run: ``summary.csv`` / ``summary.md`` (DR), ``efficiency.csv``
(accuracy against probe size, the Pareto frontier per job) and ``fairness.csv`` (the Gini trend
per job), and the wide DR table that ``drprobe demo`` / ``run`` print.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from drprobe.experiment.store import JOB_KEYS
from drprobe.files import atomic_write_text
from drprobe.metrics.efficiency import inference_flops, pareto_frontier, probe_params
from drprobe.metrics.fairness import gini_trend_test

__all__ = ["dr_interval", "efficiency_table", "fairness_trend", "k_or_dash", "per_job",
           "summary_markdown", "summary_table", "write_tables"]


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


def write_tables(results: pd.DataFrame, summary: pd.DataFrame, out: str | os.PathLike) -> None:
    """Write the run's tables from its per-probe rows and DR summary (no recomputation).

    Writes ``summary.csv`` / ``summary.md`` (DR table), ``efficiency.csv`` (accuracy against
    probe size, Pareto frontier per job) and ``fairness.csv`` (the Gini trend per job), each
    through a temporary file and a rename.
    """
    out = Path(out)
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    atomic_write_text(out / "summary.md", summary_markdown(summary))
    for name, table in (("efficiency", per_job(efficiency_table, results)),
                        ("fairness", per_job(fairness_trend, results))):
        atomic_write_text(out / f"{name}.csv", table.to_csv(index=False))


def per_job(table: Callable[[pd.DataFrame], pd.DataFrame], results: pd.DataFrame) -> pd.DataFrame:
    """``table`` of each job's per-probe rows (jobs in order of appearance), with the job's
    model, weights, layer and dataset columns appended."""
    return pd.concat([table(df).assign(**dict(zip(JOB_KEYS, job)))
                      for job, df in results.groupby(JOB_KEYS, sort=False)], ignore_index=True)


def dr_interval(row: pd.Series) -> str:
    """A summary row's bootstrap interval of DR as ``[low, high]``, or "—" when it has none."""
    low, high = row.get("dr_low", np.nan), row.get("dr_high", np.nan)
    return "—" if pd.isna(low) or pd.isna(high) else f"[{low:.2f}, {high:.2f}]"


def k_or_dash(value: object) -> object:
    """A critical mass k* as an int, or "—" when the curve never reaches delta."""
    return "—" if pd.isna(value) else int(value)


def summary_table(
    summary: pd.DataFrame, deltas: tuple[float, ...] | None = (0.8, 0.9, 0.95)
) -> pd.DataFrame:
    """Wide table: one row per (model, weights, layer, dataset, selector) with d, full accuracy,
    then DR, its CI and k* per delta.

    ``deltas``: the ones to show, among those the summary holds (all of its deltas if it holds
    none of them, or if None). A missing CI or k* shows as "—".
    """
    present = sorted({round(float(v), 6) for v in summary["delta"]})
    wanted = [d for d in (deltas or ()) if round(d, 6) in present]
    keys = [c for c in ("model", "weights", "layer", "dataset", "selector") if c in summary]
    rows = []
    for key, df in summary.groupby(keys, sort=False):
        row = dict(zip(keys, key))
        row["d"] = int(df["d"].iloc[0])
        row["full_acc"] = round(float(df["full_acc"].iloc[0]), 4)
        for delta in wanted or present:
            hit = df[df["delta"].round(6) == round(delta, 6)]
            if hit.empty:
                continue
            r = hit.iloc[0]
            row[f"DR_{delta:g}"] = round(float(r["dr"]), 3)
            row[f"CI_{delta:g}"] = dr_interval(r)
            row[f"k*_{delta:g}"] = k_or_dash(r["k_star"])
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_table(table: pd.DataFrame, digits: int | None = None) -> str:
    """A GitHub-flavoured markdown table; floats to ``digits`` significant digits when given,
    NaN and None as an em dash."""
    def cell(v) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "—"
        return f"{v:.{digits}g}" if digits is not None and isinstance(v, float) else str(v)

    cols = list(table.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def summary_markdown(summary: pd.DataFrame) -> str:
    """The wide summary table as a GitHub-flavoured markdown table."""
    return markdown_table(summary_table(summary))
