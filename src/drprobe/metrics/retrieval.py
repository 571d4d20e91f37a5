"""Retrieval, k-NN and rank-correlation scores on plain arrays (the card's task metrics).

All three are pure functions: numpy in, numpy out, per query / per test row / per replicate,
so that the caller can bootstrap over the rows.

Ranking metrics at cut-off k, for one query with graded relevances rel(doc) > 0 (qrels) and a
ranked list r_1, r_2, ... (best first, rank i counted from 1):

* recall@k = |{relevant docs among r_1..r_k}| / |{relevant docs}|
* nDCG@k = DCG@k / IDCG@k with DCG@k = Σ_{i=1..k} rel(r_i) / log2(i + 1) (linear gain,
  rel = 0 for a document not in qrels) and IDCG@k the same sum over the query's relevances
  sorted in decreasing order (its best possible ranking), as trec_eval's ``ndcg_cut`` and the
  BEIR / MTEB evaluators compute it;
* MRR@k = 1 / (rank of the first relevant doc) when it is within the first k, else 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from drprobe.errors import InvalidValueError

__all__ = ["knn_correct", "nearest_columns", "ranking_metrics", "spearman_rows"]

#: The largest block of similarities (bytes) that k-NN holds at once.
BLOCK_BYTES = 64 * 2**20


def _ranked_rows(ranked: Any, n_queries: int, k: int) -> np.ndarray:
    r = np.asarray(ranked)
    if r.ndim != 2 or r.shape[0] != n_queries or r.shape[1] < k:
        raise InvalidValueError(
            f"ranked must be (n_queries={n_queries}, >= k={k}) corpus rows; got shape {r.shape}")
    if r.size and (not np.issubdtype(r.dtype, np.integer) or r.min() < 0):
        raise InvalidValueError("ranked must hold corpus row numbers (integers >= 0)")
    top = np.sort(r[:, :k], axis=1)
    if k > 1 and np.any(top[:, 1:] == top[:, :-1]):
        raise InvalidValueError(f"ranked lists a corpus row twice within the first k={k} of a query")
    return r[:, :k].astype(np.int64)


def _qrels(qrels: Any, n_queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q = np.asarray(qrels, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] != 3:
        raise InvalidValueError(f"qrels must be (m, 3): query row, corpus row, relevance; got {q.shape}")
    qry, doc, rel = q[:, 0], q[:, 1], q[:, 2]
    if not (np.all(qry == np.round(qry)) and np.all(doc == np.round(doc))):
        raise InvalidValueError("qrels query and corpus rows must be whole numbers")
    qry, doc = qry.astype(np.int64), doc.astype(np.int64)
    if qry.size and (qry.min() < 0 or qry.max() >= n_queries or doc.min() < 0):
        raise InvalidValueError(f"qrels query rows must lie in [0, {n_queries - 1}] and corpus "
                                "rows be >= 0")
    if not np.all(np.isfinite(rel)) or np.any(rel <= 0):
        raise InvalidValueError("qrels relevances must be finite and > 0 (leave non-relevant "
                                "pairs out)")
    missing = np.setdiff1d(np.arange(n_queries), qry)
    if missing.size:
        raise InvalidValueError(f"{missing.size} of {n_queries} queries have no relevant document "
                                f"in qrels (first: query {missing[0]}); drop them or add qrels")
    return qry, doc, rel


def ranking_metrics(ranked: Any, qrels: Any, n_queries: int, k: int = 10) -> dict[str, np.ndarray]:
    """recall@k, nDCG@k and MRR@k of each query (formulas in the module docstring).

    Args:
        ranked: (n_queries, >= k) int corpus rows, best first; only the first k columns count.
        qrels: (m, 3) float: query row, corpus row, relevance (> 0); every query needs at least
            one row, and a (query, corpus row) pair at most one.
        n_queries: number of queries.
        k: cut-off.

    Returns:
        ``{"recall@k": ..., "ndcg@k": ..., "mrr@k": ...}`` (k written out), each (n_queries,)
        float64.

    Memory: O(n_queries·k + m) (a sorted key per qrel; no n_queries × corpus table).

    Raises:
        InvalidValueError: bad shapes, a query with no relevant document (its scores would be
            undefined), a repeated (query, corpus row) pair or corpus row within a top k.
    """
    if int(k) != k or k < 1:
        raise InvalidValueError(f"k must be an integer >= 1; got {k!r}")
    k = int(k)
    top = _ranked_rows(ranked, n_queries, k)
    qry, doc, rel = _qrels(qrels, n_queries)
    width = int(max(doc.max(initial=0), top.max(initial=0))) + 1
    keys = qry * width + doc
    order = np.argsort(keys, kind="stable")
    keys, rel_sorted = keys[order], rel[order]
    if np.any(keys[1:] == keys[:-1]):
        raise InvalidValueError("qrels list a (query, corpus row) pair twice")

    # relevance of each retrieved document: look its key up among the qrels' keys
    wanted = np.arange(n_queries)[:, None] * width + top
    pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    found = keys[pos] == wanted
    gains = np.where(found, rel_sorted[pos], 0.0)                  # (n_queries, k)

    discount = 1.0 / np.log2(np.arange(2, k + 2))                   # rank i -> 1 / log2(i + 1)
    dcg = gains @ discount
    # ideal DCG: each query's relevances in decreasing order, the first k of them
    by_query = np.lexsort((-rel, qry))
    q_sorted, r_sorted = qry[by_query], rel[by_query]
    starts = np.searchsorted(q_sorted, q_sorted, side="left")
    place = np.arange(len(q_sorted)) - starts                       # 0-based rank within query
    keep = place < k
    idcg = np.bincount(q_sorted[keep], weights=r_sorted[keep] * discount[place[keep]],
                       minlength=n_queries)
    n_relevant = np.bincount(qry, minlength=n_queries).astype(np.float64)

    first = np.where(found.any(axis=1), found.argmax(axis=1) + 1, 0)
    mrr = np.where(first > 0, 1.0 / np.maximum(first, 1), 0.0)
    return {
        f"recall@{k}": found.sum(axis=1) / n_relevant,
        f"ndcg@{k}": dcg / idcg,
        f"mrr@{k}": mrr,
    }


def _labels(y: Any, n: int, what: str) -> np.ndarray:
    y = np.asarray(y).ravel()
    if y.size != n:
        raise InvalidValueError(f"{what} has {y.size} labels for {n} rows")
    return y


def knn_correct(train: Any, train_labels: Any, test: Any, test_labels: Any,
                k: int = 10) -> np.ndarray:
    """Whether cosine k-NN majority vote gets each test row right: (n_test,) bool.

    The vectors are taken as given unit-norm (normalise first): similarity is the inner
    product. Neighbours are ordered by decreasing similarity, equal similarities by lower
    train row. The vote goes to the most frequent class among the k neighbours; a tie between
    classes goes to the class of the nearest neighbour among the tied classes.

    Args:
        train: (n_train, d) float; train_labels (n_train,) any comparable labels.
        test: (n_test, d) float; test_labels (n_test,).
        k: neighbours, 1 <= k <= n_train.

    Memory: the similarities are computed for blocks of b test rows at a time, b·n_train·4
    bytes ≤ :data:`BLOCK_BYTES` (at least one row), so peak grows as O(b·n_train + n_test·k)
    beyond the inputs, never n_test·n_train.
    """
    tr = np.asarray(train, dtype=np.float32)
    te = np.asarray(test, dtype=np.float32)
    if tr.ndim != 2 or te.ndim != 2 or tr.shape[1] != te.shape[1]:
        raise InvalidValueError(f"train and test must be (n, d) with one d; got {tr.shape} and "
                                f"{te.shape}")
    n_train = tr.shape[0]
    if int(k) != k or not 1 <= k <= n_train:
        raise InvalidValueError(f"k must be an integer in [1, n_train={n_train}]; got {k!r}")
    k = int(k)
    classes, codes = np.unique(_labels(train_labels, n_train, "train"), return_inverse=True)
    y_test = _labels(test_labels, te.shape[0], "test")
    n_cls = len(classes)
    block = max(1, BLOCK_BYTES // (4 * max(n_train, 1)))
    correct = np.empty(te.shape[0], dtype=bool)
    for start in range(0, te.shape[0], block):
        sims = te[start:start + block] @ tr.T                       # (b, n_train)
        nbrs = nearest_columns(sims, k)                             # (b, k) nearest first
        nb_codes = codes[nbrs]
        b = nb_codes.shape[0]
        counts = np.zeros((b, n_cls), dtype=np.int64)
        np.add.at(counts, (np.repeat(np.arange(b), k), nb_codes.ravel()), 1)
        tied = counts == counts.max(axis=1, keepdims=True)          # (b, n_cls)
        first = tied[np.arange(b)[:, None], nb_codes].argmax(axis=1)  # nearest tied neighbour
        pred = classes[nb_codes[np.arange(b), first]]
        correct[start:start + b] = pred == y_test[start:start + b]
    return correct


def nearest_columns(sims: np.ndarray, k: int) -> np.ndarray:
    """Columns of the k largest entries of each row, largest first, equal values by lower column.

    sims (b, n) finite scores, 1 <= k <= n -> (b, k) int64. A partial selection
    (``argpartition``) finds the k; a row whose k-th largest value is shared with columns left
    out is redone with a stable sort so that the lower columns win there too. Memory: O(b·n)
    temporaries (the negated scores and a boolean mask) beyond ``sims``.

    Raises:
        InvalidValueError: a NaN or infinite score (from non-finite vectors).
    """
    if not np.all(np.isfinite(sims)):
        raise InvalidValueError("similarities are not finite: the vectors hold NaN or inf values")
    n = sims.shape[1]
    if k < n:
        cand = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    else:
        cand = np.broadcast_to(np.arange(n), sims.shape).copy()
    vals = np.take_along_axis(sims, cand, axis=1)
    kth = vals.min(axis=1, keepdims=True)
    ambiguous = np.flatnonzero((sims == kth).sum(axis=1) > (vals == kth).sum(axis=1))
    for row in ambiguous:
        cand[row] = np.argsort(-sims[row], kind="stable")[:k]
    vals = np.take_along_axis(sims, cand, axis=1)
    order = np.lexsort((cand, -vals), axis=1)
    return np.take_along_axis(cand, order, axis=1)


def spearman_rows(pred: Any, gold: Any) -> np.ndarray:
    """Spearman's rho of each row pair: pred, gold (b, n) (or (n,)) -> (b,) float64.

    rho is Pearson's correlation of the rows' ranks, tied values taking their average rank
    (as ``scipy.stats.spearmanr``). A row whose pred or gold values are all equal gives NaN.
    Memory: O(b·n) for the ranks.
    """
    p = np.atleast_2d(np.asarray(pred, dtype=np.float64))
    g = np.atleast_2d(np.asarray(gold, dtype=np.float64))
    if p.ndim != 2 or p.shape != g.shape or p.shape[1] < 2:
        raise InvalidValueError(f"pred and gold must be (b, n) of one shape with n >= 2; got "
                                f"{np.shape(pred)} and {np.shape(gold)}")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(g))):
        raise InvalidValueError("pred and gold must be finite (no NaN or inf)")
    rp = stats.rankdata(p, axis=1)
    rg = stats.rankdata(g, axis=1)
    rp -= rp.mean(axis=1, keepdims=True)
    rg -= rg.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(rp * rg, axis=1) / np.sqrt(np.sum(rp**2, axis=1) * np.sum(rg**2, axis=1))
