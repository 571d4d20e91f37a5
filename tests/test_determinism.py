"""Determinism: the same tiny demo, run twice in fresh processes with fresh caches, gives
bit-identical result parts.

Each run has its own output folder and its own empty feature cache, so the second run extracts
again instead of reading the first run's features. Wall-clock columns (``*_seconds``) cannot be
identical; they belong in ``timings/*.parquet``, not in the result parts. The value-for-value
comparison of every other column says which column differs when the byte comparison fails.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # two demo runs in fresh processes

ARGS = ["demo", "--dataset", "digits", "--n-train", "300", "--n-test", "200", "--image-size",
        "32", "--layers", "features.14", "--fractions", "0.1,0.5,1", "--seeds", "1,2",
        "--no-progress"]


def _start(out: Path, cache: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "drprobe.cli", *ARGS, "--out", str(out), "--cache-dir",
            str(cache)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    """The demo run twice at the same time, in two processes with two fresh caches."""
    base = tmp_path_factory.mktemp("determinism")
    outs = (base / "out-a", base / "out-b")
    procs = [_start(out, base / f"cache-{i}") for i, out in enumerate(outs)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    for i in range(2):  # each run extracted into its own cache
        assert list((base / f"cache-{i}").glob("??/*/features.npy"))
    return outs


def _parts(out: Path) -> list[Path]:
    return sorted((out / "results").glob("*.parquet"))


def _timing(column: str) -> bool:
    return column.endswith("_seconds")


def _same(x: object, y: object) -> bool:
    """Exact equality; NaN equals NaN (absent classes in per_class_acc, degenerate CKA)."""
    if isinstance(x, (list, tuple, np.ndarray)):
        return np.array_equal(np.asarray(x, dtype=float), np.asarray(y, dtype=float),
                              equal_nan=True)
    if isinstance(x, float) and isinstance(y, float):
        return x == y or (np.isnan(x) and np.isnan(y))
    return bool(x == y)


def test_same_parts_and_rows(two_runs):
    a, b = two_runs
    names = [p.name for p in _parts(a)]
    assert names and names == [p.name for p in _parts(b)]
    # pretrained + random twin, 1 layer, 2 seeds, 3 fractions (k = 16, 80, 160 of d = 160)
    rows = sum(len(pd.read_parquet(p)) for p in _parts(a))
    assert rows == 2 * 2 * 3


def test_every_non_timing_column_is_identical(two_runs):
    a, b = two_runs
    for pa, pb in zip(_parts(a), _parts(b)):
        ta, tb = pd.read_parquet(pa), pd.read_parquet(pb)
        assert list(ta.columns) == list(tb.columns), pa.name
        for col in ta.columns:
            if _timing(col):
                continue
            same = [_same(x, y) for x, y in zip(ta[col], tb[col])]
            assert all(same), f"{pa.name}: column {col!r} differs between runs"


def test_result_parts_are_bit_identical(two_runs):
    """Final behaviour: no wall-clock column in the parts, so the files are byte-for-byte equal."""
    a, b = two_runs
    for pa, pb in zip(_parts(a), _parts(b)):
        timing = [c for c in pd.read_parquet(pa).columns if _timing(c)]
        assert timing == [], f"{pa.name} still holds wall-clock columns {timing}"
        assert pa.read_bytes() == pb.read_bytes(), pa.name


def test_summaries_are_identical(two_runs):
    a, b = two_runs
    assert (a / "summary.csv").read_text() == (b / "summary.csv").read_text()
