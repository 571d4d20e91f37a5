"""One exception family for everything drprobe refuses to do.

Every message is a single line that names the bad value and, where there is a closed set,
the valid choices. The CLI prints ``str(err)`` and exits with status 2.
"""

from __future__ import annotations

from collections.abc import Iterable


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


class ConfigError(InvalidValueError):
    """A config file that cannot be read or is invalid (one line: file, field, problem)."""


class StoreError(DrprobeError):
    """A file of a run could not be written (disk full, no permission, ...)."""


def unknown(kind: str, name: object, choices: Iterable[str]) -> UnknownNameError:
    """Build the standard "unknown <kind>" error listing the valid choices.

    >>> str(unknown("dataset", "cifar11", ["digits", "fashion-mnist"]))
    "unknown dataset 'cifar11'; valid choices: digits, fashion-mnist"
    """
    listed = ", ".join(sorted(choices))
    return UnknownNameError(f"unknown {kind} {name!r}; valid choices: {listed}")
