"""Nested feature maps (:class:`SubsetFamily`) and the subset sizes k probed on a d-wide layer.

For a fixed selector and seed, the k-feature map is the first k columns of one d x m basis;
the probe bank and the CKA code consume families so that all sizes k share one computation.
Home of the paper's fraction grid and of the default seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from drprobe.errors import InvalidValueError


def apply_basis(X: Any, indices: Any = None, components: Any = None, mean: Any = None) -> Any:
    """The one way a selector's map is applied: (n, d) -> (n, m).

    Columns ``indices`` (m,) of X for coordinate selectors, else ``(X - mean) @ components``
    with components (d, m) (``mean`` None: no centring). Works alike on numpy arrays, memmaps
    and torch tensors (pass the basis in the same kind as X); no copy beyond the result.
    """
    if indices is not None:
        return X[:, indices]
    return (X if mean is None else X - mean) @ components


@dataclass
class SubsetFamily:
    """Nested feature maps: the map of size k is the first k columns of one basis.

    Exactly one of ``indices`` / ``components`` is set.

    Attributes:
        selector: selector name, e.g. ``"random"`` or ``"pca_top"``.
        seed: the seed that drew the basis (0 for deterministic selectors).
        ks: sizes to evaluate, strictly increasing, each in [1, m].
        indices: (m,) int array, column order for coordinate selectors; size k keeps
            ``X[:, indices[:k]]``.
        components: (d, m) float array for projection selectors; size k computes
            ``(X - mean) @ components[:, :k]``.
        mean: (d,) float array subtracted before projecting (None = no centring).
        fractions: optional (len(ks),) fractions that produced ``ks`` (for reporting).
    """

    selector: str
    seed: int
    ks: list[int]
    indices: np.ndarray | None = None
    components: np.ndarray | None = None
    mean: np.ndarray | None = None
    fractions: list[float] | None = field(default=None)

    @property
    def width(self) -> int:
        """m, the number of basis columns (the largest usable k)."""
        if self.indices is not None:
            return len(self.indices)
        assert self.components is not None
        return int(self.components.shape[1])

    def transform(self, X: np.ndarray, k: int | None = None) -> np.ndarray:
        """Map features (n, d) to the first ``k`` basis coordinates (n, k); k=None gives all m."""
        k = self.width if k is None else k
        if self.indices is not None:
            return np.asarray(apply_basis(X, indices=self.indices[:k]))
        assert self.components is not None
        return np.asarray(apply_basis(X, components=self.components[:, :k], mean=self.mean))


# --------------------------------------------------------------------------- subset sizes

#: The paper's main fraction grid (SCIENCE.md).
PAPER_FRACTIONS: tuple[float, ...] = (
    0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 0.9, 1.0
)


#: The seeds of the seeded selectors when none are given (the paper uses 1-5).
DEFAULT_SEEDS: tuple[int, ...] = (1, 2, 3)


def _floor_fd(f: float, d: int) -> int:
    """⌊f·d⌋ robust to float error: 0.29·100 = 28.999999999999996 counts as 29."""
    x = f * d
    r = round(x)
    return int(r) if abs(x - r) <= 1e-9 * max(1.0, x) else math.floor(x)


def check_fraction(f: float) -> float:
    """``f`` as a float if it is a fraction of a layer's neurons, in (0, 1]: the one check of
    every fraction (configs, command-line options, :func:`resolve_ks`)."""
    f = float(f)
    if not (0.0 < f <= 1.0):
        raise InvalidValueError(f"fraction {f!r} is outside the valid range (0, 1]")
    return f


def probe_fractions(
    fractions: Sequence[float] | None = None, counts: Sequence[int] | None = None
) -> list[float]:
    """The fractions a layer is probed at, ascending: ``fractions`` plus the full layer (1.0);
    with neither fractions nor counts, the paper's grid :data:`PAPER_FRACTIONS` (which holds
    the full layer). The one home of that rule: the run, the dry run and the cost estimate
    call it; :func:`resolve_ks` checks them and resolves ``counts`` beside them."""
    if not fractions and not counts:
        fractions = PAPER_FRACTIONS
    return sorted({float(f) for f in fractions or ()} | {1.0})


def resolve_ks(
    d: int, fractions: Sequence[float] | None = None, counts: Sequence[int] | None = None
) -> tuple[list[int], list[float]]:
    """Subset sizes k = max(1, ⌊f·d⌋) for fractions, and/or absolute counts (fraction = k/d).

    Fractions are taken first, then counts; a k already produced keeps the first fraction that
    produced it. With neither given, the paper's grid (:func:`probe_fractions`) is used.
    Returns (ks ascending, fraction of each k).

    >>> resolve_ks(10, [0.3, 0.01, 0.05, 1.0])
    ([1, 3, 10], [0.01, 0.3, 1.0])
    """
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
        raise InvalidValueError(f"layer width d must be an integer >= 1; got {d!r}")
    if fractions is None and counts is None:
        fractions = probe_fractions()
    chosen: dict[int, float] = {}
    for f in fractions or ():
        f = check_fraction(f)
        chosen.setdefault(max(1, _floor_fd(f, d)), f)
    for c in counts or ():
        if isinstance(c, bool) or not float(c).is_integer() or not (1 <= c <= d):
            raise InvalidValueError(f"count {c!r} is outside the valid range [1, {d}] (integers)")
        chosen.setdefault(int(c), int(c) / d)
    ks = sorted(chosen)
    return ks, [chosen[k] for k in ks]

