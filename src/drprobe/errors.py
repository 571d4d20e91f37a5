"""One exception family for everything drprobe refuses to do, and how a command is stopped.

Every message is a single line that names the bad value and, where there is a closed set,
the valid choices. The CLI prints ``str(err)`` and exits with status 2.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class DrprobeError(Exception):
    """Base class of all errors raised on purpose by drprobe."""


class UnknownNameError(DrprobeError):
    """A name (model, layer, dataset, selector, ...) that is not in its registry."""


class InvalidValueError(DrprobeError):
    """A value of the right kind but outside its valid range or shape."""


class MissingDataError(DrprobeError):
    """Files that a dataset or model needs are not on this machine."""


class CacheError(DrprobeError):
    """A feature-cache entry cannot be written or read back intact."""


def unknown(kind: str, name: object, choices: Iterable[str]) -> UnknownNameError:
    """Build the standard "unknown <kind>" error listing the valid choices.

    >>> str(unknown("dataset", "cifar11", ["digits", "fashion-mnist"]))
    "unknown dataset 'cifar11'; valid choices: digits, fashion-mnist"
    """
    listed = ", ".join(sorted(choices))
    return UnknownNameError(f"unknown {kind} {name!r}; valid choices: {listed}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (``kill``, a scheduler's cancel) raises KeyboardInterrupt like
    Ctrl-C, so the work unwinds: scratch files are removed and nothing is half-written. Only
    the main thread can set signal handlers; elsewhere the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
