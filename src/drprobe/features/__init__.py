"""Features: one door from (model, layer, dataset, split) to a cached feature matrix."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from drprobe import __version__
from drprobe.errors import InvalidValueError, unknown
from drprobe.features.batching import (
    DEFAULT_MAX_BATCH_MB,
    BatchPlan,
    plan_batches,
    resolve_device,
    resolve_precision,
)
from drprobe.features.cache import STORAGE_DTYPES, CachedFeatures, FeatureCache, file_sha256
from drprobe.features.extract import iter_features, iter_layer_features
from drprobe.sources.adapters.tokens import is_text
from drprobe.sources.datasets import (
    PRECOMPUTED_PREFIX,
    Dataset,
    TextDataset,
    load_dataset,
    parse_spec,
    read_precomputed,
    stratified_subsample,
    subsample,
)
from drprobe.sources.layers import check_pooling, resolve_layer
from drprobe.sources.models import ModelBundle, load_model

__all__ = ["BatchPlan", "CachedFeatures", "FeatureCache", "dataset_fingerprint",
           "default_cache_dir", "extract_layers", "get_features", "iter_features",
           "iter_layer_features", "plan_batches"]

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
    checkpoint: str | os.PathLike | None = None,
    checkpoint_format: str = "auto",
    trust_checkpoint: bool = False,
    pooling: str = "avg",
    image_size: int | None = None,
    n: int | None = None,
    sample_seed: int = 0,
    data_root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    dtype: str = "float32",
    batch_size: int = 256,
    max_batch_mb: float | None = DEFAULT_MAX_BATCH_MB,
    device: str | None = None,
    precision: str = "auto",
    progress: bool = True,
    data: Dataset | None = None,
) -> CachedFeatures:
    """Features of ``layer`` of ``model`` on ``split`` of ``dataset``, extracted once and cached.

    Args:
        model: a model spec such as ``"builtin:mobilenet_v2"`` or ``"hf:all-MiniLM-L6-v2"``, or
            an already loaded bundle.
        layer: ``"penultimate"`` or a module name listed by ``drprobe layers MODEL``.
        dataset, split: e.g. ``"fashion-mnist"``, ``"train"``; ``"text:PATH.csv"`` goes with a
            text model.
        weights, seed: ``"pretrained"`` or ``"random"`` (seeded random-init twin).
        checkpoint, checkpoint_format, trust_checkpoint: a weights file loaded into the spec's
            architecture (see :func:`~drprobe.sources.models.load_model`); its sha256 is part
            of the cache key, so an edited checkpoint is extracted again.
        pooling: ``"avg"`` (global average over space) or ``"flatten"`` (one neuron per C*H*W);
            text models also ``"cls"`` and ``"mean"``.
        image_size: input side in pixels (token length for text models); None = the model's.
        n, sample_seed: stratified subsample of the split (None = all of it).
        data: the split already loaded (and subsampled) by the caller, e.g. a job that also
            trains on its images; ``n`` and ``sample_seed`` are then not applied.
        dtype: storage dtype, ``"float32"``, ``"float16"`` (half the disk) or ``"float64"``.
        batch_size, max_batch_mb: the most examples per forward pass, and the host-memory
            budget of one batch in MiB (the batch shrinks to fit; None = no budget).
        device, precision: where to run (None = where the model is, ``"auto"``, ``"cpu"``,
            ``"cuda"``, ...) and with which autocast precision (``"auto"``: bf16/fp16 on CUDA,
            fp32 elsewhere); see :mod:`drprobe.features.batching`. The precision is part of the
            cache key, the device is not.

    Path-based dataset specs (``text:``, ``npz:``, ``imagefolder:``, local ``hf:`` folders)
    add a fingerprint of the file or folder to the cache key (:func:`dataset_fingerprint`), so
    an edited dataset is not served stale.

    Precomputed features: ``get_features("precomputed", layer, "features:PATH", split)``
    reads features computed elsewhere (formats: :mod:`drprobe.sources.data.arrays`) with no
    model and no cache; ``layer`` is only recorded, ``n``/``sample_seed``/``dtype`` apply.

    Returns:
        :class:`CachedFeatures` with ``X`` (n, d) memory-mapped and ``y`` (n,).
    """
    if parse_spec(dataset)[0] == PRECOMPUTED_PREFIX or model == PRECOMPUTED:
        return _precomputed(model, layer, dataset, split, n, sample_seed, data_root, dtype)
    entries = extract_layers(
        model, [layer], dataset, split, pooling=pooling, weights=weights, seed=seed,
        checkpoint=checkpoint, checkpoint_format=checkpoint_format,
        trust_checkpoint=trust_checkpoint, image_size=image_size, n=n, sample_seed=sample_seed,
        data_root=data_root, cache_dir=cache_dir, dtype=dtype, batch_size=batch_size,
        max_batch_mb=max_batch_mb, device=device, precision=precision, progress=progress,
        data=data)
    return next(iter(entries.values()))


def extract_layers(
    model: str | ModelBundle,
    layers: Sequence[str],
    dataset: str,
    split: str,
    *,
    pooling: str | Sequence[str] = "avg",
    weights: str = "pretrained",
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_format: str = "auto",
    trust_checkpoint: bool = False,
    image_size: int | None = None,
    n: int | None = None,
    sample_seed: int = 0,
    data_root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    dtype: str = "float32",
    batch_size: int = 256,
    max_batch_mb: float | None = DEFAULT_MAX_BATCH_MB,
    device: str | None = None,
    precision: str = "auto",
    progress: bool = True,
    data: Dataset | None = None,
) -> dict[tuple[str, str], CachedFeatures]:
    """Features of several layers of one model on one split, from ONE pass over the data.

    Every (layer, pooling) pair of ``layers`` x ``pooling`` (a pooling or a list of them) gets
    its own cache entry, keyed, content-addressed and verified exactly as :func:`get_features`
    keys it, so either function finds what the other wrote. Entries already cached are not
    recomputed; the missing ones are filled together: the dataset is read and preprocessed
    once, and each batch is forwarded once, up to the deepest missing layer.

    Arguments are those of :func:`get_features` (no precomputed datasets here), ``data``
    included: the split already loaded by the caller.

    Returns:
        ``{(layer, pooling): CachedFeatures}`` in request order (layer names as resolved).

    Memory: one batch of images, the forward pass up to the deepest requested layer and the
    pooled features of one or two batches (b * sum d_i floats); the rows stream into one memmap
    per entry, so the peak does not grow with n.
    """
    if dtype not in STORAGE_DTYPES:
        raise unknown("features dtype", dtype, STORAGE_DTYPES)
    poolings = [pooling] if isinstance(pooling, str) else list(pooling)
    if isinstance(layers, str) or not layers or not poolings:
        raise InvalidValueError(
            f"extract_layers needs a non-empty list of layers and poolings, got layers "
            f"{layers!r}, pooling {pooling!r}")
    bundle = _bundle(model, weights, seed, checkpoint, checkpoint_format, trust_checkpoint)
    for p in poolings:
        check_pooling(p, bundle)
    requests = list(dict.fromkeys((resolve_layer(bundle, layer), p)
                                  for layer in layers for p in poolings))
    if data is None:
        data = subsample(load_dataset(dataset, split, root=data_root), n, sample_seed)
    text = is_text(bundle)
    if text != isinstance(data, TextDataset):
        wanted, got = ("texts", "images") if text else ("images", "texts")
        raise InvalidValueError(
            f"model {bundle.spec!r} takes {wanted} but dataset {dataset!r} holds {got}"
        )
    size = image_size or bundle.input_size
    dev = resolve_device(device, bundle)
    prec = resolve_precision(precision, dev)
    common = {
        "model": bundle.spec,
        "weights": bundle.weights,
        "init_seed": bundle.seed,
        "weights_sha256": bundle.weights_sha256,
        "preprocess": ({"max_tokens": size} if text else
                       {"size": size, "mean": list(bundle.mean), "std": list(bundle.std)}),
        "precision": prec,
        "dataset": dataset,
        "dataset_content": dataset_fingerprint(dataset, data_root),
        "split": split,
        "indices": data.indices,
        "dtype": dtype,
        "drprobe_version": __version__,
    }
    parts_list = [common | {"layer": layer, "pooling": p} for layer, p in requests]
    inputs = data.texts if text else data.images

    def batches(missing: list[int]) -> Iterator[list[np.ndarray]]:
        wanted = [requests[i] for i in missing]
        names = ",".join(dict.fromkeys(layer for layer, _p in wanted))
        return iter_layer_features(
            bundle, wanted, inputs, image_size=size, batch_size=batch_size, progress=progress,
            desc=f"{bundle.spec}[{bundle.weights}] {names} {dataset}/{split}", device=dev,
            precision=prec, max_batch_mb=max_batch_mb)

    cache = FeatureCache(cache_dir or default_cache_dir())
    entries = cache.get_or_create_many(parts_list, len(data.labels), batches, data.labels,
                                       dtype=dtype)
    return dict(zip(requests, entries))


def _bundle(
    model: str | ModelBundle, weights: str, seed: int, checkpoint: str | os.PathLike | None,
    checkpoint_format: str, trust_checkpoint: bool,
) -> ModelBundle:
    if not isinstance(model, ModelBundle):
        return load_model(model, weights, seed, checkpoint, checkpoint_format=checkpoint_format,
                          trust_checkpoint=trust_checkpoint)
    if checkpoint is not None:
        raise InvalidValueError(
            f"checkpoint {str(checkpoint)!r} needs a model spec, not a loaded model; pass the "
            "spec (e.g. 'builtin:mobilenet_v2') or load it with load_model(spec, checkpoint=...)"
        )
    return model


# ----------------------------------------------------------------- dataset fingerprints

#: Files and folders up to this many bytes in all are fingerprinted by content (sha256);
#: larger ones by the (relative path, size, mtime) of every file.
CONTENT_HASH_MAX_BYTES = 1 << 30
_HASHED: dict[tuple, str] = {}  # (path, size, mtime_ns, inode) -> sha256, per process


def dataset_fingerprint(dataset: str, data_root: str | os.PathLike | None = None) -> str | None:
    """A fingerprint of the file or folder behind a path-based dataset spec, else None.

    ``text:``, ``npz:``, ``imagefolder:`` and ``hf:`` specs whose PATH exists here (taken under
    ``data_root`` as :func:`~drprobe.sources.datasets.load_dataset` does) get
    ``"sha256:<hex>"`` of their contents -- a file's bytes, or for a folder every file's
    relative path and bytes -- when they hold at most :data:`CONTENT_HASH_MAX_BYTES`;
    bigger ones get ``"stat:<hex>"``, a hash of every file's relative path, size and
    modification time (cheap, but a copied or touched file also changes it). Fixed-name
    datasets and hub names give None. Content hashes are remembered per process while a
    file's size, mtime and inode stay the same.
    """
    prefix, path, _options = parse_spec(dataset)
    if path is None or prefix == PRECOMPUTED_PREFIX:
        return None
    where = Path(path)
    if data_root is not None and not where.is_absolute() and (Path(data_root) / path).exists():
        where = Path(data_root) / path
    if not where.exists():
        return None
    files = sorted(p for p in where.rglob("*") if p.is_file()) if where.is_dir() else [where]
    stats = [(f, f.stat()) for f in files]
    total = sum(st.st_size for _f, st in stats)
    h = hashlib.sha256()
    for f, st in stats:
        rel = f.relative_to(where).as_posix() if where.is_dir() else ""
        if total <= CONTENT_HASH_MAX_BYTES:
            memo = (str(f.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
            if memo not in _HASHED:
                _HASHED[memo] = file_sha256(f)
            h.update(f"{rel}\0{_HASHED[memo]}\n".encode())
        else:
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    kind = "sha256" if total <= CONTENT_HASH_MAX_BYTES else "stat"
    return f"{kind}:{h.hexdigest()}"


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
