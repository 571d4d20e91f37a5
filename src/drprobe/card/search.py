"""Exact top-k search by inner product, with numpy or FAISS, and how long it takes per query.

Both backends are exact (brute force over every corpus row): ``"exact"`` is a float32 matrix
product per block of queries followed by a partial selection (:func:`drprobe.metrics.retrieval.
nearest_columns`), ``"faiss"`` is ``faiss.IndexFlatIP`` (the same scores, with SIMD kernels,
threads and a fused top-k that never holds a query × corpus block). ``"auto"`` picks numpy up to
:data:`EXACT_MAX_CORPUS` corpus rows and FAISS above.

Ties: ``"exact"`` orders equal scores by lower corpus row, also at the k-th place, so its
answer is a function of the inputs alone. FAISS's order among equal scores is its own; within
the k returned, equal scores are re-ordered by lower corpus row, but which of several rows tied
at the k-th place it returns is not controlled.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from drprobe.errors import InvalidValueError, MissingDataError
from drprobe.metrics.retrieval import BLOCK_BYTES, nearest_columns

__all__ = ["BACKENDS", "EXACT_MAX_CORPUS", "normalize", "search_seconds", "top_k"]

#: Above this many corpus rows, ``backend="auto"`` searches with FAISS. Up to here a block of
#: scores for a few hundred queries fits :data:`~drprobe.metrics.retrieval.BLOCK_BYTES`
#: (64 MiB / (4 bytes · 50,000) = 335 queries), so the numpy path stays one BLAS product plus a
#: linear-time selection per block, and gives deterministic tie order without a dependency.
#: Beyond it the blocks thin out to a few queries and numpy's selection, which revisits the
#: whole score row, falls behind FAISS's fused heap selection and threads.
EXACT_MAX_CORPUS = 50_000

BACKENDS = ("auto", "exact", "faiss")


def normalize(X: Any) -> np.ndarray:
    """Rows scaled to unit L2 norm: X (n, d) (or (d,)) -> float32 of the same shape.

    Zero rows stay zero (no division by zero, no NaN). Memory: one float32 copy of X.
    """
    out = np.array(X, dtype=np.float32, copy=True)
    norms = np.linalg.norm(out, axis=-1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


def _check(queries: Any, corpus: Any, k: int, backend: str) -> tuple[np.ndarray, Any, int]:
    if backend not in BACKENDS:
        raise InvalidValueError(f"unknown search backend {backend!r}; valid choices: "
                                f"{', '.join(BACKENDS)}")
    q = np.asarray(queries, dtype=np.float32)
    if not hasattr(corpus, "shape"):
        corpus = np.asarray(corpus, dtype=np.float32)
    if q.ndim != 2 or getattr(corpus, "ndim", None) != 2 or q.shape[1] != corpus.shape[1]:
        raise InvalidValueError(f"queries and corpus must be (n, d) with one d; got {q.shape} "
                                f"and {getattr(corpus, 'shape', None)}")
    n = corpus.shape[0]
    if int(k) != k or not 1 <= k <= n:
        raise InvalidValueError(f"k must be an integer in [1, corpus rows={n}]; got {k!r}")
    return q, corpus, int(k)


def _pick(backend: str, n_corpus: int) -> str:
    if backend == "auto":
        return "exact" if n_corpus <= EXACT_MAX_CORPUS else "faiss"
    return backend


def _exact_searcher(corpus: Any, k: int) -> Callable[[np.ndarray], np.ndarray]:
    """A search over the corpus as float32 (a copy, O(n·d), unless it already is C-ordered
    float32, e.g. a float32 memmap); per call, score blocks of b queries
    with b·n·4 bytes ≤ BLOCK_BYTES, so peak grows as O(n·d + b·n + nq·k)."""
    C = np.ascontiguousarray(corpus, dtype=np.float32)
    block = max(1, BLOCK_BYTES // (4 * C.shape[0]))

    def search(q: np.ndarray) -> np.ndarray:
        out = np.empty((q.shape[0], k), dtype=np.int64)
        for s in range(0, q.shape[0], block):
            out[s:s + block] = nearest_columns(q[s:s + block] @ C.T, k)
        return out

    return search


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise MissingDataError("the faiss search backend needs the package faiss-cpu; install "
                               "it with pip install faiss-cpu") from None
    return faiss


def _faiss_searcher(corpus: Any, k: int) -> Callable[[np.ndarray], np.ndarray]:
    """An ``IndexFlatIP`` holding a float32 copy of the corpus (O(n·d)); a call's peak is
    O(nq·k) beyond it."""
    faiss = _faiss()
    C = np.ascontiguousarray(corpus, dtype=np.float32)
    index = faiss.IndexFlatIP(C.shape[1])
    index.add(C)

    def search(q: np.ndarray) -> np.ndarray:
        scores, rows = index.search(np.ascontiguousarray(q), k)
        if not np.all(np.isfinite(scores)):
            raise InvalidValueError("similarities are not finite: the vectors hold NaN or inf "
                                    "values")
        order = np.lexsort((rows, -scores), axis=1)             # equal scores: lower row first
        return np.take_along_axis(rows, order, axis=1).astype(np.int64)

    return search


def _searcher(corpus: Any, k: int, backend: str) -> Callable[[np.ndarray], np.ndarray]:
    make = _exact_searcher if backend == "exact" else _faiss_searcher
    return make(corpus, k)


def top_k(queries: Any, corpus: Any, k: int, backend: str = "auto") -> tuple[np.ndarray, str]:
    """The k corpus rows of largest inner product with each query, best first.

    Args:
        queries: (nq, d) float; corpus: (n, d) float (memmap allowed). Normalise both
            (:func:`normalize`) for cosine similarity.
        k: 1 <= k <= n.
        backend: ``"auto"`` (numpy up to :data:`EXACT_MAX_CORPUS` rows, FAISS above),
            ``"exact"`` or ``"faiss"``.

    Returns:
        (rows (nq, k) int64, the backend used: ``"exact"`` or ``"faiss"``).

    Memory: a float32 copy of the corpus (O(n·d)), plus O(b·n) score blocks for ``"exact"``
    (b queries per block, see :data:`EXACT_MAX_CORPUS`) and O(nq·k) for the answer.

    Raises:
        InvalidValueError: unknown backend, shapes that disagree, k out of range, NaN/inf.
        MissingDataError: ``"faiss"`` (or ``"auto"`` on a large corpus) without faiss-cpu.
    """
    q, corpus, k = _check(queries, corpus, k, backend)
    used = _pick(backend, corpus.shape[0])
    return _searcher(corpus, k, used)(q), used


def search_seconds(queries: Any, corpus: Any, k: int, backend: str = "auto",
                   repeats: int = 3) -> float:
    """Median wall-clock seconds per query of :func:`top_k`'s search (``time.perf_counter``).

    The corpus is prepared once (float32 copy, FAISS index) outside the timing, as a vector
    store holds its index; one untimed warm-up search runs first, then ``repeats`` timed
    searches of all queries; the median of those, divided by nq, is returned. Same shapes and
    memory as :func:`top_k`.
    """
    q, corpus, k = _check(queries, corpus, k, backend)
    if int(repeats) != repeats or repeats < 1:
        raise InvalidValueError(f"repeats must be an integer >= 1; got {repeats!r}")
    if q.shape[0] == 0:
        raise InvalidValueError("search_seconds needs at least one query")
    search = _searcher(corpus, k, _pick(backend, corpus.shape[0]))
    search(q)
    times = []
    for _ in range(int(repeats)):
        start = time.perf_counter()
        search(q)
        times.append(time.perf_counter() - start)
    return statistics.median(times) / q.shape[0]
