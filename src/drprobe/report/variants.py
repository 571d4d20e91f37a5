"""Figures that put pretraining variants side by side (``drprobe report``).

A variant is a group of networks (``NAME/seedK`` model labels; see
:mod:`drprobe.analysis.variants`). Two figures per run:

- ``variants-dr``: DR_δ per variant and task (one panel per dataset, one point per variant and
  layer) with its interval (:mod:`drprobe.metrics.compare`: seed-level t, standard error from
  the hierarchical bootstrap over pretraining seeds, probe seeds and test examples); small dots
  are the networks' own DR_δ.
- ``variants-curves-<dataset>``: accuracy against the fraction of neurons kept, one line per
  variant (mean over its networks of each network's probe-seed mean), band = the networks'
  minimum to maximum.

Both use the ``random`` selector (else the first one) and the real (non-null) rows.

Two page tables (:func:`comparison_table`, :func:`task_comparison_table`) show, at δ = 0.9,
each variant's DR and chance-corrected DR with intervals and each difference with its raw
interval and p-value beside the multiplicity-adjusted ones (Holm p, Bonferroni interval) and the
smallest difference the design could detect; :func:`comparison_note` names the correction and the
family size.
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

__all__ = ["VARIANT_DELTA", "comparison_note", "comparison_table", "headline_rows",
           "task_comparison_table", "variant_curves_figure", "variant_dr_figure",
           "variant_figures", "variants_of"]

VARIANT_DELTA = 0.9
DR_CAPTION = ("DR_δ (δ = 0.9) per variant and task; bars: 95% seed-level t interval with the "
              "standard error of a hierarchical bootstrap (pretraining seeds, then probe seeds, "
              "then test examples); dots: each network. Grey: random-init twins.")
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


def _span(low: float, high: float) -> str:
    return "—" if pd.isna(low) or pd.isna(high) else f"[{low:+.3f}, {high:+.3f}]"


def _num(value: float, fmt: str = ".3f") -> str:
    return "—" if pd.isna(value) else format(value, fmt)


def _diff_cells(r: pd.Series, stat: str, label: str) -> dict[str, str]:
    """A difference's raw interval and p beside its adjusted ones, and its power line."""
    cells = {label: _num(r.get(f"{stat}_diff", np.nan), "+.3f"),
             f"{label} CI": _span(r.get(f"{stat}_diff_low"), r.get(f"{stat}_diff_high")),
             f"{label} p": _num(r.get(f"{stat}_diff_p", np.nan), ".3g"),
             f"{label} adj. CI": _span(r.get(f"{stat}_diff_adj_low"),
                                       r.get(f"{stat}_diff_adj_high")),
             f"{label} p_holm": _num(r.get(f"{stat}_diff_p_holm", np.nan), ".3g")}
    if stat == "dr":
        cells["min_detectable"] = _num(r.get("dr_min_detectable", np.nan))
    return cells


def _at_delta(table: pd.DataFrame | None, delta: float) -> pd.DataFrame:
    if table is None or table.empty or "delta" not in table:
        return pd.DataFrame()
    return table[table["delta"].round(6) == round(delta, 6)]


def comparison_table(table: pd.DataFrame | None, delta: float = VARIANT_DELTA) -> pd.DataFrame:
    """The page's variant table from :func:`~drprobe.analysis.variants.variant_table` at
    ``delta``: networks, DR and DR_chance with intervals and, with a reference, ΔDR and
    ΔDR_chance with raw and adjusted intervals and p-values, and min_detectable (|ΔDR|)."""
    rows = _at_delta(table, delta)
    out = []
    for _, r in rows.iterrows():
        row = {"variant": r["variant"], "layer": r["layer"], "dataset": r["dataset"],
               "networks": int(r["networks"]), "DR": _num(r["dr"]),
               "DR CI": _span(r["dr_low"], r["dr_high"]), "DR_chance": _num(r["dr_chance"]),
               "DR_chance CI": _span(r["dr_chance_low"], r["dr_chance_high"])}
        if "dr_diff" in rows:
            row.update(_diff_cells(r, "dr", "ΔDR"))
            row.update(_diff_cells(r, "dr_chance", "ΔDR_chance"))
        out.append(row)
    return pd.DataFrame(out)


def task_comparison_table(tasks: pd.DataFrame | None,
                          delta: float = VARIANT_DELTA) -> pd.DataFrame:
    """The page's task table from :func:`~drprobe.analysis.variants.task_table` at ``delta``:
    DR on each dataset against the reference dataset, as :func:`comparison_table`."""
    rows = _at_delta(tasks, delta)
    out = []
    for _, r in rows.iterrows():
        row = {"variant": r["variant"], "layer": r["layer"], "dataset": r["dataset"],
               "reference": r["reference_dataset"], "DR": _num(r["dr"]),
               "DR reference": _num(r["dr_reference"]), "DR_chance": _num(r["dr_chance"])}
        row.update(_diff_cells(r, "dr", "ΔDR"))
        row.update(_diff_cells(r, "dr_chance", "ΔDR_chance"))
        out.append(row)
    return pd.DataFrame(out)


def comparison_note(table: pd.DataFrame | None, what: str,
                    delta: float = VARIANT_DELTA) -> str:
    """One line naming the interval, the correction and the family size of ``table``'s ΔDR."""
    rows = _at_delta(table, delta)
    m = {stat: int(rows[f"{stat}_diff_family"].max()) for stat in ("dr", "dr_chance")
         if f"{stat}_diff_family" in rows and rows[f"{stat}_diff_family"].notna().any()}
    base = (f"δ = {delta:g}; {what}. CI: 95% seed-level t interval (hierarchical bootstrap "
            "standard error, pretraining seeds → probe seeds → test examples); DR_chance: DR of "
            "(acc − chance)/(full − chance).")
    if "dr" not in m:
        return base + " No comparisons in this table."
    extra = f" (ΔDR_chance: m = {m['dr_chance']})" if m.get("dr_chance", m["dr"]) != m["dr"] else ""
    return (base + f" Adjusted for multiplicity over the m = {m['dr']} comparisons of ΔDR at this "
            f"δ{extra}: Holm p-values (p_holm) and Bonferroni simultaneous intervals at level "
            "1 − 0.05/m (adj. CI); min_detectable: the smallest |ΔDR| found with 80% power by a "
            "two-sided 5% test.")
