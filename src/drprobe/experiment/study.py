"""A study's tables, and the demo as an experiment config.

:func:`build_tables` rebuilds a run's ``summary.csv``, ``summary.md``, ``efficiency.csv`` and
``fairness.csv`` from its parquet parts (no recomputation). :func:`demo_config` is the config
``drprobe demo`` runs (``configs/quickstart.yaml`` with the demo's options):
MobileNetV2 (ImageNet weights) and its seeded random-init twin on Fashion-MNIST, penultimate
layer and block 14.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from drprobe.errors import InvalidValueError
from drprobe.experiment.config import ExperimentConfig, parse_config
from drprobe.experiment.derived import efficiency_table, fairness_trend
from drprobe.experiment.store import atomic_write_text

JOB_KEYS = ["model", "weights", "layer", "dataset"]
DEMO_FRACTIONS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0)


def demo_config(
    model: str = "builtin:mobilenet_v2",
    layers: Sequence[str] = ("penultimate", "features.14"),
    dataset: str = "fashion-mnist",
    n_train: int | None = 10_000,
    n_test: int | None = 2_000,
    image_size: int | None = 64,
    fractions: Sequence[float] = DEMO_FRACTIONS,
    seeds: Sequence[int] = (1, 2, 3),
    twin: bool = True,
    checkpoint: str | None = None,
    data_root: str | None = None,
    probe_tol: float = 1e-3,
) -> ExperimentConfig:
    """The demo's experiment: defaults equal ``configs/quickstart.yaml``.

    ``twin`` adds the seeded random-init copy (``weights: [pretrained, random]``);
    ``checkpoint`` replaces the pretrained weights. ``probe_tol``: the probes' stopping
    tolerance on max |gradient| (1e-3 costs a third of scikit-learn's 1e-4 for accuracies within
    0.3 point on the demo, ``docs/performance.md``).

    Raises:
        ConfigError: an invalid option, named as its config field.
    """
    return parse_config({
        "name": "quickstart",
        "models": [{"spec": model, "weights": ["pretrained", "random"] if twin else ["pretrained"],
                    "checkpoint": checkpoint}],
        "layers": list(layers),
        "datasets": [{"name": dataset, "n_train": n_train, "n_test": n_test,
                      "image_size": image_size, "data_root": data_root}],
        "selectors": ["random"],
        "fractions": list(fractions),
        "seeds": list(seeds),
        "probe": {"tol": probe_tol},
    }, source="demo options")


def prepare_output(out: str | os.PathLike) -> Path:
    """Check that ``out`` can be a results folder (it must not be a file); do not create it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidValueError(f"output folder {str(out)!r} exists and is a file; pass a folder path")
    return out


def build_tables(
    parts: Sequence[tuple[pd.DataFrame, pd.DataFrame]], out: str | os.PathLike
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write the run's tables from its jobs' (results, summary) parts, in the given order.

    Writes ``summary.csv`` / ``summary.md`` (DR table), ``efficiency.csv`` (accuracy against
    probe size, Pareto frontier per job) and ``fairness.csv`` (the Gini trend per job).
    Returns (all per-probe rows, all summary rows).
    """
    out = Path(out)
    results = pd.concat([r for r, _ in parts], ignore_index=True)
    summary = pd.concat([s for _, s in parts], ignore_index=True)
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    atomic_write_text(out / "summary.md", summary_markdown(summary))
    for name, table in (("efficiency", per_job(efficiency_table, results)),
                        ("fairness", per_job(fairness_trend, results))):
        atomic_write_text(out / f"{name}.csv", table.to_csv(index=False))
    return results, summary


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


def summary_markdown(summary: pd.DataFrame) -> str:
    """The wide summary table as a GitHub-flavoured markdown table."""
    table = summary_table(summary)
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"
