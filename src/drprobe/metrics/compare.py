"""DR_δ and critical mass of a *variant* (several pretrained networks), and the difference between
two variants, with intervals that include pretraining-seed variance.

Data of one variant on one task: ``correct`` (P, S, F, N) bool — for each of P pretraining seeds
(networks), S probe seeds, F fractions (ascending, the last one 1.0: the full layer) and N test
examples, whether the probe got the example right. ``ks`` (F,) are the realised subset sizes.

Statistic. For network p the curve is acc_p(f) = mean over probe seeds of its test accuracy,
f*_p = min{f : acc_p(f) ≥ δ·acc_p(1)}, DR_p = 1 − f*_p and k*_p the k at f*_p
(:mod:`drprobe.metrics.redundancy`); ``dr_chance`` finds f* on the chance-corrected curve
(acc − c) / (acc(1) − c), c the variant's chance level. The variant's DR_δ (k*_δ) is the mean of
DR_p (k*_p) over its networks: each pretrained network has its own redundancy, the variant's is
their average.

Replicates: a hierarchical bootstrap. One replicate draws, with replacement, (1) P pretraining
seeds, (2) for each drawn seed, S probe seeds, (3) N test examples; the statistic is recomputed
on the resample. Two variants probed on the same test examples share draw (3)
(``paired_tests``); two variants that are the same networks on two tasks share draw (1)
(``paired_seeds``).

Intervals (``method``):

- ``"t"`` (default): a seed-level Student-t interval, value ± t_{ν, 1−α/2}·se. se is the
  standard deviation of the replicates with each arm's variance multiplied by P/(P − 1) (a
  bootstrap over P networks gives the plug-in variance, (P − 1)/P of the unbiased one); ν = P − 1
  for one variant or paired networks, P_a + P_b − 2 for two arms, and the normal quantile when
  ν < 1 (one network per arm: only probe seeds and test examples vary). Replicate covariances
  between the arms (shared test examples) enter se unscaled. The interval is clipped to the
  values the statistic (or difference) can take: [0, 1] for DR, [ks[0], ks[-1]] for k*.
- ``"percentile"``: the percentile interval of the replicates (the previous default).

Calibration (``tests/test_bootstrap_calibration.py``, docs/science.md): under a simulated null
with 5 networks per arm (DR_0.9 sd ≈ 0.07 across networks), the 95% ΔDR interval covered 0 in
96.0% of 3,000 studies with ``"t"``, 90.7% with ``"percentile"`` (3 per arm: 97.3%, 87.2%); t
is a little conservative, as resampling probes and examples repeats noise the networks' spread
already holds.

Memory: O(P·S·F·N) for the data plus O(chunk·(N + P·S·F)) per chunk of replicates; time
O(n_boot·P·S·F·N).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from drprobe.errors import InvalidValueError
from drprobe.metrics.redundancy import _SLACK, log_interp

__all__ = ["METHODS", "STATS", "Difference", "Draws", "Variant", "compare_difference",
           "compare_variants", "curve_stats", "difference", "difference_range", "draw",
           "interval", "network_stats", "replicate_curves", "replicate_stats", "spread_interval",
           "stat_range", "variant_interval"]

STATS = ("dr", "k_star", "dr_interp", "dr_chance")
METHODS = ("t", "percentile")
POWER = 0.8


@dataclass(frozen=True)
class Variant:
    """One variant on one task: ``correct`` (P, S, F, N) bool, ``fractions`` (F,) ascending and
    ending at 1.0, ``ks`` (F,) subset sizes; for ``dr_chance`` also ``n_classes`` (chance
    1/n_classes) or ``chance`` (e.g. the test set's majority-class rate, which wins)."""

    correct: np.ndarray
    fractions: np.ndarray
    ks: np.ndarray
    n_classes: int | None = None
    chance: float | None = None

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
        if self.n_classes is not None and int(self.n_classes) < 2:
            raise InvalidValueError(f"n_classes must be >= 2, got {self.n_classes!r}")
        if self.chance is not None and not 0.0 <= float(self.chance) < 1.0:
            raise InvalidValueError(f"chance must be in [0, 1), got {self.chance!r}")
        object.__setattr__(self, "correct", c)
        object.__setattr__(self, "fractions", f)
        object.__setattr__(self, "ks", k)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.correct.shape)  # type: ignore[return-value]

    @property
    def chance_level(self) -> float:
        """``chance`` if given, else 1 / ``n_classes``; a one-line error without either."""
        if self.chance is not None:
            return float(self.chance)
        if self.n_classes is None:
            raise InvalidValueError("dr_chance needs the chance level: give the Variant "
                                    "n_classes (chance 1/n_classes) or chance (e.g. the "
                                    "majority-class rate)")
        return 1.0 / int(self.n_classes)

    @property
    def has_chance(self) -> bool:
        return self.chance is not None or self.n_classes is not None


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
    """curves (..., F) accuracy per fraction -> (...) DR_δ, k*_δ, interpolated or chance-corrected
    DR_δ of each curve (``dr_interp`` = 1 − f* interpolated linearly in log f between the grid
    point below f*_δ and f*_δ, as
    :func:`~drprobe.metrics.redundancy.critical_fraction_interpolated`;
    ``dr_chance``: acc ≥ c + δ·(acc(1) − c), the same as (acc − c)/(acc(1) − c) ≥ δ)."""
    full = curves[..., -1:]
    if stat == "dr_chance":
        c = v.chance_level
        thr = c + delta * (full - c)
    else:
        thr = delta * full
    ok = curves >= thr - _SLACK
    ok[..., -1] = True  # the full layer always qualifies (also when it is below chance)
    first = ok.argmax(axis=-1)
    if stat in ("dr", "dr_chance"):
        return 1.0 - v.fractions[first]
    if stat == "k_star":
        return v.ks[first].astype(np.float64)
    below = np.maximum(first - 1, 0)
    s1 = np.take_along_axis(curves, first[..., None], -1)[..., 0]
    s0 = np.take_along_axis(curves, below[..., None], -1)[..., 0]
    f1, f0 = v.fractions[first], v.fractions[below]
    with np.errstate(divide="ignore", invalid="ignore"):
        f = log_interp(f0, f1, s0, s1, thr[..., 0])
    return 1.0 - np.where(first == 0, f1, f)


