"""Figures against the fraction of neurons kept (log axis), one figure per dataset.

Every function takes the per-probe results of one dataset (results-contract columns) and returns
a matplotlib :class:`~matplotlib.figure.Figure`, or raises :class:`FigureSkipped` with a one-line
reason when the run lacks what the figure compares (one selector, say). Lines are means over
seeds; bands span the seeds' minimum to maximum; dashed lines mark the full-layer probe (k = d).
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

JOB_KEYS = ("model", "weights", "layer")


class FigureSkipped(Exception):
    """The run lacks the data a figure needs; ``str(err)`` says why, on one line."""


def series_label(model: str, weights: str) -> str:
    """Short legend label: ``mobilenet_v2 [pretrained]``."""
    return f"{model.split(':', 1)[-1]} [{weights}]"


def main_selector(results: pd.DataFrame) -> str:
    """The selector of the headline curves: ``random`` when present, else the first one."""
    selectors = list(dict.fromkeys(results["selector"]))
    return "random" if "random" in selectors else selectors[0]


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


def _finish(ax, title: str, ylabel: str) -> None:
    ax.set_xscale("log")
    ax.set_xlabel("fraction of neurons kept")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")


def _layer_title(df: pd.DataFrame, layer: str) -> str:
    widths = sorted({int(d) for d in df.loc[df["layer"] == layer, "d"]})
    return f"{layer} (d={'/'.join(str(w) for w in widths)})"


def accuracy_figure(results: pd.DataFrame) -> Figure:
    """Test accuracy against fraction, one panel per layer, one line per (model, weights)."""
    sel = main_selector(results)
    df = results[results["selector"] == sel]
    layers = ordered(df["layer"])
    fig, axes = panel_grid(len(layers))
    for ax, layer in zip(axes, layers):
        for (model, weights), g in df[df["layer"] == layer].groupby(["model", "weights"],
                                                                    sort=False):
            line, _ = seed_band(ax, g, "test_acc", label=series_label(model, weights))
            full = full_layer_acc(g)
            if np.isfinite(full):
                ax.axhline(full, ls="--", lw=0.8, color=line.get_color())
        _finish(ax, _layer_title(df, layer), f"test accuracy ({sel} subsets)")
        ax.legend(fontsize=7, title="dashed: full layer", title_fontsize=7)
    fig.suptitle(f"Accuracy against the fraction of neurons kept: {results['dataset'].iloc[0]}")
    fig.tight_layout()
    return fig


def selectors_figure(results: pd.DataFrame) -> Figure:
    """Selectors compared: one panel per (model, weights, layer), one line per selector."""
    selectors = ordered(results["selector"])
    if len(selectors) < 2:
        raise FigureSkipped(f"the run has one selector ({selectors[0]}); nothing to compare")
    jobs = list(results.groupby(list(JOB_KEYS), sort=False))
    fig, axes = panel_grid(len(jobs))
    for ax, ((model, weights, layer), g) in zip(axes, jobs):
        for sel, s in g.groupby("selector", sort=False):
            seed_band(ax, s, "test_acc", label=sel)
        full = full_layer_acc(g[g["selector"] == main_selector(g)])
        if np.isfinite(full):
            ax.axhline(full, ls="--", lw=0.8, color="0.3", label="full layer")
        _finish(ax, f"{series_label(model, weights)} {_layer_title(g, layer)}", "test accuracy")
        ax.legend(fontsize=7)
    fig.suptitle(f"Selectors compared: {results['dataset'].iloc[0]}")
    fig.tight_layout()
    return fig


def cka_figure(results: pd.DataFrame) -> Figure:
    """Linear CKA between subset and layer against fraction, one panel per layer.

    Colours are (model, weights); line styles are selectors when there are several.
    """
    layers = ordered(results["layer"])
    selectors = ordered(results["selector"])
    styles = dict(zip(selectors, ["-", "--", ":", "-."] * len(selectors)))
    colours = {key: f"C{i}" for i, key in
               enumerate(dict.fromkeys(zip(results["model"], results["weights"])))}
    fig, axes = panel_grid(len(layers))
    for ax, layer in zip(axes, layers):
        sub = results[results["layer"] == layer]
        for (model, weights, sel), g in sub.groupby(["model", "weights", "selector"], sort=False):
            label = series_label(model, weights) + (f" {sel}" if len(selectors) > 1 else "")
            seed_band(ax, g, "cka", label=label, color=colours[(model, weights)],
                      ls=styles[sel])
        _finish(ax, _layer_title(results, layer), "linear CKA (subset vs layer)")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
    fig.suptitle(f"CKA against the fraction of neurons kept: {results['dataset'].iloc[0]}")
    fig.tight_layout()
    return fig


def accuracy_gini_figure(results: pd.DataFrame) -> Figure:
    """Accuracy (left axis) and Gini of per-class accuracy (right axis) on twin axes.

    One panel per (model, weights, layer), the headline selector only.
    """
    sel = main_selector(results)
    df = results[results["selector"] == sel]
    jobs = list(df.groupby(list(JOB_KEYS), sort=False))
    fig, axes = panel_grid(len(jobs), width=5.0)
    for ax, ((model, weights, layer), g) in zip(axes, jobs):
        acc_line, _ = seed_band(ax, g, "test_acc", color="C0", label="test accuracy")
        twin = ax.twinx()
        gini_line, _ = seed_band(twin, g, "gini", color="C3", label="Gini")
        _finish(ax, f"{series_label(model, weights)} {_layer_title(g, layer)}", "test accuracy")
        ax.yaxis.label.set_color("C0")
        twin.set_ylabel("Gini of per-class accuracy", color="C3")
        ax.legend([acc_line, gini_line], ["test accuracy", "Gini"], fontsize=7, loc="center right")
    fig.suptitle(f"Accuracy and fairness ({sel} subsets): {results['dataset'].iloc[0]}")
    fig.tight_layout()
    return fig


#: Fraction-axis figures: (name, title, function, caption).
FRACTION_FIGURES = (
    ("accuracy", "Accuracy against fraction", accuracy_figure,
     ("Mean test accuracy over seeds (band: min to max over seeds) of probes on random subsets; "
      "dashed: the full-layer probe.")),
    ("selectors", "Selectors compared", selectors_figure,
     "Test accuracy of each selector (random subsets, PCA directions, projections, ranked)."),
    ("cka", "CKA against fraction", cka_figure,
     "Linear CKA between the kept neurons and the whole layer, on test features."),
    ("accuracy-gini", "Accuracy and Gini", accuracy_gini_figure,
     ("Mean accuracy (left) and the Gini coefficient of per-class accuracy (right): "
      "0 means every class is equally well recognised.")),
)
