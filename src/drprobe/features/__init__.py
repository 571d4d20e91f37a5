"""Features: one door from (model, layer, dataset, split) to a cached feature matrix."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from drprobe import __version__
from drprobe.errors import InvalidValueError, unknown
from drprobe.features.cache import STORAGE_DTYPES, CachedFeatures, FeatureCache
from drprobe.features.extract import iter_features
from drprobe.sources.datasets import (
    PRECOMPUTED_PREFIX,
    load_dataset,
    parse_spec,
    read_precomputed,
    stratified_subsample,
    subsample,
)
from drprobe.sources.layers import resolve_layer
from drprobe.sources.models import ModelBundle, load_model

__all__ = ["CachedFeatures", "FeatureCache", "default_cache_dir", "get_features", "iter_features"]

#: The model spec that goes with a ``features:PATH`` dataset (features computed elsewhere).
PRECOMPUTED = "precomputed"


def default_cache_dir() -> Path:
    """``$DRPROBE_CACHE`` if set, else ``~/.cache/drprobe``."""
    env = os.environ.get("DRPROBE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "drprobe"


def get_features(
    model: str | ModelBundle,
    layer: str,
    dataset: str,
    split: str,
    *,
    weights: str = "pretrained",
    seed: int = 0,
    pooling: str = "avg",
    image_size: int | None = None,
    n: int | None = None,
    sample_seed: int = 0,
    data_root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    dtype: str = "float32",
    batch_size: int = 256,
    progress: bool = True,
) -> CachedFeatures:
    """Features of ``layer`` of ``model`` on ``split`` of ``dataset``, extracted once and cached.

    Args:
        model: a model spec such as ``"builtin:mobilenet_v2"``, or an already loaded bundle.
        layer: ``"penultimate"`` or a module name listed by ``drprobe layers MODEL``.
        dataset, split: e.g. ``"fashion-mnist"``, ``"train"``.
        weights, seed: ``"pretrained"`` or ``"random"`` (seeded random-init twin).
        pooling: ``"avg"`` (global average over space) or ``"flatten"`` (one neuron per C*H*W).
        image_size: input side in pixels; None = the model's native size.
        n, sample_seed: stratified subsample of the split (None = all of it).

    Precomputed features: ``get_features("precomputed", layer, "features:PATH", split)``
    reads features computed elsewhere (formats: :mod:`drprobe.sources.data.arrays`) with no
    model and no cache; ``layer`` is only recorded, ``n``/``sample_seed``/``dtype`` apply.

    Returns:
        :class:`CachedFeatures` with ``X`` (n, d) memory-mapped and ``y`` (n,).
    """
    if parse_spec(dataset)[0] == PRECOMPUTED_PREFIX or model == PRECOMPUTED:
        return _precomputed(model, layer, dataset, split, n, sample_seed, data_root, dtype)
    bundle = model if isinstance(model, ModelBundle) else load_model(model, weights, seed)
    layer = resolve_layer(bundle, layer)
    data = subsample(load_dataset(dataset, split, root=data_root), n, sample_seed)
    size = image_size or bundle.input_size
    parts = {
        "model": bundle.spec,
        "weights": bundle.weights,
        "init_seed": bundle.seed,
        "weights_sha256": bundle.weights_sha256,
        "layer": layer,
        "pooling": pooling,
        "preprocess": {"size": size, "mean": list(bundle.mean), "std": list(bundle.std)},
        "dataset": dataset,
        "split": split,
        "indices": data.indices,
        "dtype": dtype,
        "drprobe_version": __version__,
    }
    desc = f"{bundle.spec}[{bundle.weights}] {layer} {dataset}/{split}"

    def batches():
        return iter_features(
            bundle, layer, data.images, pooling=pooling, image_size=size,
            batch_size=batch_size, progress=progress, desc=desc,
        )

    cache = FeatureCache(cache_dir or default_cache_dir())
    return cache.get_or_create(parts, len(data.labels), batches, data.labels, dtype=dtype)


def _precomputed(
    model: object, layer: str, dataset: str, split: str, n: int | None, sample_seed: int,
    data_root: str | os.PathLike | None, dtype: str,
) -> CachedFeatures:
    """Features of a ``features:PATH`` spec, as :class:`CachedFeatures` (not cached again)."""
    if dtype not in STORAGE_DTYPES:
        raise unknown("features dtype", dtype, STORAGE_DTYPES)
    prefix, path, options = parse_spec(dataset)
    if model != PRECOMPUTED or prefix != PRECOMPUTED_PREFIX:
        raise InvalidValueError(
            f"model {PRECOMPUTED!r} goes with a 'features:PATH' dataset and back; got model "
            f"{model if isinstance(model, str) else type(model).__name__!r}, dataset {dataset!r}"
        )
    if data_root is not None and not Path(path).is_absolute():
        path = str(Path(data_root) / path)
    feats = read_precomputed(path, split, **options)
    idx = stratified_subsample(feats.y, n, sample_seed)
    whole = len(idx) == len(feats.y)
    X = feats.X if whole else feats.X[idx]
    X = X if X.dtype == np.dtype(dtype) else np.asarray(X, dtype=dtype)
    meta = {
        "source": PRECOMPUTED, "path": str(path), "format": feats.format, "layer": layer,
        "dataset": dataset, "split": split, "classes": feats.classes,
        "indices": None if whole else idx.tolist(), "n": int(X.shape[0]),
        "d": int(X.shape[1]), "dtype": str(X.dtype),
    }
    return CachedFeatures(X=X, y=feats.y[idx], meta=meta, path=Path(path))