def _check(stat: str, delta: float) -> None:
    if stat not in STATS:
        raise InvalidValueError(f"unknown statistic {stat!r}; valid choices: {', '.join(STATS)}")
    if not (np.isfinite(delta) and 0 < delta <= 1):
        raise InvalidValueError(f"delta must be in (0, 1], got {delta!r}")


def network_stats(v: Variant, delta: float, stat: str = "dr") -> np.ndarray:
    """(P,) DR_δ (or k*_δ, ...) of each network of the variant, on all probe seeds and examples."""
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


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise InvalidValueError(f"unknown interval method {method!r}; valid choices: "
                                f"{', '.join(METHODS)}")


def _inflation(P: int) -> float:
    """P/(P − 1): the plug-in bootstrap variance over P networks to the unbiased one."""
    return P / (P - 1) if P > 1 else 1.0


def _quantile(prob: float, df: float) -> float:
    return float(sps.norm.ppf(prob) if not np.isfinite(df) else sps.t.ppf(prob, df))


@dataclass(frozen=True)
class Difference:
    """stat(a) − stat(b): the point ``diff`` (``a`` and ``b`` the two statistics), the bootstrap
    replicates of the difference ``reps`` (n,), the seed-corrected standard error ``se``, the
    t degrees of freedom ``df`` (inf: normal quantiles) and the ``bounds`` a difference can take
    (t intervals are clipped to them); see the module docstring."""

    diff: float
    a: float
    b: float
    reps: np.ndarray
    se: float
    df: float
    bounds: tuple[float, float] = (-np.inf, np.inf)

    def interval(self, ci: float = 0.95, method: str = "t") -> tuple[float, float]:
        """The interval at level ``ci`` (Bonferroni over m comparisons: ci = 1 − α/m)."""
        _check_method(method)
        if not 0.0 < ci < 1.0:
            raise InvalidValueError(f"need 0 < ci < 1; got ci={ci!r}")
        if method == "percentile":
            return interval(self.reps, ci)
        half = _quantile(1.0 - (1.0 - ci) / 2.0, self.df) * self.se
        lo, hi = self.bounds
        return max(lo, self.diff - half), min(hi, self.diff + half)

    def p_value(self, method: str = "t") -> float:
        """Two-sided p-value of "no difference", dual to :meth:`interval` (the level-(1 − α)
        interval excludes 0 when p < α): 2·P(T_df ≥ |diff|/se) for ``t``, the bootstrap
        2·min(share ≤ 0, share ≥ 0) capped at 1 for ``percentile``. se = 0: 1 if diff = 0."""
        _check_method(method)
        if method == "percentile":
            return min(1.0, 2.0 * min(float(np.mean(self.reps <= 0)),
                                      float(np.mean(self.reps >= 0))))
        if self.se == 0:
            return 1.0 if self.diff == 0 else 0.0
        z = abs(self.diff) / self.se
        return float(2.0 * (sps.norm.sf(z) if not np.isfinite(self.df) else sps.t.sf(z, self.df)))

    def min_detectable(self, alpha: float = 0.05, power: float = POWER,
                       method: str = "t") -> float:
        """The smallest |difference| a two-sided level-``alpha`` test detects with ``power``:
        (q_{1−α/2} + q_power)·se, q of t_df (``t``) or of the normal with the replicates' sd
        (``percentile``): ≈ 2.80·se at 5% and 80% with many degrees of freedom."""
        _check_method(method)
        if method == "percentile":
            sd = float(np.std(self.reps, ddof=1)) if len(self.reps) > 1 else 0.0
            return (_quantile(1 - alpha / 2, np.inf) + _quantile(power, np.inf)) * sd
        return (_quantile(1 - alpha / 2, self.df) + _quantile(power, self.df)) * self.se

    def summary(self, ci: float = 0.95, method: str = "t") -> dict[str, Any]:
        """The fields of :func:`compare_variants`."""
        low, high = self.interval(ci, method)
        return {"diff": self.diff, "low": low, "high": high, "a": self.a, "b": self.b,
                "p_le_0": float(np.mean(self.reps <= 0)), "p_ge_0": float(np.mean(self.reps >= 0)),
                "p_boot": self.p_value("percentile"), "p_value": self.p_value(method),
                "se": self.se, "df": self.df, "min_detectable": self.min_detectable(
                    1.0 - ci, method=method), "method": method}


