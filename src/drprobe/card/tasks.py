"""The card's tasks: per-item quality of every (strategy, seed, size) cut on one task.

Every task turns embeddings into one score per test item, for the full vectors and for each cut,
so that one bootstrap over items gives intervals for every curve point, the full quality and the
critical mass alike (:mod:`drprobe.card.summary`):

``probe``      linear-probe classification: the probe bank on the kept coordinates (the
               analysis core, :func:`drprobe.analysis.layer.analyze_layer`: each strategy is
               fitted on the probe's training rows, L2 chosen on a tenth of them); per item 1 if
               the probe labels it right.
``knn``        k-nearest-neighbour classification by cosine on the cut, re-normalised vectors
               (test items against the training part); per item 1 if the vote is right.
``retrieval``  queries against the corpus by cosine on the cut, re-normalised vectors; per query
               nDCG@10 (the main score), recall@10 and MRR@10.
``sts``        semantic similarity: cosine of each pair on the cut, re-normalised vectors; the
               statistic is Spearman's rho with the gold scores (not a mean of items).

Cosine tasks cut first, then re-normalise (the order a vector store must follow:
:class:`drprobe.card.cut.Cut`). The strategies of the cosine tasks are fitted on the data's
``fit_part`` only (the training part when there is one).

Memory: the embeddings stay memory-mapped; one cut of the largest part at a time (n x k
float32), the kNN and search blocks of :mod:`drprobe.card.search` and
:mod:`drprobe.metrics.retrieval`, and one score per item per curve point (P x n float64 for P
points); the probe task adds the analysis core's working set (:mod:`drprobe.analysis.layer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from drprobe.analysis.layer import analyze_layer
from drprobe.card.data import CardData
from drprobe.card.search import normalize, top_k
from drprobe.card.strategies import STRATEGIES
from drprobe.errors import InvalidValueError
from drprobe.metrics.retrieval import knn_correct, ranking_metrics
from drprobe.probes import ProbeBank
from drprobe.selectors import SubsetFamily

__all__ = ["TASKS", "Point", "TaskScores", "available_tasks", "check_tasks", "run_task",
           "search_sides"]

#: task -> (its main metric, what the data must provide)
TASKS: dict[str, tuple[str, str]] = {
    "probe": ("accuracy", "labelled train and test parts"),
    "knn": ("accuracy", "labelled train and test parts"),
    "retrieval": ("ndcg@10", "queries, a corpus and relevance judgements"),
    "sts": ("spearman", "scored sentence pairs"),
}
KNN_K = 10
RETRIEVAL_K = 10

#: (strategy, seed, k): one curve point
Point = tuple[str, int, int]
#: selector name -> card strategy name
_STRATEGY_OF = {sel: strat for strat, sel in STRATEGIES.items()}


@dataclass
class TaskScores:
    """Per-item scores of one task.

    Attributes:
        task, metric: e.g. ``"retrieval"``, ``"ndcg@10"``.
        statistic: ``"mean"`` (quality = mean item score) or ``"spearman"`` (items are pairs).
        full: (n,) item scores of the full vectors (for ``"spearman"``: the pair cosines).
        points: (strategy, seed, k) -> (n,) item scores of that cut.
        gold: (n,) gold similarity (``"spearman"`` only).
        groups, group_names: (n,) group of each item (class of a test item, topic of a query)
            for the worst-group line, or None.
        extra: other metrics' mean per point and for the full vectors (``"full"``), e.g.
            recall@10 and MRR@10 of retrieval: {point or "full": {metric: value}}.
    """

    task: str
    metric: str
    statistic: str
    full: np.ndarray
    points: dict[Point, np.ndarray]
    gold: np.ndarray | None = None
    groups: np.ndarray | None = None
    group_names: list[str] | None = None
    extra: dict = field(default_factory=dict)


def available_tasks(data: CardData) -> list[str]:
    """The tasks ``data`` provides, in :data:`TASKS` order."""
    have = {"probe": data.classification is not None, "knn": data.classification is not None,
            "retrieval": data.retrieval is not None, "sts": data.pairs is not None}
    return [t for t in TASKS if have[t]]


def check_tasks(tasks: Sequence[str] | None, data: CardData) -> list[str]:
    """The tasks to run: all that ``data`` provides (None), or those named, each checked."""
    have = available_tasks(data)
    if tasks is None:
        if not have:
            raise InvalidValueError(f"data {data.spec!r} provides no task: it needs "
                                    "labels, queries with relevance or scored pairs")
        return have
    for t in tasks:
        if t not in TASKS:
            raise InvalidValueError(f"unknown task {t!r}; valid choices: {', '.join(TASKS)}")
        if t not in have:
            raise InvalidValueError(
                f"task {t!r} needs {TASKS[t][1]}; data {data.name!r} provides: "
                f"{', '.join(have) or 'none'}")
    if not tasks:
        raise InvalidValueError(f"no task given; valid choices: {', '.join(TASKS)}")
    return list(dict.fromkeys(tasks))


def _cut(family: SubsetFamily, X: np.ndarray, k: int) -> np.ndarray:
    """Cut then re-normalise (n, k) float32."""
    return normalize(family.transform(X, k))


def search_sides(task: str, data: CardData, parts: dict[str, np.ndarray]):
    """(queries, corpus) a search task runs: retrieval's queries against its corpus parts
    (concatenated, float32), kNN's test items against the training part; None for the tasks
    that search nothing (probe, sts)."""
    if task == "retrieval":
        r = data.retrieval
        return (np.asarray(parts[r.queries], dtype=np.float32),
                np.concatenate([np.asarray(parts[n], dtype=np.float32) for n in r.corpus]))
    if task == "knn":
        tr, te = data.classification
        return parts[te], parts[tr]
    return None


def _cosine_points(families: Sequence[SubsetFamily], score) -> dict[Point, np.ndarray]:
    """{(strategy, seed, k): score(family, k)} for every family and size."""
    return {(_STRATEGY_OF[f.selector], int(f.seed), int(k)): score(f, k)
            for f in families for k in f.ks}


def run_knn(data: CardData, parts: dict[str, np.ndarray],
            families: Sequence[SubsetFamily]) -> TaskScores:
    tr, te = data.classification
    ytr, yte = data.parts[tr].labels, data.parts[te].labels
    Xtr, Xte = parts[tr], parts[te]

    def score(f, k):
        return knn_correct(_cut(f, Xtr, k), ytr, _cut(f, Xte, k), yte, k=KNN_K).astype(float)

    full = knn_correct(normalize(Xtr), ytr, normalize(Xte), yte, k=KNN_K).astype(float)
    return TaskScores("knn", "accuracy", "mean", full, _cosine_points(families, score),
                      groups=yte, group_names=list(data.parts[te].classes))


def run_retrieval(data: CardData, parts: dict[str, np.ndarray],
                  families: Sequence[SubsetFamily]) -> TaskScores:
    r = data.retrieval
    Q, C = search_sides("retrieval", data, parts)
    main = f"ndcg@{RETRIEVAL_K}"
    extra: dict = {}

    def metrics(q, c):
        ranked, _backend = top_k(q, c, RETRIEVAL_K)
        return ranking_metrics(ranked, r.qrels, len(q), k=RETRIEVAL_K)

    def score(f, k):
        m = metrics(_cut(f, Q, k), _cut(f, C, k))
        extra[(_STRATEGY_OF[f.selector], int(f.seed), int(k))] = {n: float(v.mean()) for n, v in m.items()}
        return m[main]

    full_m = metrics(normalize(Q), normalize(C))
    extra["full"] = {n: float(v.mean()) for n, v in full_m.items()}
    points = _cosine_points(families, score)
    return TaskScores("retrieval", main, "mean", full_m[main], points, groups=r.query_groups,
                      group_names=r.group_names, extra=extra)


def _pair_cosines(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", A, B).astype(np.float64)


def run_sts(data: CardData, parts: dict[str, np.ndarray],
            families: Sequence[SubsetFamily]) -> TaskScores:
    p = data.pairs
    A, B = parts[p.first], parts[p.second]

    def score(f, k):
        return _pair_cosines(_cut(f, A, k), _cut(f, B, k))

    full = _pair_cosines(normalize(A), normalize(B))
    return TaskScores("sts", "spearman", "spearman", full, _cosine_points(families, score),
                      gold=np.asarray(p.scores, dtype=np.float64))


def run_probe(data: CardData, parts: dict[str, np.ndarray], strategies: Sequence[str],
              ks: Sequence[int], seeds: Sequence[int], progress: bool) -> TaskScores:
    """The probe bank on every strategy, size and seed (the analysis core)."""
    tr, te = data.classification
    ytr, yte = data.parts[tr].labels, data.parts[te].labels
    counts = [k for k in ks if k < int(parts[tr].shape[1])]
    res = analyze_layer(
        parts[tr], ytr, parts[te], yte, selectors=[STRATEGIES[s] for s in strategies],
        counts=counts or None, fractions=None if counts else [1.0], seeds=list(seeds),
        deltas=(0.9,), n_boot=1, bank=ProbeBank(keep_predictions=True, progress=progress),
        progress=progress).results
    d = int(parts[tr].shape[1])
    points = {(_STRATEGY_OF[r.selector], int(r.seed), int(r.k)):
              np.asarray(r.test_correct, dtype=float) for r in res.itertuples(index=False)}
    # the full vectors: every probe on all d original coordinates (PCA's rotation only if alone)
    whole = [v for (s, _seed, k), v in points.items() if k == d and s != "pca-k"]
    full = np.mean(whole or [v for (_s, _seed, k), v in points.items() if k == d], axis=0)
    return TaskScores("probe", "accuracy", "mean", full, points, groups=yte,
                      group_names=list(data.parts[te].classes))


def run_task(task: str, data: CardData, parts: dict[str, np.ndarray],
             families: Sequence[SubsetFamily], strategies: Sequence[str], ks: Sequence[int],
             seeds: Sequence[int], progress: bool = True) -> TaskScores:
    """Per-item scores of ``task`` for the full vectors and every family x size."""
    if task == "probe":
        return run_probe(data, parts, strategies, ks, seeds, progress)
    run = {"knn": run_knn, "retrieval": run_retrieval, "sts": run_sts}[task]
    return run(data, parts, families)
