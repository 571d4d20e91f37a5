"""The selector contract: what a selector yields, what it needs, and how a wide layer runs it.

Every selector is a scikit-learn estimator (``n_components`` = k, ``random_state`` = seed) that
declares, as class attributes, everything the two paths of an analysis need to know:

``yields``
    ``"coordinate"``: a nested neuron order (``indices_``, (k,)); ``"pca"``: principal
    directions of the centred training features (``components_`` (d, k), ``mean_`` (d,)),
    top or least variance first by ``least``; ``"projection"``: a data-free projection
    (``components_``), drawn by the kind ``draws`` of :mod:`drprobe.selectors.projections`.
``seeded``
    whether the basis depends on ``random_state`` (one family per seed); read through
    :func:`drprobe.selectors.registry.is_seeded` only.
``needs_labels`` / ``uses_validation``
    whether ``fit`` needs training labels ``y``; whether it scores on a validation split
    (``fit(X, y, X_val=, y_val=)``), drawing one from the training rows with ``random_state``
    when none is given (it is then seeded).
``wide_refusal``
    why the selector has no sample-space path (a wide layer, d > n), or None when it has one.

On a wide layer the feature-space fit is replaced, by ``yields``: a coordinate selector gives
its whole neuron order from :meth:`Selector.order_from_columns` (from the width alone, or from
one blocked pass over the training columns); a PCA selector is run as dual PCA with its
``least``; a projection projects the rows by its ``draws``. A coordinate selector that does not
implement :meth:`Selector.order_from_columns` has no wide path unless it says otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from drprobe.errors import InvalidValueError
from drprobe.selectors.family import apply_basis

#: what a selector yields (:attr:`Selector.yields`)
YIELDS = ("coordinate", "pca", "projection")

#: the wide-path refusal of a coordinate selector without :meth:`Selector.order_from_columns`
NO_COLUMN_ORDER = "it gives no neuron order from column blocks (order_from_columns)"


def need_labels(name: str, y: Any) -> None:
    """Refuse a missing ``y`` for selector ``name`` (one line)."""
    if y is None:
        raise InvalidValueError(f"selector {name!r} needs training labels y; got None")


def rank_descending(scores: np.ndarray) -> np.ndarray:
    """(d,) indices by decreasing score, ties by index (a stable sort)."""
    return np.argsort(-scores, kind="stable")


class Selector(BaseEstimator, TransformerMixin):
    """Common base: ``n_components`` = k, ``random_state`` = seed; subclasses declare the
    contract (module docstring) and set ``indices_`` or ``components_`` / ``mean_`` in ``fit``.

    ``kind`` (``"coordinate"`` or ``"projection"``: the form of the map, indices or a basis) is
    derived from ``yields`` for every subclass.
    """

    yields: ClassVar[str] = "coordinate"
    kind: ClassVar[str] = "coordinate"
    seeded: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = False
    uses_validation: ClassVar[bool] = False
    wide_refusal: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.kind = "coordinate" if cls.yields == "coordinate" else "projection"

    def __init__(self, n_components: int, random_state: Any = None) -> None:
        self.n_components = n_components
        self.random_state = random_state

    def _k(self, d: int) -> int:
        k = self.n_components
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not (1 <= k <= d):
            raise InvalidValueError(f"n_components {k!r} is outside the valid range [1, {d}]")
        return int(k)

    def _width(self, X: Any) -> int:
        if len(getattr(X, "shape", ())) != 2:
            raise InvalidValueError(f"features must be a 2-D array (n, d); got {type(X).__name__}")
        return int(X.shape[1])

    def transform(self, X: Any) -> np.ndarray:
        """Map features (n, d) to (n, k)."""
        if self.kind == "coordinate":
            return np.asarray(apply_basis(X, indices=self.indices_))
        return apply_basis(np.asarray(X, dtype=np.float64), components=self.components_,
                           mean=self.mean_)

    @classmethod
    def order_from_columns(
        cls, d: int, blocks: Iterable[np.ndarray], y: Any, seed: Any
    ) -> np.ndarray:
        """(d,) the whole neuron order of a coordinate selector on a wide layer: the order whose
        first k entries are ``fit``'s ``indices_`` at n_components = k.

        ``blocks``: the training rows' columns as consecutive (n, b) float64 blocks covering
        neurons 0..d−1 in order, read lazily (a selector that needs no data reads none);
        ``y``: the training labels (n,); ``seed``: the family's ``random_state``. Memory: what
        the selector keeps per neuron, plus one block.
        """
        raise InvalidValueError(
            f"selector {cls.__name__} has no sample-space path: {NO_COLUMN_ORDER}"
        )
