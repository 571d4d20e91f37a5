"""What the report's figures share: the skip signal, labels, panel grids and the seed band."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from drprobe.sources.registry import short_model_name

__all__ = ["HEADLINE_DELTA", "FigureSkipped", "finish_fraction_axis", "full_layer_acc",
           "layer_title", "ordered", "panel_grid", "seed_band", "series_label",
           "short_model_column"]


#: The δ of the report's headline DR (the paper's table uses 0.9).
HEADLINE_DELTA = 0.9


class FigureSkipped(Exception):
    """The run lacks the data a figure needs; ``str(err)`` says why, on one line."""


def series_label(model: str, weights: str) -> str:
    """Short legend label: ``mobilenet_v2 [pretrained]`` (:func:`short_model_name`, so a local
    ``hf:/a/b/all-MiniLM-L6-v2`` shows as ``all-MiniLM-L6-v2``)."""
    return f"{short_model_name(model)} [{weights}]"


def short_model_column(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of a page table whose ``model`` column shows a spec naming a path or hub id
    (``hf:/a/b/all-MiniLM-L6-v2``) by :func:`short_model_name`, unless two of its models would
    then share a name. Other specs (``builtin:mobilenet_v2``) stay as the results store them,
    and so do the stored results and CSV tables."""
    if "model" not in table or table.empty:
        return table
    models = list(dict.fromkeys(table["model"]))
    short = {m: short_model_name(m) if isinstance(m, str) and "/" in m else m for m in models}
    if len(set(short.values())) < len(models):
        return table
    return table.assign(model=table["model"].map(short))


def ordered(values: pd.Series) -> list:
    """Distinct values in order of first appearance."""
    return list(dict.fromkeys(values))


def panel_grid(n: int, width: float = 4.6, height: float = 3.5, max_cols: int = 3):
    """A figure with ``n`` panels on a grid; returns (figure, list of the n axes)."""
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def titled(fig, title: str) -> None:
    """Give ``fig`` a title above its panels and lay the panels out below it."""
    inch = 1 / fig.get_figheight()  # one inch as a fraction of the figure's height
    fig.suptitle(title, y=1 - 0.08 * inch, va="top")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 * inch))


def seed_band(ax, probes: pd.DataFrame, metric: str, **style) -> tuple:
    """Plot the seed mean of ``metric`` against fraction with a min-max band.

    Args:
        probes: rows of one curve (one job and selector), any number of seeds.
    Returns:
        (line, stats) with stats indexed by fraction: columns mean, min, max.
    """
    stats = probes.groupby("fraction")[metric].agg(["mean", "min", "max"]).sort_index()
    line, = ax.plot(stats.index, stats["mean"], marker="o", ms=3, **style)
    ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.18, color=line.get_color(),
                    lw=0)
    return line, stats


def full_layer_acc(probes: pd.DataFrame) -> float:
    """Mean test accuracy of the full-layer (k = d) probes of one curve (NaN if none)."""
    full = probes.loc[probes["k"] == probes["d"], "test_acc"]
    return float(full.mean()) if len(full) else float("nan")


def finish_fraction_axis(ax, title: str, ylabel: str) -> None:
    ax.set_xscale("log")
    ax.set_xlabel("fraction of neurons kept")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")


def layer_title(df: pd.DataFrame, layer: str) -> str:
    widths = sorted({int(d) for d in df.loc[df["layer"] == layer, "d"]})
    return f"{layer} (d={'/'.join(str(w) for w in widths)})"
