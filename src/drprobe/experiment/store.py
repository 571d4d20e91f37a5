"""Results store: one parquet part per job, written atomically; read back as one table.

A part is written under a temporary name in the same folder and renamed into place, so a reader
sees every part either complete or absent. All parts of a run can also be queried directly, e.g.
with DuckDB: ``SELECT selector, avg(test_acc) FROM 'RUN/results/*.parquet' GROUP BY 1``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from drprobe.errors import DrprobeError


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_part(df: pd.DataFrame, directory: str | os.PathLike, name: str) -> Path:
    """Write ``df`` as ``directory/name.parquet`` atomically and return its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{name}.parquet"
    tmp = directory / f".{name}.parquet.tmp-{os.getpid()}"
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def read_results(directory: str | os.PathLike) -> pd.DataFrame:
    """Concatenate every ``*.parquet`` part in ``directory`` (sorted by name)."""
    parts = sorted(Path(directory).glob("*.parquet"))
    if not parts:
        raise DrprobeError(f"no result parts (*.parquet) in {str(directory)!r}")
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
