"""``module:package.module:factory`` -- any model a user's own Python code can build.

The factory is imported and called; it returns an ``nn.Module``, a
:class:`~drprobe.sources.models.ModelBundle`, or a dict with the module and its preprocessing.
Options after ``?`` are passed to the factory as keyword arguments, values read as Python
literals: ``module:mynets.cifar:resnet?depth=18&width=2``.

Weights: a factory with a ``pretrained`` parameter gets ``pretrained=True`` / ``False``; for
``weights="random"`` it is called under a seeded torch RNG. A factory without that parameter is
called as is and, for ``"random"``, every submodule's ``reset_parameters()`` is then re-run
under the seeded RNG (PyTorch's default init; parameters outside such modules are kept).

Defaults, each overridable by (in increasing priority) an attribute on the module, a key of
the returned dict, or a spec option / keyword of :func:`from_factory` of the same name as the
dict key (so options named ``classifier``, ``input_size``, ``mean``, ``std`` are drprobe's, not
the factory's):

- ``classifier`` (attribute ``drprobe_classifier``): the last ``nn.Linear`` in module order;
- ``input_size`` (``drprobe_input_size``): 224;
- ``mean`` / ``std`` (``drprobe_mean`` / ``drprobe_std``): ImageNet's (0.485, 0.456, 0.406) /
  (0.229, 0.224, 0.225);
- ``weights_sha256`` (dict key only): sha256 of the state_dict (pretrained weights only).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import numbers
from collections.abc import Callable
from typing import Any

from torch import nn

from drprobe.errors import InvalidValueError, MissingDataError, UnknownNameError
from drprobe.sources.adapters.common import (
    DEFAULT_INPUT_SIZE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    find_classifier,
    format_options,
    one_line,
    seeded,
    split_options,
    state_sha256,
    triple,
)
from drprobe.sources.registry import ModelBundle, freeze

__all__ = ["DICT_KEYS", "factory", "from_factory", "import_factory", "wrap_module"]

DICT_KEYS = ("module", "classifier", "input_size", "mean", "std", "weights_sha256")


def import_factory(target: str, spec: str | None = None) -> Callable[..., Any]:
    """``"package.module:factory"`` -> the callable, with one-line errors.

    Raises:
        InvalidValueError: ``target`` is not ``module.path:name``, or the import itself failed.
        UnknownNameError: the module cannot be found, or has no attribute ``name``.
    """
    spec = spec or f"module:{target}"
    path, sep, attr = target.rpartition(":")
    if not sep or not path or not attr:
        raise InvalidValueError(
            f"model spec {spec!r} must read module:package.module:factory"
        )
    try:
        mod = importlib.import_module(path)
    except ModuleNotFoundError as err:
        if err.name and (path == err.name or path.startswith(err.name + ".")):
            raise UnknownNameError(
                f"cannot import module {path!r} of model spec {spec!r}: no module named "
                f"{err.name!r}; put its folder on sys.path (PYTHONPATH)"
            ) from err
        raise MissingDataError(
            f"importing module {path!r} of model spec {spec!r} failed: {one_line(err)}"
        ) from err
    except Exception as err:
        raise InvalidValueError(
            f"importing module {path!r} of model spec {spec!r} failed: "
            f"{type(err).__name__}: {one_line(err)}"
        ) from err
    if not hasattr(mod, attr):
        names = sorted(n for n in vars(mod) if not n.startswith("_") and callable(vars(mod)[n]))
        raise UnknownNameError(
            f"module {path!r} has no factory {attr!r}; valid choices: {', '.join(names)}"
        )
    fn = getattr(mod, attr)
    if not callable(fn):
        raise InvalidValueError(f"{path}:{attr} of model spec {spec!r} is not callable")
    return fn


def _takes_pretrained(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "pretrained" in params


def _reset_parameters(module: nn.Module) -> None:
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()


def _call(fn: Callable[..., Any], weights: str, seed: int, kwargs: dict[str, Any],
          spec: str) -> tuple[Any, bool]:
    """Call the factory; returns (its result, whether parameters still need a reset)."""
    if "pretrained" in kwargs:
        raise InvalidValueError(
            f"option 'pretrained' of model spec {spec!r} is set by weights= "
            "('pretrained' or 'random'); remove it"
        )
    random = weights == "random"
    takes = _takes_pretrained(fn)
    extra = {"pretrained": not random} if takes else {}
    try:
        with seeded(seed if random else None):
            result = fn(**kwargs, **extra)
    except Exception as err:
        raise InvalidValueError(
            f"factory of model spec {spec!r} failed: {type(err).__name__}: {one_line(err)}"
        ) from err
    return result, random and not takes


def _positive_size(value: object, spec: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InvalidValueError(f"input_size of model {spec!r} must be a positive integer, "
                                f"got {value!r}")
    return int(value)


def wrap_module(
    module: nn.Module,
    *,
    spec: str,
    weights: str = "pretrained",
    seed: int | None = None,
    classifier: str | None = None,
    input_size: int | None = None,
    mean: Any = None,
    std: Any = None,
    weights_sha256: str | None = None,
) -> ModelBundle:
    """A frozen :class:`ModelBundle` around ``module``; unset fields come from the module's
    ``drprobe_*`` attributes, then the defaults in the module docstring.

    Raises:
        UnknownNameError: ``classifier`` is not a submodule (the message lists the Linears).
        InvalidValueError: no Linear to default to, or a bad size / mean / std.
    """
    if not isinstance(module, nn.Module):
        raise InvalidValueError(f"model {spec!r} is a {type(module).__name__}, not an nn.Module")
    classifier = classifier or getattr(module, "drprobe_classifier", None)
    if classifier is None:
        classifier = find_classifier(module, spec)
    else:
        names = dict(module.named_modules())
        if classifier not in names or not classifier:
            linears = [n for n, m in names.items() if isinstance(m, nn.Linear)]
            raise UnknownNameError(
                f"unknown classifier {classifier!r} of model {spec!r}; valid choices: "
                f"{', '.join(linears)}"
            )
    size = input_size or getattr(module, "drprobe_input_size", None) or DEFAULT_INPUT_SIZE
    random = weights == "random"
    return ModelBundle(
        spec=spec, weights=weights, seed=seed if random else None, module=freeze(module),
        input_size=_positive_size(size, spec),
        mean=triple(mean if mean is not None else getattr(module, "drprobe_mean", IMAGENET_MEAN),
                    "mean", spec),
        std=triple(std if std is not None else getattr(module, "drprobe_std", IMAGENET_STD),
                   "std", spec),
        classifier=classifier,
        weights_sha256=None if random else (weights_sha256 or state_sha256(module)),
    )


def from_factory(
    fn: Callable[..., Any],
    *,
    spec: str | None = None,
    weights: str = "pretrained",
    seed: int = 0,
    classifier: str | None = None,
    input_size: int | None = None,
    mean: Any = None,
    std: Any = None,
    **kwargs: Any,
) -> ModelBundle:
    """Call a model factory and wrap its result (see the module docstring).

    Args:
        fn: the factory; ``fn(**kwargs)`` (plus ``pretrained=`` when it takes one) returns an
            ``nn.Module``, a ``ModelBundle`` or a dict with keys among :data:`DICT_KEYS`.
        spec: name recorded in the bundle (default ``"module:<module>:<qualname>"``).
        weights, seed: ``"pretrained"`` or ``"random"`` (seeded by ``seed``).
        classifier, input_size, mean, std: overrides of what the factory says.
    """
    spec = spec or f"module:{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', fn)}"
    result, reset = _call(fn, weights, seed, kwargs, spec)
    overrides = {"classifier": classifier, "input_size": input_size, "mean": mean, "std": std}
    if isinstance(result, ModelBundle):
        module = result.module
        fields = {"classifier": result.classifier, "input_size": result.input_size,
                  "mean": result.mean, "std": result.std,
                  "weights_sha256": result.weights_sha256}
    elif isinstance(result, dict):
        unknown_keys = sorted(set(result) - set(DICT_KEYS))
        if unknown_keys or "module" not in result:
            raise InvalidValueError(
                f"factory of model {spec!r} returned a dict with keys {sorted(result)}; it needs "
                f"'module' and may have: {', '.join(DICT_KEYS[1:])}"
            )
        module = result["module"]
        fields = {k: v for k, v in result.items() if k != "module"}
    else:
        module, fields = result, {}
    if reset and isinstance(module, nn.Module):
        with seeded(seed):
            _reset_parameters(module)
    fields.update({k: v for k, v in overrides.items() if v is not None})
    bundle = wrap_module(module, spec=spec, weights=weights, seed=seed, **fields)
    if isinstance(result, ModelBundle) and type(result) is not ModelBundle:
        # Keep a subclass (e.g. a transformer bundle) and its extra fields.
        base = {f.name: getattr(bundle, f.name) for f in dataclasses.fields(ModelBundle)}
        return dataclasses.replace(result, **base)
    return bundle


def factory(spec: str, weights: str, seed: int) -> ModelBundle:
    """Registry factory for ``module:package.module:factory[?key=value&...]``."""
    target, options = split_options(spec.split(":", 1)[1])
    fn = import_factory(target, spec)
    canonical = f"module:{target}{format_options(options)}"
    return from_factory(fn, spec=canonical, weights=weights, seed=seed, **options)
