"""Device resolution: the one place where a device name becomes a :class:`torch.device`.

Used by feature extraction (``auto`` may pick MPS), the probe banks and the faithful protocol
(CPU or CUDA only: ``mps=False``), and the augmentations.
"""

from __future__ import annotations

import torch

from drprobe.errors import InvalidValueError

__all__ = ["DEVICE_FORMS", "resolve_device"]

DEVICE_FORMS = ("auto", "cpu", "cuda", "cuda:N", "mps")


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(
    device: str | torch.device | None, default: torch.device | None = None, *, mps: bool = True
) -> torch.device:
    """The :class:`torch.device` for a device name.

    ``None`` -> ``default`` (e.g. where a model already is) or the CPU; ``"auto"`` -> CUDA when
    present, else MPS (when ``mps``), else the CPU; ``"cuda"`` -> the current CUDA device, with
    its index. With ``mps=False`` (code that runs on CPU or CUDA only) ``"mps"`` means the CPU.
    Unknown or unavailable devices are refused with a one-line InvalidValueError.
    """
    if device is None:
        return torch.device(default) if default is not None else torch.device("cpu")
    if not mps and str(device) == "mps":
        return torch.device("cpu")
    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif mps and _mps_available():
            device = "mps"
        else:
            device = "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidValueError(
            f"unknown device {device!r}; valid choices: {', '.join(DEVICE_FORMS)}"
        ) from None
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
    if dev.type not in ("cpu", "mps"):
        raise InvalidValueError(
            f"unsupported device {device!r}; valid choices: {', '.join(DEVICE_FORMS)}"
        )
    return dev
