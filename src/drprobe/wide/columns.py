"""Column blocks of a (possibly memory-mapped) feature matrix, in any neuron order.

A feature cache stores X (n, d) row-major, so reading a block of b scattered columns from the
memmap touches every page of the file. :class:`ColumnReader` therefore copies the selected rows
once into a neuron-major (d, n) scratch file (one sequential pass over row chunks), after which
a block of any b neurons is b contiguous rows of n values. Arrays that fit in
``in_memory_bytes`` are kept in memory instead.

Peak memory (anonymous): one row chunk (about ``CHUNK_BYTES``) while the scratch copy is written,
then the requested block, O(n·b); the scratch file lives on disk (n·d·itemsize bytes) and is
removed by :meth:`ColumnReader.close` (or when the reader is garbage-collected). Pages of the
memory-mapped files are released after each chunk or block (:func:`release`), so the process's
resident set does not grow with the files either (they stay in the kernel's page cache).
"""

from __future__ import annotations

import os
import sys
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from drprobe.errors import InvalidValueError
from drprobe.features.views import release

CHUNK_BYTES = 64 * 2**20  # rows of X copied per step while writing the scratch file
IN_MEMORY_BYTES = 256 * 2**20  # selected rows up to this size are simply held in memory


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


class ColumnReader:
    """Columns of ``X[rows]`` (n, d), read block by block in any column order.

    Args:
        X: (n_all, d) array or memmap, any float dtype.
        rows: row indices to keep (default: all rows, in order).
        scratch_dir: folder of the neuron-major scratch file (default: the system temp folder).
        in_memory_bytes: keep the selected rows in memory when they take at most this much.
        progress: show a progress bar while the scratch copy is written.
    """

    def __init__(
        self, X: Any, rows: Sequence[int] | np.ndarray | None = None,
        scratch_dir: str | os.PathLike | None = None, in_memory_bytes: int = IN_MEMORY_BYTES,
        progress: bool = False,
    ) -> None:
        if len(getattr(X, "shape", ())) != 2:
            raise InvalidValueError(f"features must be a 2-D array (n, d); got {type(X).__name__}")
        rows_arr = np.arange(X.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
        if rows_arr.ndim != 1 or (rows_arr.size and (rows_arr.min() < 0
                                                     or rows_arr.max() >= X.shape[0])):
            raise InvalidValueError(f"rows must be indices in [0, {X.shape[0]}); got {rows_arr}")
        dtype = np.dtype(X.dtype) if np.dtype(X.dtype).kind == "f" else np.dtype(np.float32)
        self.n, self.d = int(rows_arr.size), int(X.shape[1])
        self.path: str | None = None
        if self.n * self.d * dtype.itemsize <= in_memory_bytes:
            self._T = np.ascontiguousarray(np.asarray(X[rows_arr], dtype=dtype).T)
            return
        fd, self.path = tempfile.mkstemp(prefix="drprobe-columns-", suffix=".npy",
                                         dir=scratch_dir)
        os.close(fd)
        self._finalizer = weakref.finalize(self, _remove, self.path)
        T = np.lib.format.open_memmap(self.path, mode="w+", dtype=dtype, shape=(self.d, self.n))
        step = max(1, CHUNK_BYTES // (self.d * dtype.itemsize))
        for r0 in tqdm(range(0, self.n, step), desc="neuron-major copy", unit="chunk",
                       file=sys.stderr, disable=not progress):
            T[:, r0:r0 + step] = np.asarray(X[rows_arr[r0:r0 + step]], dtype=dtype).T
            release(X)
            release(T)
        T.flush()
        del T
        self._T = np.load(self.path, mmap_mode="r")

    def columns(self, cols: Sequence[int] | np.ndarray, dtype: Any = np.float64) -> np.ndarray:
        """(n, b) copy of the columns ``cols`` (in that order), in ``dtype``."""
        cols = np.asarray(cols, dtype=np.int64)
        order = np.argsort(cols, kind="stable")  # sorted reads walk the scratch file forwards
        out = np.empty((cols.size, self.n), dtype=dtype)
        out[order] = self._T[cols[order]]
        release(self._T)
        return out.T

    def blocks(self, block: int, dtype: Any = np.float64) -> Iterator[np.ndarray]:
        """Consecutive (n, b) copies of columns [lo, lo + b) for lo = 0, block, 2·block, …,
        read lazily (one block in memory at a time)."""
        if block < 1:
            raise InvalidValueError(f"block must be >= 1; got {block}")
        for lo in range(0, self.d, block):
            yield self.columns(np.arange(lo, min(lo + block, self.d)), dtype)

    def close(self) -> None:
        """Drop the scratch file (if any)."""
        self._T = None
        if self.path is not None:
            self._finalizer()

    def __enter__(self):  # returns self
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def block_bounds(ks: Sequence[int], block: int) -> list[tuple[int, int, int | None]]:
    """Split [0, max(ks)) into blocks of at most ``block`` columns that end at every k in ks.

    Returns (lo, hi, k) per block, k the boundary reached at hi (None inside a stretch).
    """
    if block < 1:
        raise InvalidValueError(f"block must be >= 1; got {block}")
    out, lo = [], 0
    for k in ks:
        while lo < k:
            hi = min(lo + block, k)
            out.append((lo, hi, k if hi == k else None))
            lo = hi
    return out
