"""Downstream tasks derived from a dataset: label groupings and null baselines.

A dataset entry of an experiment may regroup its classes (``labels``) and may replace its
features or labels by a null baseline (``baseline``); both act on the cached features and labels, so
every grouping of a dataset shares one feature extraction.

Label groupings map each original class to a group id; the group ids must be 0 .. m-1 (m >= 2).
A grouping is a mapping ``{0: 0, 1: 0, 2: 1, ...}`` or one of the names in :data:`GROUPINGS`:

==================  ==========================================================================
``parity``          digits: even (0) / odd (1)
``ge5``             digits: 0-4 (0) / 5-9 (1)
``pairs``           digits: {0,1}, {2,3}, {4,5}, {6,7}, {8,9} (5 groups)
``fashion3``        Fashion-MNIST: clothing (T-shirt, trouser, pullover, dress, coat, shirt),
                    footwear (sandal, sneaker, ankle boot), bag
==================  ==========================================================================

Memory: :func:`group_labels` is O(n); :func:`apply_task` adds, for ``gaussian``, one float32
array of the features' shape (train and test), otherwise nothing beyond a label copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from drprobe.errors import InvalidValueError

__all__ = ["GROUPINGS", "NULLS", "apply_task", "check_grouping", "group_labels",
           "null_inputs", "resolve_grouping"]

#: Named label groupings (original class -> group).
GROUPINGS: dict[str, dict[int, int]] = {
    "parity": {c: c % 2 for c in range(10)},
    "ge5": {c: int(c >= 5) for c in range(10)},
    "pairs": {c: c // 2 for c in range(10)},
    "fashion3": {0: 0, 1: 0, 2: 0, 3: 0, 4: 0, 6: 0, 5: 1, 7: 1, 9: 1, 8: 2},
}
#: Null baselines: i.i.d. Gaussian features of the same width, or permuted training labels.
NULLS = ("gaussian", "shuffled_labels")


def check_grouping(mapping: Mapping[Any, Any]) -> dict[int, int]:
    """A validated ``{class: group}`` dict: integer keys >= 0, groups exactly 0 .. m-1, m >= 2.

    Raises:
        InvalidValueError: one line naming the first problem.
    """
    out: dict[int, int] = {}
    for key, value in mapping.items():
        for what, v in (("class", key), ("group", value)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise InvalidValueError(
                    f"label grouping: {what} {v!r} must be an integer >= 0")
        out[int(key)] = int(value)
    groups = sorted(set(out.values()))
    if len(groups) < 2:
        raise InvalidValueError(
            f"label grouping maps every class to {groups}; a task needs at least 2 groups")
    if groups != list(range(len(groups))):
        raise InvalidValueError(
            f"label grouping: groups must be 0..{len(groups) - 1} with none missing, got {groups}")
    return out


def resolve_grouping(labels: str | Mapping[Any, Any]) -> dict[int, int]:
    """A grouping given by name (:data:`GROUPINGS`) or as a mapping, validated."""
    if isinstance(labels, str):
        if labels not in GROUPINGS:
            raise InvalidValueError(f"unknown label grouping {labels!r}; valid choices: "
                                    f"{', '.join(GROUPINGS)}, or a mapping {{class: group}}")
        return dict(GROUPINGS[labels])
    return check_grouping(labels)


def group_labels(y: np.ndarray, grouping: Mapping[int, int]) -> np.ndarray:
    """(n,) labels -> (n,) int64 group ids. Every class present must be in ``grouping``.

    Raises:
        InvalidValueError: a class of ``y`` has no group (the message lists them).
    """
    y = np.asarray(y)
    classes = np.unique(y)
    missing = [int(c) for c in classes if int(c) not in grouping]
    if missing:
        raise InvalidValueError(f"label grouping has no group for classes {missing}; "
                                f"it covers {sorted(grouping)}")
    table = np.full(int(classes.max()) + 1, -1, dtype=np.int64)
    for c in classes:
        table[int(c)] = grouping[int(c)]
    return table[y.astype(np.int64)]


def apply_task(
    X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, *,
    labels: str | Mapping[Any, Any] | None = None, null: str | None = None, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The (X_train, y_train, X_test, y_test) of a derived task.

    ``labels`` regroups both splits' labels first; ``null`` then replaces the features by
    Gaussian noise or permutes the training labels (seeded by ``seed``; see
    :func:`null_inputs`). With neither, the inputs come back as they
    are (memmaps stay memmaps).
    """
    if labels is not None:
        grouping = resolve_grouping(labels)
        y_train, y_test = group_labels(y_train, grouping), group_labels(y_test, grouping)
    if null is not None:
        X_train, y_train, X_test = null_inputs(null, X_train, y_train, X_test, seed)
    return X_train, y_train, X_test, y_test


def null_inputs(
    kind: str, X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train features, train labels and test features of a null baseline.

    ``"gaussian"``: i.i.d. N(0, 1) features of the same shape (no information about the labels);
    ``"shuffled_labels"``: the real features with the training labels permuted.
    """
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        return (rng.standard_normal(X_train.shape, dtype=np.float32), y_train,
                rng.standard_normal(X_test.shape, dtype=np.float32))
    if kind == "shuffled_labels":
        return X_train, rng.permutation(y_train), X_test
    raise InvalidValueError(f"unknown null baseline {kind!r}; valid choices: {', '.join(NULLS)}")
