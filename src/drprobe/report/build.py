"""``drprobe report``: every figure of a run folder as files, and one self-contained HTML page.

:func:`build_report` reads the run (per-probe results through DuckDB, ``summary.csv``,
``efficiency.csv``, ``config.yaml``; the tables are rebuilt from the results when absent), draws
the figures in memory, and only then writes them (each file through a temporary name and a
rename) and ``report.html`` last, so a failure leaves no half-written report.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import yaml
from tqdm.auto import tqdm

from drprobe.analysis.summary import summarize
from drprobe.analysis.variants import task_table, variant_table
from drprobe.errors import InvalidValueError
from drprobe.experiment.config import DatasetConfig
from drprobe.experiment.query import query, result_parts, run_table
from drprobe.experiment.store import JOB_KEYS
from drprobe.files import atomic_path
from drprobe.metrics.redundancy import DEFAULT_DELTAS
from drprobe.report.comparisons import COMPARE_FIGURES
from drprobe.report.curves import FRACTION_FIGURES
from drprobe.report.html import FigureEntry, Skipped, render_page
from drprobe.report.run_tables import efficiency_table, per_job
from drprobe.report.style import FigureSkipped, short_model_column
from drprobe.report.tables import dr_table, fairness_table, model_table, run_meta
from drprobe.report.variants import (
    comparison_note,
    comparison_table,
    headline_rows,
    task_comparison_table,
    variant_figures,
    variants_of,
)

FORMATS = ("png", "pdf", "svg")
DPI = 100
DR_NOTE = ("DR_δ = 1 − f*_δ, f*_δ the smallest fraction whose mean accuracy reaches δ × the "
           "full-layer accuracy; CI: bootstrap interval; k*: the critical mass in neurons.")
FAIRNESS_NOTE = ("Does the Gini coefficient of per-class accuracy rise as the fraction falls? "
                 "Spearman rho per seed, sign test and Wilcoxon test against the full layer.")
MODEL_NOTE = ("One row per model, weights, layer and dataset, headline selector; full_*: the "
              "full-layer probe.")


def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """``"png,pdf"`` or ``["png", "pdf"]`` → ``("png", "pdf")``; one-line error otherwise."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in items if f.strip()))
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise InvalidValueError(f"unknown figure format {(bad or [formats])[0]!r}; valid choices: "
                                f"{', '.join(FORMATS)} (comma-separated)")
    return out


