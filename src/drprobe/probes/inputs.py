"""Input checks of the probe banks: feature matrices, label vectors, subset families, labels
encoded as class indices. Each refusal is one line naming the bad value."""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from drprobe.errors import InvalidValueError
from drprobe.selectors import SubsetFamily


def check_features(X: object, name: str, d: int | None = None) -> np.ndarray:
    """Accept a 2-D numeric array or memmap (n, d) without copying it; raise one-liners."""
    if not hasattr(X, "shape") or not hasattr(X, "dtype"):
        X = np.asarray(X)
    if len(X.shape) != 2:
        raise InvalidValueError(f"{name} must be 2-D (n, d); got shape {tuple(X.shape)}")
    if not np.issubdtype(np.dtype(X.dtype), np.number) or np.dtype(X.dtype).kind == "c":
        raise InvalidValueError(f"{name} must be real-valued; got dtype {X.dtype}")
    if X.shape[0] == 0:
        raise InvalidValueError(f"{name} has no rows")
    if d is not None and X.shape[1] != d:
        raise InvalidValueError(f"{name} has {X.shape[1]} columns; expected d={d}")
    return X  # type: ignore[return-value]


def check_labels(y: object, n: int, name: str) -> np.ndarray:
    """(n,) label vector whose length matches its features."""
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InvalidValueError(
            f"{name} has shape {arr.shape}; expected ({n},) to match the feature rows"
        )
    return arr


def encode(y: np.ndarray, classes: np.ndarray, name: str) -> np.ndarray:
    """Map labels to indices into ``classes``; labels unseen in training are refused."""
    pos = np.clip(np.searchsorted(classes, y), 0, len(classes) - 1)
    bad = classes[pos] != y
    if bad.any():
        raise InvalidValueError(
            f"{name} contains label {y[bad][0]!r} absent from y_train; "
            f"valid labels: {classes.tolist()}"
        )
    return pos.astype(np.int64)


def check_family(fam: SubsetFamily, i: int, d: int) -> None:
    """Refuse a family whose sizes or basis do not fit features of width d."""
    tag = f"family {i} ({fam.selector}, seed {fam.seed})"
    if (fam.indices is None) == (fam.components is None):
        raise InvalidValueError(f"{tag} must set exactly one of indices / components")
    if fam.indices is not None:
        idx = np.asarray(fam.indices)
        if idx.ndim != 1 or (len(idx) and (idx.min() < 0 or idx.max() >= d)):
            raise InvalidValueError(f"{tag} has indices outside [0, {d})")
    else:
        comp = np.asarray(fam.components)
        if comp.ndim != 2 or comp.shape[0] != d:
            raise InvalidValueError(f"{tag} components have shape {comp.shape}; need ({d}, m)")
        if fam.mean is not None and np.asarray(fam.mean).shape != (d,):
            raise InvalidValueError(f"{tag} mean has shape {np.shape(fam.mean)}; need ({d},)")
    ks = list(fam.ks)
    if not ks:
        raise InvalidValueError(f"{tag} has no sizes ks to probe")
    if any(int(k) != k for k in ks) or any(b <= a for a, b in pairwise(ks)):
        raise InvalidValueError(f"{tag} ks={ks} must be strictly increasing integers")
    if ks[0] < 1 or ks[-1] > fam.width:
        bad = ks[0] if ks[0] < 1 else ks[-1]
        raise InvalidValueError(f"{tag} has k={bad} outside [1, {fam.width}] (its width)")
    if fam.fractions is not None and len(fam.fractions) != len(ks):
        raise InvalidValueError(f"{tag} has {len(fam.fractions)} fractions for {len(ks)} ks")
