"""Cache keys: the canonical JSON of an entry's parts, and file hashes.

A key is the sha256 of the canonical JSON of the parts (sorted keys, no spaces, ASCII); numpy
arrays enter as a digest of their contents with dtype and shape, integer index arrays in one
integer type so the same indices hash the same whatever their dtype.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from drprobe.errors import InvalidValueError

__all__ = ["canonical", "dumps", "file_sha256", "parts_key"]

_CHUNK = 1 << 22  # 4 MiB



def canonical(obj: Any) -> Any:
    """A JSON-able copy of ``obj``; arrays become a content digest with dtype and shape."""
    if isinstance(obj, Mapping):
        return {str(k): canonical(v) for k, v in obj.items()}
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
        return [canonical(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(canonical(v) for v in obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    raise InvalidValueError(
        f"cache key part {obj!r} of type {type(obj).__name__} is not hashable; valid: "
        "str, int, float, bool, None, list, tuple, dict, numpy array"
    )


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def parts_key(parts: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical JSON of ``parts``."""
    return hashlib.sha256(dumps(canonical(parts)).encode()).hexdigest()
