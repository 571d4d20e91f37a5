"""Files written whole or not at all, and YAML read with one-line errors (the ground floor that
configs, the results store and pretraining share)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from drprobe.errors import ConfigError, StoreError

__all__ = ["atomic_path", "atomic_write_text", "read_yaml"]


def _cannot_write(path: Path, err: OSError) -> StoreError:
    return StoreError(f"cannot write {str(path)!r}: {err.strerror or err}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; rename it into place when the block ends.

    The temporary file is named ``.<name>.tmp-<pid>``.

    Raises:
        StoreError: an ``OSError`` in the block or the rename (one line); no temporary or
            partial file is left either way.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        raise _cannot_write(path, err) from err
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_yaml(path: str | os.PathLike) -> Any:
    """The data of a YAML file.

    Raises:
        ConfigError: missing or unreadable file, malformed YAML (file, line and column).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as err:
        raise ConfigError(f"{path}: cannot read the config ({type(err).__name__})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: {where}malformed YAML: {problem}") from None
    return data
