"""Decoding images with Pillow, and ``imagefolder:PATH`` (one sub-folder per class).

Decoded images are RGB ``uint8``. When every image of a dataset has the same size they are
stacked at that size; when sizes differ (or ``side`` is given) each image is resized so its
shorter side is ``side`` (bilinear) and centre-cropped to ``side`` x ``side``;
``side`` defaults to :data:`DEFAULT_SIDE` (the paper's 224 px) for mixed sizes. The sizes of
both splits are checked together, so train and test always come out the same size.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from drprobe.errors import DrprobeError, InvalidValueError, MissingDataError
from drprobe.sources.data.base import (
    DEFAULT_SPLIT_SEED,
    DEFAULT_TEST_FRACTION,
    SPLITS,
    ImageDataset,
    check_split,
    split_positions,
)

DEFAULT_SIDE = 224
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                  ".pgm")
#: Sub-folders read as the test split of an image folder, in order of preference.
TEST_DIRS = ("test", "val", "validation")


def _check_side(side: object) -> int | None:
    if side is None:
        return None
    if isinstance(side, bool) or not isinstance(side, (int, np.integer)) or side < 1:
        raise InvalidValueError(f"image side must be a positive integer or None, got {side!r}")
    return int(side)


def pil_to_rgb(img, side: int | None = None) -> np.ndarray:
    """A Pillow image as (H, W, 3) ``uint8`` RGB, resized + centre-cropped to ``side`` if set."""
    from PIL import Image

    img = img.convert("RGB")
    if side is not None and img.size != (side, side):
        w, h = img.size
        scale = side / min(w, h)
        new_w, new_h = max(side, round(w * scale)), max(side, round(h * scale))
        img = img.resize((new_w, new_h), Image.BILINEAR)
        left, top = (new_w - side) // 2, (new_h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    return np.asarray(img, dtype=np.uint8)


@contextmanager
def _opened(data: bytes | str | os.PathLike) -> Iterator:
    """A Pillow image of encoded bytes or a file; read/decode failures become DrprobeError."""
    from PIL import Image, UnidentifiedImageError

    is_bytes = isinstance(data, (bytes, bytearray))
    source = "<bytes>" if is_bytes else str(data)
    try:
        with Image.open(io.BytesIO(data) if is_bytes else data) as img:
            yield img
    except FileNotFoundError:
        raise MissingDataError(f"image file not found: {source}") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DrprobeError(f"{source}: cannot decode image ({err})") from None


def decode_image(data: bytes | str | os.PathLike, side: int | None = None) -> np.ndarray:
    """Decode encoded image bytes or a file into (H, W, 3) ``uint8`` RGB."""
    with _opened(data) as img:
        return pil_to_rgb(img, side)


def image_size(data: bytes | str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an encoded image, from its header only."""
    with _opened(data) as img:
        return img.size


def common_side(sizes: Iterable[tuple[int, int]], side: int | None) -> int | None:
    """The side to resize to: ``side`` if set, None when all ``sizes`` agree (keep them),
    else :data:`DEFAULT_SIDE`. Callers pass the sizes of *all* splits so splits agree."""
    if side is not None:
        return side
    return None if len(set(sizes)) <= 1 else DEFAULT_SIDE


def stack_images(images: Iterable[np.ndarray], side: int | None, source: str) -> np.ndarray:
    """Stack (H, W, 3) images into (n, H, W, 3) ``uint8``.

    Same-size images stack as they are (unless ``side`` is set); mixed sizes are resized to
    ``side`` or :data:`DEFAULT_SIDE`.
    """
    from PIL import Image

    side = _check_side(side)
    arrays = list(images)
    if not arrays:
        raise MissingDataError(f"{source}: no images")
    target = side
    if target is None and len({a.shape for a in arrays}) > 1:
        target = DEFAULT_SIDE
    if target is not None:
        arrays = [a if a.shape[:2] == (target, target) else
                  pil_to_rgb(Image.fromarray(a), target) for a in arrays]
    return np.stack(arrays).astype(np.uint8, copy=False)


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def _class_dirs(tree: Path) -> list[str]:
    return sorted(p.name for p in tree.iterdir() if p.is_dir() and not p.name.startswith("."))


def _tree_files(tree: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    files, labels = [], []
    for label, name in enumerate(classes):
        folder = tree / name
        if not folder.is_dir():
            continue
        found = sorted(p for p in folder.rglob("*") if _is_image(p))
        files += found
        labels += [label] * len(found)
    return files, np.asarray(labels, dtype=np.int64)


def load_imagefolder(
    path: str | os.PathLike,
    split: str,
    *,
    side: int | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = DEFAULT_SPLIT_SEED,
    name: str | None = None,
) -> ImageDataset:
    """Images in class-per-sub-folder trees.

    Layouts: ``PATH/train/<class>/*`` with ``PATH/test/<class>/*`` (or ``val/`` or
    ``validation/`` as the test split); or a single tree ``PATH/<class>/*`` (or only
    ``PATH/train/<class>/*``) split by
    :func:`~drprobe.sources.data.base.split_positions` ``(labels, split, test_fraction, seed)``.
    Class names are the sorted union of the sub-folder names; files are read in sorted path
    order (sub-folders of a class included). Image files: :data:`IMAGE_SUFFIXES`.

    Args:
        path: the root folder.
        split: ``"train"`` or ``"test"``.
        side: resize + centre-crop every image to ``side`` px (see the module docstring).
        test_fraction, seed: the split of a single tree.
        name: the dataset's name in the result (default ``imagefolder:PATH``).
    """
    check_split(split)
    root = Path(path)
    name = name or f"imagefolder:{path}"
    if not root.is_dir():
        raise MissingDataError(
            f"image folder {root} not found; expected {root}/<class>/*.png or "
            f"{root}/train/<class>/* and {root}/test/<class>/*"
        )
    test_dir = next((root / t for t in TEST_DIRS if (root / t).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        classes = sorted(set(_class_dirs(root / "train")) | set(_class_dirs(test_dir)))
        both = {s: _tree_files(d, classes) for s, d in (("train", root / "train"),
                                                         ("test", test_dir))}
    else:  # a single tree: PATH/<class>/* or PATH/train/<class>/* without a test tree
        tree = root / "train" if (root / "train").is_dir() else root
        classes = _class_dirs(tree)
        files, labels = _tree_files(tree, classes)
        both = {}
        for s in SPLITS if files else ():
            keep = split_positions(labels, s, test_fraction, seed)
            both[s] = ([files[i] for i in keep], labels[keep])
    files, labels = both.get(split, ([], None))
    if not files:
        raise MissingDataError(
            f"image folder {root}: no {split} images found (suffixes "
            f"{', '.join(IMAGE_SUFFIXES)}) in class sub-folders"
        )
    every = [f for fs, _ in both.values() for f in fs]
    side = common_side((image_size(f) for f in every), _check_side(side))
    images = stack_images((decode_image(f, side) for f in files), side, str(root))
    return ImageDataset(name, split, images, labels, classes)
