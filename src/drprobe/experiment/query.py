"""Query a run folder with SQL (DuckDB): the per-probe results and the tables derived from them.

A run folder ``RUN/`` holds ``results/*.parquet`` (one part per job, one row per probe), maybe
``timings/*.parquet`` (fit and selection seconds per probe, kept apart so that results parts are
identical across reruns) and the CSV tables ``summary.csv``, ``efficiency.csv`` and
``fairness.csv``. :func:`query` opens them as the DuckDB views

- ``results``: every results part, joined with ``timings`` on the probe keys when timings exist;
- ``timings``: the timings parts, or the timing columns of the results parts of older runs;
- ``summary``, ``efficiency``, ``fairness``: the CSV tables that exist (or their per-job
  parquet parts, ``RUN/summary/*.parquet``, when the CSV is missing),

and runs one SQL statement (default: :data:`DEFAULT_SQL`-like, a compact table per model,
weights, layer, dataset and selector).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from drprobe.errors import InvalidValueError, MissingDataError
from drprobe.experiment.store import CURVE_KEYS, PROBE_KEYS, TIMING_COLUMNS
from drprobe.files import atomic_path

CSV_TABLES = ("summary", "efficiency", "fairness")


def result_parts(run: str | os.PathLike) -> list[Path]:
    """The results parts of ``run`` (sorted), or a one-line error if it is not a run folder."""
    run = Path(run)
    parts = sorted((run / "results").glob("*.parquet"))
    if not parts:
        raise MissingDataError(
            f"{str(run)!r} is not a run folder: no results parts {run / 'results'!s}/*.parquet"
            " (make one with `drprobe demo --out DIR`)"
        )
    return parts


def _sql_list(paths: list[Path]) -> str:
    """A DuckDB list literal of file names, quotes escaped."""
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def _columns(con, relation: str) -> list[str]:
    return [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()]


def run_table(run: str | os.PathLike, name: str) -> pd.DataFrame | None:
    """The run's table ``name`` (``summary``, ``efficiency``, ``fairness``), or None.

    Read from ``RUN/<name>.csv``; when that is absent or empty, the per-job parquet parts
    ``RUN/<name>/*.parquet`` stand in (a run stopped before it wrote its CSV tables).
    """
    path = Path(run) / f"{name}.csv"
    if path.is_file():
        try:
            table = pd.read_csv(path)
        except pd.errors.EmptyDataError:
            table = None
        if table is not None and len(table.columns):
            return table
    parts = sorted((Path(run) / name).glob("*.parquet"))
    if parts:
        return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    return None


def connect(run: str | os.PathLike):
    """An in-memory DuckDB connection with the run's views (see the module docstring)."""
    import duckdb

    run = Path(run)
    parts = result_parts(run)
    con = duckdb.connect(":memory:")
    con.execute(f"CREATE VIEW parts AS SELECT * FROM read_parquet({_sql_list(parts)}, "
                "union_by_name = true)")
    part_cols = _columns(con, "parts")
    timing_parts = sorted((run / "timings").glob("*.parquet"))
    if timing_parts:
        con.execute(f"CREATE VIEW timings AS SELECT * FROM read_parquet("
                    f"{_sql_list(timing_parts)}, union_by_name = true)")
        timing_cols = _columns(con, "timings")
        keys = [k for k in PROBE_KEYS if k in part_cols and k in timing_cols]
        if not keys:
            raise MissingDataError(f"timings parts in {str(run / 'timings')!r} have none of the "
                                   f"probe key columns {', '.join(PROBE_KEYS)}")
        extra = [c for c in timing_cols if c not in keys]
        drop = [c for c in extra if c in part_cols]
        keep = "parts.*" + (f" EXCLUDE ({', '.join(drop)})" if drop else "")
        on = " AND ".join(f"parts.{k} = timings.{k}" for k in keys)
        picked = "".join(f", timings.{c}" for c in extra)
        con.execute(f"CREATE VIEW results AS SELECT {keep}{picked} FROM parts "
                    f"LEFT JOIN timings ON {on}")
    else:
        con.execute("CREATE VIEW results AS SELECT * FROM parts")
        present = [c for c in TIMING_COLUMNS if c in part_cols]
        if present:
            keys = [k for k in PROBE_KEYS if k in part_cols]
            con.execute(f"CREATE VIEW timings AS SELECT {', '.join(keys + present)} FROM parts")
    for name in CSV_TABLES:
        table = run_table(run, name)
        if table is not None:
            con.register(f"_{name}_df", table)
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM _{name}_df")
    return con


def _views(con) -> set[str]:
    rows = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    return {r[0] for r in rows}


def default_sql(con) -> str:
    """The compact table: one row per (model, weights, layer, dataset, selector).

    Columns: d, probes, seeds, fractions, full_acc (mean test accuracy of the k = d probes),
    min_frac_acc (at the smallest fraction), mean CKA, and when the run has them DR_0.9 with its
    bootstrap interval and k*_0.9 (from ``summary``) and the probes' total fit seconds.
    """
    cols = set(_columns(con, "results"))
    keys = [k for k in CURVE_KEYS if k in cols]
    key_list = ", ".join(keys)
    fit = ", round(sum(fit_seconds), 3) AS fit_s" if "fit_seconds" in cols else ""
    agg = (
        f"SELECT {key_list}, any_value(d) AS d, count(*) AS probes, "
        "count(DISTINCT seed) AS seeds, count(DISTINCT fraction) AS fractions, "
        "round(avg(test_acc) FILTER (WHERE k = d), 4) AS full_acc, "
        "round(avg(cka), 4) AS mean_cka, min(fraction) AS min_frac"
        f"{fit} FROM results GROUP BY {key_list}"
    )
    low = (f"SELECT {key_list}, fraction, round(avg(test_acc), 4) AS min_frac_acc "
           f"FROM results GROUP BY {key_list}, fraction")
    join_low = " AND ".join(f"a.{k} = m.{k}" for k in keys) + " AND a.min_frac = m.fraction"
    select = "a.* EXCLUDE (min_frac), m.min_frac_acc"
    joins = f"FROM ({agg}) a JOIN ({low}) m ON {join_low}"
    if "summary" in _views(con):
        scols = set(_columns(con, "summary"))
        skeys = [k for k in keys if k in scols]
        if {"delta", "dr", "k_star"} <= scols and skeys:
            ci = ", dr_low, dr_high" if {"dr_low", "dr_high"} <= scols else ""
            dr = (f"SELECT {', '.join(skeys)}, dr{ci}, k_star FROM summary "
                  "WHERE round(delta, 6) = 0.9")
            on = " AND ".join(f"a.{k} = s.{k}" for k in skeys)
            select += ", s.dr AS \"DR_0.9\"" + (", s.dr_low, s.dr_high" if ci else "")
            select += ", CAST(s.k_star AS BIGINT) AS \"k*_0.9\""
            joins += f" LEFT JOIN ({dr}) s ON {on}"
    order = ", ".join(f"a.{k}" for k in keys)
    return f"SELECT {select} {joins} ORDER BY {order}"


def _one_line(message: str) -> str:
    """DuckDB's message without its source excerpt (``LINE 1: ...``), on one line."""
    return re.sub(r"\s+", " ", message.split("\nLINE ")[0]).strip()


def query(run: str | os.PathLike, sql: str | None = None) -> pd.DataFrame:
    """Run ``sql`` (default: :func:`default_sql`) on the views of ``run``; return a DataFrame.

    Raises:
        MissingDataError: ``run`` has no results parts.
        InvalidValueError: the SQL does not parse or names a missing table or column; the
            message is DuckDB's, on one line.
    """
    import duckdb

    con = connect(run)
    try:
        statement = sql if sql is not None and sql.strip() else default_sql(con)
        return con.execute(statement).df()
    except duckdb.Error as err:
        tables = ", ".join(sorted(v for v in _views(con) if not v.startswith("_") and v != "parts"))
        raise InvalidValueError(f"SQL error: {_one_line(str(err))} (tables: {tables})") from None
    finally:
        con.close()


def write_csv(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``table`` as CSV to ``path`` through a temporary file and a rename."""
    path = Path(path)
    if path.is_dir():
        raise InvalidValueError(f"CSV path {str(path)!r} is a folder; pass a file name")
    if not path.parent.is_dir():
        raise InvalidValueError(f"folder {str(path.parent)!r} of the CSV path does not exist")
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return path
