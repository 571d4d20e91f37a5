"""Dataset containers, seeded stratified sampling and the helpers every loader shares.

Every loader returns an :class:`ImageDataset` (images in memory as ``uint8``) or a
:class:`TextDataset` (a list of strings), with ``int64`` labels and the class names. Sampling
helpers return sorted index arrays so a subsample can be recorded (and hashed into the
feature-cache key) as plain positions.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drprobe.errors import InvalidValueError, unknown

SPLITS = ("train", "test")

#: Environment variable naming the folder under which ``<name>/`` data folders live.
DATA_HOME_ENV = "DRPROBE_DATA"

#: Default of the seeded stratified split used by datasets that ship without a test split.
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_SPLIT_SEED = 0


@dataclass
class ImageDataset:
    """One split of an image dataset, fully in memory.

    Attributes:
        name: registry name or spec, e.g. ``"fashion-mnist"``, ``"imagefolder:pets"``.
        split: ``"train"`` or ``"test"``.
        images: ``uint8`` array, (n, H, W) grey or (n, H, W, 3) RGB.
        labels: ``int64`` array, (n,), values in ``[0, len(classes))``.
        classes: class names, one per label value.
        indices: (n,) positions in the full split when subsampled, else None (the whole split).
    """

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    indices: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.classes)


@dataclass
class TextDataset:
    """One split of a text classification dataset, fully in memory.

    Attributes:
        name: the spec it was loaded from, e.g. ``"text:reviews.csv"``.
        split: ``"train"`` or ``"test"``.
        texts: n strings.
        labels: ``int64`` array, (n,), values in ``[0, len(classes))``.
        classes: class names (sorted), one per label value.
        indices: (n,) positions in the full split when subsampled, else None.
    """

    name: str
    split: str
    texts: list[str]
    labels: np.ndarray
    classes: list[str]
    indices: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.classes)


Dataset = ImageDataset | TextDataset


# ---------------------------------------------------------------------------------- sampling


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise InvalidValueError(f"labels must be 1-D, got shape {labels.shape}")
    return labels


def _allocate(counts: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` across classes of sizes ``counts`` by largest remainder (ties: lower class)."""
    quota = counts * (n / counts.sum())
    take = np.floor(quota).astype(np.int64)
    short = n - int(take.sum())
    order = np.lexsort((np.arange(len(counts)), -(quota - take)))
    take[order[:short]] += 1
    return take


