"""The selector registry: names → classes, and every question asked of a selector by name.

:data:`SELECTORS` is the one list of selectors; :func:`register_selector` adds one (a class
anywhere, e.g. in a test module), after which it runs through
:func:`~drprobe.analysis.layer.analyze_layer` on narrow and wide layers alike. The rest of the
package asks about a selector only through the functions here, which read the class's
declaration (:mod:`drprobe.selectors.base`): :func:`is_seeded` (the one answer to "one family
per seed?"), :func:`wide_refusal` and :func:`wide_selectors`.
"""

from __future__ import annotations

from typing import TypeVar

from drprobe.errors import InvalidValueError, unknown
from drprobe.selectors.base import NO_COLUMN_ORDER, YIELDS, Selector
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
from drprobe.selectors.greedy import GreedyForward
from drprobe.selectors.projections import KINDS as DRAW_KINDS

S = TypeVar("S", bound=type[Selector])

SELECTORS: dict[str, type[Selector]] = {}


def register_selector(name: str, cls: S) -> S:
    """Add selector class ``cls`` under ``name`` (returns ``cls``).

    Refused on one line: a name already taken or not an identifier, a class that is not a
    :class:`~drprobe.selectors.base.Selector`, or a declaration outside the contract (``yields``
    not one of :data:`~drprobe.selectors.base.YIELDS`; a PCA selector without a boolean
    ``least``; a projection whose ``draws`` is not a kind of
    :mod:`drprobe.selectors.projections`). Remove a registration with ``del SELECTORS[name]``.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise InvalidValueError(f"selector name {name!r} must be an identifier")
    if name in SELECTORS:
        raise InvalidValueError(f"selector {name!r} is already registered "
                                f"({SELECTORS[name].__name__}); choose another name")
    if not (isinstance(cls, type) and issubclass(cls, Selector)):
        raise InvalidValueError(f"selector {name!r}: {cls!r} is not a Selector subclass")
    if cls.yields not in YIELDS:
        raise InvalidValueError(f"selector {name!r} yields {cls.yields!r}; valid choices: "
                                f"{', '.join(YIELDS)}")
    if cls.yields == "pca" and not isinstance(getattr(cls, "least", None), bool):
        raise InvalidValueError(f"PCA selector {name!r} must declare least = True or False")
    if cls.yields == "projection" and getattr(cls, "draws", None) not in DRAW_KINDS:
        raise InvalidValueError(f"projection selector {name!r} draws "
                                f"{getattr(cls, 'draws', None)!r}; valid choices: "
                                f"{', '.join(DRAW_KINDS)}")
    SELECTORS[name] = cls
    return cls


for _name, _cls in (
    ("random", RandomSubset), ("prefix", PrefixSubset), ("pca_top", PCATop),
    ("pca_least", PCALeast), ("randproj_uniform", RandomProjectionUniform),
    ("randproj_gauss", RandomProjectionGauss), ("variance", VarianceRanked),
    ("weight_norm", WeightNormRanked), ("greedy", GreedyForward),
):
    register_selector(_name, _cls)


def selector_class(name: str) -> type[Selector]:
    """The class registered as ``name``; an unknown name is refused on one line."""
    if name not in SELECTORS:
        raise unknown("selector", name, SELECTORS)
    return SELECTORS[name]


def is_seeded(name: str, with_validation: bool = True) -> bool:
    """Whether selector ``name``'s basis depends on the seed (one family per seed).

    The class's ``seeded``; a selector that scores on a validation split is seeded too when it
    draws that split itself (``with_validation`` False: no validation rows given to it).
    """
    cls = selector_class(name)
    return bool(cls.seeded or (cls.uses_validation and not with_validation))


def wide_refusal(name: str) -> str | None:
    """Why selector ``name`` has no sample-space path (wide layers), or None when it has one:
    the class's ``wide_refusal``, else, for a coordinate selector that does not implement
    ``order_from_columns``, :data:`~drprobe.selectors.base.NO_COLUMN_ORDER`."""
    cls = selector_class(name)
    if cls.wide_refusal is not None:
        return cls.wide_refusal
    if cls.yields == "coordinate" and (
            cls.order_from_columns.__func__ is Selector.order_from_columns.__func__):
        return NO_COLUMN_ORDER
    return None


def wide_selectors() -> list[str]:
    """The registered selectors that run on wide layers, in registration order."""
    return [name for name in SELECTORS if wide_refusal(name) is None]
