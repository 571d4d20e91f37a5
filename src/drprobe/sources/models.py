"""Model registry: a spec such as ``"builtin:mobilenet_v2"`` -> a frozen :class:`ModelBundle`.

Specs are ``<prefix>:<name>``. Only the ``builtin:`` models exist today; other prefixes
(``timm:``, ``hf:``, ``module:``) will register their own factories with :func:`register_model`
or :func:`register_prefix`. A spec without a prefix means ``builtin:<spec>``.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from drprobe.errors import InvalidValueError, unknown
from drprobe.sources.builtin import efficientnet_lite, mobilenet_v2

__all__ = [
    "WEIGHTS",
    "ModelBundle",
    "available_models",
    "canonical_spec",
    "load_model",
    "register_model",
    "register_prefix",
]

WEIGHTS = ("pretrained", "random", "checkpoint")


@dataclass(eq=False)
class ModelBundle:
    """A loaded model and what a caller needs to feed it and to name its features.

    Attributes:
        spec: canonical spec, e.g. ``"builtin:mobilenet_v2"``.
        weights: ``"pretrained"``, ``"random"`` or ``"checkpoint"`` (loaded from a file).
        seed: seed of the random init (None otherwise).
        module: the network, in eval mode with ``requires_grad`` False.
        input_size: native square input side in pixels.
        mean, std: per-channel normalisation of [0, 1] RGB inputs.
        classifier: module name of the final Linear; its input is the penultimate vector.
        weights_sha256: sha256 of the weights file or checkpoint (None for random init).
    """

    spec: str
    weights: str
    seed: int | None
    module: torch.nn.Module
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    classifier: str
    weights_sha256: str | None


Factory = Callable[[str, str, int], ModelBundle]
"""``factory(spec, weights, seed) -> ModelBundle`` with ``weights`` already validated."""

_MODELS: dict[str, Factory] = {}
_PREFIXES: dict[str, Factory] = {}
model_prefixes = _PREFIXES.keys  # public: the registered spec prefixes (timm, hf, ...)


def register_model(spec: str, factory: Factory) -> None:
    """Make ``load_model(spec)`` call ``factory(spec, weights, seed)``."""
    _MODELS[spec] = factory


def register_prefix(prefix: str, factory: Factory) -> None:
    """Make every ``"<prefix>:<name>"`` not registered by name load with ``factory``."""
    _PREFIXES[prefix] = factory


def _freeze(module: torch.nn.Module) -> torch.nn.Module:
    module.eval()
    module.requires_grad_(False)
    return module


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
            module=_freeze(module), input_size=input_size, mean=tuple(mean), std=tuple(std),
            classifier=classifier, weights_sha256=sha,
        )

    return factory


for _name, _mod in (("mobilenet_v2", mobilenet_v2), ("efficientnet_lite0", efficientnet_lite)):
    register_model(
        f"builtin:{_name}",
        _builtin(_mod.build, _mod.INPUT_SIZE, _mod.MEAN, _mod.STD, _mod.CLASSIFIER),
    )


def available_models() -> list[str]:
    """The registered model specs, e.g. ``["builtin:mobilenet_v2", ...]``."""
    return list(_MODELS)


def canonical_spec(spec: str) -> str:
    """``"mobilenet_v2"`` -> ``"builtin:mobilenet_v2"``; specs with a prefix are unchanged."""
    return spec if ":" in spec else f"builtin:{spec}"


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
    if not isinstance(spec, str):
        raise unknown("model", spec, available_models())
    canonical = canonical_spec(spec)
    factory = _MODELS.get(canonical) or _PREFIXES.get(canonical.split(":", 1)[0])
    if factory is None:
        raise unknown("model", spec, available_models())
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
    from drprobe.sources.zoo.checkpoints import load_checkpoint  # zoo imports this module

    return load_checkpoint(factory(canonical, "random", 0), checkpoint, checkpoint_format,
                           trust_checkpoint)


# Plugin packages register more specs and prefixes when imported (kept last: they import us).
from drprobe.sources import adapters as _adapters  # noqa: F401
from drprobe.sources import zoo as _zoo  # noqa: F401
