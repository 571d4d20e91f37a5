"""Load a model by spec: ``load_model("builtin:mobilenet_v2")`` -> a frozen :class:`ModelBundle`.

The spec -> factory table lives in :mod:`drprobe.sources.registry`. Importing this module
registers every model source: the built-in packaged models (here), the paper's architectures
(:mod:`drprobe.sources.zoo`, ``builtin:resnet50`` ...) and the library adapters
(:mod:`drprobe.sources.adapters`: ``timm:``, ``torchvision:``, ``hf:``, ``module:``). Each of
those imports only the registry, so the imports run one way.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable

import torch

from drprobe.errors import InvalidValueError
from drprobe.sources import adapters as _adapters  # noqa: F401 -- registers its prefixes
from drprobe.sources import zoo as _zoo  # noqa: F401 -- registers the paper's architectures
from drprobe.sources.builtin import efficientnet_lite, mobilenet_v2, pixels
from drprobe.sources.registry import (
    WEIGHTS,
    Factory,
    ModelBundle,
    available_models,
    canonical_spec,
    factory_for,
    freeze,
    register_model,
    register_prefix,
)
from drprobe.sources.zoo.checkpoints import load_checkpoint

__all__ = [
    "WEIGHTS",
    "ModelBundle",
    "available_models",
    "canonical_spec",
    "load_model",
    "register_model",
    "register_prefix",
]

Builder = Callable[[str, int], tuple[torch.nn.Module, str | None]]


def _builtin(
    builder: Builder, input_size: int, mean: tuple[float, ...], std: tuple[float, ...],
    classifier: str,
) -> Factory:
    """A factory for a built-in model module exposing ``build(weights, seed)``."""

    def factory(spec: str, weights: str, seed: int) -> ModelBundle:
        module, sha = builder(weights, seed)
        return ModelBundle(
            spec=spec, weights=weights, seed=seed if weights == "random" else None,
            module=freeze(module), input_size=input_size, mean=tuple(mean), std=tuple(std),
            classifier=classifier, weights_sha256=sha,
        )

    return factory


for _name, _mod in (("mobilenet_v2", mobilenet_v2), ("efficientnet_lite0", efficientnet_lite)):
    register_model(
        f"builtin:{_name}",
        _builtin(_mod.build, _mod.INPUT_SIZE, _mod.MEAN, _mod.STD, _mod.CLASSIFIER),
    )
for _v in (1, 2):  # EfficientNet-Lite1/2: Lite0's module, other weights and input size
    register_model(f"builtin:efficientnet_lite{_v}", _builtin(
        efficientnet_lite.builder(_v), efficientnet_lite.INPUT_SIZES[_v], efficientnet_lite.MEAN,
        efficientnet_lite.STD, efficientnet_lite.CLASSIFIER))
# Raw pixels (d = S*S, nothing to learn): the "logistic regression on raw pixels" baseline.
register_model("builtin:pixels", _builtin(pixels.build, pixels.INPUT_SIZE, pixels.MEAN,
                                          pixels.STD, pixels.CLASSIFIER))


def load_model(
    spec: str,
    weights: str = "pretrained",
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    *,
    checkpoint_format: str = "auto",
    trust_checkpoint: bool = False,
) -> ModelBundle:
    """Load a model by spec, frozen and in eval mode.

    Args:
        spec: ``"builtin:mobilenet_v2"``, ``"builtin:resnet50"``, ... or a short form
            ``"mobilenet_v2"`` (see :func:`available_models`).
        weights: ``"pretrained"``, ``"random"`` (same architecture, seeded random init;
            deterministic for a given seed) or ``"checkpoint"`` (needs ``checkpoint``).
        seed: seed of the random init; ignored for pretrained weights and checkpoints.
        checkpoint: a weights file to load into the spec's architecture instead of its packaged
            weights. The bundle then has ``weights="checkpoint"`` and ``weights_sha256`` = the
            file's sha256. Formats (see :mod:`drprobe.sources.zoo.formats`): plain state_dict,
            robustness-library adversarial checkpoints, MRL / FF-k (DDP ``module.`` prefix,
            nested heads), AugReg ViT ``.npz``.
        checkpoint_format: ``"auto"`` (detect from the contents) or a format name.
        trust_checkpoint: allow files that need full unpickling. Unpickling can run arbitrary
            code: pass True only for files from a source you trust.

    Raises:
        UnknownNameError: unknown spec (the message lists the available ones).
        InvalidValueError: unknown ``weights``, a non-integer ``seed``, ``"random"`` with a
            checkpoint or ``"checkpoint"`` without one, or a checkpoint that does not fit.
        MissingDataError: the package holding the weights is not installed, the file is
            damaged, or the checkpoint file does not exist.
        DrprobeError: the checkpoint needs full unpickling and ``trust_checkpoint`` is False.
    """
    canonical, factory = factory_for(spec)
    if weights not in WEIGHTS:
        raise InvalidValueError(
            f"unknown weights {weights!r}; valid choices: {', '.join(WEIGHTS)}"
        )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise InvalidValueError(f"seed must be an integer, got {seed!r}")
    if checkpoint is None:
        if weights == "checkpoint":
            raise InvalidValueError(
                "weights 'checkpoint' needs a checkpoint file (checkpoint=PATH, --checkpoint PATH)"
            )
        return factory(canonical, weights, int(seed))
    if weights == "random":
        raise InvalidValueError(
            f"weights 'random' cannot be combined with checkpoint {str(checkpoint)!r}; "
            "valid choices with a checkpoint: pretrained, checkpoint"
        )
    return load_checkpoint(factory(canonical, "random", 0), checkpoint, checkpoint_format,
                           trust_checkpoint)

