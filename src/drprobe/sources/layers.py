"""Layers of a loaded model: list them with shapes, validate names, read one layer's features.

A layer is ``"penultimate"`` (exactly the input of the bundle's final Linear) or the name of a
submodule that runs once per forward pass. Modules that run several times (an activation module
reused inside a block, say) have no single output and are refused with a message saying so.
The forward pass stops as soon as the requested layer has produced its output, so early layers
cost only the network up to them.

Transformer bundles (:class:`~drprobe.sources.adapters.tokens.HiddenStatesBundle`, from ``hf:``)
have other layers: ``"penultimate"`` and ``"hidden_states.0"`` ... ``"hidden_states.N"`` (the
embeddings, then each block's output), read from one forward pass. Their token sequences
(b, T, D) pool with ``"cls"`` (first token), ``"mean"`` / ``"avg"`` (mean over real tokens, the
attention mask respected) or ``"flatten"`` (T*D, padding zeroed).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from drprobe.errors import InvalidValueError, unknown
from drprobe.sources.adapters.tokens import HIDDEN_PREFIX, HiddenStatesBundle
from drprobe.sources.registry import ModelBundle

__all__ = ["PENULTIMATE", "POOLINGS", "TOKEN_POOLINGS", "LayerInfo", "check_pooling",
           "dummy_inputs", "layer_features", "layers_features", "list_layers", "pool",
           "pool_tokens", "poolings", "resolve_layer"]

PENULTIMATE = "penultimate"
POOLINGS = ("avg", "flatten")
TOKEN_POOLINGS = ("avg", "cls", "flatten", "mean")


@dataclass(frozen=True)
class LayerInfo:
    """One readable layer: its name, module class name and output shape without batch dim."""

    name: str
    kind: str
    shape: tuple[int, ...]


class _StopForward(Exception):
    """Raised inside a hook once the wanted output is captured, to skip the rest of the net."""


# (module, input side) -> listing; weak keys so a dropped model frees its entry.
_LISTINGS: weakref.WeakKeyDictionary[nn.Module, dict[int, list[LayerInfo]]] = (
    weakref.WeakKeyDictionary()
)
# module -> names of submodules that run more than once per forward pass.
_REUSED: weakref.WeakKeyDictionary[nn.Module, dict[int, dict[str, int]]] = (
    weakref.WeakKeyDictionary()
)


def _first_tensor(value: object) -> torch.Tensor | None:
    """The tensor itself, or the first element of a tuple/list output; None otherwise."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, Sequence) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return None


