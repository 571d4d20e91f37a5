"""Model registry: a spec such as ``"builtin:mobilenet_v2"`` -> a frozen :class:`ModelBundle`.

Specs are ``<prefix>:<name>``. Only the ``builtin:`` models exist today; other prefixes
(``timm:``, ``hf:``, ``module:``) will register their own factories with :func:`register_model`
or :func:`register_prefix`. A spec without a prefix means ``builtin:<spec>``.
"""

from __future__ import annotations

import numbers
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

WEIGHTS = ("pretrained", "random")


@dataclass(eq=False)
class ModelBundle:
    """A loaded model and what a caller needs to feed it and to name its features.

    Attributes:
        spec: canonical spec, e.g. ``"builtin:mobilenet_v2"``.
        weights: ``"pretrained"`` or ``"random"``.
        seed: seed of the random init (None for pretrained).
        module: the network, in eval mode with ``requires_grad`` False.
        input_size: native square input side in pixels.
        mean, std: per-channel normalisation of [0, 1] RGB inputs.
        classifier: module name of the final Linear; its input is the penultimate vector.
        weights_sha256: sha256 of the weights file (None for random init).
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


def load_model(spec: str, weights: str = "pretrained", seed: int = 0) -> ModelBundle:
    """Load a model by spec, frozen and in eval mode.

    Args:
        spec: ``"builtin:mobilenet_v2"``, ``"builtin:efficientnet_lite0"`` or a short form
            ``"mobilenet_v2"``.
        weights: ``"pretrained"`` or ``"random"`` (same architecture, He-normal fan-in init
            seeded by ``seed``; deterministic for a given seed).
        seed: seed of the random init; ignored for pretrained weights.

    Raises:
        UnknownNameError: unknown spec (the message lists the available ones).
        InvalidValueError: unknown ``weights`` or a non-integer ``seed``.
        MissingDataError: the package holding the weights is not installed or the file is
            damaged.
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
    return factory(canonical, weights, int(seed))


# Plugin packages register more specs and prefixes when imported (kept last: they import us).
from drprobe.sources import adapters as _adapters  # noqa: E402,F401
from drprobe.sources import zoo as _zoo  # noqa: E402,F401
