"""Figures that compare jobs: DR per job, models, layers (heat map) and accuracy against size.

They read the DR summary (one row per model, weights, layer, dataset, selector, delta: columns
full_acc, dr, dr_low, dr_high, k_star) or the efficiency table (one row per job, selector and
k: test_acc, probe_params, on_frontier). Each returns a Figure or raises
:class:`~drprobe.report.style.FigureSkipped`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from drprobe.report.style import (
    HEADLINE_DELTA,
    FigureSkipped,
    ordered,
    panel_grid,
    series_label,
    titled,
)
from drprobe.selectors import headline_selector


def headline(summary: pd.DataFrame, delta: float = HEADLINE_DELTA) -> pd.DataFrame:
    """Summary rows of the headline selector (``random`` if present) at ``delta``.

    Raises FigureSkipped when the summary has no DR at that delta.
    """
    if summary is None or summary.empty or "dr" not in summary:
        raise FigureSkipped("the run has no DR summary (summary.csv)")
    sel = headline_selector(summary["selector"])
    rows = summary[(summary["selector"] == sel) & (summary["delta"].round(6) == delta)]
    if rows.empty:
        raise FigureSkipped(f"the DR summary has no row at delta = {delta:g}")
    return rows.reset_index(drop=True)


def _job_labels(rows: pd.DataFrame, with_layer: bool = True) -> list[str]:
    many_ds = rows["dataset"].nunique() > 1 if "dataset" in rows else False
    labels = []
    for r in rows.itertuples(index=False):
        text = series_label(r.model, r.weights) + (f"\n{r.layer}" if with_layer else "")
        labels.append(text + (f" / {r.dataset}" if many_ds else ""))
    return labels


def _errors(rows: pd.DataFrame) -> np.ndarray | None:
    """(2, n) distances from DR to its interval ends, or None without an interval."""
    if not {"dr_low", "dr_high"} <= set(rows.columns):
        return None
    low = (rows["dr"] - rows["dr_low"]).clip(lower=0).fillna(0)
    high = (rows["dr_high"] - rows["dr"]).clip(lower=0).fillna(0)
    return np.vstack([low.to_numpy(), high.to_numpy()])


def dr_figure(summary: pd.DataFrame) -> Figure:
    """DR_delta of every job for every delta, with bootstrap intervals (headline selector)."""
    if summary is None or summary.empty or "dr" not in summary:
        raise FigureSkipped("the run has no DR summary (summary.csv)")
    sel = headline_selector(summary["selector"])
    df = summary[summary["selector"] == sel]
    deltas = sorted(df["delta"].round(6).unique())
    jobs = df[df["delta"].round(6) == deltas[0]].reset_index(drop=True)
    fig, (ax,) = panel_grid(1, width=max(6.0, 1.3 * len(jobs) * max(1, len(deltas)) / 2),
                            height=4.0, max_cols=1)
    x = np.arange(len(jobs))
    width = 0.8 / len(deltas)
    key = [c for c in ("model", "weights", "layer", "dataset") if c in df]
    for i, delta in enumerate(deltas):
        rows = df[df["delta"].round(6) == delta].set_index(key)
        rows = rows.reindex(pd.MultiIndex.from_frame(jobs[key])).reset_index()
        ax.bar(x + (i - (len(deltas) - 1) / 2) * width, rows["dr"], width,
               yerr=_errors(rows), capsize=2, label=f"δ = {delta:g}")
    ax.set_xticks(x, _job_labels(jobs), fontsize=7)
    ax.set_ylabel("DR_δ = 1 − f*_δ")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, ncols=min(4, len(deltas)))
    ax.set_title(f"Diffused redundancy ({sel} subsets; error bars: bootstrap interval)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def models_figure(summary: pd.DataFrame) -> Figure:
    """Full-layer accuracy and DR_0.9 per (model, weights), grouped by layer."""
    rows = headline(summary)
    models = ordered(zip(rows["model"], rows["weights"]))
    if len(models) < 2:
        raise FigureSkipped(f"the run has one model/weights pair ({series_label(*models[0])}); "
                            "nothing to compare")
    groups = ordered(zip(rows["layer"], rows["dataset"]))
    many_ds = len({ds for _, ds in groups}) > 1
    # wide comparisons stack the two panels instead of growing without bound
    panel_w = min(14.0, max(5.0, 0.3 * len(groups) * len(models) + 2))
    fig, axes = panel_grid(2, width=panel_w, max_cols=1 if panel_w > 8 else 2)
    x = np.arange(len(groups))
    width = 0.8 / len(models)
    for i, (model, weights) in enumerate(models):
        mine = rows[(rows["model"] == model) & (rows["weights"] == weights)]
        mine = mine.set_index(["layer", "dataset"]).reindex(groups).reset_index()
        pos = x + (i - (len(models) - 1) / 2) * width
        label = series_label(model, weights)
        axes[0].bar(pos, mine["full_acc"], width, label=label)
        axes[1].bar(pos, mine["dr"], width, yerr=_errors(mine), capsize=2, label=label)
    ticks = [f"{layer}\n{ds}" if many_ds else layer for layer, ds in groups]
    for ax, ylabel in zip(axes, ("full-layer test accuracy", f"DR_{HEADLINE_DELTA:g}")):
        ax.set_xticks(x, ticks, fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # off the bars
    axes[0].set_title("Full-layer probe", fontsize=10)
    axes[1].set_title(f"Diffused redundancy at δ = {HEADLINE_DELTA:g}", fontsize=10)
    fig.tight_layout()
    return fig


def layers_figure(summary: pd.DataFrame) -> Figure:
    """Heat maps (model x layer) of DR_0.9 and of full-layer accuracy."""
    rows = headline(summary)
    rows = rows.assign(row=[series_label(m, w) + (f" / {d}" if rows["dataset"].nunique() > 1
                                                  else "")
                            for m, w, d in zip(rows["model"], rows["weights"], rows["dataset"])])
    if rows.groupby("row")["layer"].nunique().max() < 2:
        raise FigureSkipped(f"the run has one layer per model ({rows['layer'].iloc[0]}); "
                            "no layer comparison")
    row_names, layers = ordered(rows["row"]), ordered(rows["layer"])
    fig, axes = panel_grid(2, width=max(4.5, 1.1 * len(layers) + 2.5),
                           height=max(2.5, 0.6 * len(row_names) + 1.5), max_cols=2)
    for ax, column, title in zip(axes, ("dr", "full_acc"),
                                 (f"DR_{HEADLINE_DELTA:g}", "full-layer test accuracy")):
        grid = rows.pivot_table(index="row", columns="layer", values=column, aggfunc="mean")
        grid = grid.reindex(index=row_names, columns=layers)
        image = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=1,
                          aspect="auto")
        for (i, j), value in np.ndenumerate(grid.to_numpy(dtype=float)):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if value < 0.6 else "black")
        ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(row_names)), row_names, fontsize=8)
        ax.set_title(title, fontsize=10)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def pareto_figure(efficiency: pd.DataFrame) -> Figure:
    """Accuracy against probe parameters (log axis), one panel per layer; frontier ringed."""
    if efficiency is None or efficiency.empty:
        raise FigureSkipped("the run has no efficiency table")
    keys = [k for k in ("dataset", "layer") if k in efficiency]
    panels = list(efficiency.groupby(keys, sort=False))
    fig, axes = panel_grid(len(panels))
    for ax, (key, df) in zip(axes, panels):
        key = key if isinstance(key, tuple) else (key,)
        group = [c for c in ("model", "weights", "selector") if c in df]
        for name, g in df.groupby(group, sort=False):
            name = name if isinstance(name, tuple) else (name,)
            parts = dict(zip(group, name))
            label = series_label(parts.get("model", "?"), parts.get("weights", "?"))
            label += f" {parts['selector']}" if df["selector"].nunique() > 1 else ""
            g = g.sort_values("probe_params")
            line, = ax.plot(g["probe_params"], g["test_acc"], marker="o", ms=3, label=label)
            front = g[g["on_frontier"].astype(bool)] if "on_frontier" in g else g.iloc[:0]
            ax.scatter(front["probe_params"], front["test_acc"], s=55, facecolors="none",
                       edgecolors=line.get_color(), lw=1.2)
        ax.set_xscale("log")
        ax.set_xlabel("probe parameters (k+1)·C")
        ax.set_ylabel("mean test accuracy")
        ax.set_title(" / ".join(str(k) for k in key[::-1]), fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, title="ringed: Pareto frontier", title_fontsize=7)
    titled(fig, "Accuracy against probe size")
    return fig


#: Comparison figures: (name, title, function, source table, caption).
COMPARE_FIGURES = (
    ("dr", "Diffused redundancy per job", dr_figure, "summary",
     ("DR_δ = 1 − f*_δ for each δ of the summary, headline selector; error bars: bootstrap "
      "interval over test examples and seeds.")),
    ("models", "Models compared", models_figure, "summary",
     "Full-layer accuracy and DR_0.9 of each model and weights, grouped by layer."),
    ("layers", "Layers compared", layers_figure, "summary",
     "DR_0.9 and full-layer accuracy per model (rows) and layer (columns)."),
    ("pareto", "Accuracy against probe size", pareto_figure, "efficiency",
     ("Mean test accuracy against the number of probe parameters; ringed points are on the "
      "Pareto frontier (no smaller probe is as accurate).")),
)