def stat_range(v: Variant, stat: str) -> tuple[float, float]:
    """The values ``stat`` can take on ``v``: [ks[0], ks[-1]] for k_star, else [0, 1]."""
    return (float(v.ks[0]), float(v.ks[-1])) if stat == "k_star" else (0.0, 1.0)


def difference_range(a: Variant, b: Variant, stat: str) -> tuple[float, float]:
    """The values stat(a) − stat(b) can take (see :func:`stat_range`)."""
    (la, ha), (lb, hb) = stat_range(a, stat), stat_range(b, stat)
    return la - hb, ha - lb


def difference(a: float, b: float, reps_a: np.ndarray, reps_b: np.ndarray, Pa: int, Pb: int,
               paired_seeds: bool = False,
               bounds: tuple[float, float] = (-np.inf, np.inf)) -> Difference:
    """A :class:`Difference` from the two statistics and their replicates (drawn with the
    pairing the data has). se² = P/(P−1)·var(reps_a − reps_b) with df = P − 1 for paired
    networks; Pa/(Pa−1)·var(reps_a) + Pb/(Pb−1)·var(reps_b) − 2·cov(reps_a, reps_b) with
    df = Pa + Pb − 2 otherwise (df < 1: normal)."""
    ra, rb = np.asarray(reps_a, dtype=np.float64), np.asarray(reps_b, dtype=np.float64)
    reps = ra - rb
    if len(reps) < 2:
        se = 0.0
    elif paired_seeds:
        se = float(np.sqrt(_inflation(Pa) * np.var(reps, ddof=1)))
    else:
        cov = np.cov(ra, rb)
        var = _inflation(Pa) * cov[0, 0] + _inflation(Pb) * cov[1, 1] - 2 * cov[0, 1]
        se = float(np.sqrt(max(var, 0.0)))
    df = float(Pa - 1 if paired_seeds else Pa + Pb - 2)
    return Difference(float(a - b), float(a), float(b), reps, se, df if df >= 1 else np.inf,
                      bounds)


