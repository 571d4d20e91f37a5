"""The report page's tables: DR per curve, the per-model table, the fairness trend and the run
metadata."""

from __future__ import annotations

import numpy as np
import pandas as pd

from drprobe.experiment.store import CURVE_KEYS, JOB_KEYS
from drprobe.report.run_tables import dr_interval, k_or_dash, summary_table
from drprobe.report.style import HEADLINE_DELTA
from drprobe.selectors import headline_selector


def dr_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Wide DR table: one row per curve; d, full_acc, then DR, CI and k* for every delta."""
    return summary_table(summary, deltas=None)


def model_table(results: pd.DataFrame, summary: pd.DataFrame | None) -> pd.DataFrame:
    """One row per job (headline selector): d, full-layer accuracy, Gini and worst class at
    full width, DR_0.9 with interval and k*, DR on CKA, probes and fit seconds.
    """
    out = []
    for job, df in results.groupby(JOB_KEYS, sort=False):
        sel = headline_selector(df["selector"])
        main = df[df["selector"] == sel]
        full = main[main["k"] == main["d"]]
        row = {**dict(zip(JOB_KEYS, job)), "selector": sel, "d": int(df["d"].iloc[0]),
               "full_acc": round(float(full["test_acc"].mean()), 4),
               "full_gini": round(float(full["gini"].mean()), 4),
               "full_worst_class": round(float(full["worst_class_acc"].mean()), 4)}
        if summary is not None and not summary.empty:
            hit = summary
            for col, value in (*zip(JOB_KEYS, job), ("selector", sel)):
                if col in hit:
                    hit = hit[hit[col] == value]
            hit = hit[hit["delta"].round(6) == HEADLINE_DELTA]
            if not hit.empty:
                r, tag = hit.iloc[0], f"{HEADLINE_DELTA:g}"
                row.update({f"DR_{tag}": round(float(r["dr"]), 3), f"CI_{tag}": dr_interval(r),
                            f"k*_{tag}": k_or_dash(r["k_star"]),
                            f"DR_cka_{tag}": round(float(r.get("dr_cka", np.nan)), 3)})
        row["probes"] = len(df)
        if "fit_seconds" in df:
            row["fit_s"] = round(float(df["fit_seconds"].sum()), 2)
        out.append(row)
    return pd.DataFrame(out)


def fairness_table(fairness: pd.DataFrame) -> pd.DataFrame:
    """The run's Gini trend test (``fairness.csv``) with its job and selector columns first."""
    first = [c for c in CURVE_KEYS if c in fairness]
    return fairness[first + [c for c in fairness.columns if c not in first]]


def _values(results: pd.DataFrame, column: str) -> str:
    if column not in results:
        return "—"
    values = sorted({v for v in results[column] if not pd.isna(v)}, key=lambda v: (str(type(v)), v))
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values) or "—"


def run_meta(run_name: str, results: pd.DataFrame, sources: dict[str, str]) -> list[tuple[str, str]]:
    """(label, value) pairs describing the run: what was probed, how, and where tables came from."""
    widths = results.groupby("layer", sort=False)["d"].first()
    meta = [("run folder", run_name), ("run id", _values(results, "run_id")),
            ("drprobe version", _values(results, "drprobe_version")),
            ("models", _values(results, "model")), ("weights", _values(results, "weights")),
            ("datasets", _values(results, "dataset")),
            ("layers (d)", ", ".join(f"{layer} ({d})" for layer, d in widths.items())),
            ("pooling", _values(results, "pooling")), ("image size", _values(results, "image_size")),
            ("selectors", _values(results, "selector")), ("fractions", _values(results, "fraction")),
            ("seeds", _values(results, "seed")), ("protocol", _values(results, "protocol")),
            ("train / val / test", " / ".join(_values(results, c)
                                              for c in ("n_train", "n_val", "n_test"))),
            ("classes", _values(results, "n_classes")), ("probes", str(len(results)))]
    if "fit_seconds" in results:
        meta.append(("probe fit seconds (total)", f"{results['fit_seconds'].sum():.2f}"))
    meta += [(f"{name} table", source) for name, source in sources.items()]
    return meta
