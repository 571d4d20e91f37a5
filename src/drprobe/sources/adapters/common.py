"""Helpers shared by the adapters: spec options, seeded builds, classifier search, hashing.

Nothing here imports an optional library, so importing the adapters package stays cheap.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from drprobe.errors import InvalidValueError

__all__ = [
    "DEFAULT_INPUT_SIZE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "find_classifier",
    "last_linear",
    "module_name",
    "one_line",
    "parse_options",
    "seeded",
    "split_options",
    "state_sha256",
    "triple",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_INPUT_SIZE = 224


def one_line(text: object) -> str:
    """``str(text)`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


def split_options(name: str) -> tuple[str, dict[str, object]]:
    """``"a/b?x=1&y=cls"`` -> ``("a/b", {"x": 1, "y": "cls"})``; no ``?`` -> no options."""
    base, sep, query = name.partition("?")
    return base, parse_options(query) if sep else {}


def parse_options(query: str) -> dict[str, object]:
    """Parse ``"k=v&k2=v2"``; each value is a Python literal if it reads as one, else a string."""
    options: dict[str, object] = {}
    for item in query.split("&"):
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise InvalidValueError(
                f"bad option {item!r} in {query!r}; write options as key=value joined by '&'"
            )
        try:
            options[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            options[key] = raw
    return options


def format_options(options: dict[str, object]) -> str:
    """Inverse of :func:`parse_options` in a canonical (sorted) order; ``""`` for no options."""
    if not options:
        return ""
    return "?" + "&".join(
        f"{k}={v}" if isinstance(v, str) else f"{k}={v!r}" for k, v in sorted(options.items())
    )


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run the body with torch's global RNG seeded by ``seed`` and restore the RNG afterwards.

    ``None`` leaves the RNG alone. Used to make random-init twins deterministic.
    """
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def last_linear(module: nn.Module, prefix: str = "") -> str | None:
    """Name (relative to the root, with ``prefix``) of the last ``nn.Linear`` in module order."""
    found = None
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Linear):
            found = f"{prefix}.{name}" if prefix and name else (prefix or name)
    return found


def module_name(root: nn.Module, target: nn.Module) -> str | None:
    """The name under which ``target`` is registered inside ``root`` (None if it is not)."""
    for name, sub in root.named_modules():
        if sub is target:
            return name
    return None


def find_classifier(module: nn.Module, spec: str, candidates: Sequence[str] = ()) -> str:
    """Name of the final Linear: the last Linear inside the first of ``candidates`` that exists
    and holds one, else the last Linear of the whole module.

    Raises:
        InvalidValueError: the module holds no ``nn.Linear`` at all.
    """
    for name in candidates:
        try:
            sub = module.get_submodule(name)
        except AttributeError:
            continue
        found = last_linear(sub, name)
        if found:
            return found
    found = last_linear(module)
    if not found:
        raise InvalidValueError(
            f"model {spec!r} has no nn.Linear, so its penultimate layer is undefined; "
            "name the classifier module explicitly (drprobe_classifier)"
        )
    return found


def state_sha256(module: nn.Module) -> str:
    """sha256 over the module's state_dict (names, dtypes, shapes and bytes, in order)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def triple(value: object, what: str, spec: str) -> tuple[float, float, float]:
    """Three floats from a scalar or a 3-sequence (per-channel mean/std)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),) * 3
    try:
        values = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3:
        raise InvalidValueError(f"{what} of model {spec!r} must be 3 numbers, got {value!r}")
    return values  # type: ignore[return-value]
