"""Built-in pretrained image models in plain PyTorch, and checked loading of their weights.

The model modules (:mod:`.mobilenet_v2`, :mod:`.efficientnet_lite`) import the helpers below;
this file imports none of them, so there is no import cycle.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from drprobe.errors import MissingDataError

__all__ = ["load_checked_state_dict", "random_init", "seeded_init", "sha256_file", "state_sha256"]

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def state_sha256(module: torch.nn.Module) -> str:
    """Hex sha256 of a module's state: every entry's name, dtype, shape and values, in name
    order (the same weights give the same digest whatever the device)."""
    digest = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16
                      else tensor.view(torch.int16).numpy().tobytes())
    return digest.hexdigest()


def load_checked_state_dict(
    path: str | os.PathLike, expected_sha256: str | None
) -> tuple[dict[str, torch.Tensor], str]:
    """Read a state_dict after checking the file's sha256.

    Args:
        path: a ``.pth`` file holding a plain state_dict.
        expected_sha256: the hash the file must have; None only records it.

    Returns:
        ``(state_dict, sha256)``, tensors on the CPU.

    Raises:
        MissingDataError: the file is absent or its hash differs from ``expected_sha256``.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"weights file {str(path)!r} does not exist")
    found = sha256_file(path)
    if expected_sha256 is not None and found != expected_sha256:
        raise MissingDataError(
            f"weights file {str(path)!r} is damaged or not the expected one: "
            f"sha256 expected {expected_sha256}, found {found}"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state, found


@contextmanager
def seeded_init(seed: int) -> Iterator[None]:
    """Seed PyTorch's RNG inside the block, leaving the global RNG state as it was.

    >>> with seeded_init(3):
    ...     a = torch.nn.Linear(2, 2)
    >>> with seeded_init(3):
    ...     b = torch.nn.Linear(2, 2)
    >>> bool(torch.equal(a.weight, b.weight))
    True
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def random_init(module: torch.nn.Module) -> torch.nn.Module:
    """Re-initialise ``module`` in place so the signal keeps its scale through the network.

    Convolutions: He-normal with fan-in (variance-preserving for ReLU-like activations), zero
    bias; norms: unit scale, zero shift; linear layers: N(0, 0.01), zero bias. PyTorch's per-layer
    defaults (and torchvision's fan-out scheme) shrink the activations by orders of magnitude over
    a deep net in eval mode, where batch norm with its initial running statistics is the
    identity; the random-init control would then be numerically degenerate (penultimate
    activations ~1e-9). Call inside :func:`seeded_init` for a reproducible twin.
    """
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_in")
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
        elif isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm, torch.nn.LayerNorm)):
            if m.weight is not None:
                torch.nn.init.ones_(m.weight)
                torch.nn.init.zeros_(m.bias)
        elif isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, 0.0, 0.01)
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
    return module
