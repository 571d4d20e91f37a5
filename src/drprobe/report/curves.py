"""Figures against the fraction of neurons kept (log axis).

The report's figures (:data:`FRACTION_FIGURES`) take the per-probe results of one dataset
(results-contract columns) and return a matplotlib :class:`~matplotlib.figure.Figure`, or raise
:class:`~drprobe.report.style.FigureSkipped` with a one-line reason when the run lacks what the
figure compares (one selector, say). :func:`plot_study` writes the three quick-look PNGs beside
a run. Lines are means over seeds; bands span the seeds' minimum to maximum; dashed lines mark
the full-layer probe (k = d).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from drprobe.report.style import (
    FigureSkipped,
    finish_fraction_axis,
    full_layer_acc,
    layer_title,
    ordered,
    panel_grid,
    seed_band,
    series_label,
    titled,
)
from drprobe.selectors import headline_selector

#: One panel per (model, weights, layer) in the per-job figures.
PANEL_KEYS = ["model", "weights", "layer"]


def accuracy_figure(results: pd.DataFrame) -> Figure:
    """Test accuracy against fraction, one panel per layer, one line per (model, weights)."""
    sel = headline_selector(results["selector"])
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
        finish_fraction_axis(ax, layer_title(df, layer), f"test accuracy ({sel} subsets)")
        ax.legend(fontsize=7, title="dashed: full layer", title_fontsize=7)
    titled(fig, f"Accuracy against the fraction of neurons kept: {results['dataset'].iloc[0]}")
    return fig


def selectors_figure(results: pd.DataFrame) -> Figure:
    """Selectors compared: one panel per (model, weights, layer), one line per selector."""
    selectors = ordered(results["selector"])
    if len(selectors) < 2:
        raise FigureSkipped(f"the run has one selector ({selectors[0]}); nothing to compare")
    jobs = list(results.groupby(PANEL_KEYS, sort=False))
    fig, axes = panel_grid(len(jobs))
    for ax, ((model, weights, layer), g) in zip(axes, jobs):
        for sel, s in g.groupby("selector", sort=False):
            seed_band(ax, s, "test_acc", label=sel)
        full = full_layer_acc(g[g["selector"] == headline_selector(g["selector"])])
        if np.isfinite(full):
            ax.axhline(full, ls="--", lw=0.8, color="0.3", label="full layer")
        finish_fraction_axis(ax, f"{series_label(model, weights)} {layer_title(g, layer)}", "test accuracy")
        ax.legend(fontsize=7)
    titled(fig, f"Selectors compared: {results['dataset'].iloc[0]}")
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
        finish_fraction_axis(ax, layer_title(results, layer), "linear CKA (subset vs layer)")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
    titled(fig, f"CKA against the fraction of neurons kept: {results['dataset'].iloc[0]}")
    return fig


def accuracy_gini_figure(results: pd.DataFrame) -> Figure:
    """Accuracy (left axis) and Gini of per-class accuracy (right axis) on twin axes.

    One panel per (model, weights, layer), the headline selector only.
    """
    sel = headline_selector(results["selector"])
    df = results[results["selector"] == sel]
    jobs = list(df.groupby(PANEL_KEYS, sort=False))
    fig, axes = panel_grid(len(jobs), width=5.0)
    for ax, ((model, weights, layer), g) in zip(axes, jobs):
        acc_line, _ = seed_band(ax, g, "test_acc", color="C0", label="test accuracy")
        twin = ax.twinx()
        gini_line, _ = seed_band(twin, g, "gini", color="C3", label="Gini")
        finish_fraction_axis(ax, f"{series_label(model, weights)} {layer_title(g, layer)}", "test accuracy")
        ax.yaxis.label.set_color("C0")
        twin.set_ylabel("Gini of per-class accuracy", color="C3")
        ax.legend([acc_line, gini_line], ["test accuracy", "Gini"], fontsize=7, loc="center right")
    titled(fig, f"Accuracy and fairness ({sel} subsets): {results['dataset'].iloc[0]}")
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


#: Axis labels of the quick-look figures, by results column.
LABELS = {
    "test_acc": "test accuracy",
    "cka": "linear CKA (subset vs layer)",
    "gini": "Gini of per-class accuracy",
}


def plot_metric(results: pd.DataFrame, metric: str, path: str | os.PathLike) -> Path:
    """Plot ``metric`` against ``fraction`` (log axis) per layer; save a PNG (or PDF) to ``path``.

    One line per (model, weights, selector); for accuracy a dashed line marks the full layer.
    """
    layers = ordered(results["layer"])
    fig, axes = panel_grid(len(layers), width=5.2, height=4.0, max_cols=len(layers))
    multi = results["selector"].nunique() > 1
    for ax, layer in zip(axes, layers):
        df = results[results["layer"] == layer]
        for (model, weights, sel), g in df.groupby(["model", "weights", "selector"], sort=False):
            label = series_label(model, weights) + (f" {sel}" if multi else "")
            line, _ = seed_band(ax, g, metric, label=label)
            if metric == "test_acc":
                ax.axhline(full_layer_acc(g), ls="--", lw=0.8, color=line.get_color())
        finish_fraction_axis(ax, f"{layer_title(df, layer)} on {df['dataset'].iloc[0]}",
                             LABELS.get(metric, metric))
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_study(results: pd.DataFrame, out: str | os.PathLike) -> list[Path]:
    """The run's three quick-look figures: accuracy, CKA and Gini against the fraction."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return [
        plot_metric(results, metric, out / f"{name}.png")
        for metric, name in (("test_acc", "accuracy"), ("cka", "cka"), ("gini", "gini"))
    ]
