"""Image datasets: a registry of loaders, an IDX reader, and seeded stratified sampling.

Every loader returns an :class:`ImageDataset` holding the whole split in memory as ``uint8``
images, ``int64`` labels and the class names. Sampling helpers return sorted index arrays so a
subsample can be recorded (and hashed into the feature-cache key) as plain positions.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drprobe.errors import DrprobeError, InvalidValueError, MissingDataError, unknown

SPLITS = ("train", "test")

FASHION_MNIST_DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_ENV = "DRPROBE_FASHION_MNIST"
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

#: Seed of the fixed stratified 70/30 train/test split of scikit-learn's digits.
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.3

# IDX type byte -> big-endian numpy dtype.
IDX_DTYPES: dict[int, str] = {
    0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8",
}


@dataclass
class ImageDataset:
    """One split of an image dataset, fully in memory.

    Attributes:
        name: registry name, e.g. ``"fashion-mnist"``.
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


# ----------------------------------------------------------------------------------- loaders


def _fashion_mnist_root(root: str | os.PathLike | None) -> Path:
    if root is not None:
        return Path(root)
    return Path(os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DEFAULT_ROOT)


def _load_fashion_mnist(split: str, root: str | os.PathLike | None) -> ImageDataset:
    """Fashion-MNIST from the original gzip IDX files (Debian ``dataset-fashion-mnist``)."""
    folder = _fashion_mnist_root(root)
    prefix = "train" if split == "train" else "t10k"
    paths = [folder / f"{prefix}-{part}-ubyte.gz" for part in ("images-idx3", "labels-idx1")]
    for p in paths:
        if not p.is_file():
            raise MissingDataError(
                f"Fashion-MNIST file {p} is missing; install it with "
                f"'apt-get install dataset-fashion-mnist', or set {FASHION_MNIST_ENV} "
                f"or pass root= to the folder holding the IDX .gz files"
            )
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DrprobeError(
            f"{folder}: Fashion-MNIST {split} images {images.shape} do not match "
            f"labels {labels.shape}"
        )
    return ImageDataset(
        "fashion-mnist", split, images.astype(np.uint8), labels.astype(np.int64),
        list(FASHION_MNIST_CLASSES),
    )


def _load_digits(split: str, root: str | os.PathLike | None) -> ImageDataset:
    """scikit-learn's 8x8 digits, values 0..16 scaled to 0..255.

    There is no official split: the test split is a stratified 30% drawn with
    ``train_val_split(labels, 0.3, seed=DIGITS_SPLIT_SEED)`` (539 test, 1258 train images).
    ``root`` is ignored (the data ships inside scikit-learn).
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    train, test = train_val_split(labels, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)
    idx = train if split == "train" else test
    classes = [str(c) for c in range(10)]
    return ImageDataset("digits", split, images[idx], labels[idx], classes)


Loader = Callable[[str, "str | os.PathLike | None"], ImageDataset]

#: name -> loader(split, root). Add new datasets here.
DATASETS: dict[str, Loader] = {
    "digits": _load_digits,
    "fashion-mnist": _load_fashion_mnist,
}


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`, sorted."""
    return sorted(DATASETS)


def load_dataset(name: str, split: str, root: str | os.PathLike | None = None) -> ImageDataset:
    """Load one whole split of a registered dataset.

    Args:
        name: one of :func:`available_datasets`.
        split: ``"train"`` or ``"test"``.
        root: folder of the dataset's files, for datasets read from disk.
    """
    if name not in DATASETS:
        raise unknown("dataset", name, available_datasets())
    if split not in SPLITS:
        raise unknown("split", split, SPLITS)
    return DATASETS[name](split, root)


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


def train_val_split(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of positions into (train, val); disjoint, covering, sorted.

    The validation part has ``round(val_fraction * N)`` items (at least 1, at most N - 1)
    drawn with :func:`stratified_subsample`; the rest is train.

    Args:
        labels: (N,) class labels, N >= 2.
        val_fraction: strictly between 0 and 1.
        seed: random seed.

    Returns:
        (train_idx, val_idx), sorted ``int64`` arrays.
    """
    labels = _check_labels(labels)
    if not 0.0 < float(val_fraction) < 1.0:
        raise InvalidValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    total = labels.shape[0]
    if total < 2:
        raise InvalidValueError(f"need at least 2 items to split, got {total}")
    n_val = min(max(round(val_fraction * total), 1), total - 1)
    val = stratified_subsample(labels, n_val, seed)
    mask = np.ones(total, dtype=bool)
    mask[val] = False
    return np.flatnonzero(mask).astype(np.int64), val


def subsample(ds: ImageDataset, n: int | None, seed: int) -> ImageDataset:
    """A stratified subsample of ``ds`` (see :func:`stratified_subsample`).

    Returns ``ds`` itself when ``n`` is None or covers the whole split; otherwise a new
    dataset whose ``indices`` are positions in the *full* split (composed with ``ds.indices``).
    """
    if n is None or n >= len(ds):
        return ds
    idx = stratified_subsample(ds.labels, n, seed)
    provenance = idx if ds.indices is None else np.asarray(ds.indices)[idx]
    return ImageDataset(
        ds.name, ds.split, ds.images[idx], ds.labels[idx], list(ds.classes), provenance
    )
