"""Streaming feature extraction: images (or texts) in, (b, d) float32 batches out, in input order.

Only one batch of inputs and one batch of features are alive at a time, so memory stays bounded
whatever the number of inputs; the caller (the feature cache) writes each batch to disk.
Text models (``hf:`` text encoders) take a list of strings, tokenized batch by batch.
"""

from __future__ import annotations

import numbers
import sys
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from drprobe.errors import InvalidValueError
from drprobe.sources.adapters.tokens import is_text
from drprobe.sources.layers import (
    PENULTIMATE,
    check_pooling,
    dummy_inputs,
    layer_features,
    resolve_layer,
)
from drprobe.sources.models import ModelBundle
from drprobe.sources.transforms import preprocess

__all__ = ["feature_dim", "iter_features"]


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InvalidValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _size(bundle: ModelBundle, image_size: int | None) -> int:
    return _positive_int(bundle.input_size if image_size is None else image_size, "image size")


def feature_dim(
    bundle: ModelBundle, layer: str, pooling: str = "avg", image_size: int | None = None
) -> int:
    """Width d of ``layer``'s features under ``pooling`` at ``image_size`` (one dummy forward;
    for text models ``image_size`` is the token length)."""
    size = _size(bundle, image_size)
    dummy = dummy_inputs(bundle, size) if is_text(bundle) else torch.zeros(1, 3, size, size)
    return int(layer_features(bundle, layer, dummy, pooling).shape[1])


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
) -> Iterator[np.ndarray]:
    """Yield the features of ``images`` batch by batch.

    Args:
        bundle: a loaded model.
        layer: ``"penultimate"`` or a name from :func:`drprobe.sources.layers.list_layers`.
        images: (n, H, W) grey or (n, H, W, 3) RGB, uint8 or float in [0, 1]; any array that
            slices along the first axis (a memmap is read one batch at a time).
        pooling: ``"avg"`` or ``"flatten"`` (see :func:`~drprobe.sources.layers.layer_features`).
        image_size: input side in pixels; None = the model's native ``input_size``.
        batch_size: images per forward pass.
        progress: show a tqdm bar over images on stderr.
        desc: label of the progress bar.

    Text models (``is_text(bundle)``): ``images`` is a list of n strings, ``image_size`` the
    maximum number of tokens per text (default ``bundle.input_size``; longer texts are
    truncated), and ``pooling`` may also be ``"cls"`` or ``"mean"``. Each batch is tokenized
    with padding to its longest text (to ``image_size`` tokens for ``"flatten"``, so every row
    has the same width); the attention mask keeps padding out of ``"mean"``.

    Returns:
        An iterator of float32 (b, d) arrays, b = ``batch_size`` except maybe the last, in input
        order. Arguments are checked before the iterator is returned.
    """
    check_pooling(pooling, bundle)
    layer = resolve_layer(bundle, layer)
    size = _size(bundle, image_size)
    batch_size = _positive_int(batch_size, "batch size")
    if is_text(bundle):
        texts = _texts(images)
        return _text_batches(bundle, layer, texts, pooling, size, batch_size, progress, desc)
    if not hasattr(images, "shape"):
        images = np.asarray(images)
    if len(images.shape) not in (3, 4):
        raise InvalidValueError(
            f"images must have shape (n, H, W) or (n, H, W, 3), got {tuple(images.shape)}"
        )
    return _batches(bundle, layer, images, pooling, size, batch_size, progress, desc)


def _batches(
    bundle: ModelBundle, layer: str, images: np.ndarray, pooling: str, size: int,
    batch_size: int, progress: bool, desc: str | None,
) -> Iterator[np.ndarray]:
    n = len(images)
    bar = tqdm(total=n, desc=desc, unit="img", file=sys.stderr, disable=not progress)
    try:
        for start in range(0, n, batch_size):
            batch = images[start:start + batch_size]
            x = preprocess(batch, size, bundle.mean, bundle.std)
            feats = layer_features(bundle, layer, x, pooling)
            yield feats.cpu().numpy().astype(np.float32, copy=False)
            bar.update(len(batch))
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


def _text_batches(
    bundle: ModelBundle, layer: str, texts: list[str], pooling: str, size: int,
    batch_size: int, progress: bool, desc: str | None,
) -> Iterator[np.ndarray]:
    fixed = pooling == "flatten" and layer != PENULTIMATE  # penultimate ignores the pooling
    bar = tqdm(total=len(texts), desc=desc, unit="text", file=sys.stderr, disable=not progress)
    try:
        for start in range(0, len(texts), batch_size):
            batch = texts[start:start + batch_size]
            inputs = bundle.encode(batch, size, fixed_length=fixed)  # type: ignore[attr-defined]
            feats = layer_features(bundle, layer, inputs, pooling)
            yield feats.cpu().numpy().astype(np.float32, copy=False)
            bar.update(len(batch))
    finally:
        bar.close()
