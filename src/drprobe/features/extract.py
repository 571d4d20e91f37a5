"""Streaming feature extraction: images (or texts) in, (b, d) float32 batches out, in input order.

:func:`iter_layer_features` reads several (layer, pooling) pairs from one forward pass per batch
(:func:`~drprobe.sources.layers.layers_features`); :func:`iter_features` is its one-layer case.

Only a batch or two of inputs and features are alive at a time, so memory stays bounded whatever
the number of inputs; the caller (the feature cache) writes each batch to disk. The batch size
adapts to the layer and to a memory budget (:func:`~drprobe.features.batching.plan_batches`).

With ``device`` the model is moved there for the extraction and back afterwards. On CUDA the
uint8 inputs travel through pinned memory with non-blocking copies and are resized and
normalised on the GPU, features come back the same way, and the next batch is queued before the
current one is handed out, so the host prepares inputs while the GPU computes. ``precision``
picks ``torch.autocast`` mixed precision; features are always returned as float32.

Text models (``hf:`` text encoders) take a list of strings, tokenized batch by batch.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from drprobe.errors import InvalidValueError
from drprobe.features.batching import (
    DEFAULT_MAX_BATCH_MB,
    GPU_MEMORY_FRACTION,
    autocast_for,
    channels_last,
    check_budgets,
    feature_dim,
    input_side,
    on_device,
    plan_batches,
    positive_int,
    resolve_device,
    resolve_precision,
    upload,
)
from drprobe.sources.adapters.tokens import is_text
from drprobe.sources.layers import PENULTIMATE, check_pooling, layers_features, resolve_layer
from drprobe.sources.registry import ModelBundle
from drprobe.sources.transforms import preprocess

__all__ = ["feature_dim", "iter_features", "iter_layer_features", "plan_batches"]

Request = tuple[str, str]
"""A (layer, pooling) pair."""


def iter_features(
    bundle: ModelBundle,
    layer: str,
    images: np.ndarray | Sequence[str],
    *,
    pooling: str = "avg",
    image_size: int | None = None,
    batch_size: int = 256,
    progress: bool = True,
    desc: str | None = None,
    device: str | torch.device | None = None,
    precision: str = "auto",
    max_batch_mb: float | None = DEFAULT_MAX_BATCH_MB,
    gpu_memory_fraction: float = GPU_MEMORY_FRACTION,
) -> Iterator[np.ndarray]:
    """Yield the features of ``images`` batch by batch.

    Args:
        bundle: a loaded model.
        layer: ``"penultimate"`` or a name from :func:`drprobe.sources.layers.list_layers`.
        images: (n, H, W) grey or (n, H, W, 3) RGB, uint8 or float in [0, 1]; any array that
            slices along the first axis (a memmap is read one batch at a time).
        pooling: ``"avg"`` or ``"flatten"`` (see :func:`~drprobe.sources.layers.layer_features`).
        image_size: input side in pixels; None = the model's native ``input_size``.
        batch_size: the most images per forward pass (:func:`plan_batches` may use fewer).
        progress: show a tqdm bar over images on stderr.
        desc: label of the progress bar.
        device: None (where the model is), ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``,
            ``"mps"``; the model is moved there while the iterator runs, then moved back.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (``torch.autocast``).
        max_batch_mb: host-memory budget of one batch in MiB; None = no budget.
        gpu_memory_fraction: share of the free GPU memory a batch may use (CUDA only).

    Text models (``is_text(bundle)``): ``images`` is a list of n strings, ``image_size`` the
    maximum number of tokens per text (default ``bundle.input_size``; longer texts are
    truncated), and ``pooling`` may also be ``"cls"`` or ``"mean"``. Each batch is tokenized
    with padding to its longest text (to ``image_size`` tokens for ``"flatten"``, so every row
    has the same width); the attention mask keeps padding out of ``"mean"``.

    Returns:
        An iterator of float32 (b, d) arrays, b = the planned batch size except maybe the last,
        in input order. Arguments are checked before the iterator is returned; the batch plan
        (one or three dummy forward passes) is made when iteration starts.
    """
    stream = iter_layer_features(
        bundle, [(layer, pooling)], images, image_size=image_size, batch_size=batch_size,
        progress=progress, desc=desc, device=device, precision=precision,
        max_batch_mb=max_batch_mb, gpu_memory_fraction=gpu_memory_fraction)
    return (outputs[0] for outputs in stream)


def iter_layer_features(
    bundle: ModelBundle,
    requests: Sequence[Request],
    images: np.ndarray | Sequence[str],
    *,
    image_size: int | None = None,
    batch_size: int = 256,
    progress: bool = True,
    desc: str | None = None,
    device: str | torch.device | None = None,
    precision: str = "auto",
    max_batch_mb: float | None = DEFAULT_MAX_BATCH_MB,
    gpu_memory_fraction: float = GPU_MEMORY_FRACTION,
) -> Iterator[list[np.ndarray]]:
    """Yield, batch by batch, the features of every (layer, pooling) request from one pass.

    Arguments are those of :func:`iter_features`, with ``requests`` a non-empty list of
    (layer, pooling) pairs instead of one layer and pooling. The batch size is the smallest
    that :func:`~drprobe.features.batching.plan_batches` allows for any request.

    Returns:
        An iterator of lists: one float32 (b, d_i) array per request, in request order.

    Memory: one batch of inputs, the forward pass up to the deepest requested layer, and the
    pooled features of every request for one or two batches (b * sum d_i floats each).
    """
    requests = list(requests)
    if not requests:
        raise InvalidValueError("extraction needs at least one (layer, pooling) request")
    for _layer, pooling in requests:
        check_pooling(pooling, bundle)
    requests = [(resolve_layer(bundle, layer), pooling) for layer, pooling in requests]
    size = input_side(bundle, image_size)
    batch_size = positive_int(batch_size, "batch size")
    dev = resolve_device(device, bundle)
    resolve_precision(precision, dev)
    check_budgets(max_batch_mb, gpu_memory_fraction)
    plan_args = {"image_size": size, "batch_size": batch_size,
                 "max_batch_mb": max_batch_mb, "device": dev, "precision": precision,
                 "gpu_memory_fraction": gpu_memory_fraction}
    if is_text(bundle):
        texts = _texts(images)
        # penultimate ignores the pooling; a flattened hidden state needs one token length
        fixed = any(p == "flatten" and layer != PENULTIMATE for layer, p in requests)

        def encode(batch: list[str]) -> dict[str, torch.Tensor]:
            inputs = bundle.encode(batch, size, fixed_length=fixed)  # type: ignore[attr-defined]
            return {k: upload(v, dev) for k, v in inputs.items()}

        return _stream(bundle, requests, texts, encode, plan_args, progress, desc, "text")
    if not hasattr(images, "shape"):
        images = np.asarray(images)
    if len(images.shape) not in (3, 4):
        raise InvalidValueError(
            f"images must have shape (n, H, W) or (n, H, W, 3), got {tuple(images.shape)}"
        )

    def prepare(batch: np.ndarray) -> torch.Tensor:
        if dev.type == "cpu":
            return preprocess(batch, size, bundle.mean, bundle.std)
        return preprocess(upload(torch.from_numpy(np.array(batch)), dev), size,
                          bundle.mean, bundle.std)

    return _stream(bundle, requests, images, prepare, plan_args, progress, desc, "img")


def _pipelined(device: torch.device) -> bool:
    """Whether batch i is handed out only after batch i+1 is queued (asynchronous devices)."""
    return device.type == "cuda"


def _to_host(feats: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, Any]:
    """Start copying float32 features to the host; returns (host tensor, CUDA event or None)."""
    feats = feats.float()
    if device.type != "cuda":
        return feats.cpu(), None
    host = torch.empty(feats.shape, dtype=torch.float32, pin_memory=True)
    host.copy_(feats, non_blocking=True)
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    return host, event


def _finish(host: torch.Tensor, event: Any) -> np.ndarray:
    if event is not None:
        event.synchronize()
    return host.numpy()


def _stream(
    bundle: ModelBundle, requests: list[Request], items: Any, prepare: Callable[[Any], Any],
    plan_args: dict[str, Any], progress: bool, desc: str | None, unit: str,
) -> Iterator[list[np.ndarray]]:
    """Plan, then forward batch after batch; on CUDA batch i is handed out after batch i+1
    has been queued, so the host prepares inputs while the GPU computes."""
    bar = tqdm(total=len(items), desc=desc, unit=unit, file=sys.stderr, disable=not progress)
    try:
        with on_device(bundle, plan_args["device"]):  # moved once: planning runs there too
            plan = min((plan_batches(bundle, layer, pooling=pooling, **plan_args)
                        for layer, pooling in dict.fromkeys(requests)),
                       key=lambda p: p.batch_size)
            pipelined = _pipelined(plan.device)
            pending: tuple[list, int] | None = None
            with channels_last(bundle) as nhwc:
                for start in range(0, len(items), plan.batch_size):
                    batch = items[start:start + plan.batch_size]
                    x = prepare(batch)
                    if nhwc and isinstance(x, torch.Tensor) and x.ndim == 4:
                        x = x.contiguous(memory_format=torch.channels_last)
                    with autocast_for(plan.device, plan.precision):
                        feats = layers_features(bundle, requests, x)
                    current = ([_to_host(f, plan.device) for f in feats], len(batch))
                    del x, feats
                    if pipelined and pending is None:
                        pending = current
                        continue
                    done, pending = (pending, current) if pipelined else (current, None)
                    yield [_finish(host, event) for host, event in done[0]]
                    bar.update(done[1])
            if pending is not None:
                yield [_finish(host, event) for host, event in pending[0]]
                bar.update(pending[1])
    finally:
        bar.close()


def _texts(texts: object) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence | np.ndarray):
        raise InvalidValueError(
            f"a text model needs a list of strings, got {type(texts).__name__}"
        )
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise InvalidValueError(f"a text model needs a list of strings, got an item {bad!r}")
    return list(texts)
