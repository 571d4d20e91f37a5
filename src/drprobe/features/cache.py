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

import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from drprobe.errors import CacheError, InvalidValueError, unknown
from drprobe.features.keys import canonical, file_sha256, parts_key

FEATURES_FILE = "features.npy"
LABELS_FILE = "labels.npy"
META_FILE = "meta.json"
TEMP_PREFIX = ".tmp-"
FORMAT_VERSION = 1
STORAGE_DTYPES = ("float16", "float32", "float64")
VERIFY_MODES = ("full", "size")


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
        return parts_key(parts)

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
        return self.put_many([parts], n, ([batch] for batch in batches), labels, dtype)[0]

    def put_many(
        self,
        parts_list: Sequence[Mapping[str, Any]],
        n: int,
        batches: Iterable[Sequence[np.ndarray]],
        labels: np.ndarray,
        dtype: str = "float32",
    ) -> list[CachedFeatures]:
        """:meth:`put` for several entries filled from one stream (one forward pass each batch).

        Each item of ``batches`` holds one (m, d_j) array per entry of ``parts_list``, same m;
        every entry is written in its own temporary folder, checked, hashed and published on its
        own (content-addressed and verified exactly as with :meth:`put`). Nothing is published
        unless the stream completes. Memory: one batch; the rows go straight to the memmaps.
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
        keys = [self.key(parts) for parts in parts_list]
        temps: list[Path] = []
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            temps = [Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=self.root)) for _ in keys]
            widths = self._write_features([t / FEATURES_FILE for t in temps], n, batches, dtype)
            for tmp, key, parts, d in zip(temps, keys, parts_list, widths):
                np.save(tmp / LABELS_FILE, labels.astype(np.int64))
                meta = self._meta(tmp, key, parts, n, d, dtype)
                (tmp / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))
                for name in (FEATURES_FILE, LABELS_FILE, META_FILE):
                    _fsync(tmp / name)
                _fsync(tmp)
            return [self._publish(tmp, key) for tmp, key in zip(temps, keys)]
        except OSError as err:  # disk full, read-only or unwritable folder, ...
            reason = err.strerror or str(err) or type(err).__name__
            raise CacheError(
                f"cannot write feature cache entry under {str(self.root)!r}: {reason}; free "
                "space or pass another cache folder (--cache-dir or $DRPROBE_CACHE)"
            ) from err
        finally:
            for tmp in temps:
                shutil.rmtree(tmp, ignore_errors=True)  # no-op once renamed into place

    def _write_features(
        self, paths: list[Path], n: int, batches: Iterable[Sequence[np.ndarray]], dtype: str
    ) -> list[int]:
        """Write the rows of ``batches`` into one (n, d_j) ``.npy`` memmap per path; the d_j."""
        outs: list[np.memmap] = []
        offset = 0
        for group in batches:
            if len(group) != len(paths):
                raise CacheError(f"a batch holds {len(group)} arrays, expected {len(paths)}")
            arrays = [np.asarray(b) for b in group]
            m = arrays[0].shape[0] if arrays[0].ndim == 2 else -1
            for j, b in enumerate(arrays):
                if b.ndim != 2 or b.shape[0] != m:
                    raise CacheError(f"feature batch must be 2-D (m, d) with one m, got shape "
                                     f"{b.shape}")
                if len(outs) == j:
                    outs.append(np.lib.format.open_memmap(paths[j], mode="w+", dtype=dtype,
                                                          shape=(n, b.shape[1])))
                if b.shape[1] != outs[j].shape[1]:
                    raise CacheError(f"feature batch width {b.shape[1]} != first batch's "
                                     f"{outs[j].shape[1]}")
            if offset + m > n:
                raise CacheError(f"batches delivered more than the expected {n} rows")
            for out, b in zip(outs, arrays):
                out[offset:offset + m] = b
            offset += m
        if not outs or offset != n:
            raise CacheError(f"batches delivered {offset} rows, expected {n}")
        widths = []
        for out in outs:
            out.flush()
            widths.append(int(out.shape[1]))
        del outs
        return widths

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
            "parts": canonical(parts),
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
        def make(_missing: list[int]) -> Iterable[list[np.ndarray]]:
            return ([batch] for batch in make_batches())

        return self.get_or_create_many([parts], n, make, labels, dtype, verify)[0]

    def get_or_create_many(
        self,
        parts_list: Sequence[Mapping[str, Any]],
        n: int,
        make_batches: Callable[[list[int]], Iterable[Sequence[np.ndarray]]],
        labels: np.ndarray,
        dtype: str = "float32",
        verify: str | None = None,
    ) -> list[CachedFeatures]:
        """The entries for ``parts_list``; the absent or corrupt ones are built together by
        ``make_batches(missing)``, which streams one array per index in ``missing`` (indices
        into ``parts_list``), as :meth:`put_many` takes them. Raises as :meth:`get_or_create`.
        """
        found = [self.get(parts, verify=verify) for parts in parts_list]
        for hit in found:
            if hit is not None:
                self._check_hit(hit, n, dtype, labels)
        missing = [i for i, hit in enumerate(found) if hit is None]
        if missing:
            built = self.put_many([parts_list[i] for i in missing], n, make_batches(missing),
                                  labels, dtype=dtype)
            for i, entry in zip(missing, built):
                found[i] = entry
        return found  # type: ignore[return-value]

    @staticmethod
    def _check_hit(hit: CachedFeatures, n: int, dtype: str, labels: np.ndarray) -> None:
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
