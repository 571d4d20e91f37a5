"""DR_δ and critical mass of a *variant* (several pretrained networks), and the difference between
two variants, with intervals that include pretraining-seed variance.

Data of one variant on one task: ``correct`` (P, S, F, N) bool — for each of P pretraining seeds
(networks), S probe seeds, F fractions (ascending, the last one 1.0: the full layer) and N test
examples, whether the probe got the example right. ``ks`` (F,) are the realised subset sizes.

Statistic. For network p the curve is acc_p(f) = mean over probe seeds of its test accuracy,
f*_p = min{f : acc_p(f) ≥ δ·acc_p(1)}, DR_p = 1 − f*_p and k*_p the k at f*_p
(:mod:`drprobe.metrics.redundancy`). The variant's DR_δ (k*_δ) is the mean of DR_p (k*_p) over
its networks: each pretrained network has its own redundancy, the variant's is their average.

Interval: a hierarchical percentile bootstrap. One replicate draws, with replacement, (1) P
pretraining seeds, (2) for each drawn seed, S probe seeds, (3) N test examples; the statistic is
recomputed on the resample. Two variants probed on the same test examples share draw (3)
(``paired_tests``); two variants that are the same networks on two tasks share draw (1)
(``paired_seeds``). The difference's interval is the percentile interval of the replicate
differences. With P = 1 this is the usual bootstrap over probe seeds × test examples.

Memory: O(P·S·F·N) for the data plus O(chunk·(N + P·S·F)) per chunk of replicates; time
O(n_boot·P·S·F·N).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from drprobe.errors import InvalidValueError
from drprobe.metrics.redundancy import _SLACK

__all__ = ["STATS", "Draws", "Variant", "compare_variants", "curve_stats", "draw", "interval",
           "network_stats", "replicate_curves", "replicate_stats", "variant_interval"]

STATS = ("dr", "k_star", "dr_interp")


@dataclass(frozen=True)
class Variant:
    """One variant on one task: ``correct`` (P, S, F, N) bool, ``fractions`` (F,) ascending and
    ending at 1.0, ``ks`` (F,) subset sizes."""

    correct: np.ndarray
    fractions: np.ndarray
    ks: np.ndarray

    def __post_init__(self) -> None:
        c = np.asarray(self.correct, dtype=bool)
        f = np.asarray(self.fractions, dtype=np.float64)
        k = np.asarray(self.ks, dtype=np.int64)
        if c.ndim != 4 or c.shape[2] != f.size or f.shape != k.shape or min(c.shape) == 0:
            raise InvalidValueError(
                f"a variant needs correct (P, S, F, N), fractions (F,) and ks (F,); got "
                f"{c.shape}, {f.shape}, {k.shape}")
        if np.any(np.diff(f) <= 0) or not np.isclose(f[-1], 1.0):
            raise InvalidValueError(f"fractions must be increasing and end at 1.0 (the full "
                                    f"layer); got {f.tolist()}")
        object.__setattr__(self, "correct", c)
        object.__setattr__(self, "fractions", f)
        object.__setattr__(self, "ks", k)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.correct.shape)  # type: ignore[return-value]


@dataclass(frozen=True)
class Draws:
    """Resampling indices of ``n`` replicates: ``seeds`` (n, P), ``probes`` (n, P, S) — the
    probe seeds of the j-th drawn network — and ``tests`` (n, N)."""

    seeds: np.ndarray
    probes: np.ndarray
    tests: np.ndarray


def draw(rng: np.random.Generator, n: int, P: int, S: int, N: int) -> Draws:
    """``n`` hierarchical resamples (with replacement) of P seeds, S probe seeds, N examples."""
    return Draws(rng.integers(0, P, (n, P)), rng.integers(0, S, (n, P, S)),
                 rng.integers(0, N, (n, N)))


def _stat_from_curves(curves: np.ndarray, v: Variant, delta: float, stat: str) -> np.ndarray:
    """curves (..., F) accuracy per fraction -> (...) DR_δ, k*_δ or interpolated DR_δ of each
    curve (``dr_interp`` = 1 − f* interpolated linearly in f between the grid point below f*_δ
    and f*_δ, as :func:`~drprobe.metrics.redundancy.critical_fraction_interpolated`)."""
    thr = delta * curves[..., -1:]
    ok = curves >= thr - _SLACK  # the last column always passes
    first = ok.argmax(axis=-1)
    if stat == "dr":
        return 1.0 - v.fractions[first]
    if stat == "k_star":
        return v.ks[first].astype(np.float64)
    below = np.maximum(first - 1, 0)
    s1 = np.take_along_axis(curves, first[..., None], -1)[..., 0]
    s0 = np.take_along_axis(curves, below[..., None], -1)[..., 0]
    f1, f0 = v.fractions[first], v.fractions[below]
    with np.errstate(divide="ignore", invalid="ignore"):
        f = f0 + (thr[..., 0] - s0) * (f1 - f0) / (s1 - s0)
    return 1.0 - np.where(first == 0, f1, f)


def _check(stat: str, delta: float) -> None:
    if stat not in STATS:
        raise InvalidValueError(f"unknown statistic {stat!r}; valid choices: {', '.join(STATS)}")
    if not (np.isfinite(delta) and 0 < delta <= 1):
        raise InvalidValueError(f"delta must be in (0, 1], got {delta!r}")


def network_stats(v: Variant, delta: float, stat: str = "dr") -> np.ndarray:
    """(P,) DR_δ (or k*_δ) of each network of the variant, on all probe seeds and examples."""
    _check(stat, delta)
    return _stat_from_curves(v.correct.mean(axis=(1, 3)), v, delta, stat)


def replicate_curves(v: Variant, draws: Draws, chunk: int = 200) -> np.ndarray:
    """(n, P, F) the accuracy curve of each drawn network in each resample of ``draws``: the
    mean over its drawn probe seeds of the accuracy on the drawn test examples."""
    P, S, F, N = v.shape
    flat = v.correct.reshape(P * S * F, N).astype(np.float64)
    n = len(draws.tests)
    out = np.empty((n, P, F))
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        b = hi - lo
        idx = draws.tests[lo:hi] + N * np.arange(b)[:, None]
        w = np.bincount(idx.ravel(), minlength=b * N).reshape(b, N) / N  # (b, N)
        acc = (flat @ w.T).T.reshape(b, P, S, F)
        rows = np.arange(b)[:, None, None]
        out[lo:hi] = acc[rows, draws.seeds[lo:hi, :, None], draws.probes[lo:hi]].mean(axis=2)
    return out


def curve_stats(curves: np.ndarray, v: Variant, delta: float, stat: str = "dr") -> np.ndarray:
    """(n,) the variant's statistic per resample from :func:`replicate_curves` output."""
    _check(stat, delta)
    return _stat_from_curves(curves, v, delta, stat).mean(axis=-1)


