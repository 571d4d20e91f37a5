"""Figures that put pretraining variants side by side (``drprobe report``).

A variant is a group of networks (``NAME/seedK`` model labels; see
:mod:`drprobe.analysis.variants`). Two figures per run:

- ``variants-dr``: DR_δ per variant and task (one panel per dataset, one point per variant and
  layer) with the hierarchical bootstrap interval over pretraining seeds, probe seeds and test
  examples; small dots are the networks' own DR_δ.
- ``variants-curves-<dataset>``: accuracy against the fraction of neurons kept, one line per
  variant (mean over its networks of each network's probe-seed mean), band = the networks'
  minimum to maximum.

Both use the ``random`` selector (else the first one) and the real (non-null) rows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from drprobe.analysis.variants import (
    curves_table,
    variant_column,
    variant_data,
    variant_table,
)
from drprobe.metrics.compare import network_stats
from drprobe.report.style import FigureSkipped, ordered, panel_grid
from drprobe.selectors import headline_selector

__all__ = ["VARIANT_DELTA", "headline_rows", "variant_curves_figure", "variant_dr_figure", "variant_figures",
           "variants_of"]

VARIANT_DELTA = 0.9
DR_CAPTION = ("DR_δ (δ = 0.9) per variant and task; bars: 95% hierarchical bootstrap interval "
              "(pretraining seeds, then probe seeds, then test examples); dots: each network. "
              "Grey: random-init twins.")
CURVE_CAPTION = ("Test accuracy against the fraction of neurons kept (random subsets): mean over "
                 "a variant's networks; band: the networks' minimum to maximum.")


def main_selector(results: pd.DataFrame) -> str:
    """The run's headline selector (:func:`drprobe.selectors.headline_selector`)."""
    return headline_selector(results["selector"])


def headline_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The rows of the run's headline selector."""
    return results[results["selector"] == main_selector(results)]


def _selected(results: pd.DataFrame) -> pd.DataFrame:
    if "test_correct" not in results:
        raise FigureSkipped("the run's results have no test_correct column")
    res = headline_rows(results)
    if "baseline" in res:
        res = res[res["baseline"] == "none"]
    return res


def _labels(rows: pd.DataFrame) -> list[str]:
    many_layers = rows.groupby("variant")["layer"].nunique().max() > 1
    return [f"{v}\n{lay}" if many_layers else str(v) for v, lay in zip(rows["variant"],
                                                                       rows["layer"])]


def variant_dr_figure(results: pd.DataFrame, table: pd.DataFrame | None = None,
                      delta: float = VARIANT_DELTA) -> Figure:
    """DR_δ with intervals per variant (x) and dataset (panel); see the module docstring."""
    res = _selected(results)
    table = table if table is not None else variant_table(res, [delta])
    if "selector" not in table:
        raise FigureSkipped("the variant table is empty")
    table = table[(table["selector"] == main_selector(res)) & (table["delta"].round(6) == delta)]
    if table.empty:
        raise FigureSkipped(f"no variant has DR at delta = {delta:g}")
    if table["variant"].nunique() < 2:
        raise FigureSkipped("the run has a single variant; nothing to put side by side")
    datasets = ordered(table["dataset"])
    width = max(5.0, 0.42 * table.groupby("dataset").size().max())
    fig, axes = panel_grid(len(datasets), width=width, height=3.8, max_cols=1)
    tagged = variant_column(res)
    for ax, ds in zip(axes, datasets):
        rows = table[table["dataset"] == ds].reset_index(drop=True)
        x = np.arange(len(rows))
        colors = ["0.55" if v.endswith("[random]") else "C0" for v in rows["variant"]]
        err = np.vstack([(rows["dr"] - rows["dr_low"]).clip(lower=0),
                         (rows["dr_high"] - rows["dr"]).clip(lower=0)])
        for i, color in enumerate(colors):
            ax.errorbar(x[i], rows["dr"][i], yerr=err[:, i:i + 1], fmt="none", ecolor=color,
                        capsize=3, lw=1.2)
        ax.scatter(x, rows["dr"], c=colors, s=28, zorder=3)
        for i, r in rows.iterrows():  # each network's own DR
            sub = tagged[(tagged["variant"] == r["variant"]) & (tagged["layer"] == r["layer"])
                         & (tagged["dataset"] == ds)]
            nets = network_stats(variant_data(sub), delta)
            if len(nets) > 1:
                ax.scatter(np.full(len(nets), i + 0.18), nets, s=7, c="k", alpha=0.5, zorder=2)
        ax.set_xticks(x, _labels(rows), rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(f"DR$_{{{delta:g}}}$")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(ds, fontsize=10)
    fig.tight_layout()
    return fig


def variant_curves_figure(results: pd.DataFrame, dataset: str) -> Figure:
    """Accuracy against fraction per variant on one dataset (one panel per layer name)."""
    res = _selected(results)
    res = res[res["dataset"] == dataset]
    curves = curves_table(res)
    if curves["variant"].nunique() < 2:
        raise FigureSkipped("the run has a single variant on this dataset")
    layers = ordered(curves["layer"])
    fig, axes = panel_grid(len(layers), width=6.0, height=4.2, max_cols=2)
    for ax, layer in zip(axes, layers):
        sub = curves[curves["layer"] == layer]
        for i, (name, c) in enumerate(sub.groupby("variant", sort=False)):
            c = c.sort_values("fraction")
            style = {"color": "0.5", "ls": "--"} if name.endswith("[random]") else {
                "color": f"C{i % 10}"}
            ax.plot(c["fraction"], c["acc"], marker="o", ms=2.5, lw=1.2, label=name, **style)
            ax.fill_between(c["fraction"], c["acc_min"], c["acc_max"], alpha=0.15, lw=0,
                            color=style["color"])
        ax.set_xscale("log")
        ax.set_xlabel("fraction of neurons kept")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{dataset}: {layer}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2, loc="lower right")
    fig.tight_layout()
    return fig


def variants_of(results: pd.DataFrame) -> int:
    """How many variants the run has (0 without the ``test_correct`` column)."""
    if "test_correct" not in results:
        return 0
    return int(variant_column(results)["variant"].nunique())


def variant_figures(results: pd.DataFrame, table: pd.DataFrame | None,
                    slug: Callable[[str], str]) -> list[tuple]:
    """(name, title, caption, draw) of the variant figures, for :mod:`drprobe.report.build`;
    none when the run has fewer than two variants. ``table``: :func:`variant_table` of the run
    (computed here when None)."""
    if variants_of(results) < 2:
        return []
    jobs = [("variants-dr", "DR per pretraining variant and task", DR_CAPTION,
             lambda: variant_dr_figure(results, table))]
    for ds in ordered(results["dataset"]):
        jobs.append((f"variants-curves-{slug(ds)}", f"Accuracy per variant: {ds}", CURVE_CAPTION,
                     lambda d=ds: variant_curves_figure(results, d)))
    return jobs