def stratified_subsample(labels: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Sorted positions of ``n`` items keeping the class proportions of ``labels``.

    Per-class counts are ``n * count_c / len(labels)`` rounded by largest remainder, so they sum
    to exactly ``n`` and each is within 1 of proportional. Within a class the items are the
    first ones of a single seeded permutation, so the result is deterministic for ``seed``.

    Args:
        labels: (N,) class labels (any integer or string values).
        n: how many to keep; None or ``n >= N`` keeps all.
        seed: random seed.

    Returns:
        (n,) sorted ``int64`` indices into ``labels``.
    """
    labels = _check_labels(labels)
    total = labels.shape[0]
    if n is None or n >= total:
        return np.arange(total, dtype=np.int64)
    if n <= 0:
        raise InvalidValueError(f"subsample size n must be positive or None, got {n}")
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    take = _allocate(counts, int(n))
    perm = np.random.default_rng(seed).permutation(total)
    by_class = inverse[perm]
    chosen = [perm[by_class == c][: take[c]] for c in range(len(classes))]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def validation_size(total: int, val_fraction: float) -> int:
    """How many of ``total`` items :func:`train_val_split` holds out: ``round(val_fraction *
    total)``, at least 1 and at most total - 1 (known before any label is read).

    Raises:
        InvalidValueError: ``val_fraction`` outside (0, 1), or fewer than 2 items.
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise InvalidValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if total < 2:
        raise InvalidValueError(f"need at least 2 items to split, got {total}")
    return min(max(round(val_fraction * total), 1), total - 1)


def train_val_split(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of positions into (train, val); disjoint, covering, sorted.

    The validation part has :func:`validation_size` items (``round(val_fraction * N)``, at
    least 1, at most N - 1) drawn with :func:`stratified_subsample`; the rest is train.

    Args:
        labels: (N,) class labels, N >= 2.
        val_fraction: strictly between 0 and 1.
        seed: random seed.

    Returns:
        (train_idx, val_idx), sorted ``int64`` arrays.
    """
    labels = _check_labels(labels)
    total = labels.shape[0]
    val = stratified_subsample(labels, validation_size(total, val_fraction), seed)
    mask = np.ones(total, dtype=bool)
    mask[val] = False
    return np.flatnonzero(mask).astype(np.int64), val


def split_positions(
    labels: np.ndarray, split: str, test_fraction: float, seed: int
) -> np.ndarray:
    """Positions of ``split`` in a seeded stratified train/test split of ``labels``.

    The test part is :func:`train_val_split` ``(labels, test_fraction, seed)[1]``; train is
    the rest. Used by every dataset that ships without an official split.
    """
    check_split(split)
    train, test = train_val_split(labels, float(test_fraction), int(seed))
    return train if split == "train" else test


def subsample(ds: Dataset, n: int | None, seed: int) -> Dataset:
    """A stratified subsample of ``ds`` (see :func:`stratified_subsample`).

    Works on :class:`ImageDataset` and :class:`TextDataset`. Returns ``ds`` itself when ``n``
    is None or covers the whole split; otherwise a new dataset whose ``indices`` are positions
    in the *full* split (composed with ``ds.indices``).
    """
    if n is None or n >= len(ds):
        return ds
    idx = stratified_subsample(ds.labels, n, seed)
    provenance = idx if ds.indices is None else np.asarray(ds.indices)[idx]
    if isinstance(ds, TextDataset):
        items = {"texts": [ds.texts[i] for i in idx]}
    else:
        items = {"images": ds.images[idx]}
    return dataclasses.replace(
        ds, labels=ds.labels[idx], classes=list(ds.classes), indices=provenance, **items
    )


# ----------------------------------------------------------------------------------- helpers


def check_split(split: str) -> str:
    """``split`` if it is one of :data:`SPLITS`, else an UnknownNameError."""
    if split not in SPLITS:
        raise unknown("split", split, SPLITS)
    return split


def encode_labels(values: Sequence | np.ndarray, source: str) -> tuple[np.ndarray, list[str]]:
    """Map raw labels to ``int64`` codes 0..C-1 in sorted order of the distinct values.

    Integer labels sort numerically (so labels already 0..C-1 keep their values) and are named
    ``str(v)``; string labels sort as strings and name themselves. Mixed or float labels
    that are not whole numbers are refused.

    Returns:
        (codes (n,) int64, class names (C,)).
    """
    arr = values if isinstance(values, np.ndarray) else np.asarray(list(values), dtype=object)
    if arr.ndim != 1:
        raise InvalidValueError(f"{source}: labels must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind == "O":
        kinds = {type(v) for v in arr.tolist()}
        if kinds <= {str}:
            arr = arr.astype(str)
        elif all(issubclass(k, (int, np.integer)) and k is not bool for k in kinds):
            arr = arr.astype(np.int64)
        else:
            names = ", ".join(sorted(k.__name__ for k in kinds))
            raise InvalidValueError(
                f"{source}: labels must be all strings or all integers, got types {names}"
            )
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InvalidValueError(f"{source}: float labels must be whole numbers")
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iuU":
        raise InvalidValueError(
            f"{source}: labels must be integers or strings, got dtype {arr.dtype}"
        )
    uniq, codes = np.unique(arr, return_inverse=True)
    return codes.astype(np.int64).reshape(-1), [str(v) for v in uniq.tolist()]


def int_labels(labels: np.ndarray, source: str) -> np.ndarray:
    """Check that ``labels`` are non-negative whole numbers; return them as ``int64``."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise InvalidValueError(f"{source}: labels must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu" or (arr.size and arr.min() < 0):
        raise InvalidValueError(
            f"{source}: labels must be non-negative integers, got dtype {arr.dtype}"
        )
    return arr.astype(np.int64)


def as_uint8_images(x: np.ndarray, source: str) -> np.ndarray:
    """(n, H, W) or (n, H, W, 3) images as ``uint8``: integers 0..255 kept, floats in [0, 1]
    scaled by 255 and rounded; anything else is refused with the shape/range it had."""
    x = np.asarray(x)
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] != 3):
        raise InvalidValueError(
            f"{source}: images must have shape (n, H, W) or (n, H, W, 3), got {x.shape}"
        )
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind in "iu":
        if x.size and (x.min() < 0 or x.max() > 255):
            raise InvalidValueError(f"{source}: integer images must be in 0..255")
        return x.astype(np.uint8)
    if x.dtype.kind == "f":
        if x.size and not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
            raise InvalidValueError(f"{source}: float images must be finite and in [0, 1]")
        return np.rint(x * 255.0).astype(np.uint8)
    raise InvalidValueError(f"{source}: images must be uint8 or float in [0, 1], got {x.dtype}")


def project_root() -> Path | None:
    """The source checkout holding this package (editable install), or None."""
    root = Path(__file__).resolve().parents[4]
    return root if (root / "pyproject.toml").is_file() else None


def default_data_dir(name: str) -> Path:
    """Where a dataset's files are looked for when no root or dataset variable is given.

    ``$DRPROBE_DATA/<name>`` if that variable is set; else the first existing of
    ``./.data/<name>`` (current directory) and ``<checkout>/.data/<name>``; else the former.
    """
    env = os.environ.get(DATA_HOME_ENV)
    if env:
        return Path(env) / name
    here = Path.cwd() / ".data" / name
    repo = project_root()
    if not here.exists() and repo is not None and (repo / ".data" / name).exists():
        return repo / ".data" / name
    return here


def resolve_root(root: str | os.PathLike | None, env: str, name: str) -> Path:
    """``root`` if given, else ``$env`` if set, else :func:`default_data_dir` ``(name)``."""
    if root is not None:
        return Path(root)
    value = os.environ.get(env)
    return Path(value) if value else default_data_dir(name)
