"""``timm:NAME`` and ``torchvision:NAME`` -- models of the two PyTorch vision libraries.

Both libraries are optional and imported only when such a spec is loaded; where the import
fails the spec fails with a one-line :class:`MissingDataError` saying how to install it.
Pretrained weights come through each library's own loader (which downloads on first use).

- timm: ``timm.create_model(NAME, pretrained=...)``; classifier = ``get_classifier()`` (the
  last Linear inside it); input size, mean and std from ``resolve_data_config(model=...)``
  (the model's ``pretrained_cfg``).
- torchvision: ``torchvision.models.get_model(NAME, weights=DEFAULT or None)``; classifier =
  the last Linear inside ``fc`` / ``classifier`` / ``heads`` / ``head``; input size (crop
  size), mean and std from the default weights' ``transforms()`` (also for random init).

Both libraries resize to size/crop_pct and centre-crop; drprobe's own preprocessing resizes the
shorter side straight to the input size (crop_pct 1), a small documented difference.
``weights="random"`` builds the architecture under a seeded torch RNG.
"""

from __future__ import annotations

import difflib
from typing import Any

import torch

from drprobe.errors import InvalidValueError, MissingDataError, UnknownNameError
from drprobe.sources.adapters.common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    find_classifier,
    module_name,
    one_line,
    seeded,
    state_sha256,
    triple,
)
from drprobe.sources.registry import ModelBundle, freeze

__all__ = ["TORCHVISION_HEADS", "timm_factory", "torchvision_factory"]

TORCHVISION_HEADS = ("fc", "classifier", "heads", "head")


def _import(library: str, install: str) -> Any:
    try:
        return __import__(library)
    except Exception as err:
        raise MissingDataError(
            f"{library} is not importable here ({type(err).__name__}: {one_line(err)}); "
            f"install it with pip install {install} (a release built for torch "
            f"{torch.__version__.split('+')[0]})"
        ) from err


def _unknown(library: str, name: str, choices: list[str]) -> UnknownNameError:
    close = difflib.get_close_matches(name, choices, n=5, cutoff=0.6)
    hint = f"close matches: {', '.join(close)}" if close else f"{len(choices)} models exist"
    return UnknownNameError(f"unknown {library} model {name!r}; {hint}")


def _bundle(spec: str, weights: str, seed: int, model: Any, classifier: str, size: int,
            mean: Any, std: Any) -> ModelBundle:
    random = weights == "random"
    return ModelBundle(
        spec=spec, weights=weights, seed=seed if random else None, module=freeze(model),
        input_size=int(size), mean=triple(mean, "mean", spec), std=triple(std, "std", spec),
        classifier=classifier, weights_sha256=None if random else state_sha256(model),
    )


def timm_factory(spec: str, weights: str, seed: int) -> ModelBundle:
    """Registry factory for ``timm:NAME``."""
    timm = _import("timm", "timm")
    name = spec.split(":", 1)[1]
    try:
        with seeded(seed if weights == "random" else None):
            model = timm.create_model(name, pretrained=weights == "pretrained")
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise _unknown("timm", name, list(timm.list_models())) from err
        raise InvalidValueError(f"timm could not build {name!r}: {one_line(err)}") from err
    except OSError as err:
        raise MissingDataError(f"timm could not fetch the weights of {name!r} "
                               f"(offline?): {one_line(err)}") from err
    head = model.get_classifier()
    head_name = module_name(model, head)
    classifier = find_classifier(model, spec, (head_name,) if head_name else ())
    cfg = timm.data.resolve_data_config({}, model=model)
    size = cfg.get("input_size", (3, 224, 224))[-1]
    return _bundle(spec, weights, seed, model, classifier, size,
                   cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD))


def torchvision_factory(spec: str, weights: str, seed: int) -> ModelBundle:
    """Registry factory for ``torchvision:NAME``."""
    _import("torchvision", "torchvision")
    from torchvision import models as tvm

    name = spec.split(":", 1)[1]
    choices = list(tvm.list_models(module=tvm))
    if name not in choices:
        raise _unknown("torchvision", name, choices)
    try:
        default = tvm.get_model_weights(name).DEFAULT
    except (ValueError, AttributeError, KeyError):
        default = None
    if weights == "pretrained" and default is None:
        raise MissingDataError(f"torchvision has no pretrained weights for {name!r}")
    try:
        with seeded(seed if weights == "random" else None):
            model = tvm.get_model(name, weights=default if weights == "pretrained" else None)
    except OSError as err:
        raise MissingDataError(f"torchvision could not fetch the weights of {name!r} "
                               f"(offline?): {one_line(err)}") from err
    classifier = find_classifier(model, spec, TORCHVISION_HEADS)
    size, mean, std = 224, IMAGENET_MEAN, IMAGENET_STD
    if default is not None:
        preset = default.transforms()
        crop = getattr(preset, "crop_size", None)
        size = crop[0] if isinstance(crop, (list, tuple)) else (crop or size)
        mean, std = getattr(preset, "mean", mean), getattr(preset, "std", std)
    return _bundle(spec, weights, seed, model, classifier, size, mean, std)