def spread_interval(value: float, reps: np.ndarray, P: int, ci: float = 0.95,
                    method: str = "t",
                    bounds: tuple[float, float] = (-np.inf, np.inf)) -> tuple[float, float]:
    """One variant's interval from its replicates: value ± t_{P−1}·√(P/(P−1))·sd(reps)
    (``t``; normal when P = 1) clipped to ``bounds``, or the percentile interval."""
    _check_method(method)
    if method == "percentile":
        return interval(reps, ci)
    sd = float(np.std(reps, ddof=1)) if len(reps) > 1 else 0.0
    half = _quantile(1 - (1 - ci) / 2, P - 1 if P > 1 else np.inf) * np.sqrt(_inflation(P)) * sd
    return max(bounds[0], value - half), min(bounds[1], value + half)


def variant_interval(v: Variant, delta: float, stat: str = "dr", n_boot: int = 1000,
                     ci: float = 0.95, random_state: Any = 0,
                     method: str = "t") -> dict[str, float]:
    """The variant's statistic (mean over networks) and its interval (module docstring).

    Returns dict: value, low, high, sd_seeds (standard deviation of the per-network values).
    """
    _check_boot(n_boot, ci)
    per_net = network_stats(v, delta, stat)
    P, S, _, N = v.shape
    reps = replicate_stats(v, delta, stat, draw(np.random.default_rng(random_state), n_boot,
                                                P, S, N))
    low, high = spread_interval(float(per_net.mean()), reps, P, ci, method, stat_range(v, stat))
    return {"value": float(per_net.mean()), "low": low, "high": high,
            "sd_seeds": float(per_net.std(ddof=1)) if P > 1 else float("nan")}


def compare_difference(
    a: Variant, b: Variant, delta: float, stat: str = "dr", *, n_boot: int = 1000,
    paired_tests: bool = True, paired_seeds: bool = False, random_state: Any = 0,
) -> Difference:
    """stat(a) − stat(b) with its replicates, as a :class:`Difference` (arguments as in
    :func:`compare_variants`); its intervals can be read at any level afterwards."""
    _check_boot(n_boot, 0.5)
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
    sa, sb = network_stats(a, delta, stat).mean(), network_stats(b, delta, stat).mean()
    return difference(sa, sb, replicate_stats(a, delta, stat, da),
                      replicate_stats(b, delta, stat, db), Pa, Pb, paired_seeds,
                      difference_range(a, b, stat))


def compare_variants(
    a: Variant, b: Variant, delta: float, stat: str = "dr", *, n_boot: int = 1000,
    ci: float = 0.95, paired_tests: bool = True, paired_seeds: bool = False,
    random_state: Any = 0, method: str = "t",
) -> dict[str, Any]:
    """stat(a) − stat(b) with a hierarchical bootstrap interval (module docstring).

    Args:
        paired_tests: both were probed on the same N test examples (same task): resample them
            together. Needs equal N.
        paired_seeds: both are the same P networks (e.g. one variant on two tasks): resample
            the networks together. Needs equal P.
        method: ``"t"`` (default, calibrated) or ``"percentile"``.

    Returns:
        dict: diff, low, high (interval), a, b (the two statistics), p_le_0 / p_ge_0 (shares of
        replicates ≤ 0 / ≥ 0: one-sided bootstrap p-values), p_boot (2·min of them, capped at
        1), p_value (two-sided, dual to the interval), se, df, min_detectable (the smallest
        |difference| found with 80% power at level 1 − ci) and method.
    """
    _check_boot(n_boot, ci)
    _check_method(method)
    return compare_difference(a, b, delta, stat, n_boot=n_boot, paired_tests=paired_tests,
                              paired_seeds=paired_seeds,
                              random_state=random_state).summary(ci, method)
