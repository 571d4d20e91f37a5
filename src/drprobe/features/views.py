"""Lazy row views of feature matrices (and image arrays), so a memory-mapped cache entry stays
on disk until a consumer reads a block of it, and :func:`release` to hand a memmap's pages back."""

from __future__ import annotations

import mmap
from typing import Any

import numpy as np

__all__ = ["RowView", "release"]


def release(X: Any) -> None:
    """Drop the resident pages of a memory-mapped array (or of the array under a
    :class:`RowView`) from this process; a no-op for anything else.

    The data stays in the page cache (a read-only or shared mapping loses nothing); only the
    process's resident set shrinks back.
    """
    if isinstance(X, RowView):
        X = X.X
    handle = getattr(X, "_mmap", None)
    if handle is None and isinstance(getattr(X, "base", None), mmap.mmap):
        handle = X.base
    if isinstance(handle, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        try:
            handle.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # pragma: no cover - closed or unsupported mapping
            pass


class RowView:
    """Rows ``rows`` (all when None) of an array or memmap ``X`` (n_all, ...), read lazily.

    Nothing is read when the view is made: ``view[a:b]`` or ``view[positions]`` reads just
    those rows (cast to ``dtype``: float32 by default; None keeps X's own dtype, as the
    streaming trainer and the faithful trainer's images need), which is how the probe bank,
    the CKA accumulator and the finite check stream a matrix block by block.
    ``np.asarray(view)`` reads every row (for consumers that need the whole matrix, e.g. the
    ranked selectors). Memory: one block of the caller's size; the view itself holds only the
    (n,) row positions.
    """

    def __init__(self, X: Any, rows: Any = None, dtype: Any = np.float32) -> None:
        self.X = X
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self._dtype = np.dtype(X.dtype if dtype is None else dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        n = int(self.X.shape[0]) if self.rows is None else len(self.rows)
        return (n, *(int(s) for s in self.X.shape[1:]))

    @property
    def ndim(self) -> int:
        return len(self.X.shape)

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice) or (isinstance(key, np.ndarray) and key.ndim == 1
                                      and key.dtype.kind in "iu"):
            rows = key if self.rows is None else self.rows[key]
            return np.asarray(self.X[rows], dtype=self._dtype)
        return np.asarray(self)[key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = np.asarray(self.X if self.rows is None else self.X[self.rows], dtype=self._dtype)
        return whole if dtype is None else whole.astype(dtype, copy=False)
