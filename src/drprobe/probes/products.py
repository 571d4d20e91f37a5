"""The probe solver's products on the CPU: Z W and Z^T R on fixed row blocks, the change of
coordinates and the preconditioner's inverse factors.

Every objective evaluation of the probe bank multiplies the (n, p) features of a probe by its
(p, m) weights and the (n, m) residuals back by the features; these two skinny products are
most of the bank's time. On the CPU they run here as one single-threaded BLAS call per
(member, row block), the blocks spread over a pool of ``workers`` threads (numpy releases the
GIL), and the blocks of Z^T R summed in block order. Because the blocks depend on the shapes
only, never on the number of workers or threads, the result has the same bits whatever the
thread count and the machine's load (``tests/test_probe_products.py``); a multi-threaded BLAS
call would instead split the work by its thread count and round each split differently. The
change of coordinates W = T v (T upper-triangular) is one BLAS ``trmm`` per (member, L2 value),
the factors T one LAPACK ``potrf`` + ``trtri`` per L2 value, each on one thread too.

The BLAS is numpy's (OpenBLAS in the wheels), kept at one thread per call while a
:func:`blas_pool` is open; on the AMD EPYC of docs/performance.md it multiplied these skinny
shapes faster than torch's two-threaded MKL call, most of all at few columns. On any other
device the products are torch's (:class:`TorchProducts`).

Memory: the (b, m) logits of one row block at a time per worker, and one (p, m) partial sum per row
block of Z^T R until they are added.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch
from scipy.linalg import blas, lapack

from drprobe.devices import one_blas_thread, torch_threads

#: Rows of Z per block hold about this many entries (at least 512 rows): ~2 MiB of float32,
#: large enough for an efficient BLAS call, small enough to spread over a few cores.
BLOCK_ENTRIES = 2**19
MIN_BLOCK_ROWS = 512
#: The change of coordinates goes to the pool from this width p on (below, one call each is
#: shorter than handing it over).
PARALLEL_CHANGE_WIDTH = 256


def block_rows(p: int) -> int:
    """Rows per block for features of width ``p`` (a function of the shape only)."""
    return max(MIN_BLOCK_ROWS, math.ceil(BLOCK_ENTRIES / max(1, p)))


Residual = Callable[[torch.Tensor, slice], tuple[torch.Tensor, torch.Tensor]]


def _block(i: int, z: np.ndarray, w: np.ndarray, rows: slice, residual: Residual
           ) -> tuple[int, np.ndarray, torch.Tensor]:
    R, loss = residual(torch.from_numpy(z @ w), rows)
    return i, z.T @ R.numpy(), loss


class RowBlockProducts:
    """The solver's products for a list of members, on a pool of ``workers`` threads (CPU
    tensors).

    Use inside :func:`blas_pool`, which keeps the BLAS at one thread per call.
    """

    def __init__(self, workers: int) -> None:
        self.workers = max(1, int(workers))
        self._pool = _executor(self.workers) if self.workers > 1 else None

    def _run(self, tasks: list, parallel: bool = True) -> list:
        if self._pool is None or len(tasks) == 1 or not parallel:
            return [task() for task in tasks]
        return list(self._pool.map(lambda task: task(), tasks))

    def forward_backward(self, Z: Sequence[torch.Tensor], W: torch.Tensor,
                         residual: Residual) -> tuple[torch.Tensor, torch.Tensor]:
        """For each member i and row block b: logits = Z[i][b] @ W[i], (R, loss) =
        ``residual(logits, b)``, then G[i] = sum over blocks of Z[i][b].T @ R and the loss summed
        the same way, in block order. Z[i] (n, p), possibly a strided view; W (M, p, m).

        Returns (loss (M, ...), G (M, p, m)). One task per (member, block) keeps the block of Z
        in cache between its two products and the element-wise work in between.
        """
        tasks = []
        for i, (z, w) in enumerate(zip(Z, W.numpy())):
            zn = z.numpy()
            step = block_rows(zn.shape[1])
            for s in range(0, zn.shape[0], step):
                tasks.append(lambda i=i, zn=zn[s:s + step], w=w, rows=slice(s, s + step):
                             _block(i, zn, w, rows, residual))
        G: list[np.ndarray | None] = [None] * len(Z)
        loss: list[torch.Tensor | None] = [None] * len(Z)
        for i, g, part in self._run(tasks):
            G[i] = g if G[i] is None else G[i] + g
            loss[i] = part if loss[i] is None else loss[i] + part
        return torch.stack(loss), torch.from_numpy(np.stack(G))  # type: ignore[arg-type]

    def change(self, T: Sequence[torch.Tensor], slots: torch.Tensor, x: torch.Tensor,
               transpose: bool) -> torch.Tensor:
        """``T[i][slot] @ x[i, j]`` (or ``T[i][slot].T @ x[i, j]``) for member i and the j-th of
        ``slots``: T[i] (L, p, p) upper-triangular, x (M, S, p, C) -> (M, S, p, C)."""
        out = torch.empty_like(x)
        xn, on = x.contiguous().numpy(), out.numpy()
        tasks = []
        for i, t in enumerate(T):
            tn = t.numpy()
            for j, slot in enumerate(slots.tolist()):
                tasks.append(lambda a=tn[slot], b=xn[i, j], o=on[i, j]:
                             np.copyto(o, _triangular_product(a, b, transpose)))
        # small products cost less than handing them to the pool
        self._run(tasks, parallel=x.shape[2] >= PARALLEL_CHANGE_WIDTH)
        return out

    def inverse_factors(self, M: torch.Tensor) -> torch.Tensor | None:
        """L^{-T} of the Cholesky factor L of each M[b] (B, p, p), one LAPACK task per matrix;
        None if one is not positive definite."""
        out = self._run([lambda m=m: _inverse_factor(m) for m in M.numpy()])
        return None if any(t is None for t in out) else torch.from_numpy(np.stack(out))


def _inverse_factor(m: np.ndarray) -> np.ndarray | None:
    """L^{-T} for the Cholesky factor L of m, or None if m is not positive definite: the upper
    factor U = L^T (potrf), then U^{-1} (trtri)."""
    potrf, trtri = lapack.get_lapack_funcs(("potrf", "trtri"), (m,))
    U, info = potrf(m, lower=0, clean=1)
    if info != 0:
        return None
    inverse, info = trtri(U, lower=0)
    return inverse if info == 0 else None


def _triangular_product(a: np.ndarray, b: np.ndarray, transpose: bool) -> np.ndarray:
    """``(a.T if transpose else a) @ b`` for a C-ordered upper-triangular a, with BLAS trmm (half
    the multiply-adds of a full product). In Fortran order a's memory is the lower-triangular
    a.T and b's is b.T, so the product is computed as b.T @ a.T (or b.T @ a) without copies."""
    trmm = blas.get_blas_funcs("trmm", (a, b))
    return trmm(1.0, a.T, b.T, side=1, lower=1, trans_a=int(transpose)).T


