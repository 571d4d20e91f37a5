"""Where and in what batches :func:`~drprobe.features.extract.iter_features` runs.

Devices: ``None`` means where the model already is; ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``
or ``"auto"`` (CUDA, else MPS, else CPU). Precision: ``"fp32"`` (no autocast), ``"bf16"`` or
``"fp16"`` (``torch.autocast``); ``"auto"`` is bf16 on CUDA (fp16 where bf16 is unsupported) and
fp32 elsewhere.

Batch sizes adapt to the layer (:func:`plan_batches`): the requested size shrinks until one batch
fits ``max_batch_mb`` of host memory -- on CPU counting the largest activation of the forward
pass (from the module output shapes) and the features, on CUDA the float32 features in flight --
and, on CUDA, until a forward pass fits a share of the free GPU memory
(``torch.cuda.mem_get_info``), the per-example cost being measured with two small passes.
"""

from __future__ import annotations

import contextlib
import numbers
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from drprobe import devices
from drprobe.errors import InvalidValueError, unknown
from drprobe.sources.adapters.tokens import is_text
from drprobe.sources.layers import (
    PENULTIMATE,
    check_pooling,
    dummy_inputs,
    layer_features,
    list_layers,
    resolve_layer,
)
from drprobe.sources.registry import ModelBundle

__all__ = ["ACTIVATION_FACTOR", "DEFAULT_MAX_BATCH_MB", "GPU_MEMORY_FRACTION", "PRECISIONS",
           "BatchPlan", "channels_last", "feature_dim", "fit_batch_size", "gpu_batch_cap", "plan_batches",
           "resolve_device", "resolve_precision"]

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: Default host-memory budget of one batch, in MiB (see :func:`plan_batches`).
DEFAULT_MAX_BATCH_MB = 512.0
#: On CPU a batch costs about this many times its largest activation (inputs, outputs and
#: temporaries of the op in flight; measured ~2.4x on MobileNetV2), plus its features.
ACTIVATION_FACTOR = 3
#: Share of the free GPU memory (``torch.cuda.mem_get_info``) one batch may use.
GPU_MEMORY_FRACTION = 0.5
_FLOAT_BYTES = 4
_PROBE_SIZES = (1, 4)  # batch sizes of the two measuring passes on CUDA
# module -> {(layer, pooling, size): d}; weak keys so a dropped model frees its entry.
_WIDTHS: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, int]] = (
    weakref.WeakKeyDictionary()
)


def positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InvalidValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def input_side(bundle: ModelBundle, image_size: int | None) -> int:
    return positive_int(bundle.input_size if image_size is None else image_size, "image size")


def feature_dim(
    bundle: ModelBundle, layer: str, pooling: str = "avg", image_size: int | None = None
) -> int:
    """Width d of ``layer``'s features under ``pooling`` at ``image_size`` (for text models the
    token length): one dummy forward, remembered per model, so later calls are free."""
    size = input_side(bundle, image_size)
    widths = _WIDTHS.setdefault(bundle.module, {})
    key = (layer, pooling, size)
    if key not in widths:
        out = layer_features(bundle, layer, dummy_inputs(bundle, size), pooling)
        widths[key] = int(out.shape[1])
    return widths[key]


# ------------------------------------------------------------------- devices and precision


