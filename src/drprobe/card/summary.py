"""From per-item scores to the card's numbers: curves with intervals, critical masses, verdicts.

One bootstrap per task: B resamples of the test items (with replacement), shared by every curve
point, the full vectors and the critical masses, so differences along a curve are paired. Seeds
of random-k are averaged, not resampled (they are the strategy's own spread, shown separately).
A curve point's interval is the percentile interval of its replicates; the critical mass
k*_keep (smallest size whose quality is at least ``keep`` x full quality) gets the percentile
interval of the replicates' k* (:func:`drprobe.metrics.bootstrap_critical_mass`).

Memory: the resample indices (B x n int64) and one (B x P) replicate matrix for P curve points;
mean-type tasks go through an (n x P) score matrix, Spearman tasks through one (B x n) gather
at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from drprobe.card.strategies import STRATEGIES
from drprobe.card.tasks import TaskScores
from drprobe.errors import InvalidValueError
from drprobe.metrics import bootstrap_critical_mass, critical_mass
from drprobe.metrics.compare import interval
from drprobe.metrics.retrieval import spearman_rows

__all__ = ["DEFAULT_KEEPS", "SAFE_KEEP", "SERVE_KEEP", "TaskSummary", "summarize_task", "verdict"]

#: The shares of full quality the card looks for (99%, 95%, 90%).
DEFAULT_KEEPS: tuple[float, ...] = (0.99, 0.95, 0.90)
#: The share a recommended cut keeps (``truncate_dim``, ``--export auto``), and the share the
#: sizes offered to a server keep (``matryoshka_dimensions``).
SAFE_KEEP, SERVE_KEEP = 0.99, 0.95


class TaskSummary:
    """One task's tables.

    Attributes:
        task, metric: e.g. ``"knn"``, ``"accuracy"``.
        full: dict quality, low, high (and the task's other metrics) of the full vectors.
        curve: one row per (strategy, k): quality, low, high, seed_sd (spread over seeds).
        critical: one row per (strategy, keep): k_star, k_low, k_high (inf: not reached),
            quality at k_star, worst_group / worst_quality there and worst_full (the same
            group with the full vectors).
    """

    def __init__(self, task, metric, full, curve, critical):
        self.task, self.metric, self.full = task, metric, full
        self.curve, self.critical = curve, critical


def _replicates(scores: TaskScores, columns: list[list[np.ndarray]], idx: np.ndarray
                ) -> np.ndarray:
    """(B, P) replicate statistics of P curve points, each given as its seeds' item scores.

    Mean tasks: the seed-mean item score per column, weighted by each replicate's resample
    counts. Spearman tasks: the seed-mean of each seed's rho on the resampled pairs.
    """
    if scores.statistic == "mean":
        n = idx.shape[1]
        counts = np.zeros((idx.shape[0], n))
        np.add.at(counts, (np.arange(idx.shape[0])[:, None], idx), 1.0)
        return counts @ np.stack([np.mean(c, axis=0) for c in columns], axis=1) / n
    gold = scores.gold[idx]
    return np.stack([np.mean([spearman_rows(v[idx], gold) for v in c], axis=0)
                     for c in columns], axis=1)


def _quality(scores: TaskScores, per_seed: list[np.ndarray]) -> float:
    """The point estimate: mean over seeds of the statistic."""
    if scores.statistic == "mean":
        return float(np.mean(per_seed))
    return float(np.mean(spearman_rows(np.stack(per_seed), np.tile(scores.gold,
                                                                     (len(per_seed), 1)))))


def _worst(scores: TaskScores, v: np.ndarray) -> tuple[int | None, float]:
    """The group (its code) with the lowest mean item score, and that mean."""
    if scores.groups is None or scores.statistic != "mean":
        return None, float("nan")
    groups = np.asarray(scores.groups)
    means = {int(g): float(v[groups == g].mean()) for g in np.unique(groups)}
    g = min(means, key=means.get)
    return g, means[g]


def _group_name(scores: TaskScores, g: int) -> str:
    names = scores.group_names
    return names[g] if names is not None and g < len(names) else str(g)


def summarize_task(scores: TaskScores, keeps: Sequence[float] = DEFAULT_KEEPS,
                   n_boot: int = 500, ci: float = 0.95, seed: int = 0) -> TaskSummary:
    """Curves, full quality and critical masses of one task, with bootstrap intervals."""
    if n_boot < 1 or not 0.0 < ci < 1.0:
        raise InvalidValueError(f"need n_boot >= 1 and 0 < ci < 1; got {n_boot}, {ci}")
    n = len(scores.full)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    order = [s for s in STRATEGIES if any(p[0] == s for p in scores.points)]
    keys = sorted({(s, k) for s, _seed, k in scores.points},
                  key=lambda sk: (order.index(sk[0]), sk[1]))
    seeds = {key: sorted(sd for s, sd, k in scores.points if (s, k) == key) for key in keys}
    columns = [[scores.full]] + [[scores.points[(s, sd, k)] for sd in seeds[(s, k)]]
                                 for s, k in keys]
    rep = _replicates(scores, columns, idx)
    lo, hi = np.array([interval(rep[:, j], ci) for j in range(rep.shape[1])]).T
    full_q = _quality(scores, [scores.full])
    full = {"quality": full_q, "low": float(lo[0]), "high": float(hi[0]),
            **scores.extra.get("full", {})}
    rows = []
    for j, (strat, k) in enumerate(keys, start=1):
        per_seed = columns[j]
        extra = [scores.extra[(strat, sd, k)] for sd in seeds[(strat, k)]
                 if (strat, sd, k) in scores.extra]
        rows.append({
            "task": scores.task, "metric": scores.metric, "strategy": strat, "k": k,
            "quality": _quality(scores, per_seed), "low": float(lo[j]), "high": float(hi[j]),
            "seed_sd": float(np.std([_quality(scores, [v]) for v in per_seed])),
            "n_seeds": len(per_seed),
            **{m: float(np.mean([e[m] for e in extra])) for m in (extra[0] if extra else {})},
        })
    curve = pd.DataFrame(rows)
    crit = []
    for strat in dict.fromkeys(s for s, _k in keys):
        cols = [j for j, (s, _k) in enumerate(keys, start=1) if s == strat]
        ks = [keys[j - 1][1] for j in cols]
        qs = curve["quality"].to_numpy()[[j - 1 for j in cols]]
        for keep in keeps:
            k_star = critical_mass(ks, qs, full_q, keep)
            k_lo, k_hi = bootstrap_critical_mass(ks, rep[:, cols], rep[:, 0], keep, ci)
            row = {"task": scores.task, "strategy": strat, "keep": float(keep),
                   "k_star": float("nan") if k_star is None else float(k_star),
                   "k_low": k_lo, "k_high": k_hi, "quality": float("nan"),
                   "worst_group": None, "worst_quality": float("nan"), "worst_full": float("nan")}
            if k_star is not None:
                at = columns[cols[ks.index(k_star)]]
                row["quality"] = _quality(scores, at)
                g, worst = _worst(scores, np.mean(at, axis=0))
                if g is not None:
                    row["worst_group"], row["worst_quality"] = _group_name(scores, g), worst
                    row["worst_full"] = float(scores.full[np.asarray(scores.groups) == g].mean())
            crit.append(row)
    return TaskSummary(scores.task, scores.metric, full, curve, pd.DataFrame(crit))


def verdict(summary: TaskSummary, keep: float, d: int) -> str:
    """One line: how far each strategy cuts while keeping ``keep`` of full quality."""
    crit = summary.critical[np.isclose(summary.critical["keep"], keep)]
    widest = summary.curve.groupby("strategy")["k"].max()
    parts = [f"{r.strategy} to {int(r.k_star)}" if np.isfinite(r.k_star) else
             f"{r.strategy} never (measured up to {int(widest[r.strategy])})"
             for r in crit.itertuples(index=False)]
    return (f"{summary.task} ({summary.metric}, keeping {keep:.0%} of full "
            f"{summary.full['quality']:.3f}): " + ", ".join(parts) + f" (of {d})")
