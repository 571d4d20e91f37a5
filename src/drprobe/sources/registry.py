"""Model registry: spec -> factory, and the :class:`ModelBundle` every factory returns.

Specs are ``<prefix>:<name>``; a spec without a prefix means ``builtin:<spec>``. Exact specs
(``builtin:mobilenet_v2``) register with :func:`register_model`, whole prefixes (``timm:``,
``torchvision:``, ``hf:``, ``module:``, ``ckpt:``) with :func:`register_prefix`.

This module imports nothing else from :mod:`drprobe.sources`: the built-in models, the paper's
zoo and the adapters import it to register themselves, and :mod:`drprobe.sources.models`
(which imports all of them) loads a spec through :func:`factory_for`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
    "short_model_name",
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


# ------------------------------------------------------------------------- display names

#: Suffixes of weight files dropped from a display name (``ckpt:run/model.pt`` -> ``model``).
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".npz", ".safetensors")
#: Folder or file names that say nothing about the model (compared lower-case).
_GENERIC = ("checkpoint", "final", "latest", "best", "output", "weights")
_SNAPSHOT = re.compile(r"[0-9a-f]{40}")
_MAX_TITLE = 60


def short_model_name(spec: str) -> str:
    """A short display name for a model spec or a model label, for tables and legends.

    The prefix and the ``?options`` go, and of a path or hub id only the last part stays:
    ``"builtin:mobilenet_v2"`` -> ``"mobilenet_v2"``, ``"hf:all-MiniLM-L6-v2?pooling=mean"``
    and ``"hf:/x/y/all-MiniLM-L6-v2"`` and ``"hf:sentence-transformers/all-MiniLM-L6-v2"`` ->
    ``"all-MiniLM-L6-v2"``, ``"ckpt:runs/mrl/model.pt"`` -> ``"mrl"``.

    A last part that names nothing (a file or folder called ``model`` or ending in ``model``,
    or ``checkpoint``, ``final``, ``latest``, ``best``, ``output``, ``weights``; a weights
    file's suffix is dropped first) is replaced, in this order, by the title of the folder's
    model card (the first ``# `` heading of its ``README.md``, as sentence-transformers
    writes it, when it is one line of at most 60 characters), else the parent folder's name.
    A Hugging Face cache snapshot (``.../models--ORG--NAME/snapshots/<hash>``) gives ``NAME``.
    A label without a prefix (a config's ``name``) is returned unchanged. Pure string work
    except for reading that one ``README.md`` when the name is generic.
    """
    if ":" not in spec:
        return spec
    body = spec.split(":", 1)[1].partition("?")[0].rstrip("/") or spec
    if "/" not in body and "\\" not in body:
        return _strip_suffix(body)
    path = Path(body)
    name = _strip_suffix(path.name)
    if _SNAPSHOT.fullmatch(name) and path.parent.name == "snapshots":
        return path.parent.parent.name.rsplit("--", 1)[-1]
    if not _generic(name):
        return name
    title = _card_title(path if path.is_dir() else path.parent)
    if title:
        return title
    return path.parent.name or name


def _strip_suffix(name: str) -> str:
    return name[: -len(Path(name).suffix)] if name.lower().endswith(_WEIGHT_SUFFIXES) else name


def _generic(name: str) -> bool:
    low = name.lower()
    return low.endswith("model") or low in _GENERIC


def _card_title(folder: Path) -> str | None:
    """The first ``# `` heading of ``folder/README.md`` after its front matter, if short."""
    card = folder / "README.md"
    try:
        text = card.read_text(encoding="utf-8", errors="replace") if card.is_file() else ""
    except OSError:
        return None
    if text.startswith("---"):
        text = text.split("\n---", 1)[-1] if "\n---" in text[3:] else ""
    for line in text.splitlines():
        if line.startswith("# "):
            title = line[2:].strip()
            return title if 0 < len(title) <= _MAX_TITLE else None
    return None