def _device(module: nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _dummy(bundle: ModelBundle, size: int) -> torch.Tensor:
    """A (1, 3, size, size) zero batch on the model's device."""
    return torch.zeros(1, 3, size, size, device=_device(bundle.module))


def dummy_inputs(bundle: ModelBundle, size: int | None = None) -> Any:
    """A one-example batch for shape probing: a (1, 3, s, s) zero image, or for text models one
    short text tokenized and padded to ``s`` tokens (``s`` defaults to ``bundle.input_size``).
    """
    size = int(size or bundle.input_size)
    if isinstance(bundle, HiddenStatesBundle) and bundle.modality == "text":
        return bundle.encode(["a short example text"], size, fixed_length=True)
    return _dummy(bundle, size)


def _classifier(bundle: ModelBundle) -> nn.Module:
    try:
        return bundle.module.get_submodule(bundle.classifier)
    except AttributeError as err:
        raise InvalidValueError(
            f"classifier {bundle.classifier!r} of model {bundle.spec!r} is not one of its modules"
        ) from err


def _penultimate(bundle: ModelBundle, x: Any) -> torch.Tensor:
    """(b, d) input of the classifier, captured by a pre-hook that stops the forward pass."""
    return _hooked_forward(bundle, {PENULTIMATE: ["flatten"]}, x)[(PENULTIMATE, "flatten")]


def _hooked_forward(bundle: ModelBundle, wanted: dict[str, list[str]], x: Any
                    ) -> dict[tuple[str, str], torch.Tensor]:
    """One forward pass of ``x`` with a hook on every layer of ``wanted`` (layer -> poolings);
    returns the pooled output per (layer, pooling) and stops the pass after the last of them."""
    captured: dict[tuple[str, str], torch.Tensor] = {}
    done: set[str] = set()

    def keep(layer: str, out: torch.Tensor | None) -> None:
        if out is not None and layer not in done:
            for pooling in wanted[layer]:
                pooled = out.flatten(1) if layer == PENULTIMATE else pool(out, pooling)
                shares = pooled.untyped_storage().data_ptr() == out.untyped_storage().data_ptr()
                captured[(layer, pooling)] = pooled.clone() if shares else pooled
            done.add(layer)
        if len(done) == len(wanted):
            raise _StopForward

    handles = []
    try:
        for layer in wanted:
            if layer == PENULTIMATE:
                handles.append(_classifier(bundle).register_forward_pre_hook(
                    lambda _m, args, name=layer: keep(name, args[0])))
            else:
                handles.append(bundle.module.get_submodule(layer).register_forward_hook(
                    lambda _m, _a, output, name=layer: keep(name, _first_tensor(output))))
        with torch.inference_mode():
            try:
                bundle.module(x.to(_device(bundle.module)))
            except _StopForward:
                pass
    finally:
        for handle in handles:
            handle.remove()
    missing = [layer for layer in wanted if layer not in done]
    if missing:
        raise InvalidValueError(
            f"layer {missing[0]!r} of model {bundle.spec!r} produced no tensor in a forward pass"
        )
    return captured


def list_layers(bundle: ModelBundle, input_size: int | None = None) -> list[LayerInfo]:
    """Every submodule that runs exactly once, with its output shape, in order of completion.

    One dummy forward pass of a (1, 3, s, s) batch with ``s = input_size`` (default the model's
    native size) measures the shapes. The first row is ``"penultimate"`` with shape ``(d,)``.
    Results are cached per model and input size.

    Transformer bundles list ``"penultimate"`` then ``"hidden_states.<i>"`` with kind
    ``"tokens"`` (shape (T, D)) or ``"map"`` (shape (C, H, W)); for text models ``input_size``
    is the padded token length T.
    """
    size = int(input_size or bundle.input_size)
    cached = _LISTINGS.setdefault(bundle.module, {})
    if size in cached:
        return list(cached[size])
    if isinstance(bundle, HiddenStatesBundle):
        cached[size] = _hidden_listing(bundle, size)
        _REUSED.setdefault(bundle.module, {})[size] = {}
        return list(cached[size])
    calls: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    kinds: dict[str, str] = {}
    handles = []

    def make_hook(name: str):
        def hook(module: nn.Module, _args: tuple, output: object) -> None:
            calls[name] = calls.get(name, 0) + 1
            out = _first_tensor(output)
            if out is not None and name not in shapes:
                shapes[name] = tuple(out.shape[1:])
                kinds[name] = type(module).__name__
        return hook

    for name, module in bundle.module.named_modules():
        if name:
            handles.append(module.register_forward_hook(make_hook(name)))
    try:
        with torch.inference_mode():
            bundle.module(_dummy(bundle, size))
    finally:
        for handle in handles:
            handle.remove()
    penultimate = _penultimate(bundle, _dummy(bundle, size))
    rows = [LayerInfo(PENULTIMATE, "penultimate", tuple(penultimate.shape[1:]))]
    rows += [LayerInfo(n, kinds[n], shapes[n]) for n in shapes if calls[n] == 1]
    cached[size] = rows
    _REUSED.setdefault(bundle.module, {})[size] = {n: c for n, c in calls.items() if c > 1}
    return list(rows)


def resolve_layer(bundle: ModelBundle, layer: str) -> str:
    """Validate a layer name against :func:`list_layers` at the native size; return it.

    Raises:
        UnknownNameError: not a layer of this model (the message lists all valid names).
        InvalidValueError: a module that runs several times per forward pass.
    """
    if layer == PENULTIMATE:
        return layer
    rows = list_layers(bundle)
    names = [row.name for row in rows]
    if layer in names:
        return layer
    reused = _REUSED[bundle.module][int(bundle.input_size)]
    if layer in reused:
        raise InvalidValueError(
            f"layer {layer!r} runs {reused[layer]} times per forward pass, so it has no single "
            f"output; valid choices: {', '.join(sorted(names))}"
        )
    raise unknown("layer", layer, names)


def poolings(bundle: ModelBundle | None = None) -> tuple[str, ...]:
    """Valid poolings for ``bundle``: :data:`TOKEN_POOLINGS` for transformer bundles, else
    :data:`POOLINGS`."""
    return TOKEN_POOLINGS if isinstance(bundle, HiddenStatesBundle) else POOLINGS


def check_pooling(pooling: str, bundle: ModelBundle | None = None) -> None:
    """Raise InvalidValueError unless ``pooling`` is valid for ``bundle`` (see :func:`poolings`)."""
    _check_pooling(pooling, poolings(bundle))


def _check_pooling(pooling: str, choices: tuple[str, ...]) -> None:
    if pooling not in choices:
        raise InvalidValueError(
            f"unknown pooling {pooling!r}; valid choices: {', '.join(choices)}"
        )


def pool(output: torch.Tensor, pooling: str) -> torch.Tensor:
    """(b, C, *spatial) -> (b, C) for ``"avg"`` or (b, C*prod(spatial)) for ``"flatten"``.

    A (b, d) output is returned unchanged whatever the pooling. A 3-D output is a token
    sequence (b, T, D), as transformer blocks produce: ``"avg"`` averages over the T tokens.
    """
    check_pooling(pooling)
    if output.ndim <= 2:
        return output.reshape(output.shape[0], -1)
    if pooling == "avg":
        if output.ndim == 3:
            return output.mean(dim=1)
        return output.mean(dim=tuple(range(2, output.ndim)))
    return output.reshape(output.shape[0], -1)


def layer_features(
    bundle: ModelBundle, layer: str, x: torch.Tensor, pooling: str = "avg"
) -> torch.Tensor:
    """Features of one layer for a batch of preprocessed images.

    Args:
        bundle: a loaded model.
        layer: ``"penultimate"`` or a name from :func:`list_layers`.
        x: (b, 3, H, W) float images, already normalised.
        pooling: ``"avg"`` (mean over spatial dims) or ``"flatten"`` (one neuron per C*H*W).

    Returns:
        (b, d) float tensor on the model's device.

    For transformer bundles ``x`` is a (b, 3, H, W) image batch or, for text models, the dict
    from :meth:`~drprobe.sources.adapters.tokens.HiddenStatesBundle.encode` (padded to a fixed
    length when ``pooling`` is ``"flatten"``), and ``pooling`` may also be ``"cls"``/``"mean"``.
    """
    return layers_features(bundle, [(layer, pooling)], x)[0]


def layers_features(
    bundle: ModelBundle, requests: Sequence[tuple[str, str]], x: Any
) -> list[torch.Tensor]:
    """Features of several (layer, pooling) pairs from ONE forward pass of a batch.

    Every requested layer is hooked; each hook pools its output at once (a flattened view is
    copied, so a later in-place op cannot change it) and the pass stops as soon as the last
    requested layer has produced its output. Arguments are as in :func:`layer_features`.

    Returns:
        one (b, d_i) tensor per request, in the order of ``requests``.

    Memory: the pooled outputs of the requests (b * sum d_i floats) plus the forward pass up to
    the deepest requested layer; no feature map outlives its hook.
    """
    for _layer, pooling in requests:
        check_pooling(pooling, bundle)
    requests = [(resolve_layer(bundle, layer), pooling) for layer, pooling in requests]
    if isinstance(bundle, HiddenStatesBundle):
        return _hidden_many(bundle, requests, x)
    wanted: dict[str, list[str]] = {}
    for layer, pooling in requests:
        wanted.setdefault(layer, []).append(pooling)
    captured = _hooked_forward(bundle, wanted, x)
    return [captured[request] for request in requests]


def pool_tokens(states: torch.Tensor, mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """(b, T, D) token states -> (b, D) for ``"cls"`` (token 0) and ``"mean"``/``"avg"`` (mean
    over tokens whose ``mask`` (b, T) is 1; all tokens when ``mask`` is None), or (b, T*D) for
    ``"flatten"`` (masked-out tokens set to 0).
    """
    _check_pooling(pooling, TOKEN_POOLINGS)
    if pooling == "cls":
        return states[:, 0]
    weights = (torch.ones(states.shape[:2], device=states.device) if mask is None
               else mask.to(device=states.device, dtype=states.dtype))
    if pooling == "flatten":
        return (states * weights.unsqueeze(-1)).reshape(states.shape[0], -1)
    total = (states * weights.unsqueeze(-1)).sum(dim=1)
    return total / weights.sum(dim=1, keepdim=True).clamp_min(1.0)


def _hidden_listing(bundle: HiddenStatesBundle, size: int) -> list[LayerInfo]:
    inputs = dummy_inputs(bundle, size)
    states, _mask = bundle.hidden_states(inputs)
    penultimate = _hidden_penultimate(bundle, inputs)
    rows = [LayerInfo(PENULTIMATE, "penultimate", tuple(penultimate.shape[1:]))]
    for i, h in enumerate(states):
        kind = "tokens" if h.ndim == 3 else "map"
        rows.append(LayerInfo(f"{HIDDEN_PREFIX}{i}", kind, tuple(h.shape[1:])))
    return rows


def _hidden_penultimate(bundle: HiddenStatesBundle, inputs: Any) -> torch.Tensor:
    """Input of the classifier when there is one, else the last hidden state pooled with
    ``bundle.head_pooling``."""
    if bundle.classifier:
        return _penultimate(bundle, inputs)
    states, mask = bundle.hidden_states(inputs)
    with torch.inference_mode():
        return pool_tokens(states[-1], mask, bundle.head_pooling)


def _hidden_many(bundle: HiddenStatesBundle, requests: list[tuple[str, str]], x: Any
                 ) -> list[torch.Tensor]:
    """The requests of a transformer bundle: its hidden states computed once for all."""
    states = None
    out = []
    for layer, pooling in requests:
        if layer == PENULTIMATE:
            out.append(_hidden_penultimate(bundle, x))
            continue
        if states is None:
            states = bundle.hidden_states(x)
        out.append(_hidden_features(bundle, layer, states, pooling))
    return out


def _hidden_features(bundle: HiddenStatesBundle, layer: str, computed: tuple, pooling: str
                     ) -> torch.Tensor:
    states, mask = computed
    h = states[int(layer[len(HIDDEN_PREFIX):])]
    with torch.inference_mode():
        if h.ndim == 3:
            return pool_tokens(h, mask, pooling)
        if pooling == "cls":
            raise InvalidValueError(
                f"pooling 'cls' needs a token sequence but layer {layer!r} of model "
                f"{bundle.spec!r} is a {tuple(h.shape[1:])} map; valid choices: avg, flatten, mean"
            )
        return pool(h, "avg" if pooling == "mean" else pooling)
