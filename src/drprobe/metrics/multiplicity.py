"""Multiplicity adjustments of p-values over a family of comparisons (pure functions).

Holm's step-down procedure controls the family-wise error rate; Benjamini–Hochberg the false
discovery rate. Both return adjusted p-values in the input's order: a comparison is significant
at level α after adjustment when its adjusted p-value is below α.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats as sps

from drprobe.errors import InvalidValueError

__all__ = ["benjamini_hochberg", "holm"]


def _pvalues(pvalues: Any) -> np.ndarray:
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1 or np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise InvalidValueError(f"p-values must be a 1-D array of numbers in [0, 1]; got "
                                f"{np.asarray(pvalues).tolist()!r}")
    return p


def holm(pvalues: Any) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control), in the input's order:
    with p_(1) ≤ … ≤ p_(m), adj_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j))."""
    p = _pvalues(pvalues)
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.maximum.accumulate(stepped)
    return out


def benjamini_hochberg(pvalues: Any) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (false-discovery-rate control), in the input's
    order (:func:`scipy.stats.false_discovery_control`)."""
    p = _pvalues(pvalues)
    return sps.false_discovery_control(p, method="bh") if p.size else p
