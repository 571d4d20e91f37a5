"""Figures of a study: a metric against the fraction of neurons kept, one panel per layer.

Each line is one (model, weights, selector); the solid line is the mean over seeds, the band the
min-max range over seeds, and for accuracy a dashed line marks the full-layer probe.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

LABELS = {
    "test_acc": "test accuracy",
    "cka": "linear CKA (subset vs layer)",
    "gini": "Gini of per-class accuracy",
    "worst_class_acc": "worst-class accuracy",
}


def _series_label(key: tuple, multi_selector: bool) -> str:
    model, weights, selector = key
    short = model.split(":", 1)[-1]
    return f"{short} [{weights}]" + (f" {selector}" if multi_selector else "")


def plot_metric(results: pd.DataFrame, metric: str, path: str | os.PathLike) -> Path:
    """Plot ``metric`` against ``fraction`` (log axis) per layer; save a PNG (or PDF) to ``path``."""
    layers = list(dict.fromkeys(results["layer"]))
    fig, axes = plt.subplots(1, len(layers), figsize=(5.2 * len(layers), 4.0), squeeze=False)
    multi = results["selector"].nunique() > 1
    for ax, layer in zip(axes[0], layers):
        df = results[results["layer"] == layer]
        for key, g in df.groupby(["model", "weights", "selector"], sort=False):
            stats = g.groupby("fraction")[metric].agg(["mean", "min", "max"]).sort_index()
            line, = ax.plot(stats.index, stats["mean"], marker="o", ms=3,
                            label=_series_label(key, multi))
            ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.2,
                            color=line.get_color())
            if metric == "test_acc":
                full = g.loc[g["fraction"] == g["fraction"].max(), metric].mean()
                ax.axhline(full, ls="--", lw=0.8, color=line.get_color())
        d = int(df["d"].iloc[0])
        ax.set_xscale("log")
        ax.set_xlabel("fraction of neurons kept")
        ax.set_ylabel(LABELS.get(metric, metric))
        ax.set_title(f"{layer} (d={d}) on {df['dataset'].iloc[0]}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_study(results: pd.DataFrame, out: str | os.PathLike) -> list[Path]:
    """The demo's three figures: accuracy, CKA and Gini against the fraction."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return [
        plot_metric(results, metric, out / f"{name}.png")
        for metric, name in (("test_acc", "accuracy"), ("cka", "cka"), ("gini", "gini"))
    ]