def _module_device(bundle: ModelBundle) -> torch.device:
    param = next(bundle.module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def resolve_device(device: str | torch.device | None, bundle: ModelBundle) -> torch.device:
    """:func:`drprobe.devices.resolve_device` with ``None`` meaning where the model is."""
    return devices.resolve_device(device, _module_device(bundle))


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> ``"bf16"`` on CUDA (``"fp16"`` where bf16 is unsupported), else ``"fp32"``;
    other values are checked and returned."""
    if precision not in PRECISIONS:
        raise unknown("precision", precision, PRECISIONS)
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[precision])


@contextlib.contextmanager
def on_device(bundle: ModelBundle, device: torch.device) -> Iterator[None]:
    """Move the model to ``device`` for the ``with`` body, then back where it was."""
    original = _module_device(bundle)
    if original == device:
        yield
        return
    bundle.module.to(device)
    try:
        yield
    finally:
        bundle.module.to(original)


@contextlib.contextmanager
def channels_last(bundle: ModelBundle) -> Iterator[bool]:
    """Convolutional image models run in channels-last memory format for the ``with`` body.

    oneDNN's (CPU) and cuDNN's convolutions are faster on NHWC tensors (about 1.4x for
    MobileNetV2 on CPU); features agree with the default format to float round-off. Yields
    whether the format applies (the caller then converts its input batches too); text models
    and models without a 2-D convolution are left alone.
    """
    module = bundle.module
    applies = not is_text(bundle) and any(isinstance(m, torch.nn.Conv2d)
                                          for m in module.modules())
    if not applies:
        yield False
        return
    module.to(memory_format=torch.channels_last)
    try:
        yield True
    finally:
        module.to(memory_format=torch.contiguous_format)


def upload(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on ``device``: through pinned memory, non-blocking, for CUDA."""
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


# ------------------------------------------------------------------------------ batch sizes


def fit_batch_size(requested: int, item_bytes: float, budget_bytes: float | None) -> int:
    """The largest batch size <= ``requested`` whose ``b * item_bytes`` fits ``budget_bytes``
    (at least 1; ``requested`` when there is no budget)."""
    if budget_bytes is None or item_bytes <= 0:
        return int(requested)
    return int(max(1, min(requested, budget_bytes // item_bytes)))


def gpu_batch_cap(
    requested: int, peak_bytes: Callable[[int], float], free_bytes: float,
    fraction: float = GPU_MEMORY_FRACTION,
) -> int:
    """Batch size whose measured GPU memory fits ``fraction`` of ``free_bytes``.

    ``peak_bytes(b)`` is the peak memory of one forward pass of b examples; it is called at
    b = 1 and 4, and the cost is taken as linear: overhead + b * per_item.
    """
    (b1, b2), (p1, p2) = _PROBE_SIZES, [float(peak_bytes(b)) for b in _PROBE_SIZES]
    per_item = max((p2 - p1) / (b2 - b1), 1.0)
    overhead = max(p1 - per_item, 0.0)
    return fit_batch_size(requested, per_item, max(free_bytes * fraction - overhead, 0.0))


def _largest_activation(bundle: ModelBundle, layer: str, size: int) -> int:
    """Elements of the largest module output (per example) computed up to ``layer``."""
    rows = list_layers(bundle, size)
    names = [row.name for row in rows]
    stop = len(rows) if layer == PENULTIMATE else names.index(layer) + 1
    return max((int(np.prod(row.shape)) for row in rows[1:stop]), default=0)


def _dummy_batch(bundle: ModelBundle, size: int, b: int, device: torch.device) -> Any:
    if is_text(bundle):
        enc = bundle.encode(["a short example text"] * b, size, fixed_length=True)  # type: ignore[attr-defined]
        return {k: v.to(device) for k, v in enc.items()}
    return torch.zeros(b, 3, size, size, device=device)


def _cuda_peak(bundle: ModelBundle, layer: str, pooling: str, size: int, device: torch.device,
               precision: str) -> Callable[[int], float]:
    def peak(b: int) -> float:
        inputs = _dummy_batch(bundle, size, b, device)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        with autocast_for(device, precision):
            layer_features(bundle, layer, inputs, pooling)
        torch.cuda.synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - base)

    return peak


def _real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_budgets(max_batch_mb: float | None, gpu_memory_fraction: float) -> None:
    """Raise InvalidValueError unless ``max_batch_mb`` is None or > 0 and
    ``gpu_memory_fraction`` is in (0, 1]."""
    if max_batch_mb is not None and not (_real(max_batch_mb) and max_batch_mb > 0):
        raise InvalidValueError(
            f"max_batch_mb must be a positive number of MiB or None, got {max_batch_mb!r}"
        )
    if not (_real(gpu_memory_fraction) and 0.0 < gpu_memory_fraction <= 1.0):
        raise InvalidValueError(
            f"gpu_memory_fraction must be in (0, 1], got {gpu_memory_fraction!r}"
        )


@dataclass(frozen=True)
class BatchPlan:
    """How :func:`iter_features` will batch one extraction.

    Attributes:
        batch_size: examples per forward pass (the requested size, shrunk to fit the budgets).
        d: feature width.
        item_bytes: host memory one example is counted for: on CPU
            ``4 * (ACTIVATION_FACTOR * largest activation + d)``, on CUDA ``2 * 4 * d`` (two
            batches of float32 features in flight).
        budget_bytes: the host budget (``max_batch_mb`` MiB), or None.
        gpu_cap: the batch size the free GPU memory allows (CUDA only, else None).
        device: where the forward passes run.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
    """

    batch_size: int
    d: int
    item_bytes: int
    budget_bytes: int | None
    gpu_cap: int | None
    device: torch.device
    precision: str


def plan_batches(
    bundle: ModelBundle,
    layer: str,
    *,
    pooling: str = "avg",
    image_size: int | None = None,
    batch_size: int = 256,
    max_batch_mb: float | None = DEFAULT_MAX_BATCH_MB,
    device: str | torch.device | None = None,
    precision: str = "auto",
    gpu_memory_fraction: float = GPU_MEMORY_FRACTION,
) -> BatchPlan:
    """The batch size and device :func:`iter_features` will use (arguments as there).

    The batch size is the largest b <= ``batch_size`` with ``b * item_bytes <= max_batch_mb``
    MiB (see :class:`BatchPlan` for ``item_bytes``, estimated from the module output shapes of
    one dummy forward) and, on CUDA, with a forward pass of b examples within
    ``gpu_memory_fraction`` of the free GPU memory (measured with two small passes).
    """
    check_pooling(pooling, bundle)
    layer = resolve_layer(bundle, layer)
    size = input_side(bundle, image_size)
    batch_size = positive_int(batch_size, "batch size")
    check_budgets(max_batch_mb, gpu_memory_fraction)
    dev = resolve_device(device, bundle)
    prec = resolve_precision(precision, dev)
    budget = None if max_batch_mb is None else int(float(max_batch_mb) * 2**20)
    with on_device(bundle, dev):
        d = feature_dim(bundle, layer, pooling, size)
        gpu_cap = None
        if dev.type == "cuda":
            item = 2 * _FLOAT_BYTES * d
            free, _total = torch.cuda.mem_get_info(dev)
            peak = _cuda_peak(bundle, layer, pooling, size, dev, prec)
            gpu_cap = gpu_batch_cap(batch_size, peak, free, float(gpu_memory_fraction))
            torch.cuda.empty_cache()
        else:
            item = _FLOAT_BYTES * (ACTIVATION_FACTOR * _largest_activation(bundle, layer, size)
                                   + d)
    b = fit_batch_size(batch_size, item, budget)
    if gpu_cap is not None:
        b = min(b, gpu_cap)
    return BatchPlan(b, d, int(item), budget, gpu_cap, dev, prec)