class TorchProducts:
    """The same products as torch calls on all rows at once (GPU, or wherever numpy cannot
    reach)."""

    def forward_backward(self, Z: Sequence[torch.Tensor], W: torch.Tensor,
                         residual: Residual) -> tuple[torch.Tensor, torch.Tensor]:
        out = [residual(z @ w, slice(0, z.shape[0])) for z, w in zip(Z, W)]
        return (torch.stack([loss for _, loss in out]),
                torch.stack([z.T @ R for z, (R, _) in zip(Z, out)]))

    def change(self, T: Sequence[torch.Tensor], slots: torch.Tensor, x: torch.Tensor,
               transpose: bool) -> torch.Tensor:
        A = torch.stack([t[slots] for t in T])
        return (A.mT if transpose else A) @ x

    def inverse_factors(self, M: torch.Tensor) -> torch.Tensor | None:
        fac, info = torch.linalg.cholesky_ex(M)
        if bool((info != 0).any()):
            return None
        eye = torch.eye(M.shape[1], dtype=M.dtype, device=M.device).expand_as(M)
        return torch.linalg.solve_triangular(fac, eye, upper=False).mT.contiguous()


_EXECUTORS: dict[int, ThreadPoolExecutor] = {}
_BLAS = threading.local()


def _executor(workers: int) -> ThreadPoolExecutor:
    """One pool per worker count for the process (idle threads cost nothing; a new pool per
    solve cost milliseconds, thousands of times in a run)."""
    if workers not in _EXECUTORS:
        _EXECUTORS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="drprobe-blas")
    return _EXECUTORS[workers]


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """numpy's BLAS on one thread per call inside the block (:func:`~drprobe.devices.
    one_blas_thread`); re-entrant, so an outer block (a whole bank fit) saves the inner ones
    (every solve) the cost of setting the limit."""
    depth = getattr(_BLAS, "depth", 0)
    _BLAS.depth = depth + 1
    try:
        if depth:
            yield
        else:
            with one_blas_thread():
                yield
    finally:
        _BLAS.depth = depth


@contextmanager
def blas_pool(device: torch.device) -> Iterator[RowBlockProducts | TorchProducts]:
    """The products for tensors on ``device``: row blocks on a pool of torch's current thread
    count with a one-thread BLAS on the CPU (torch itself on one thread meanwhile: its idle
    threads would spin beside the pool's), torch elsewhere."""
    if device.type != "cpu":
        yield TorchProducts()
        return
    products = RowBlockProducts(torch.get_num_threads())
    with single_threaded_blas(), torch_threads(1):
        yield products
