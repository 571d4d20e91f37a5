"""CIFAR-10 and CIFAR-100 from the official "python version" pickle batches.

Security: the batches are Python pickles, and unpickling an arbitrary pickle can run arbitrary
code. They are therefore read with a restricted unpickler that resolves only the few numpy
names a numpy array needs (plus a latin-1 ``bytes`` helper), so a crafted file fails instead of
executing; the result must then be the expected dict of bytes keys, a ``uint8`` (n, 3072) array
and integer label lists, or it is refused. Still, prefer files whose checksum you know.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from drprobe.errors import DrprobeError, MissingDataError, unknown
from drprobe.sources.data.base import ImageDataset, check_split, resolve_root

#: name -> (archive URL, its md5 as published with it, folder inside the archive, env variable)
CIFAR_ARCHIVES: dict[str, tuple[str, str, str, str]] = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py", "DRPROBE_CIFAR10"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                 "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python", "DRPROBE_CIFAR100"),
}
CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR100_LABELS = ("fine", "coarse")


# ----------------------------------------------------------------------------- safe unpickle


def _latin1_encode(text: object, encoding: str = "latin1") -> bytes:
    """What protocol-2 pickles written by Python 3 call to rebuild ``bytes`` (nothing else)."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("only _codecs.encode(str, 'latin1') is allowed")
    return text.encode("latin1")


def _numpy_names() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric
    names: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for pkg in ("numpy.core", "numpy._core"):
        names[(f"{pkg}.multiarray", "_reconstruct")] = multiarray._reconstruct
        names[(f"{pkg}.numeric", "_frombuffer")] = numeric._frombuffer
    return names


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the names in :func:`_numpy_names`; any other global is refused."""

    allowed = _numpy_names()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def read_cifar_pickle(path: str | os.PathLike) -> dict[str, Any]:
    """Unpickle one CIFAR file safely (see the module docstring); keys decoded to ``str``."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise MissingDataError(f"CIFAR file not found: {path}") from None
    except Exception as err:  # noqa: BLE001 -- any unpickling failure means "not CIFAR"
        raise DrprobeError(f"{path}: refused as a CIFAR pickle ({err})") from None
    if not isinstance(obj, dict) or not all(isinstance(k, (bytes, str)) for k in obj):
        raise DrprobeError(f"{path}: refused as a CIFAR pickle (not a dict with string keys)")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, 32, 32, 3) uint8, labels (n,) int64) of one checked batch file."""
    d = read_cifar_pickle(path)
    data, labels = d.get("data"), d.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3072:
        got = getattr(data, "shape", type(data).__name__)
        raise DrprobeError(f"{path}: 'data' must be a uint8 (n, 3072) array, got {got}")
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != len(data) or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels
    ):
        raise DrprobeError(f"{path}: {label_key!r} must be {len(data)} integers")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), np.asarray(labels, dtype=np.int64)


def _names(path: Path, key: str) -> list[str]:
    names = read_cifar_pickle(path).get(key)
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise DrprobeError(f"{path}: {key!r} must be a list of names")
    return [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]


# ----------------------------------------------------------------------------------- download


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Extract a tar(.gz) into ``dest``, refusing links, devices and paths leaving ``dest``."""
    dest = Path(dest).resolve()
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for m in members:
            target = (dest / m.name).resolve()
            if not (m.isfile() or m.isdir()) or (target != dest and dest not in target.parents):
                raise DrprobeError(f"{archive}: refused unsafe archive member {m.name!r}")
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover -- Python without extraction filters; members checked above
            tar.extractall(dest, members=members)


def download_and_extract(url: str, root: str | os.PathLike, md5: str) -> Path:
    """Fetch ``url`` into ``root``, check its md5, extract it there; return ``root``.

    The archive is downloaded to a temporary file in ``root`` and removed afterwards; on a
    checksum mismatch nothing is extracted.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".download-", dir=root)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url) as resp:
            shutil.copyfileobj(resp, out)
        got = _md5(tmp)
        if got != md5:
            raise DrprobeError(f"{url}: md5 {got} does not match the expected {md5}")
        safe_extract(tmp, root)
    except OSError as err:
        raise MissingDataError(f"cannot download {url} ({err})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return root


# ----------------------------------------------------------------------------------- loaders


def _folder(name: str, root: str | os.PathLike | None, download: bool) -> Path:
    url, md5, inner, env = CIFAR_ARCHIVES[name]
    base = resolve_root(root, env, name)
    for folder in (base / inner, base):
        if (folder / ("test_batch" if name == "cifar10" else "test")).is_file():
            return folder
    if download:
        download_and_extract(url, base, md5)
        return base / inner
    raise MissingDataError(
        f"{name} python batches not found in {base}; download and extract {url} there "
        f"(or pass download=True), or set {env} or pass root= to the '{inner}' folder"
    )


def load_cifar10(
    split: str, root: str | os.PathLike | None = None, *, download: bool = False
) -> ImageDataset:
    """CIFAR-10 (50,000 train / 10,000 test, 32x32 RGB, 10 classes).

    ``root``, ``$DRPROBE_CIFAR10`` or ``.data/cifar10`` is the ``cifar-10-batches-py`` folder
    or its parent; ``download=True`` fetches and checks the official archive when missing.
    """
    check_split(split)
    folder = _folder("cifar10", root, download)
    parts = [_batch(folder / f, "labels") for f in CIFAR10_FILES[split]]
    classes = _names(folder / "batches.meta", "label_names")
    images, labels = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    if labels.size and labels.max() >= len(classes):
        raise DrprobeError(f"{folder}: label {labels.max()} has no name in batches.meta")
    return ImageDataset("cifar10", split, images, labels, classes)


def load_cifar100(
    split: str, root: str | os.PathLike | None = None, *, download: bool = False,
    labels: str = "fine",
) -> ImageDataset:
    """CIFAR-100 (50,000 train / 10,000 test, 32x32 RGB), 100 fine labels (default) or the
    20 coarse ones (``labels="coarse"``); class names from ``meta``.

    ``root``, ``$DRPROBE_CIFAR100`` or ``.data/cifar100`` is the ``cifar-100-python`` folder
    or its parent; ``download=True`` fetches and checks the official archive when missing.
    """
    check_split(split)
    if labels not in CIFAR100_LABELS:
        raise unknown("cifar100 labels", labels, CIFAR100_LABELS)
    folder = _folder("cifar100", root, download)
    images, y = _batch(folder / split, f"{labels}_labels")
    classes = _names(folder / "meta", f"{labels}_label_names")
    if y.size and y.max() >= len(classes):
        raise DrprobeError(f"{folder}: label {y.max()} has no name in meta")
    return ImageDataset("cifar100", split, images, y, classes)
