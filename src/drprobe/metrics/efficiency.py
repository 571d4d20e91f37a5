"""Efficient generalisation (SCIENCE.md): probe size, inference cost and the Pareto frontier.

Cost model: a linear probe on k features with C classes has (k + 1)·C parameters and costs
2·k·C FLOPs per example (each multiply-add counted as 2 FLOPs; the bias add is ignored).
A coordinate subset only gathers k neurons (free); a projection selector first multiplies the
d-dimensional feature by a d×k matrix, 2·d·k more FLOPs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from drprobe.errors import InvalidValueError, unknown
from drprobe.selectors import SELECTORS


def probe_params(k: Any, n_classes: int) -> Any:
    """(k + 1)·C weights and biases of a linear probe; k may be an int or an array."""
    out = (np.asarray(k, dtype=np.int64) + 1) * int(n_classes)
    return int(out) if out.ndim == 0 else out


def inference_flops(selector: str, d: int, k: Any, n_classes: int) -> Any:
    """FLOPs per example of selector + probe: 2kC, plus 2dk for projection selectors."""
    if selector not in SELECTORS:
        raise unknown("selector", selector, SELECTORS)
    kk = np.asarray(k, dtype=np.int64)
    if np.any(kk < 1) or np.any(kk > d):
        raise InvalidValueError(f"k {k!r} is outside the valid range [1, {d}]")
    flops = 2 * kk * int(n_classes)
    if SELECTORS[selector].kind == "projection":
        flops = flops + 2 * int(d) * kk
    return int(flops) if flops.ndim == 0 else flops


def pareto_frontier(cost: Any, acc: Any) -> np.ndarray:
    """Indices of the non-dominated points (lower cost and higher accuracy are better), by cost.

    A point is dominated when another has cost ≤ and accuracy ≥ with at least one strict.
    Exact duplicates of a frontier point are all kept; points with NaN are never on it.
    """
    c = np.asarray(cost, dtype=np.float64).ravel()
    a = np.asarray(acc, dtype=np.float64).ravel()
    if c.shape != a.shape:
        raise InvalidValueError(f"cost and acc must have the same length; got {c.size}, {a.size}")
    ok = np.flatnonzero(~(np.isnan(c) | np.isnan(a)))
    order = ok[np.lexsort((-a[ok], c[ok]))]  # by cost, then best accuracy first
    keep: list[int] = []
    best = -np.inf
    for i in order:
        if a[i] > best:
            keep.append(int(i))
            best = a[i]
        elif keep and a[i] == a[keep[-1]] and c[i] == c[keep[-1]]:
            keep.append(int(i))
    return np.asarray(keep, dtype=np.int64)
