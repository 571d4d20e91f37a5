"""δ-diffused redundancy (SCIENCE.md): critical fraction f*_δ, DR_δ = 1 − f*_δ, critical mass k*_δ.

A curve is a score per fraction f (mean test accuracy over seeds, or CKA with full score 1):

    f*_δ = min{f in the grid : score(f) ≥ δ·full}        (NaN if no grid point qualifies)

Chance-corrected DR (:func:`chance_corrected_dr`): the same f*_δ on (score − c)/(full − c), c the
chance accuracy (1/n_classes, or the majority-class rate).

Comparisons allow 1e-12 of float slack, so a score equal to δ·full up to rounding qualifies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from drprobe.errors import InvalidValueError

_SLACK = 1e-12
DEFAULT_DELTAS: tuple[float, ...] = (0.8, 0.9, 0.95, 0.99)


def _threshold(full_score: float, delta: float) -> float:
    full, delta = float(np.mean(full_score)), float(delta)
    if not (np.isfinite(delta) and delta > 0):
        raise InvalidValueError(f"delta {delta!r} must be a finite number > 0 (e.g. 0.9)")
    if not np.isfinite(full):
        raise InvalidValueError(f"full_score {full!r} must be finite")
    return delta * full


def _curve(grid: Sequence[float], scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """Grid (F,) and scores (F,) or (n_seeds, F) → grid ascending and the seed-mean score (F,)."""
    g = np.asarray(grid, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 2:
        s = s.mean(axis=0)
    if s.shape != g.shape or g.size == 0:
        raise InvalidValueError(
            f"scores of shape {np.shape(scores)} do not match a grid of {g.size} points"
        )
    order = np.argsort(g, kind="stable")
    return g[order], s[order]


def _passes(score: Any, thr: Any) -> Any:
    return np.asarray(score) >= np.asarray(thr) - _SLACK


def _first_at_or_above(s: np.ndarray, thr: float) -> int | None:
    ok = np.flatnonzero(_passes(s, thr))
    return int(ok[0]) if ok.size else None


def critical_fraction(
    fractions: Sequence[float], scores: Any, full_score: float, delta: float
) -> float:
    """f*_δ: the smallest grid fraction whose score is ≥ δ·full (NaN if none).

    ``scores``: (n_fracs,) seed-mean scores, or (n_seeds, n_fracs) which are averaged here.
    """
    f, s = _curve(fractions, scores)
    i = _first_at_or_above(s, _threshold(full_score, delta))
    return float("nan") if i is None else float(f[i])


def diffused_redundancy(
    fractions: Sequence[float], scores: Any, full_score: float, delta: float
) -> float:
    """DR_δ = 1 − f*_δ (NaN if no fraction reaches δ·full)."""
    return 1.0 - critical_fraction(fractions, scores, full_score, delta)


def critical_fraction_interpolated(
    fractions: Sequence[float], scores: Any, full_score: float, delta: float
) -> float:
    """f*_δ refined by linear interpolation in log f between grid neighbours.

    Between the grid point just below f*_δ (score < δ·full) and f*_δ itself, the curve is taken
    as a straight line in log f and the fraction where it meets δ·full is returned:
    f = exp(log f0 + (δ·full − s0)·(log f1 − log f0)/(s1 − s0)). Log f because fraction grids
    are geometric (0.01, 0.02, 0.05, 0.1, …) and accuracy grows roughly with log f, so a straight
    line in f between, say, 0.2 and 0.5 puts the crossing too far right. If f*_δ is the first
    grid point there is no point below to interpolate from, and f*_δ is returned as is (never
    extrapolated towards f = 0, where the score is unknown). NaN if no crossing.
    """
    f, s = _curve(fractions, scores)
    thr = _threshold(full_score, delta)
    i = _first_at_or_above(s, thr)
    if i is None:
        return float("nan")
    if i == 0:
        return float(f[0])
    return float(log_interp(f[i - 1], f[i], s[i - 1], s[i], thr))


def log_interp(f0: Any, f1: Any, s0: Any, s1: Any, thr: Any) -> Any:
    """The fraction where the straight line through (log f0, s0) and (log f1, s1) meets
    ``thr`` (scalars or arrays, broadcast)."""
    return np.exp(np.log(f0) + (thr - s0) * (np.log(f1) - np.log(f0)) / (s1 - s0))


def chance_level(n_classes: int | None = None, majority: float | None = None) -> float:
    """The accuracy of guessing: ``majority`` (the test set's majority-class rate) when given,
    else 1 / ``n_classes``."""
    if majority is not None:
        if not 0.0 <= float(majority) < 1.0:
            raise InvalidValueError(f"majority must be a rate in [0, 1), got {majority!r}")
        return float(majority)
    if n_classes is None or int(n_classes) < 2:
        raise InvalidValueError(f"chance needs n_classes >= 2 or a majority-class rate; got "
                                f"n_classes={n_classes!r}")
    return 1.0 / int(n_classes)


def chance_corrected(scores: Any, full_score: float, chance: float) -> np.ndarray:
    """Accuracy mapped to its share of the above-chance margin: (acc − chance) / (full − chance)
    (0 at chance, 1 at the full layer); needs full_score > chance."""
    full, c = float(np.mean(full_score)), float(chance)
    if not (np.isfinite(full) and np.isfinite(c) and full > c):
        raise InvalidValueError(f"the full-layer accuracy {full!r} must exceed the chance "
                                f"level {c!r} to correct for chance")
    return (np.asarray(scores, dtype=np.float64) - c) / (full - c)


def chance_corrected_dr(
    fractions: Sequence[float], scores: Any, full_score: float, delta: float, chance: float
) -> float:
    """DR_δ of the chance-corrected curve: 1 − min{f : (acc(f) − c)/(full − c) ≥ δ}.

    A task whose chance level c is high reaches δ·full with little signal; this asks for a
    share δ of the margin above chance instead. ``scores``: (n_fracs,) or (n_seeds, n_fracs)
    (the seed mean is taken before mapping, as for :func:`diffused_redundancy`).
    """
    f, s = _curve(fractions, scores)
    return diffused_redundancy(f, chance_corrected(s, full_score, chance), 1.0, delta)


def critical_mass(ks: Sequence[int], scores: Any, full_score: float, delta: float) -> int | None:
    """k*_δ: the smallest subset size whose score is ≥ δ·full (None if none)."""
    k, s = _curve(ks, scores)
    i = _first_at_or_above(s, _threshold(full_score, delta))
    return None if i is None else int(k[i])


def dr_summary(
    fractions: Sequence[float], ks: Sequence[int], scores_by_seed: Any, full_score: float,
    deltas: Sequence[float] = DEFAULT_DELTAS,
) -> list[dict[str, Any]]:
    """One row per δ: delta, f_star, f_star_interp, dr, k_star (None if not reached).

    ``scores_by_seed``: (n_seeds, n_fracs) (or (n_fracs,)); ``full_score``: scalar or per-seed
    array (averaged). ``ks`` gives the realised k of each fraction.
    """
    if len(ks) != len(fractions):
        raise InvalidValueError(f"got {len(ks)} ks for {len(fractions)} fractions; need one each")
    rows = []
    for delta in deltas:
        f_star = critical_fraction(fractions, scores_by_seed, full_score, delta)
        rows.append({
            "delta": float(delta),
            "f_star": f_star,
            "f_star_interp": critical_fraction_interpolated(
                fractions, scores_by_seed, full_score, delta
            ),
            "dr": 1.0 - f_star,
            "k_star": critical_mass(ks, scores_by_seed, full_score, delta),
        })
    return rows


def _resample_counts(rng: np.random.Generator, n_boot: int, n: int) -> np.ndarray:
    """(n_boot, n) multiplicities of a with-replacement resample of n items, per bootstrap."""
    draws = rng.integers(0, n, size=(n_boot, n)) + n * np.arange(n_boot)[:, None]
    return np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def bootstrap_dr(
    correct: Any, full_correct: Any, fractions: Sequence[float], delta: float,
    n_boot: int = 1000, ci: float = 0.95, random_state: Any = 0, chunk: int = 100,
) -> dict[str, float]:
    """Percentile-bootstrap CI of DR_δ over test examples and seeds (resampled with replacement).

    Args:
        correct: (n_seeds, n_fracs, n_test) bool, whether each probe got each example right.
        full_correct: (n_full, n_test) or (n_test,) for the full-layer probe(s). With
            n_full = n_seeds its rows are resampled with the same seeds (paired); any other
            n_full > 1 is resampled on its own; examples are always shared.
        fractions: (n_fracs,) the grid. delta, n_boot, ci, random_state: as named.
    Returns:
        dict with dr and f_star (point estimates), low / high (CI of DR) and f_star_low /
        f_star_high (CI of f*); bootstraps with no crossing count as DR = NaN and are ignored.
    """
    c = np.asarray(correct, dtype=bool)
    fc = np.atleast_2d(np.asarray(full_correct, dtype=bool))
    if c.ndim != 3 or fc.ndim != 2 or fc.shape[1] != c.shape[2]:
        raise InvalidValueError(
            f"correct must be (n_seeds, n_fracs, n_test) and full_correct (n_full, n_test);"
            f" got {c.shape} and {fc.shape}"
        )
    if not (0.0 < ci < 1.0) or n_boot < 1:
        raise InvalidValueError(f"need 0 < ci < 1 and n_boot >= 1; got ci={ci!r}, n_boot={n_boot!r}")
    f, _ = _curve(fractions, np.zeros(c.shape[1]))
    c = c[:, np.argsort(np.asarray(fractions, dtype=np.float64), kind="stable"), :]
    n_seeds, n_fracs, n_test = c.shape
    thr_delta = float(delta)
    f_point = critical_fraction(f, c.mean(axis=2), fc.mean(), delta)
    rng = np.random.default_rng(random_state)
    flat, full_flat = c.reshape(-1, n_test).astype(np.float64), fc.astype(np.float64)
    f_boot = np.empty(n_boot)
    for lo in range(0, n_boot, chunk):
        b = min(chunk, n_boot - lo)
        w = _resample_counts(rng, b, n_test) / n_test  # (b, n_test)
        v = _resample_counts(rng, b, n_seeds) / n_seeds  # (b, n_seeds)
        acc = np.einsum("sfb,bs->bf", (flat @ w.T).reshape(n_seeds, n_fracs, b), v)
        full_s = full_flat @ w.T  # (1 or n_seeds, b)
        if fc.shape[0] == n_seeds:
            full = np.einsum("sb,bs->b", full_s, v)
        elif fc.shape[0] == 1:
            full = full_s[0]
        else:
            vf = _resample_counts(rng, b, fc.shape[0]) / fc.shape[0]
            full = np.einsum("sb,bs->b", full_s, vf)
        ok = _passes(acc, (thr_delta * full)[:, None])
        f_boot[lo:lo + b] = np.where(ok.any(axis=1), f[ok.argmax(axis=1)], np.nan)
    alpha = 100.0 * (1.0 - ci) / 2.0
    if np.all(np.isnan(f_boot)):
        f_lo = f_hi = float("nan")
    else:
        f_lo, f_hi = (float(x) for x in np.nanpercentile(f_boot, [alpha, 100.0 - alpha]))
    return {
        "dr": 1.0 - f_point, "f_star": f_point, "low": 1.0 - f_hi, "high": 1.0 - f_lo,
        "f_star_low": f_lo, "f_star_high": f_hi,
    }


def bootstrap_critical_mass(
    ks: Sequence[int], curves: Any, full: Any, delta: float, ci: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of k*_δ over bootstrap replicates.

    Args:
        ks: (K,) sizes, ascending. curves: (B, K) each replicate's score per size.
        full: (B,) each replicate's full score. delta, ci: threshold and coverage.
    Returns:
        (low, high) order statistics of the replicates' k*_δ (no interpolation, so both are
        sizes of ``ks``); a replicate whose curve never reaches δ·full counts as k = inf, so a
        bound is inf when more than the tail's share of replicates never reach it.
    """
    k = np.asarray(ks, dtype=np.float64)
    c, f = np.asarray(curves, dtype=np.float64), np.asarray(full, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != k.size or f.shape != (c.shape[0],) or \
            np.any(np.diff(k) <= 0):
        raise InvalidValueError(f"need ascending ks (K,), curves (B, K) and full (B,); got "
                                f"{k.shape}, {c.shape}, {f.shape}")
    if not 0.0 < ci < 1.0:
        raise InvalidValueError(f"need 0 < ci < 1; got ci={ci!r}")
    ok = _passes(c, float(delta) * f[:, None])
    k_boot = np.where(ok.any(axis=1), k[ok.argmax(axis=1)], np.inf)
    alpha = 100.0 * (1.0 - ci) / 2.0
    lo, hi = np.percentile(k_boot, [alpha, 100.0 - alpha], method="inverted_cdf")
    return float(lo), float(hi)


def adaptive_critical_fraction(
    evaluate: Callable[[float], float], full_score: float, delta: float, lo: float = 0.0,
    hi: float = 1.0, tol: float = 0.01, grid: Sequence[float] = (0.01, 0.1, 0.5, 1.0),
    max_evals: int = 50,
) -> dict[str, Any]:
    """Locate f*_δ by bisection, evaluating the score only where the curve crosses δ·full.

    First ``evaluate`` runs on the grid points in (lo, hi] and on ``hi``. The bracket is
    b = the smallest evaluated fraction with score ≥ δ·full and a = the largest evaluated fraction
    below b (or ``lo``, never evaluated: at f = 0 there is no subset). Midpoints are then
    evaluated until b − a ≤ tol or ``max_evals`` is spent. The curve is assumed monotone; with
    noise, b stays the smallest passing fraction seen, so the search never leaves (a, b).

    Returns:
        dict: f_star (b, NaN if nothing passes), f_low (a), converged (bool), n_evals, and the
        evaluated points ``fractions`` / ``scores`` sorted by fraction.
    """
    if not (0.0 <= lo < hi <= 1.0) or tol <= 0:
        raise InvalidValueError(f"need 0 <= lo < hi <= 1 and tol > 0; got lo={lo}, hi={hi}, tol={tol}")
    thr = _threshold(full_score, delta)
    seen: dict[float, float] = {}

    def ev(frac: float) -> float:
        if frac not in seen:
            seen[frac] = float(evaluate(frac))
        return seen[frac]

    for g in sorted({float(x) for x in grid if lo < x <= hi} | {float(hi)}):
        ev(g)
    passing = [fr for fr, s in seen.items() if _passes(s, thr)]
    b = min(passing) if passing else float("nan")
    if passing:
        a = max([fr for fr in seen if fr < b], default=lo)
        while b - a > tol and len(seen) < max_evals:
            mid = (a + b) / 2.0
            a, b = (a, mid) if _passes(ev(mid), thr) else (mid, b)
    else:
        a = max(seen)
    pts = sorted(seen.items())
    return {
        "f_star": b, "f_low": a, "converged": bool(passing) and b - a <= tol,
        "n_evals": len(seen), "fractions": [p[0] for p in pts], "scores": [p[1] for p in pts],
    }
