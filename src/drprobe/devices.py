"""Device names: the one place where one is checked and where it becomes a :class:`torch.device`.

Two uses, one wording: feature extraction runs on any of :data:`EXTRACTION_DEVICES` (``auto``
may pick MPS); probes -- the probe bank, the faithful heads, pretraining -- run on
:data:`PROBE_DEVICES` (CPU or CUDA): there ``mps`` is refused by :func:`check_device` with the
same one line everywhere (``auto`` still picks MPS for extraction and CUDA or the CPU for probes).

:func:`one_blas_thread` is the one place where numpy's BLAS / LAPACK threads are fixed: results
that must not depend on the machine's core count or load (PCA bases, cross products) are
computed inside it (docs/reliability.md, "Same results whatever the thread count").
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from threadpoolctl import threadpool_limits

from drprobe.errors import InvalidValueError

__all__ = ["EXTRACTION_DEVICES", "PROBE_DEVICES", "check_device", "one_blas_thread",
           "resolve_device", "torch_threads"]

#: The device names feature extraction accepts, and those probes accept (no MPS).
EXTRACTION_DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PROBE_DEVICES = ("auto", "cpu", "cuda", "cuda:N")
_FORM = re.compile(r"cpu|auto|mps|cuda(:\d+)?")


def _choices(mps: bool) -> str:
    return ", ".join(EXTRACTION_DEVICES if mps else PROBE_DEVICES).replace(
        "auto", "auto (CUDA if present)", 1)


def check_device(device: object, *, mps: bool = True) -> str:
    """``device`` as a name if it is one of :data:`EXTRACTION_DEVICES` (``mps``) or
    :data:`PROBE_DEVICES` (``mps=False``: code that runs on CPU or CUDA only); only the form is
    checked (availability is :func:`resolve_device`'s). A :class:`torch.device` counts as its name.

    Raises:
        InvalidValueError: one line naming the device and the valid choices.
    """
    name = str(device) if isinstance(device, torch.device) else device
    if not isinstance(name, str) or not _FORM.fullmatch(name):
        raise InvalidValueError(f"unknown device {device!r}; valid choices: {_choices(mps)}")
    if name == "mps" and not mps:
        raise InvalidValueError(
            f"device 'mps' serves feature extraction only; probes train on CPU or CUDA "
            f"(auto picks MPS for extraction); valid choices: {_choices(False)}")
    return name


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(
    device: str | torch.device | None, default: torch.device | None = None, *, mps: bool = True
) -> torch.device:
    """The :class:`torch.device` for a device name (checked by :func:`check_device`).

    ``None`` -> ``default`` (e.g. where a model already is) or the CPU; ``"auto"`` -> CUDA when
    present, else MPS (when ``mps``), else the CPU; ``"cuda"`` -> the current CUDA device, with
    its index. ``mps=False`` (code that runs on CPU or CUDA only) refuses ``"mps"``.
    Unknown or unavailable devices are refused with a one-line InvalidValueError.
    """
    if device is None:
        return torch.device(default) if default is not None else torch.device("cpu")
    name = check_device(device, mps=mps)
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif mps and _mps_available():
            name = "mps"
        else:
            name = "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidValueError(f"device {device!r} is not available here (no CUDA); "
                                    "valid choices: auto, cpu")
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise InvalidValueError(f"device {device!r}: only {torch.cuda.device_count()} "
                                    "CUDA device(s) here")
        return torch.device("cuda", index)
    if dev.type == "mps" and not _mps_available():
        raise InvalidValueError(f"device {device!r} is not available here; valid: auto, cpu")
    return dev


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with one thread in every BLAS / LAPACK library numpy and scipy loaded
    (restored afterwards).

    A multi-threaded BLAS splits a product or an eigendecomposition into pieces whose number is
    the thread count, and rounds each split differently: ``eigh`` and even ``A @ B`` then change
    in their last bits with OMP/OPENBLAS/MKL_NUM_THREADS or the machine's core count, which moves
    a PCA basis and, downstream, a probe's tied L2 choice. One thread has one order: the same
    bits on any machine, quiet or loaded. Torch's own threads are the probe bank's
    ``n_threads``.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (None: leave the setting alone)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)
