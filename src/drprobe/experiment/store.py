"""Results store: one parquet part per job, written atomically; read back as one table.

A part is written under a temporary name in the same folder and renamed into place, so a reader
sees every part either complete or absent. A run folder holds three kinds of parts per job:
``results/`` (per-probe rows, bit-identical between runs of one config on CPU), ``summary/``
(the DR rows, which need the probes' predictions) and ``timings/`` (fit and selection seconds,
keyed by model, weights, layer, dataset, selector, seed and k). All parts of a run can also be queried directly, e.g.
with DuckDB: ``SELECT selector, avg(test_acc) FROM 'RUN/results/*.parquet' GROUP BY 1``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from drprobe.errors import DrprobeError
from drprobe.files import atomic_path

#: Temporary files of this module are named ``.<name>.tmp-<pid>``.
TEMP_PATTERN = re.compile(r"^\..+\.tmp-\d+$")
PART_KINDS = ("results", "summary", "timings")
#: The columns that name one job, one curve (a job's selector) and one probe; the probe keys
#: join the results and timings parts.
JOB_KEYS = ["model", "weights", "layer", "dataset"]
CURVE_KEYS = [*JOB_KEYS, "selector"]
PROBE_KEYS = [*CURVE_KEYS, "seed", "k"]
#: Wall-clock columns: kept out of the results parts so those are identical between runs.
TIMING_COLUMNS = ["fit_seconds", "select_seconds"]


def write_part(df: pd.DataFrame, directory: str | os.PathLike, name: str) -> Path:
    """Write ``df`` as ``directory/name.parquet`` atomically and return its path.

    Raises:
        StoreError: the write failed (one line; no temporary or partial file is left).
    """
    directory = Path(directory)
    final = directory / f"{name}.parquet"
    with atomic_path(final) as tmp:
        directory.mkdir(parents=True, exist_ok=True)
        df.to_parquet(tmp, index=False)
    return final


def read_results(directory: str | os.PathLike) -> pd.DataFrame:
    """Concatenate every ``*.parquet`` part in ``directory`` (sorted by name)."""
    parts = sorted(Path(directory).glob("*.parquet"))
    if not parts:
        raise DrprobeError(f"no result parts (*.parquet) in {str(directory)!r}")
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def remove_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete this module's leftover temporary files in ``folder`` (not recursive).

    Only safe when no other process writes into ``folder`` (the runner holds the run lock).
    Returns the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = [p for p in folder.iterdir() if p.is_file() and TEMP_PATTERN.match(p.name)]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def part_path(out: str | os.PathLike, kind: str, job: str) -> Path:
    """Where the ``kind`` part (one of :data:`PART_KINDS`) of ``job`` lives under run ``out``."""
    return Path(out) / kind / f"{job}.parquet"


def export_npz(X: np.ndarray, y: np.ndarray, split: str, path: str | os.PathLike) -> Path:
    """Write one split as ``X_<split>``, ``y_<split>`` into the ``.npz`` file ``path``.

    Arrays of the other split already in the file are kept when their width matches, so a
    train export and a test export make one file that ``features:PATH`` datasets read.
    X: (n, d); y: (n,). Written atomically (temporary name, then rename).
    """
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as old:
                arrays = {k: old[k] for k in old.files}
        except (OSError, ValueError) as err:
            raise DrprobeError(f"cannot add to {str(path)!r}: not a readable .npz ({err})") from None
        other = [a for k, a in arrays.items() if k.lower().startswith("x_") and
                 k.lower() != f"x_{split}"]
        if any(a.ndim != 2 or a.shape[1] != X.shape[1] for a in other):
            raise DrprobeError(f"{str(path)!r} holds features of another width than "
                               f"{X.shape[1]}; export to a new file")
        arrays = {k: a for k, a in arrays.items() if k.lower() not in (f"x_{split}",
                                                                        f"y_{split}")}
    arrays[f"X_{split}"] = np.asarray(X)
    arrays[f"y_{split}"] = np.asarray(y)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return path
