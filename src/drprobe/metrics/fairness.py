"""Per-class fairness of probes (SCIENCE.md "Fairness"): per-class accuracy, Gini, worst class.

Gini over classes: G = Σ_c Σ_c' |a_c − a_c'| / (2 C² ā), 0 when every class is equally accurate,
at most 1 − 1/C. With a sorted ascending, Σ_c Σ_c' |a_c − a_c'| = 2 Σ_i (2i − C + 1) a_(i)
(i from 0), which is how it is computed (O(C log C), no C×C matrix).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from drprobe.errors import InvalidValueError


def per_class_accuracy(y_true: Any, y_pred: Any, n_classes: int) -> np.ndarray:
    """Accuracy within each true class: (C,) for y_pred (n,), or (B, C) for y_pred (B, n).

    Classes absent from ``y_true`` get NaN. Labels must be integers in [0, n_classes).
    """
    yt = np.asarray(y_true).ravel()
    yp = np.asarray(y_pred)
    if yp.shape[-1] != yt.size or yp.ndim not in (1, 2):
        raise InvalidValueError(
            f"y_pred must be (n,) or (B, n) with n={yt.size}; got shape {yp.shape}"
        )
    if yt.size and (yt.min() < 0 or yt.max() >= n_classes):
        raise InvalidValueError(f"y_true labels must lie in [0, {n_classes - 1}]")
    totals = np.bincount(yt, minlength=n_classes).astype(np.float64)
    hits = np.atleast_2d(yp) == yt
    rows = np.stack([np.bincount(yt, weights=h, minlength=n_classes) for h in hits])
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(totals > 0, rows / np.where(totals > 0, totals, 1.0), np.nan)
    return acc[0] if yp.ndim == 1 else acc


def gini(a: Any) -> Any:
    """Gini coefficient over the last axis of per-class accuracies a (..., C), ≥ 0 entries.

    NaN entries (absent classes) are left out. All-equal (including all-zero) rows give 0;
    a row with no finite entry gives NaN. Returns a float for 1-D input, else an array (...).

    >>> round(float(gini([0.9, 0.8, 0.5, 0.2])), 12)
    0.25
    """
    x = np.asarray(a, dtype=np.float64)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise InvalidValueError(f"gini needs at least one class on the last axis; got {x.shape}")
    s = np.sort(x, axis=-1)  # NaN sorts last
    c = np.sum(~np.isnan(s), axis=-1, keepdims=True)
    i = np.arange(x.shape[-1])
    weights = np.where(i < c, 2 * i - c + 1, 0)
    # the weights sum to 0 over the finite entries, so measuring from the minimum changes
    # nothing exactly but makes all-equal rows give exactly 0 (no rounding residue)
    num = np.sum(weights * np.nan_to_num(s - s[..., :1]), axis=-1)
    tot = np.nansum(s, axis=-1) * c[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        g = np.where(tot > 0, num / np.where(tot > 0, tot, 1.0), 0.0)
    g = np.where(c[..., 0] > 0, g, np.nan)
    return float(g) if g.ndim == 0 else g


def worst_class(a: Any) -> tuple[Any, Any]:
    """(index, accuracy) of the least accurate class on the last axis, ignoring NaN.

    For a (C,) returns (int, float); for a (..., C) returns two arrays (...).
    """
    x = np.asarray(a, dtype=np.float64)
    if np.all(np.isnan(x), axis=-1).any():
        raise InvalidValueError("worst_class needs at least one non-NaN class accuracy per row")
    idx = np.nanargmin(x, axis=-1)
    acc = np.take_along_axis(x, np.expand_dims(idx, -1), axis=-1)[..., 0]
    if x.ndim == 1:
        return int(idx), float(acc)
    return idx, acc


def per_class_drop(a_sub: Any, a_full: Any) -> np.ndarray:
    """a_full − a_sub per class (positive = the subset probe is worse), broadcast (..., C)."""
    return np.asarray(a_full, dtype=np.float64) - np.asarray(a_sub, dtype=np.float64)


def gini_trend_test(
    fractions: Sequence[float], gini_by_seed: Any, full_gini_by_seed: Any
) -> dict[str, Any]:
    """Test "Gini rises as the fraction of neurons falls", paired by seed.

    Two one-sided tests of that alternative:
      * per seed, Spearman ρ between fraction and Gini (rising as f falls ⇒ ρ < 0); a sign test
        (binomial, p = 1/2) on how many seeds have ρ < 0;
      * Wilcoxon signed-rank on the paired differences Gini(f, seed) − Gini(full, seed) over
        all seeds and fractions, alternative "greater" (zero differences are dropped).

    Args:
        fractions: (F,). gini_by_seed: (n_seeds, F). full_gini_by_seed: (n_seeds,) or scalar.
    Returns:
        dict: spearman_rho (list per seed), mean_rho, n_negative_rho, sign_test_p,
        wilcoxon_statistic, wilcoxon_p, median_increase, direction ("rises as fraction falls",
        "falls as fraction falls" or "no clear trend"). NaN where a test is undefined.
    """
    f = np.asarray(fractions, dtype=np.float64).ravel()
    g = np.atleast_2d(np.asarray(gini_by_seed, dtype=np.float64))
    if g.shape[1] != f.size or f.size < 2:
        raise InvalidValueError(
            f"gini_by_seed must be (n_seeds, {f.size}) with >= 2 fractions; got {g.shape}"
        )
    full = np.broadcast_to(np.asarray(full_gini_by_seed, dtype=np.float64), (g.shape[0],))
    rhos = []
    for row in g:
        if np.ptp(row) == 0 or np.ptp(f) == 0:
            rhos.append(float("nan"))
        else:
            rhos.append(float(stats.spearmanr(f, row).statistic))
    r = np.asarray(rhos)
    valid = r[~np.isnan(r)]
    n_neg = int(np.sum(valid < 0))
    sign_p = (
        float(stats.binomtest(n_neg, valid.size, 0.5, alternative="greater").pvalue)
        if valid.size else float("nan")
    )
    diffs = (g - full[:, None]).ravel()
    diffs = diffs[~np.isnan(diffs)]
    if np.any(diffs != 0):
        w = stats.wilcoxon(diffs, alternative="greater", zero_method="wilcox")
        w_stat, w_p = float(w.statistic), float(w.pvalue)
    else:
        w_stat = w_p = float("nan")
    mean_rho = float(valid.mean()) if valid.size else float("nan")
    med = float(np.median(diffs)) if diffs.size else float("nan")
    if mean_rho < 0 and med > 0:
        direction = "rises as fraction falls"
    elif mean_rho > 0 and med < 0:
        direction = "falls as fraction falls"
    else:
        direction = "no clear trend"
    return {
        "spearman_rho": rhos, "mean_rho": mean_rho, "n_negative_rho": n_neg,
        "sign_test_p": sign_p, "wilcoxon_statistic": w_stat, "wilcoxon_p": w_p,
        "median_increase": med, "direction": direction,
    }
