"""Projecting wide features: (X − mean) P[:, :m] with P drawn block by block from the seed.

The projection matrix is that of the selectors (:mod:`drprobe.selectors.projections`), never
built as a dense d×d: each block of P (d, b) is multiplied with every row chunk of X and
dropped. Cost n·d·m multiply-adds (a projection onto m = d directions costs as much as a d×d
product per row); X is read once per block of P.

Peak memory: one block of P (d·b float64), one row chunk of X (r·d float64) and the output, which
may be a memory-mapped file (``out``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from drprobe.selectors.projections import iter_projection_blocks

PROJECTION_BLOCK_BYTES = 64 * 2**20  # one block of P
ROW_CHUNK_BYTES = 64 * 2**20  # one chunk of X's rows


def project(
    X: Any, kind: str, seed: Any, m: int, *, block: int | None = None, mean: Any = None,
    row_chunk: int | None = None, rows: Any = None, out: Any = None,
) -> np.ndarray:
    """(X[rows] − mean) P[:, :m] as an (n, m) array (float64 unless ``out`` is given).

    Args:
        X: (n_all, d) features, any array or memmap.
        kind, seed: the projection (``randproj_uniform`` / ``randproj_gauss``) and its seed.
        m: number of projected coordinates (the first m columns of P).
        block: columns of P per block (default: 64 MiB of P).
        mean: (d,) subtracted from every row first (default none: the paper's projection).
        row_chunk: rows of X per product (default: 64 MiB of float64 rows).
        rows: the rows of X to project, in order (default all).
        out: an (n, m) array to fill (e.g. a float32 memmap) instead of a new float64 one.
    """
    d = int(X.shape[1])
    rows = np.arange(X.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    n = rows.size
    block = block or max(1, PROJECTION_BLOCK_BYTES // (8 * d))
    row_chunk = row_chunk or max(1, ROW_CHUNK_BYTES // (8 * d))
    out = np.empty((n, m)) if out is None else out
    shift = None if mean is None else np.asarray(mean, dtype=np.float64)
    for lo, hi, P in iter_projection_blocks(kind, seed, d, m, block):
        for r0 in range(0, n, row_chunk):
            R = np.asarray(X[rows[r0:r0 + row_chunk]], dtype=np.float64)
            out[r0:r0 + R.shape[0], lo:hi] = (R if shift is None else R - shift) @ P
    return out