def slug(text: str) -> str:
    """A file-name-safe form of a dataset name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "dataset"


def load_tables(run: Path, results: pd.DataFrame) -> tuple[dict, dict[str, str]]:
    """The summary and efficiency tables (read, or rebuilt from ``results``) and their sources."""
    tables, sources = {}, {}
    for name, rebuild in (("summary", partial(summarize, by=JOB_KEYS)),
                          ("efficiency", partial(per_job, efficiency_table))):
        table = run_table(run, name)
        keys = [k for k in JOB_KEYS if k in results and results[k].nunique() > 1]
        if table is not None and not table.empty and all(k in table for k in keys):
            where = f"{name}.csv" if (run / f"{name}.csv").is_file() else f"{name}/*.parquet"
            tables[name], sources[name] = table, where
        else:
            tables[name], sources[name] = rebuild(results), "rebuilt from the per-probe results"
    return tables, sources


def _render(fig, fmt: str) -> bytes:
    buf = io.BytesIO()
    metadata = {"CreationDate": None} if fmt == "pdf" else None
    fig.savefig(buf, format=fmt, dpi=DPI, metadata=metadata)
    return buf.getvalue()


def _first_dataset(config: Path) -> str | None:
    """The results name of the run config's first dataset (the tasks' reference), if readable."""
    try:
        return DatasetConfig(**yaml.safe_load(config.read_text())["datasets"][0]).display
    except (OSError, KeyError, IndexError, TypeError, ValueError, yaml.YAMLError):
        return None


def _write_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _jobs(results: pd.DataFrame, tables: dict, variants: pd.DataFrame | None = None) -> list[tuple]:
    """(name, title, caption, draw) for every figure of the run, in page order."""
    jobs = []
    datasets = list(dict.fromkeys(results["dataset"]))
    for name, title, func, caption in FRACTION_FIGURES:
        for ds in datasets:
            sub = results[results["dataset"] == ds]
            jobs.append((f"{name}-{slug(ds)}", f"{title}: {ds}", caption,
                         lambda f=func, s=sub: f(s)))
    for name, title, func, source, caption in COMPARE_FIGURES:
        jobs.append((name, title, caption, lambda f=func, t=tables[source]: f(t)))
    return jobs + variant_figures(results, variants, slug)


def build_report(
    run: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    formats: str | Sequence[str] = ("png", "pdf"),
    progress: bool = True,
    reference: str | None = None,
) -> Path:
    """Draw every figure of ``run`` into ``out`` (default ``run/report``) and write the page.

    Files: ``<figure>.<fmt>`` for each drawn figure and format, and ``report.html`` with the
    figures embedded as PNG data URIs, the DR table, the per-model table and the run metadata.
    Figures the run has no data for are listed on the page with the reason, not drawn.
    A run of several pretraining variants also gets ``variants.csv``
    (:func:`~drprobe.analysis.variants.variant_table`; differences against ``reference``)
    and, with several datasets, ``tasks.csv`` (:func:`~drprobe.analysis.variants.task_table`).

    Returns:
        The path of ``report.html``.
    """
    fmts = parse_formats(formats)
    run = Path(run)
    result_parts(run)  # a one-line error if run is not a run folder
    out = Path(out) if out is not None else run / "report"
    if out.exists() and not out.is_dir():
        raise InvalidValueError(f"output folder {str(out)!r} exists and is a file; pass a folder")
    results = query(run, "SELECT * FROM results")
    tables, sources = load_tables(run, results)

    drawn: list[tuple[FigureEntry, dict[str, bytes]]] = []
    skipped: list[Skipped] = []
    variants = (variant_table(headline_rows(results), DEFAULT_DELTAS, reference=reference)
                if variants_of(results) >= 2 else None)
    jobs = _jobs(results, tables, variants)
    for name, title, caption, draw in tqdm(jobs, desc="report", disable=not progress,
                                           unit="figure"):
        try:
            fig = draw()
        except FigureSkipped as why:
            skipped.append(Skipped(name, title, str(why)))
            continue
        try:
            files = {fmt: _render(fig, fmt) for fmt in fmts}
            png = files["png"] if "png" in files else _render(fig, "png")
        finally:
            plt.close(fig)
        entry = FigureEntry(name, title, caption, png, [f"{name}.{fmt}" for fmt in fmts])
        drawn.append((entry, files))

    config = run / "config.yaml"
    page_tables = [("Diffused redundancy", dr_table(tables["summary"]), DR_NOTE),
                   ("Models and layers", model_table(results, tables["summary"]), MODEL_NOTE)]
    fairness = run_table(run, "fairness")
    if fairness is not None and not fairness.empty:
        page_tables.append(("Fairness trend", fairness_table(fairness), FAIRNESS_NOTE))
    tasks = None
    if variants is not None:
        page_tables.append(("Variant comparison", comparison_table(variants),
                            comparison_note(variants, f"differences against {reference!r}"
                                            if reference else "no reference variant given")))
        if results["dataset"].nunique() > 1:
            tasks = task_table(headline_rows(results), DEFAULT_DELTAS,
                               reference=_first_dataset(config))
            page_tables.append(("Task comparison", task_comparison_table(tasks),
                                comparison_note(tasks, "differences against the reference "
                                                "dataset, same networks")))
    page_tables = [(title, short_model_column(table), note) for title, table, note in page_tables]
    page = render_page(
        f"drprobe report: {run.resolve().name}",
        run_meta(run.resolve().name, results, sources),
        page_tables,
        [entry for entry, _ in drawn], skipped,
        config.read_text() if config.is_file() else None,
    )
    out.mkdir(parents=True, exist_ok=True)
    for entry, files in drawn:
        for fmt, data in files.items():
            _write_atomic(out / f"{entry.name}.{fmt}", data)
    if variants is not None:
        _write_atomic(out / "variants.csv", variants.to_csv(index=False).encode())
    if tasks is not None:
        _write_atomic(out / "tasks.csv", tasks.to_csv(index=False).encode())
    page_path = out / "report.html"
    _write_atomic(page_path, page.encode("utf-8"))
    return page_path