def replicate_stats(v: Variant, delta: float, stat: str, draws: Draws,
                    chunk: int = 200) -> np.ndarray:
    """(n,) the variant's statistic on each resample of ``draws`` (see the module docstring)."""
    _check(stat, delta)
    return curve_stats(replicate_curves(v, draws, chunk), v, delta, stat)


def interval(values: np.ndarray, ci: float) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates ``values`` at level ``ci``."""
    alpha = 100.0 * (1.0 - ci) / 2.0
    low, high = np.percentile(values, [alpha, 100.0 - alpha])
    return float(low), float(high)


def _check_boot(n_boot: int, ci: float) -> None:
    if not (0.0 < ci < 1.0) or int(n_boot) < 1:
        raise InvalidValueError(f"need 0 < ci < 1 and n_boot >= 1; got ci={ci!r}, n_boot={n_boot!r}")


def variant_interval(v: Variant, delta: float, stat: str = "dr", n_boot: int = 1000,
                     ci: float = 0.95, random_state: Any = 0) -> dict[str, float]:
    """The variant's statistic (mean over networks) and its hierarchical bootstrap interval.

    Returns dict: value, low, high, sd_seeds (standard deviation of the per-network values).
    """
    _check_boot(n_boot, ci)
    per_net = network_stats(v, delta, stat)
    P, S, _, N = v.shape
    reps = replicate_stats(v, delta, stat, draw(np.random.default_rng(random_state), n_boot,
                                                P, S, N))
    low, high = interval(reps, ci)
    return {"value": float(per_net.mean()), "low": low, "high": high,
            "sd_seeds": float(per_net.std(ddof=1)) if P > 1 else float("nan")}


def compare_variants(
    a: Variant, b: Variant, delta: float, stat: str = "dr", *, n_boot: int = 1000,
    ci: float = 0.95, paired_tests: bool = True, paired_seeds: bool = False,
    random_state: Any = 0,
) -> dict[str, float]:
    """stat(a) − stat(b) with a hierarchical bootstrap interval (module docstring).

    Args:
        paired_tests: both were probed on the same N test examples (same task): resample them
            together. Needs equal N.
        paired_seeds: both are the same P networks (e.g. one variant on two tasks): resample
            the networks together. Needs equal P.

    Returns:
        dict: diff, low, high (interval of the difference), a, b (the two statistics), and
        p_le_0 (share of replicates with difference ≤ 0: a one-sided bootstrap p-value for
        "a > b").
    """
    _check_boot(n_boot, ci)
    (Pa, Sa, _, Na), (Pb, Sb, _, Nb) = a.shape, b.shape
    if paired_tests and Na != Nb:
        raise InvalidValueError(f"paired_tests needs the same test examples; got {Na} and {Nb} "
                                "(pass paired_tests=False for different tasks)")
    if paired_seeds and Pa != Pb:
        raise InvalidValueError(f"paired_seeds needs the same networks; got {Pa} and {Pb}")
    rng = np.random.default_rng(random_state)
    da = draw(rng, n_boot, Pa, Sa, Na)
    db = draw(rng, n_boot, Pb, Sb, Nb)
    db = Draws(da.seeds if paired_seeds else db.seeds, db.probes,
               da.tests if paired_tests else db.tests)
    diff = replicate_stats(a, delta, stat, da) - replicate_stats(b, delta, stat, db)
    sa, sb = network_stats(a, delta, stat).mean(), network_stats(b, delta, stat).mean()
    low, high = interval(diff, ci)
    return {"diff": float(sa - sb), "low": low, "high": high, "a": float(sa), "b": float(sb),
            "p_le_0": float(np.mean(diff <= 0))}
