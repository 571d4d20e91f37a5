"""Advisory locks of a run: one run per run folder, and a shared feature cache whose first user
removes the temporary entries of killed writers."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from drprobe.errors import InvalidValueError

__all__ = ["CACHE_LOCK", "cache_session", "locked"]

CACHE_LOCK = ".runners.lock"


@contextlib.contextmanager
def locked(path: Path, what: str, exclusive: bool = True) -> Iterator[int]:
    """Hold an advisory lock on ``path`` (a folder or a file, created if missing)."""
    flags = os.O_RDONLY if path.is_dir() else os.O_RDWR | os.O_CREAT
    fd = os.open(path, flags, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InvalidValueError(f"{what} {str(path)!r} is in use by another drprobe run; "
                                    "wait for it to finish or pass another --out") from None
        yield fd
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def cache_session(cache_dir: Path) -> Iterator[None]:
    """Share the feature cache with other runs; the first run in removes dead writers' temps.

    Every runner holds a shared lock on ``<cache>/.runners.lock`` while it runs. A runner that
    can take it exclusively is alone, so every temporary entry in the cache was left by a
    killed process and is removed.
    """
    from drprobe.features.cache import FeatureCache

    cache_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(cache_dir / CACHE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            FeatureCache(cache_dir).prune_temp(max_age_s=0.0)
        except BlockingIOError:
            pass
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)
