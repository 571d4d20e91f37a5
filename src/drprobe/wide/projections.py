"""Projecting wide features by a random projection: in feature space, or in sample space.

Feature space (:func:`project`, any kind): (X − mean) P[:, :m] with P drawn block by block from
the seed, as the selectors draw it (:mod:`drprobe.selectors.projections`), never a dense d×d:
each block of P (d, b) is multiplied with every row chunk of X and dropped. Cost n·d·m
multiply-adds (m = d costs as much as a d×d product per row); X is read once per block of P.
Peak memory: one block of P (d·b float64), one row chunk of X (r·d float64) and the output,
which may be a memory-mapped file (``out``).

Sample space (:func:`project_sample_space`, the kinds in :data:`SAMPLE_SPACE_KINDS`): the same
projection *in distribution*, at cost n·r·m instead of n·d·m (r ≤ min(n, d) the rank of the rows).
With X (n, d) every row that the job projects (train, validation and test stacked: one P serves
them all) and X = U S Vᵀ its thin SVD (V (d, r) orthonormal), X P = U S (Vᵀ P). A Gaussian
column g ~ N(0, I_d) splits, by rotation invariance, into a = Vᵀ g ~ N(0, I_r) and the part
outside the row space, whose squared norm c ~ χ²_{d−r} is independent of a; the selector's
column is g / ‖g‖, so Vᵀ p = a / √(‖a‖² + c). Drawing a and c directly gives columns with
exactly the distribution of Vᵀ P's, independent across columns as P's are, and nested across m
(the first m columns of one draw). U S is any F (n, r) with F Fᵀ = X Xᵀ (a rotation of the r
coordinates changes nothing, a's law being rotation invariant): :func:`row_factor` takes it from
the eigendecomposition of the uncentred Gram of all rows. The draw is a different one from the
feature-space path's for the same seed (equal in law, not per seed), so results of the two paths
are comparable as distributions over seeds, never seed by seed. A Uniform[0, 1) projection is not
rotation invariant (Vᵀ p is not a function of an r-dimensional draw), so it has no such path.
Peak memory: the Gram and its eigh workspace, about 5·n² float64, then F (n·r float64) and one
block of the draw (r·b float64).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from drprobe.errors import InvalidValueError
from drprobe.selectors.pca import symmetric_eigh
from drprobe.selectors.projections import iter_projection_blocks
from drprobe.wide.columns import ColumnReader

PROJECTION_BLOCK_BYTES = 64 * 2**20  # one block of P (feature space) or of the draw (sample)
ROW_CHUNK_BYTES = 64 * 2**20  # one chunk of X's rows

#: projection kinds with an exact sample-space draw (rotation-invariant columns)
SAMPLE_SPACE_KINDS = ("randproj_gauss",)

#: multiply-adds of a full symmetric eigendecomposition of an n×n matrix, per n³ (a rough,
#: generous constant: tridiagonal reduction and back-transformation)
EIGH_WORK = 4


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


def projection_work(n: int, d: int, m: int) -> dict[str, float]:
    """Multiply-adds of projecting n rows of a d-wide layer onto m directions, per path:
    ``feature`` n·d·m; ``sample`` the Gram of the rows n²·d, its eigendecomposition
    :data:`EIGH_WORK`·n³ and F·A n·min(n, d)·m (the Gram and eigh once for all seeds)."""
    n, d, m = float(n), float(d), float(m)
    return {"feature": n * d * m, "sample": n * n * d + EIGH_WORK * n**3 + n * min(n, d) * m}


def in_sample_space(kind: str, n: int, d: int, m: int) -> bool:
    """Whether the projection ``kind`` of n rows of a d-wide layer onto m directions is drawn in
    sample space: the kind has an exact sample-space draw and it is the cheaper path."""
    work = projection_work(n, d, m)
    return kind in SAMPLE_SPACE_KINDS and work["sample"] < work["feature"]


def row_factor(readers: Sequence[ColumnReader], *, block: int = 2048) -> np.ndarray:
    """F (N, r) with F Fᵀ = X Xᵀ, X (N, d) the readers' rows stacked in order (uncentred).

    From the eigendecomposition of the Gram X Xᵀ (accumulated over column blocks, N²·d
    multiply-adds, no N×d copy; eigh on one thread, the same bits on any machine): F = U Λ^{1/2}
    over the eigenvalues above N·ε·λ_max (at most d of them), so r is the numerical rank of the
    rows. Memory: the Gram, its symmetrised copy and eigh's workspace, about 5·N² float64.
    """
    if not readers or any(r.d != readers[0].d for r in readers):
        raise InvalidValueError("row_factor needs one or more readers of the same width")
    d, n = readers[0].d, sum(r.n for r in readers)
    K = np.zeros((n, n))
    for lo in range(0, d, block):
        cols = np.arange(lo, min(lo + block, d))
        B = np.concatenate([r.columns(cols) for r in readers], axis=0)
        K += B @ B.T
    w, U = symmetric_eigh(K)
    del K
    w, U = w[::-1], U[:, ::-1]
    keep = int(min(d, np.count_nonzero(w > n * np.finfo(np.float64).eps * max(w[0], 0.0))))
    return U[:, :keep] * np.sqrt(w[:keep])


def iter_sample_space_draws(
    seed: Any, r: int, d: int, m: int, block: int
) -> Iterator[tuple[int, int, np.ndarray]]:
    """(lo, hi, A[:, lo:hi]) for consecutive blocks of the first m columns of the draw A (r, m)
    whose columns have the law of Vᵀ p for p a unit-norm Gaussian column of R^d and V (d, r)
    orthonormal: a / √(‖a‖² + c), a ~ N(0, I_r), c ~ χ²_{d−r} (0 when r = d).

    a and c come from two streams spawned from ``seed``, each drawn value by value, so the
    columns are the same whatever the block size and nested across m.
    """
    if not (0 < r <= d) or not (0 <= m <= d) or block < 1:
        raise InvalidValueError(f"need 0 < r <= d, 0 <= m <= d and block >= 1; got r={r}, "
                                f"d={d}, m={m}, block={block}")
    normal, chi2 = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    for lo in range(0, m, block):
        hi = min(lo + block, m)
        a = normal.standard_normal((hi - lo, r))
        c = chi2.chisquare(d - r, hi - lo) if d > r else np.zeros(hi - lo)
        yield lo, hi, (a / np.sqrt(np.einsum("ij,ij->i", a, a) + c)[:, None]).T


def project_sample_space(
    F: np.ndarray, seed: Any, d: int, m: int, *, block: int | None = None, out: Any = None,
) -> np.ndarray:
    """F A[:, :m] (N, m): the rows whose factor is F (:func:`row_factor`) projected by a
    unit-norm Gaussian projection of R^d, in distribution (module docstring); float64 unless
    ``out`` (e.g. a float32 memmap) is given. Cost N·r·m multiply-adds."""
    F = np.asarray(F, dtype=np.float64)
    n, r = F.shape
    block = block or max(1, PROJECTION_BLOCK_BYTES // (8 * max(r, n)))
    out = np.empty((n, m)) if out is None else out
    if r == 0:  # every row is zero: so is every projection of it
        out[:, :m] = 0.0
        return out
    for lo, hi, A in iter_sample_space_draws(seed, r, d, m, block):
        out[:, lo:hi] = F @ A
    return out
