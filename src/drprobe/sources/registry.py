"""Model registry: spec -> factory, and the :class:`ModelBundle` every factory returns.

Specs are ``<prefix>:<name>``; a spec without a prefix means ``builtin:<spec>``. Exact specs
(``builtin:mobilenet_v2``) register with :func:`register_model`, whole prefixes (``timm:``,
``torchvision:``, ``hf:``, ``module:``, ``ckpt:``) with :func:`register_prefix`.

This module imports nothing else from :mod:`drprobe.sources`: the built-in models, the paper's
zoo and the adapters import it to register themselves, and :mod:`drprobe.sources.models`
(which imports all of them) loads a spec through :func:`factory_for`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from drprobe.errors import unknown

__all__ = [
    "WEIGHTS",
    "Factory",
    "ModelBundle",
    "available_models",
    "canonical_spec",
    "factory_for",
    "freeze",
    "known_spec",
    "register_model",
    "register_prefix",
    "registered_prefixes",
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


def register_model(spec: str, factory: Factory) -> None:
    """Make ``load_model(spec)`` call ``factory(spec, weights, seed)``."""
    _MODELS[spec] = factory


def register_prefix(prefix: str, factory: Factory) -> None:
    """Make every ``"<prefix>:<name>"`` not registered by name load with ``factory``."""
    _PREFIXES[prefix] = factory


def available_models() -> list[str]:
    """The specs registered by name, e.g. ``["builtin:mobilenet_v2", ...]``."""
    return list(_MODELS)


def registered_prefixes() -> list[str]:
    """The prefixes whose every ``<prefix>:<name>`` has a factory, e.g. ``["timm", ...]``."""
    return sorted(_PREFIXES)


def canonical_spec(spec: str) -> str:
    """``"mobilenet_v2"`` -> ``"builtin:mobilenet_v2"``; specs with a prefix are unchanged."""
    return spec if ":" in spec else f"builtin:{spec}"


def known_spec(spec: str) -> bool:
    """Whether :func:`factory_for` finds a factory for ``spec`` (without building anything)."""
    canonical = canonical_spec(spec)
    return canonical in _MODELS or canonical.split(":", 1)[0] in _PREFIXES


def factory_for(spec: object) -> tuple[str, Factory]:
    """``(canonical spec, factory)`` for a spec.

    Raises:
        UnknownNameError: no factory (the message lists the registered specs and prefixes).
    """
    if isinstance(spec, str):
        canonical = canonical_spec(spec)
        factory = _MODELS.get(canonical) or _PREFIXES.get(canonical.split(":", 1)[0])
        if factory is not None:
            return canonical, factory
    choices = available_models() + [f"{p}:NAME" for p in registered_prefixes()]
    raise unknown("model", spec, choices)


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """Eval mode, no gradients; returns the same module."""
    module.eval()
    module.requires_grad_(False)
    return module
