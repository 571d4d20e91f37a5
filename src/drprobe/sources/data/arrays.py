"""Datasets stored as arrays: ``npz:PATH`` images, and precomputed features (``features:PATH``).

Array names are ``x_train``, ``y_train``, ``x_test``, ``y_test`` (the ``x`` may be upper case).
Files are read without pickle (``allow_pickle=False``), so they cannot run code.

Precomputed features ("bring your own features") skip the model entirely. Formats:

- a folder of ``.npy`` files ``X_train.npy``, ``y_train.npy``, ``X_test.npy``, ``y_test.npy``
  (``X`` opened as a read-only memmap), optional ``classes.npy`` (strings);
- an ``.npz`` file with those arrays and optional ``classes``;
- a ``.safetensors`` file with those tensors, optional metadata ``classes`` (a JSON list);
- a ``.parquet`` file with columns ``label``, ``split`` (``train`` / ``test``; without it, a
  seeded stratified split) and the features: one list column, or every other column one
  feature (numeric, in column order). String labels are encoded with sorted class names.

Integer labels must be 0..C-1; without names the classes are ``"0"`` .. ``str(C - 1)``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drprobe.errors import DrprobeError, InvalidValueError, MissingDataError
from drprobe.sources.data.base import (
    DEFAULT_SPLIT_SEED,
    DEFAULT_TEST_FRACTION,
    ImageDataset,
    as_uint8_images,
    check_split,
    encode_labels,
    int_labels,
    split_positions,
)

FEATURE_FORMATS = ("npy folder", ".npz", ".safetensors", ".parquet")
SPLIT_POS = {"train": 0, "test": 1}


@dataclass
class FeatureSplit:
    """One split of precomputed features.

    Attributes:
        X: (n, d) numeric features (a read-only memmap for ``.npy`` folders).
        y: (n,) ``int64`` labels in ``[0, len(classes))``.
        classes: class names.
        format: which of :data:`FEATURE_FORMATS` it came from.
    """

    X: np.ndarray
    y: np.ndarray
    classes: list[str]
    format: str


def _key(names: list[str], stem: str, split: str, source: str) -> str:
    for cand in (f"{stem}_{split}", f"{stem.upper()}_{split}"):
        if cand in names:
            return cand
    raise MissingDataError(
        f"{source}: no array '{stem}_{split}' (found: {', '.join(sorted(names)) or 'none'}); "
        f"expected x_train, y_train, x_test, y_test"
    )


def _class_names(given: object, labels: list[np.ndarray], source: str) -> list[str]:
    """Names from ``given`` (a sequence of strings) or ``"0".."C-1"``; checked against labels."""
    top = max((int(y.max()) + 1 for y in labels if y.size), default=0)
    if given is None:
        return [str(i) for i in range(top)]
    names = [str(c) for c in np.asarray(given).reshape(-1).tolist()]
    if len(names) < top:
        raise InvalidValueError(f"{source}: {len(names)} class names for labels up to {top - 1}")
    return names


# ------------------------------------------------------------------------------------ images


def load_npz(path: str | os.PathLike, split: str, *, name: str | None = None) -> ImageDataset:
    """Images from an ``.npz`` with ``x_train, y_train, x_test, y_test`` (optional ``classes``).

    Images are uint8 (n, H, W) / (n, H, W, 3), or floats in [0, 1] (scaled to uint8).
    """
    check_split(split)
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(
            f"npz file {path} not found; write one with numpy.savez(path, x_train=..., "
            f"y_train=..., x_test=..., y_test=...)"
        )
    with np.load(path, allow_pickle=False) as z:
        names = list(z.files)
        x = z[_key(names, "x", split, str(path))]
        ys = [int_labels(z[_key(names, "y", s, str(path))], f"{path} y_{s}") for s in
              ("train", "test")]
        classes = _class_names(z["classes"] if "classes" in names else None, ys, str(path))
    y = ys[0] if split == "train" else ys[1]
    images = as_uint8_images(x, f"{path} x_{split}")
    if len(images) != len(y):
        raise DrprobeError(f"{path}: x_{split} has {len(images)} images, y_{split} {len(y)}")
    return ImageDataset(name or f"npz:{path}", split, images, y, classes)


# ------------------------------------------------------------------------------ precomputed


def _npy_folder(folder: Path, split: str) -> FeatureSplit:
    names = [p.stem for p in folder.glob("*.npy")]
    X = np.load(folder / f"{_key(names, 'x', split, str(folder))}.npy", mmap_mode="r",
                allow_pickle=False)
    ys = [int_labels(np.load(folder / f"{_key(names, 'y', s, str(folder))}.npy",
                             allow_pickle=False), f"{folder} y_{s}") for s in ("train", "test")]
    given = np.load(folder / "classes.npy", allow_pickle=False) if "classes" in names else None
    return FeatureSplit(X, ys[SPLIT_POS[split]], _class_names(given, ys, str(folder)),
                        "npy folder")


def _npz(path: Path, split: str) -> FeatureSplit:
    with np.load(path, allow_pickle=False) as z:
        names = list(z.files)
        X = z[_key(names, "x", split, str(path))]
        ys = [int_labels(z[_key(names, "y", s, str(path))], f"{path} y_{s}") for s in
              ("train", "test")]
        classes = _class_names(z["classes"] if "classes" in names else None, ys, str(path))
    return FeatureSplit(X, ys[SPLIT_POS[split]], classes, ".npz")


def _safetensors(path: Path, split: str) -> FeatureSplit:
    try:
        from safetensors import safe_open
    except ImportError:
        raise MissingDataError(
            f"{path}: reading .safetensors needs the 'safetensors' package; "
            f"pip install safetensors"
        ) from None
    with safe_open(str(path), framework="np") as f:
        names, meta = list(f.keys()), f.metadata() or {}
        X = f.get_tensor(_key(names, "x", split, str(path)))
        ys = [int_labels(f.get_tensor(_key(names, "y", s, str(path))), f"{path} y_{s}")
              for s in ("train", "test")]
    given = json.loads(meta["classes"]) if "classes" in meta else None
    return FeatureSplit(X, ys[SPLIT_POS[split]], _class_names(given, ys, str(path)),
                        ".safetensors")


def _is_list(t) -> bool:
    import pyarrow as pa

    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _parquet(path: Path, split: str, test_fraction: float, seed: int) -> FeatureSplit:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    cols = table.column_names
    if "label" not in cols:
        raise InvalidValueError(f"{path}: needs a 'label' column (columns: {', '.join(cols)})")
    labels, classes = encode_labels(table.column("label").to_numpy(zero_copy_only=False),
                                    f"{path} label")
    if "split" in cols:
        splits = np.asarray(table.column("split").to_pylist(), dtype=object)
        keep = np.flatnonzero(splits == split)
        if keep.size == 0:
            raise MissingDataError(f"{path}: no rows with split == {split!r}")
    else:
        keep = split_positions(labels, split, test_fraction, seed)
    feats = [c for c in cols if c not in ("label", "split")]
    rows = table.take(pa.array(keep))
    types = [rows.schema.field(c).type for c in feats]
    if len(feats) == 1 and _is_list(types[0]):
        col = rows.column(feats[0]).combine_chunks()
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        if col.null_count or (lengths.size and np.any(lengths != lengths[0])):
            raise InvalidValueError(f"{path}: list column {feats[0]!r} has rows of unequal "
                                    f"length or nulls")
        width = int(lengths[0]) if lengths.size else 0
        X = col.flatten().to_numpy(zero_copy_only=False).reshape(len(keep), width)
    else:
        bad = [c for c, t in zip(feats, types) if not (pa.types.is_integer(t)
                                                       or pa.types.is_floating(t))]
        if bad or not feats:
            raise InvalidValueError(
                f"{path}: feature columns must be numeric or one list column; "
                f"not numeric: {', '.join(bad) or '(no feature columns)'}"
            )
        X = np.column_stack([rows.column(c).to_numpy() for c in feats])
    return FeatureSplit(X, labels[keep], classes, ".parquet")



def read_precomputed(
    path: str | os.PathLike,
    split: str,
    *,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = DEFAULT_SPLIT_SEED,
) -> FeatureSplit:
    """Read one split of precomputed features in any of :data:`FEATURE_FORMATS`.

    ``test_fraction`` and ``seed`` split a parquet file that has no ``split`` column.
    """
    check_split(split)
    path = Path(path)
    if path.is_dir():
        out = _npy_folder(path, split)
    elif path.suffix == ".npz" and path.is_file():
        out = _npz(path, split)
    elif path.suffix == ".safetensors" and path.is_file():
        out = _safetensors(path, split)
    elif path.suffix == ".parquet" and path.is_file():
        out = _parquet(path, split, test_fraction, seed)
    else:
        raise MissingDataError(
            f"precomputed features {path} not found or of unknown format; valid: a folder of "
            f"X_train.npy/y_train.npy/X_test.npy/y_test.npy, or a .npz, .safetensors or "
            f".parquet file"
        )
    if out.X.ndim != 2 or out.X.dtype.kind not in "fiu":
        raise InvalidValueError(
            f"{path}: features must be a numeric (n, d) array, got {out.X.shape} {out.X.dtype}"
        )
    if len(out.X) != len(out.y):
        raise DrprobeError(f"{path}: {split} has {len(out.X)} feature rows and {len(out.y)} "
                           f"labels")
    return out


def load_precomputed(path: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(X (n, d), y (n,) int64) of ``split`` of precomputed features; see the module docstring.

    The same data is reachable as
    ``get_features("precomputed", layer, "features:PATH", split)`` (cached-features form).
    """
    out = read_precomputed(path, split)
    return out.X, out.y
