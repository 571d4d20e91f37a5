"""`drprobe results` / `drprobe.experiment.query`: DuckDB answers equal the same quantity computed
with pandas on a real tiny run folder; timings kept apart are joined back; errors exit 2."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from helpers import run_cli
from report_runs import shared_run, split_timings

from drprobe.errors import InvalidValueError, MissingDataError
from drprobe.experiment.query import query
from drprobe.experiment.store import PROBE_KEYS, read_results, write_part

CURVE = ["model", "weights", "layer", "dataset", "selector"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, feature_cache):
    """Two copies of the same study: timings inside the results parts, and kept apart."""
    root = tmp_path_factory.mktemp("query-runs")
    inline = shared_run(feature_cache, root / "inline")
    apart = split_timings(inline, root / "apart")
    return inline, apart


@pytest.mark.slow
def test_default_table_matches_pandas(runs):
    run, _ = runs
    table = query(run).set_index(CURVE).sort_index()
    probes = read_results(run / "results")
    summary = pd.read_csv(run / "summary.csv")
    groups = probes.groupby(CURVE)
    assert sorted(table.index) == sorted(groups.groups)
    full = probes[probes["k"] == probes["d"]].groupby(CURVE)["test_acc"].mean()
    np.testing.assert_allclose(table["full_acc"], full.reindex(table.index).round(4))
    assert (table["probes"] == groups.size().reindex(table.index)).all()
    assert (table["seeds"] == groups["seed"].nunique().reindex(table.index)).all()
    np.testing.assert_allclose(table["fit_s"],
                               groups["fit_seconds"].sum().reindex(table.index).round(3))
    smallest = probes[probes["fraction"] == probes.groupby(CURVE)["fraction"].transform("min")]
    low = smallest.groupby(CURVE)["test_acc"].mean().reindex(table.index).round(4)
    np.testing.assert_allclose(table["min_frac_acc"], low)
    dr = summary[summary["delta"].round(6) == 0.9].set_index(CURVE)
    np.testing.assert_allclose(table["DR_0.9"], dr["dr"].reindex(table.index))
    np.testing.assert_allclose(table["k*_0.9"], dr["k_star"].reindex(table.index))


@pytest.mark.slow
def test_sql_aggregate_matches_pandas(runs):
    run, _ = runs
    sql = ("SELECT weights, layer, selector, fraction, avg(test_acc) AS acc, max(gini) AS gini "
           "FROM results GROUP BY ALL ORDER BY ALL")
    got = query(run, sql).set_index(["weights", "layer", "selector", "fraction"])
    probes = read_results(run / "results")
    want = probes.groupby(["weights", "layer", "selector", "fraction"]).agg(
        acc=("test_acc", "mean"), gini=("gini", "max"))
    assert list(got.index) == list(want.index)
    np.testing.assert_allclose(got["acc"], want["acc"])
    np.testing.assert_allclose(got["gini"], want["gini"])


@pytest.mark.slow
def test_csv_tables_are_views(runs):
    run, _ = runs
    for name in ("summary", "efficiency"):
        got = query(run, f"SELECT * FROM {name}")
        want = pd.read_csv(run / f"{name}.csv")
        assert got.shape == want.shape
        np.testing.assert_allclose(got.select_dtypes("number"), want.select_dtypes("number"))


@pytest.mark.slow
def test_timings_apart_are_joined_back(runs):
    inline, apart = runs
    parts = read_results(apart / "results")
    assert "fit_seconds" not in parts
    joined = query(apart, "SELECT * FROM results")
    assert len(joined) == len(parts)
    timings = pd.concat([pd.read_parquet(p) for p in sorted((apart / "timings").glob("*"))])
    want = parts.merge(timings, on=list(PROBE_KEYS), how="left")
    key = list(PROBE_KEYS)
    got = joined.sort_values(key).reset_index(drop=True)
    want = want.sort_values(key).reset_index(drop=True)
    np.testing.assert_allclose(got["fit_seconds"], want["fit_seconds"])
    np.testing.assert_allclose(got["test_acc"], want["test_acc"])
    # An older run keeps its timings in the results parts; `timings` is a view of them.
    old = query(inline, "SELECT count(*) AS n, sum(fit_seconds) AS s FROM timings")
    probes = read_results(inline / "results")
    assert old["n"].iloc[0] == len(probes)
    assert old["s"].iloc[0] == pytest.approx(probes["fit_seconds"].sum())


@pytest.mark.slow
def test_summary_parts_stand_in_for_a_missing_csv(runs, tmp_path):
    """A run stopped before its CSV tables were written still has per-job summary parts."""
    run, _ = runs
    stopped = tmp_path / "stopped"
    shutil.copytree(run / "results", stopped / "results")
    summary = pd.read_csv(run / "summary.csv")
    for i, (_, rows) in enumerate(summary.groupby(["weights", "layer"])):
        write_part(rows, stopped / "summary", f"job{i}")
    got = query(stopped, "SELECT * FROM summary ORDER BY weights, layer, selector, delta")
    want = summary.sort_values(["weights", "layer", "selector", "delta"]).reset_index(drop=True)
    np.testing.assert_allclose(got["dr"], want["dr"])
    table = query(stopped)
    assert table["DR_0.9"].notna().all() and len(table) == len(query(run))
    with pytest.raises(InvalidValueError, match="efficiency"):
        query(stopped, "SELECT * FROM efficiency")


@pytest.mark.slow
def test_cli_prints_and_exports_csv(runs, capsys, tmp_path):
    run, _ = runs
    code, out, _ = run_cli(capsys, "results", str(run))
    assert code == 0
    header = out.splitlines()[0].split()
    assert {"model", "layer", "selector", "full_acc", "DR_0.9"} <= set(header)
    assert len(out.splitlines()) == 1 + len(query(run))
    sql = "SELECT layer, selector, seed, k, test_acc FROM results ORDER BY ALL"
    target = tmp_path / "answer.csv"
    code, out, _ = run_cli(capsys, "results", str(run), "--sql", sql, "--csv", str(target))
    assert code == 0 and out == ""
    written = pd.read_csv(target)
    pd.testing.assert_frame_equal(written, query(run, sql), check_dtype=False)
    assert [p.name for p in tmp_path.iterdir()] == ["answer.csv"]


@pytest.mark.parametrize("sql, needle", [
    ("SELECT no_such_column FROM results", "no_such_column"),
    ("SELECT * FROM no_such_table", "no_such_table"),
    ("SELEC 1", "syntax error"),
])
@pytest.mark.slow
def test_sql_errors_are_one_line_exit_2(runs, capsys, sql, needle):
    run, _ = runs
    with pytest.raises(InvalidValueError):
        query(run, sql)
    code, out, err = run_cli(capsys, "results", str(run), "--sql", sql)
    assert code == 2 and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("drprobe: error: SQL error")
    assert needle in lines[0] and "results" in lines[0]


def test_not_a_run_folder(capsys, tmp_path):
    (tmp_path / "empty" / "results").mkdir(parents=True)
    for folder in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(MissingDataError):
            query(folder)
        code, out, err = run_cli(capsys, "results", str(folder))
        assert code == 2 and out == ""
        assert len(err.strip().splitlines()) == 1 and "not a run folder" in err


@pytest.mark.slow
def test_csv_into_missing_folder(runs, capsys, tmp_path):
    run, _ = runs
    target = tmp_path / "nowhere" / "x.csv"
    code, _, err = run_cli(capsys, "results", str(run), "--csv", str(target))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "does not exist" in err
    assert not target.parent.exists()
