"""Image preprocessing in plain torch: grey -> RGB, resize + centre crop, scale, normalise."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from drprobe.errors import InvalidValueError

__all__ = ["preprocess", "resize_center_crop"]


def _as_float_nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(b, H, W) or (b, H, W, 1|3) images -> (b, 3, H, W) float32 in [0, 1].

    Integer images are read as 0..255; float images are taken to be in [0, 1] already.
    """
    # np.array copies the (batch-sized) input: read-only arrays and memmaps become writable.
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images))
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim == 3:
        x = x.unsqueeze(-1).expand(*x.shape, 3)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise InvalidValueError(
            f"images must have shape (b, H, W) grey or (b, H, W, 3) RGB, got {tuple(x.shape)}"
        )
    if x.dtype == torch.bool or x.is_complex():
        raise InvalidValueError(f"images must be integer or float, got dtype {x.dtype}")
    scale = 255.0 if not x.is_floating_point() else 1.0
    return x.permute(0, 3, 1, 2).to(torch.float32) / scale


def resize_center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """(b, C, H, W) -> (b, C, size, size): shorter side to ``size`` (bilinear, antialiased),
    then the central ``size`` x ``size`` window. Inputs already ``size`` x ``size`` pass through.
    """
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True,
                          align_corners=False)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return x[..., top:top + size, left:left + size]


def preprocess(
    images: np.ndarray | torch.Tensor,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """Turn a batch of images into a model's input.

    Args:
        images: (b, H, W) grey or (b, H, W, 3) RGB; uint8 (0..255) or float in [0, 1]; a
            torch tensor stays on its device (the GPU path uploads uint8, then resizes there).
        size: output side in pixels; non-square images lose the ends of their longer side.
        mean, std: per-channel normalisation in [0, 1] units (3 values each).

    Returns:
        (b, 3, size, size) float32 tensor ``(x - mean) / std``.
    """
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise InvalidValueError(f"image size must be a positive integer, got {size!r}")
    if len(mean) != 3 or len(std) != 3:
        raise InvalidValueError(f"mean and std need 3 values each, got {mean!r} and {std!r}")
    x = resize_center_crop(_as_float_nchw(images), int(size))
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous()
