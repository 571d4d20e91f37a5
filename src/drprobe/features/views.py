"""Lazy row views of feature matrices, so a memory-mapped cache entry stays on disk until a
consumer reads a block of it."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["RowView"]


class RowView:
    """Rows ``rows`` (all when None) of a 2-D feature matrix ``X`` (array or memmap), as float32.

    Nothing is read when the view is made: slicing rows (``view[a:b]``) reads just those rows
    (and casts them to float32), which is how the probe bank, the CKA accumulator and the finite
    check stream a matrix block by block. ``np.asarray(view)`` reads every row (for consumers
    that need the whole matrix, e.g. the ranked selectors). Memory: one block of the caller's
    size; the view itself holds only the (n,) row positions.
    """

    def __init__(self, X: Any, rows: Any = None) -> None:
        self.X = X
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, int]:
        n = int(self.X.shape[0]) if self.rows is None else len(self.rows)
        return n, int(self.X.shape[1])

    @property
    def ndim(self) -> int:
        return 2

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            rows = key if self.rows is None else self.rows[key]
            return np.asarray(self.X[rows], dtype=np.float32)
        return np.asarray(self)[key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = np.asarray(self.X if self.rows is None else self.X[self.rows], dtype=np.float32)
        return whole if dtype is None else whole.astype(dtype, copy=False)
