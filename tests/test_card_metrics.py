"""The card's task metrics (recall/nDCG/MRR, k-NN, row-wise Spearman) and its top-k search,
each against an independent reference: scikit-learn, scipy, or a direct Python loop."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.metrics import ndcg_score
from sklearn.neighbors import KNeighborsClassifier

from drprobe.card import search
from drprobe.card.search import normalize, search_seconds, top_k
from drprobe.errors import InvalidValueError, MissingDataError
from drprobe.metrics import retrieval
from drprobe.metrics.retrieval import knn_correct, ranking_metrics, spearman_rows

# ----------------------------------------------------------------------------- ranking metrics

def _random_case(rng: np.random.Generator, n_queries: int, n_docs: int, max_rel: int = 3):
    """Graded qrels (every query has >= 1 relevant doc) and a full random ranking per query."""
    rows = []
    for q in range(n_queries):
        n_rel = rng.integers(1, n_docs // 2 + 1)
        for doc in rng.choice(n_docs, n_rel, replace=False):
            rows.append((q, doc, rng.integers(1, max_rel + 1)))
    ranked = np.stack([rng.permutation(n_docs) for _ in range(n_queries)])
    return ranked, np.array(rows, dtype=np.float64)


def _loop_reference(ranked, qrels, n_queries, k):
    """recall@k and MRR@k written out query by query."""
    relevant = {q: set() for q in range(n_queries)}
    for q, doc, _ in qrels:
        relevant[int(q)].add(int(doc))
    recall, mrr = [], []
    for q in range(n_queries):
        top = [int(d) for d in ranked[q, :k]]
        recall.append(sum(d in relevant[q] for d in top) / len(relevant[q]))
        rr = 0.0
        for rank, d in enumerate(top, start=1):
            if d in relevant[q]:
                rr = 1.0 / rank
                break
        mrr.append(rr)
    return np.array(recall), np.array(mrr)


@pytest.mark.parametrize("k", [1, 3, 10, 25])
def test_ranking_metrics_match_sklearn_and_a_loop(k):
    rng = np.random.default_rng(k)
    n_queries, n_docs = 15, 25
    ranked, qrels = _random_case(rng, n_queries, n_docs)
    got = ranking_metrics(ranked, qrels, n_queries, k=k)
    assert set(got) == {f"recall@{k}", f"ndcg@{k}", f"mrr@{k}"}

    # scikit-learn: y_true = graded relevance of every doc, y_score strictly decreasing along
    # our ranking (no ties, so its tie averaging never applies); its ideal DCG sorts y_true
    y_true = np.zeros((n_queries, n_docs))
    y_true[qrels[:, 0].astype(int), qrels[:, 1].astype(int)] = qrels[:, 2]
    y_score = np.zeros((n_queries, n_docs))
    for q in range(n_queries):
        y_score[q, ranked[q]] = np.arange(n_docs, 0, -1)
    want_ndcg = [ndcg_score(y_true[q:q + 1], y_score[q:q + 1], k=k) for q in range(n_queries)]
    np.testing.assert_allclose(got[f"ndcg@{k}"], want_ndcg, rtol=1e-12)

    recall, mrr = _loop_reference(ranked, qrels, n_queries, k)
    np.testing.assert_allclose(got[f"recall@{k}"], recall, rtol=1e-12)
    np.testing.assert_allclose(got[f"mrr@{k}"], mrr, rtol=1e-12)


def test_ndcg_uses_linear_gain_and_log2_discount():
    # one query, docs 0 (rel 2) and 5 (rel 1); ranking puts doc 5 first, doc 0 third
    ranked = np.array([[5, 7, 0, 1]])
    qrels = np.array([[0, 0, 2.0], [0, 5, 1.0]])
    got = ranking_metrics(ranked, qrels, 1, k=3)
    dcg = 1 / math.log2(2) + 2 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert got["ndcg@3"][0] == pytest.approx(dcg / idcg, rel=1e-12)
    assert got["mrr@3"][0] == 1.0 and got["recall@3"][0] == 1.0


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n_queries=st.integers(1, 8), n_docs=st.integers(2, 30),
       k=st.integers(1, 12))
def test_ranking_metrics_properties(seed, n_queries, n_docs, k):
    rng = np.random.default_rng(seed)
    ranked, qrels = _random_case(rng, n_queries, n_docs)
    k = min(k, n_docs)
    got = ranking_metrics(ranked, qrels, n_queries, k=k)
    recall, mrr = _loop_reference(ranked, qrels, n_queries, k)
    np.testing.assert_allclose(got[f"recall@{k}"], recall)
    np.testing.assert_allclose(got[f"mrr@{k}"], mrr)
    for v in got.values():
        assert np.all((v >= 0) & (v <= 1 + 1e-12))
    # the ideal ranking (relevant docs by decreasing relevance, then the rest) scores nDCG 1
    ideal = np.zeros_like(ranked)
    for q in range(n_queries):
        mine = qrels[qrels[:, 0] == q]
        best = mine[np.argsort(-mine[:, 2], kind="stable"), 1].astype(int)
        rest = [d for d in range(n_docs) if d not in set(best)]
        ideal[q] = np.concatenate([best, rest])
    np.testing.assert_allclose(ranking_metrics(ideal, qrels, n_queries, k=k)[f"ndcg@{k}"], 1.0)


def test_ranking_metrics_refusals():
    ranked = np.array([[0, 1, 2], [2, 1, 0]])
    with pytest.raises(InvalidValueError, match="no relevant document"):
        ranking_metrics(ranked, np.array([[0, 1, 1.0]]), 2, k=2)
    with pytest.raises(InvalidValueError, match="twice"):
        ranking_metrics(ranked, np.array([[0, 1, 1.0], [0, 1, 2.0], [1, 0, 1.0]]), 2, k=2)
    with pytest.raises(InvalidValueError, match="> 0"):
        ranking_metrics(ranked, np.array([[0, 1, 0.0], [1, 0, 1.0]]), 2, k=2)
    with pytest.raises(InvalidValueError, match="n_queries"):
        ranking_metrics(ranked, np.array([[0, 1, 1.0], [1, 0, 1.0]]), 2, k=4)
    with pytest.raises(InvalidValueError, match="twice within"):
        ranking_metrics(np.array([[0, 0], [1, 2]]), np.array([[0, 1, 1.0], [1, 0, 1.0]]), 2, k=2)


# ------------------------------------------------------------------------------------- k-NN

def test_knn_matches_sklearn_without_vote_ties():
    rng = np.random.default_rng(0)
    train = normalize(rng.normal(size=(300, 16)))
    test = normalize(rng.normal(size=(120, 16)))
    y_train = rng.integers(0, 2, 300)          # two classes, odd k: a vote is never tied
    y_test = rng.integers(0, 2, 120)
    for k in (1, 5, 11):
        ref = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
        want = ref.fit(train, y_train).predict(test) == y_test
        np.testing.assert_array_equal(knn_correct(train, y_train, test, y_test, k=k), want)


def _knn_loop(train, y_train, test, k):
    """Majority vote with ties to the class of the nearest tied neighbour, one row at a time."""
    preds = []
    for x in test:
        sims = train @ x
        order = sorted(range(len(train)), key=lambda j: (-sims[j], j))[:k]
        votes: dict = {}
        for j in order:
            votes[y_train[j]] = votes.get(y_train[j], 0) + 1
        top = max(votes.values())
        preds.append(next(y_train[j] for j in order if votes[y_train[j]] == top))
    return np.array(preds)


@pytest.mark.parametrize("k", [2, 4, 10])
def test_knn_tie_rule_matches_a_loop(k, monkeypatch):
    rng = np.random.default_rng(k)
    train = normalize(rng.normal(size=(80, 6)))
    test = normalize(rng.normal(size=(50, 6)))
    y_train = np.array(["a", "b", "c", "d"])[rng.integers(0, 4, 80)]
    y_test = np.array(["a", "b", "c", "d"])[rng.integers(0, 4, 50)]
    want = _knn_loop(train, y_train, test, k) == y_test
    np.testing.assert_array_equal(knn_correct(train, y_train, test, y_test, k=k), want)
    # blocks of a few rows give the same answer
    monkeypatch.setattr(retrieval, "BLOCK_BYTES", 4 * 80 * 3)
    np.testing.assert_array_equal(knn_correct(train, y_train, test, y_test, k=k), want)


def test_knn_tied_vote_goes_to_the_nearest_tied_class():
    train = normalize(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]))
    y_train = np.array([7, 3, 3, 7])
    test = normalize(np.array([[1.0, 0.05]]))
    # neighbours nearest first: 0 (7), 1 (3), 3 (7), 2 (3); k=2 and k=4 tie 1-1 / 2-2
    assert knn_correct(train, y_train, test, [7], k=2)[0]
    assert knn_correct(train, y_train, test, [7], k=4)[0]
    # equal similarities: the lower train row is the nearer one
    dup = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert knn_correct(dup, [5, 1], test, [5], k=2)[0]
    assert knn_correct(dup, [1, 5], test, [1], k=2)[0]


def test_knn_refusals():
    x = normalize(np.eye(3))
    with pytest.raises(InvalidValueError, match=r"k must be an integer in \[1, n_train=3\]"):
        knn_correct(x, [0, 1, 2], x, [0, 1, 2], k=4)
    with pytest.raises(InvalidValueError, match="one d"):
        knn_correct(x, [0, 1, 2], x[:, :2], [0, 1, 2], k=1)
    with pytest.raises(InvalidValueError, match="not finite"):
        knn_correct(x, [0, 1, 2], np.full((1, 3), np.nan), [0], k=1)


# ------------------------------------------------------------------------------- Spearman

def test_spearman_rows_match_scipy_with_ties():
    rng = np.random.default_rng(3)
    pred = rng.integers(0, 6, size=(9, 40)).astype(float)       # many ties
    gold = rng.normal(size=(9, 40)).round(1)
    got = spearman_rows(pred, gold)
    want = [stats.spearmanr(p, g).statistic for p, g in zip(pred, gold, strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert spearman_rows(pred[0], gold[0]).shape == (1,)


def test_spearman_constant_row_is_nan():
    got = spearman_rows(np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]]),
                        np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]))
    assert np.isnan(got[0]) and got[1] == pytest.approx(-1.0)


# ----------------------------------------------------------------------------------- search

def test_normalize_unit_rows_and_zero_rows_stay_zero():
    X = np.array([[3.0, 4.0], [0.0, 0.0], [-1.0, 0.0]])
    got = normalize(X)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [[0.6, 0.8], [0.0, 0.0], [-1.0, 0.0]], rtol=1e-6)
    assert np.all(np.isfinite(got))


@pytest.mark.parametrize("k", [1, 7, 60])
def test_exact_and_faiss_equal_a_brute_force_argsort(k, monkeypatch):
    rng = np.random.default_rng(k)
    corpus = normalize(rng.normal(size=(60, 24)))
    queries = normalize(rng.normal(size=(33, 24)))
    want = np.argsort(-(queries.astype(np.float64) @ corpus.T.astype(np.float64)), axis=1)[:, :k]
    exact, used = top_k(queries, corpus, k, backend="exact")
    assert used == "exact"
    np.testing.assert_array_equal(exact, want)
    fa, used = top_k(queries, corpus, k, backend="faiss")
    assert used == "faiss"
    np.testing.assert_array_equal(fa, want)
    monkeypatch.setattr(search, "BLOCK_BYTES", 4 * 60 * 5)          # five queries per block
    np.testing.assert_array_equal(top_k(queries, corpus, k, backend="exact")[0], want)


def test_ties_go_to_the_lower_corpus_row():
    corpus = np.ones((40, 3), dtype=np.float32)
    corpus[25] = 2.0                                                # the one clear winner
    rows, _ = top_k(np.ones((2, 3)), corpus, 5, backend="exact")
    np.testing.assert_array_equal(rows, [[25, 0, 1, 2, 3]] * 2)


def test_auto_switches_to_faiss_above_the_limit(monkeypatch):
    rng = np.random.default_rng(1)
    corpus, queries = rng.normal(size=(20, 4)), rng.normal(size=(3, 4))
    assert top_k(queries, corpus, 2)[1] == "exact"
    monkeypatch.setattr(search, "EXACT_MAX_CORPUS", 10)
    assert top_k(queries, corpus, 2)[1] == "faiss"
    monkeypatch.setitem(sys.modules, "faiss", None)                 # as if not installed
    with pytest.raises(MissingDataError, match="pip install faiss-cpu"):
        top_k(queries, corpus, 2)


def test_search_refusals_and_timing():
    corpus = np.eye(4)
    with pytest.raises(InvalidValueError, match="valid choices: auto, exact, faiss"):
        top_k(corpus, corpus, 2, backend="annoy")
    with pytest.raises(InvalidValueError, match=r"\[1, corpus rows=4\]"):
        top_k(corpus, corpus, 5)
    with pytest.raises(InvalidValueError, match="one d"):
        top_k(corpus[:, :3], corpus, 1)
    seconds = search_seconds(corpus, corpus, 2, backend="exact", repeats=3)
    assert isinstance(seconds, float) and seconds > 0
