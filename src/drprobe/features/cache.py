"""Content-addressed, atomic, memory-mapped store of feature matrices.

An entry lives in ``<root>/<key[:2]>/<key>/`` and holds ``features.npy`` (n, d), ``labels.npy``
(n,) int64 and ``meta.json`` (the key's parts in clear, shapes, dtypes, byte sizes and sha256 of
both array files, creation time). The key is the sha256 of the canonical JSON of the parts.

Writers stream batches into a memmap inside a temporary directory under ``root`` and publish it
with one atomic ``rename``; a crash or an exception leaves nothing partial. Readers verify the
entry (sizes and shapes always, sha256 by default) and remove a corrupt one so it is rebuilt.
Many threads or processes may share a cache: when two build the same entry, the first rename
wins and the other discards its copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from drprobe.errors import CacheError, InvalidValueError, unknown

FEATURES_FILE = "features.npy"
LABELS_FILE = "labels.npy"
META_FILE = "meta.json"
TEMP_PREFIX = ".tmp-"
FORMAT_VERSION = 1
STORAGE_DTYPES = ("float16", "float32", "float64")
VERIFY_MODES = ("full", "size")
_CHUNK = 1 << 22  # 4 MiB


class CacheWarning(UserWarning):
    """A cache entry was found corrupt and removed."""


@dataclass
class CachedFeatures:
    """One cache entry, opened.

    Attributes:
        X: (n, d) read-only memmap of the features (``float32`` or the storage dtype).
        y: (n,) ``int64`` labels.
        meta: contents of ``meta.json``.
        path: the entry's directory.
    """

    X: np.ndarray
    y: np.ndarray
    meta: dict
    path: Path


# ------------------------------------------------------------------------------- hashing


def _canonical(obj: Any) -> Any:
    """A JSON-able copy of ``obj``; arrays become a content digest with dtype and shape."""
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        arr = np.ascontiguousarray(obj)
        if arr.dtype.kind == "O":
            raise InvalidValueError("cache key part: object arrays cannot be hashed by content; "
                                    "valid: numeric, bool or fixed-width string arrays")
        if arr.dtype.kind in "iu":  # the same index values hash the same in any integer type
            arr = arr.astype("<i8")
        elif arr.dtype.kind == "f":
            arr = arr.astype("<f8")
        h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
        return {"ndarray_sha256": h.hexdigest(), "dtype": arr.dtype.str, "shape": list(arr.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(_canonical(v) for v in obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    raise InvalidValueError(
        f"cache key part {obj!r} of type {type(obj).__name__} is not hashable; valid: "
        "str, int, float, bool, None, list, tuple, dict, numpy array"
    )


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_tree(path: Path, root: Path) -> None:
    """Delete ``path`` by first renaming it aside (atomic), so no reader sees half of it."""
    trash = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX + "trash-", dir=root))
    try:
        os.rename(path, trash / "x")
    except OSError:
        pass  # already gone (someone else removed it)
    shutil.rmtree(trash, ignore_errors=True)


# ---------------------------------------------------------------------------------- cache


class FeatureCache:
    """Content-addressed store of (features, labels) pairs under ``root``.

    Args:
        root: the cache folder (created on first write).
        verify: default check done by :meth:`get`: ``"full"`` (sizes, shapes and sha256 of
            both array files) or ``"size"`` (sizes and shapes only).
    """

    def __init__(self, root: str | os.PathLike, verify: str = "full") -> None:
        self.root = Path(root)
        self.verify = verify

    # -- keys and paths
    @staticmethod
    def key(parts: Mapping[str, Any]) -> str:
        """sha256 hex of the canonical JSON of ``parts`` (sorted keys; arrays by content)."""
        return hashlib.sha256(_dumps(_canonical(parts)).encode()).hexdigest()

    def path_for(self, parts: Mapping[str, Any]) -> Path:
        """Directory where the entry of ``parts`` lives (whether or not it exists)."""
        key = self.key(parts)
        return self.root / key[:2] / key

    # -- reading
    def get(self, parts: Mapping[str, Any], verify: str | None = None) -> CachedFeatures | None:
        """The entry for ``parts``, or None if absent or found corrupt (then it is removed).

        Args:
            parts: the key's parts.
            verify: ``"full"`` or ``"size"``; None uses the cache's default.
        """
        return self._get_key(self.key(parts), verify)

    def _get_key(self, key: str, verify: str | None) -> CachedFeatures | None:
        mode = self.verify if verify is None else verify
        if mode not in VERIFY_MODES:
            raise unknown("verify mode", mode, VERIFY_MODES)
        path = self.root / key[:2] / key
        if not path.is_dir():
            return None
        try:
            return self._open(path, key, full=mode == "full")
        except (OSError, ValueError, KeyError, TypeError, CacheError) as err:
            warnings.warn(f"removing corrupt cache entry {path}: {err}", CacheWarning,
                          stacklevel=3)
            _remove_tree(path, self.root)
            return None

    def _open(self, path: Path, key: str, full: bool) -> CachedFeatures:
        """Open and check an entry; raises on any mismatch."""
        meta = json.loads((path / META_FILE).read_text())
        if meta.get("key") != key or meta.get("format") != FORMAT_VERSION:
            raise CacheError(f"meta.json key/format mismatch in {path}")
        for name in (FEATURES_FILE, LABELS_FILE):
            rec, fpath = meta["files"][name], path / name
            if fpath.stat().st_size != rec["bytes"]:
                raise CacheError(f"{name} has {fpath.stat().st_size} bytes, expected "
                                 f"{rec['bytes']}")
            if full and file_sha256(fpath) != rec["sha256"]:
                raise CacheError(f"{name} sha256 mismatch")
        n, d = meta["n"], meta["d"]
        X = np.load(path / FEATURES_FILE, mmap_mode="r")
        if X.shape != (n, d) or X.dtype != np.dtype(meta["dtype"]):
            raise CacheError(f"features {X.shape} {X.dtype}, expected ({n}, {d}) {meta['dtype']}")
        y = np.load(path / LABELS_FILE)
        if y.shape != (n,) or y.dtype != np.int64:
            raise CacheError(f"labels {y.shape} {y.dtype}, expected ({n},) int64")
        return CachedFeatures(X=X, y=y, meta=meta, path=path)

    # -- writing
    def put(
        self,
        parts: Mapping[str, Any],
        n: int,
        batches: Iterable[np.ndarray],
        labels: np.ndarray,
        dtype: str = "float32",
    ) -> CachedFeatures:
        """Stream ``batches`` of rows into a new entry and publish it atomically.

        Args:
            parts: the key's parts (JSON-able values and numpy arrays).
            n: total number of rows the batches must deliver.
            batches: iterable of (m_i, d) arrays (numpy or CPU tensors), sum of m_i == n.
            labels: (n,) integer labels.
            dtype: storage dtype, one of ``float16``, ``float32``, ``float64``.

        Returns:
            The published entry (or the one another writer published first).

        Raises:
            CacheError: the batches did not deliver exactly n rows of one width, or the entry
                could not be written (any ``OSError``: no space, read-only folder, ...); the
                temporary folder is removed either way.
        """
        if dtype not in STORAGE_DTYPES:
            raise unknown("cache dtype", dtype, STORAGE_DTYPES)
        if int(n) < 1:
            raise InvalidValueError(f"cache entry needs n >= 1 rows, got {n}")
        n = int(n)
        labels = np.asarray(labels)
        if labels.shape != (n,) or labels.dtype.kind not in "iu":
            raise InvalidValueError(
                f"labels must be ({n},) integers, got {labels.shape} {labels.dtype}"
            )
        key = self.key(parts)
        tmp: Path | None = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=self.root))
            d = self._write_features(tmp / FEATURES_FILE, n, batches, dtype)
            np.save(tmp / LABELS_FILE, labels.astype(np.int64))
            meta = self._meta(tmp, key, parts, n, d, dtype)
            (tmp / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))
            for name in (FEATURES_FILE, LABELS_FILE, META_FILE):
                _fsync(tmp / name)
            _fsync(tmp)
            return self._publish(tmp, key)
        except OSError as err:  # disk full, read-only or unwritable folder, ...
            reason = err.strerror or str(err) or type(err).__name__
            raise CacheError(
                f"cannot write feature cache entry under {str(self.root)!r}: {reason}; free "
                "space or pass another cache folder (--cache-dir or $DRPROBE_CACHE)"
            ) from err
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)  # no-op once renamed into place

    def _write_features(
        self, path: Path, n: int, batches: Iterable[np.ndarray], dtype: str
    ) -> int:
        """Write the rows of ``batches`` into an (n, d) ``.npy`` memmap; returns d."""
        out: np.memmap | None = None
        offset = 0
        for batch in batches:
            b = np.asarray(batch)
            if b.ndim != 2:
                raise CacheError(f"feature batch must be 2-D (m, d), got shape {b.shape}")
            if out is None:
                out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype,
                                                shape=(n, b.shape[1]))
            if b.shape[1] != out.shape[1]:
                raise CacheError(f"feature batch width {b.shape[1]} != first batch's "
                                 f"{out.shape[1]}")
            if offset + b.shape[0] > n:
                raise CacheError(f"batches delivered more than the expected {n} rows")
            out[offset:offset + b.shape[0]] = b
            offset += b.shape[0]
        if out is None or offset != n:
            raise CacheError(f"batches delivered {offset} rows, expected {n}")
        out.flush()
        d = int(out.shape[1])
        del out
        return d

    def _meta(self, tmp: Path, key: str, parts: Mapping[str, Any], n: int, d: int,
              dtype: str) -> dict:
        files = {
            name: {"bytes": (tmp / name).stat().st_size, "sha256": file_sha256(tmp / name)}
            for name in (FEATURES_FILE, LABELS_FILE)
        }
        files[FEATURES_FILE].update(shape=[n, d], dtype=dtype)
        files[LABELS_FILE].update(shape=[n], dtype="int64")
        return {
            "format": FORMAT_VERSION,
            "key": key,
            "parts": _canonical(parts),
            "n": n,
            "d": d,
            "dtype": dtype,
            "files": files,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def _publish(self, tmp: Path, key: str, attempts: int = 3) -> CachedFeatures:
        """Rename ``tmp`` to the entry's place; if a valid entry is there already, use it."""
        final = self.root / key[:2] / key
        final.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(attempts):
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():
                    raise
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", CacheWarning)
                    existing = self._get_key(key, "full")
                if existing is not None:
                    return existing
                continue  # the other entry was corrupt and has been removed: retry
            _fsync(final.parent)
            return self._open(final, key, full=False)
        raise CacheError(f"could not publish cache entry {final}")

    def get_or_create(
        self,
        parts: Mapping[str, Any],
        n: int,
        make_batches: Callable[[], Iterable[np.ndarray]],
        labels: np.ndarray,
        dtype: str = "float32",
        verify: str | None = None,
    ) -> CachedFeatures:
        """The entry for ``parts``; built with ``make_batches()`` only when absent or corrupt.

        Raises:
            CacheError: an entry exists for ``parts`` but holds a different n, dtype or labels
                (the parts do not identify the data; add what differs to them).
        """
        hit = self.get(parts, verify=verify)
        if hit is None:
            return self.put(parts, n, make_batches(), labels, dtype=dtype)
        diffs = []
        if hit.meta["n"] != n:
            diffs.append(f"n={hit.meta['n']} (asked {n})")
        if hit.meta["dtype"] != dtype:
            diffs.append(f"dtype={hit.meta['dtype']} (asked {dtype})")
        if hit.meta["n"] == n and not np.array_equal(hit.y, np.asarray(labels)):
            diffs.append("other labels than asked")
        if diffs:
            raise CacheError(
                f"cache entry {hit.path} holds {', '.join(diffs)}; "
                "make the key parts distinguish them"
            )
        return hit

    def prune_temp(self, max_age_s: float = 86400.0) -> int:
        """Remove temporary directories older than ``max_age_s`` left by killed writers."""
        if not self.root.is_dir():
            return 0
        removed = 0
        for p in self.root.glob(TEMP_PREFIX + "*"):
            if time.time() - p.stat().st_mtime > max_age_s:
                shutil.rmtree(p, ignore_errors=True)
                removed += 1
        return removed
