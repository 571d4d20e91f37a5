"""Selectors: maps from a d-neuron layer to k features (random subsets, prefixes, PCA, projections).

Every selector family is *nested*: for a fixed selector and seed, the k-feature map is the first k
columns of one d x m basis. :class:`SubsetFamily` is that basis; the probe bank and the CKA code
consume families so that all sizes k of one family share one computation.

The contract every selector declares (what it yields, seeded, labels, its wide-layer route) is
:mod:`~drprobe.selectors.base`; the classes live in :mod:`~drprobe.selectors.estimators` and
:mod:`~drprobe.selectors.greedy`, the registry :data:`SELECTORS` and the questions asked of a
selector by name (:func:`is_seeded`, :func:`wide_refusal`) in :mod:`~drprobe.selectors.registry`,
the family and the subset sizes in :mod:`~drprobe.selectors.family`. This module holds
:func:`make_family`, the one feature-space entry, and the headline-selector rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any

import numpy as np

from drprobe.errors import InvalidValueError
from drprobe.selectors.base import YIELDS, Selector, need_labels
from drprobe.selectors.estimators import (
    PCALeast,
    PCATop,
    PrefixSubset,
    RandomProjectionGauss,
    RandomProjectionUniform,
    RandomSubset,
    VarianceRanked,
    WeightNormRanked,
)
from drprobe.selectors.family import (
    DEFAULT_SEEDS,
    PAPER_FRACTIONS,
    SubsetFamily,
    apply_basis,
    resolve_ks,
)
from drprobe.selectors.greedy import GreedyForward
from drprobe.selectors.pca import clip_to_rank
from drprobe.selectors.registry import (
    SELECTORS,
    is_seeded,
    register_selector,
    selector_class,
    wide_refusal,
    wide_selectors,
)

__all__ = [
    "DEFAULT_SEEDS", "HEADLINE_SELECTOR", "PAPER_FRACTIONS", "SELECTORS", "YIELDS",
    "GreedyForward", "PCALeast", "PCATop", "PrefixSubset", "RandomProjectionGauss",
    "RandomProjectionUniform", "RandomSubset", "Selector", "SubsetFamily", "VarianceRanked",
    "WeightNormRanked", "apply_basis", "headline_selector", "is_seeded", "make_family",
    "register_selector", "resolve_ks", "selector_class", "wide_refusal", "wide_selectors",
]


#: The selector whose curves are the headline (and whose k = d probes give the full-layer
#: accuracy) when a run has it; otherwise the run's first selector.
HEADLINE_SELECTOR = "random"


def headline_selector(selectors: Iterable[str]) -> str:
    """The headline selector among ``selectors`` (in order): ``random`` if present, else the
    first one."""
    names = list(dict.fromkeys(selectors))
    return HEADLINE_SELECTOR if HEADLINE_SELECTOR in names else names[0]


def make_family(
    name: str, X_train: Any, ks: Sequence[int], seed: int = 0, y_train: Any = None,
    X_val: Any = None, y_val: Any = None, fractions: Sequence[float] | None = None,
    cross: Any = None,
) -> SubsetFamily:
    """Fit selector ``name`` once at width m = max(ks) on X_train (n, d) and wrap it as a family.

    PCA families keep sizes within the non-null rank r of the centred training features (sizes
    k ≥ r become one size r with fraction r/d: :func:`~drprobe.selectors.pca.clip_to_rank`).

    ``cross``: optional :class:`~drprobe.metrics.cka.CrossProductStats` of X_train, reused by
    the PCA selectors. The family's seed is ``seed`` for seeded selectors (:func:`is_seeded`;
    greedy is seeded when it draws its own validation split), else 0. The class's declaration
    decides the call: ``fit(X, y, X_val=, y_val=)`` for a selector that uses a validation split,
    ``fit(X, y, cross=)`` for PCA, else ``fit(X, y)``.
    """
    cls = selector_class(name)
    d = int(X_train.shape[1])
    ks = [int(k) for k in ks]
    if not ks or ks[0] < 1 or ks[-1] > d or any(b <= a for a, b in pairwise(ks)):
        raise InvalidValueError(f"ks must be strictly increasing integers in [1, {d}]; got {ks}")
    if fractions is not None and len(fractions) != len(ks):
        raise InvalidValueError(f"got {len(fractions)} fractions for {len(ks)} ks; need one each")
    if cls.needs_labels:
        need_labels(name, y_train)
    est = cls(n_components=ks[-1], random_state=seed)
    extra: dict[str, Any] = {}
    if cls.uses_validation:
        extra.update(X_val=X_val, y_val=y_val)
    if cls.yields == "pca":
        extra.update(cross=cross)
    est.fit(X_train, y_train, **extra)
    if cls.yields == "pca" and est.components_.shape[1] < ks[-1]:
        # sizes beyond the non-null rank would add zero-variance directions
        ks, fractions = clip_to_rank(ks, fractions, est.components_.shape[1], d)
    seeded = is_seeded(name, with_validation=X_val is not None)
    fam_seed = int(seed) if seeded and seed is not None else 0
    fracs = None if fractions is None else [float(f) for f in fractions]
    if cls.yields == "coordinate":
        return SubsetFamily(name, fam_seed, ks, indices=np.asarray(est.indices_), fractions=fracs)
    mean = est.mean_ if cls.yields == "pca" else None
    return SubsetFamily(name, fam_seed, ks, components=est.components_, mean=mean, fractions=fracs)
