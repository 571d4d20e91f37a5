"""The report's tables: DR per curve, the per-model table and the run metadata.

Also rebuilds the summary from the per-probe results when a run folder lacks ``summary.csv``
(the rebuilt summary has no bootstrap interval: that needs the probes' test predictions, which
the results do not keep); a missing ``efficiency.csv`` is rebuilt with
:func:`drprobe.experiment.study.per_job`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from drprobe.experiment.study import JOB_KEYS, dr_interval, k_or_dash, summary_table
from drprobe.metrics.redundancy import dr_summary
from drprobe.report.figures import main_selector

JOB = JOB_KEYS
CURVE = JOB + ["selector"]


def summary_from_results(results: pd.DataFrame) -> pd.DataFrame:
    """DR summary per (job, selector, delta) from the per-probe rows (no bootstrap interval).

    The full-layer accuracy of a job is the mean test accuracy of its k = d probes of the
    headline selector, as in :func:`drprobe.experiment.analysis.summarize`.
    """
    rows = []
    for job, df in results.groupby(JOB, sort=False):
        main = df[df["selector"] == main_selector(df)]
        full_acc = float(main.loc[main["k"] == main["d"], "test_acc"].mean())
        for sel, g in df.groupby("selector", sort=False):
            curve = g.pivot_table(index="seed", columns="fraction", values="test_acc")
            fr = curve.columns.to_numpy(dtype=float)
            ks = g.groupby("fraction")["k"].first().reindex(fr).to_numpy()
            cka = g.groupby("fraction")["cka"].mean().reindex(fr).to_numpy()
            acc_rows = dr_summary(fr, ks, curve.to_numpy(), full_acc)
            cka_rows = dr_summary(fr, ks, cka[None, :], 1.0)
            for acc, by_cka in zip(acc_rows, cka_rows):
                rows.append({**dict(zip(JOB, job)), "selector": sel, "d": int(g["d"].iloc[0]),
                             "full_acc": full_acc, **acc, "dr_low": np.nan, "dr_high": np.nan,
                             "dr_cka": by_cka["dr"], "k_star_cka": by_cka["k_star"]})
    return pd.DataFrame(rows)


def dr_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Wide DR table: one row per curve; d, full_acc, then DR, CI and k* for every delta."""
    return summary_table(summary, deltas=None)


def model_table(results: pd.DataFrame, summary: pd.DataFrame | None) -> pd.DataFrame:
    """One row per job (headline selector): d, full-layer accuracy, Gini and worst class at
    full width, DR_0.9 with interval and k*, DR on CKA, probes and fit seconds.
    """
    out = []
    for job, df in results.groupby(JOB, sort=False):
        sel = main_selector(df)
        main = df[df["selector"] == sel]
        full = main[main["k"] == main["d"]]
        row = {**dict(zip(JOB, job)), "selector": sel, "d": int(df["d"].iloc[0]),
               "full_acc": round(float(full["test_acc"].mean()), 4),
               "full_gini": round(float(full["gini"].mean()), 4),
               "full_worst_class": round(float(full["worst_class_acc"].mean()), 4)}
        if summary is not None and not summary.empty:
            hit = summary
            for col, value in (*zip(JOB, job), ("selector", sel)):
                if col in hit:
                    hit = hit[hit[col] == value]
            hit = hit[hit["delta"].round(6) == 0.9]
            if not hit.empty:
                r = hit.iloc[0]
                row.update({"DR_0.9": round(float(r["dr"]), 3), "CI_0.9": dr_interval(r),
                            "k*_0.9": k_or_dash(r["k_star"]),
                            "DR_cka_0.9": round(float(r.get("dr_cka", np.nan)), 3)})
        row["probes"] = len(df)
        if "fit_seconds" in df:
            row["fit_s"] = round(float(df["fit_seconds"].sum()), 2)
        out.append(row)
    return pd.DataFrame(out)


def fairness_table(fairness: pd.DataFrame) -> pd.DataFrame:
    """The run's Gini trend test (``fairness.csv``) with its job and selector columns first."""
    first = [c for c in CURVE if c in fairness]
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
