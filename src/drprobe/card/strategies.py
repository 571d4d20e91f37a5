"""The card's truncation strategies and the selector each one runs on.

A strategy keeps k of the d embedding coordinates (or k derived ones): ``first-k`` is the
Matryoshka / ``truncate_dim`` cut, ``random-k`` a seeded random subset (several seeds),
``pca-k`` the top-k principal directions fitted on the training part only, ``ranked-k`` the k
coordinates of largest training variance (drprobe's ranked choice). Each is a registered
selector (:mod:`drprobe.selectors`), so the card fits them exactly as the study does.
"""

from __future__ import annotations

from drprobe.errors import InvalidValueError

__all__ = ["DEFAULT_CARD_SEEDS", "DEFAULT_STRATEGIES", "STRATEGIES", "check_strategies", "selector_of"]

#: card strategy name -> drprobe selector name
STRATEGIES: dict[str, str] = {
    "first-k": "prefix",
    "random-k": "random",
    "pca-k": "pca_top",
    "ranked-k": "variance",
}
DEFAULT_STRATEGIES: tuple[str, ...] = tuple(STRATEGIES)
#: random-k seeds of a card
DEFAULT_CARD_SEEDS: tuple[int, ...] = (0, 1, 2)


def check_strategies(names) -> list[str]:
    """The names, checked: an unknown strategy is refused on one line with the valid choices."""
    names = list(names)
    for name in names:
        if name not in STRATEGIES:
            raise InvalidValueError(
                f"unknown strategy {name!r}; valid choices: {', '.join(STRATEGIES)}")
    if not names:
        raise InvalidValueError(f"no strategy given; valid choices: {', '.join(STRATEGIES)}")
    return list(dict.fromkeys(names))


def selector_of(strategy: str) -> str:
    """The selector a strategy runs on (``first-k`` -> ``prefix``)."""
    return STRATEGIES[check_strategies([strategy])[0]]
