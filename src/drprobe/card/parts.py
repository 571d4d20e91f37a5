"""What card data is made of: named parts, the tasks they support, and the content fingerprint.

Memory: the fingerprint streams arrays in blocks of rows, O(block x d) on top of the data.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from drprobe.errors import InvalidValueError, UnknownNameError
from drprobe.sources.data.base import (
    Dataset,
    TextDataset,
)

__all__ = ["CardData", "Pairs", "Retrieval", "card_data", "check_n", "fingerprint", "keep_queries",
           "random_rows", "short_data_name", "unlabelled", "with_relevant"]

NO_CLASS = ["-"]
_HASH_ROWS = 8192




@dataclass(frozen=True)
class Retrieval:
    """A retrieval task over the parts of a :class:`CardData`.

    Attributes:
        queries: part name holding the queries.
        corpus: part names; their rows, concatenated in this order, are the corpus.
        qrels: (m, 3) float64: query row, corpus row, relevance (> 0).
        query_groups: (n_queries,) int64 group of each query (e.g. its topic) or None.
        group_names: the name of each group value, or None.
    """

    queries: str
    corpus: tuple[str, ...]
    qrels: np.ndarray
    query_groups: np.ndarray | None
    group_names: list[str] | None


@dataclass(frozen=True)
class Pairs:
    """A semantic-similarity task: row i of part ``first`` and of part ``second`` is pair i.

    Attributes:
        first, second: part names of equal length.
        scores: (n_pairs,) float64 gold similarity.
    """

    first: str
    second: str
    scores: np.ndarray


@dataclass
class CardData:
    """The parts of one card's data and the tasks they support.

    Attributes:
        name: short display name, e.g. ``"bbc-news"``.
        spec: the spec it was loaded from.
        fingerprint: ``"sha256:<hex>"`` of the content actually used (see :func:`fingerprint`).
        modality: ``"text"``, ``"image"`` or ``"vectors"``.
        parts: part name -> TextDataset / ImageDataset; unlabelled parts have zero labels and
            classes ``["-"]``; for vectors, TextDatasets of empty strings carrying the labels.
        vectors: part name -> (n, d) precomputed embeddings (modality ``"vectors"``), else None.
        classification: (train part, test part), both labelled, or None.
        retrieval: the retrieval task, or None.
        pairs: the similarity task, or None.
        fit_part: the part the strategies are fitted on.
        about: one line: what it is, where it comes from, licence.
    """

    name: str
    spec: str
    fingerprint: str
    modality: str
    parts: dict[str, Dataset]
    vectors: dict[str, np.ndarray] | None
    classification: tuple[str, str] | None
    retrieval: Retrieval | None
    pairs: Pairs | None
    fit_part: str
    about: str

    def part_size(self, name: str) -> int:
        """Number of rows of part ``name``."""
        if name not in self.parts:
            raise UnknownNameError(
                f"unknown part {name!r} of {self.name}; valid choices: {', '.join(self.parts)}")
        return len(self.parts[name])


# ------------------------------------------------------------------------------------ helpers


def unlabelled(name: str, part: str, texts: list[str]) -> TextDataset:
    return TextDataset(name, part, texts, np.zeros(len(texts), dtype=np.int64), list(NO_CLASS))


def check_n(n: int | None) -> int | None:
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise InvalidValueError(f"n must be a positive integer or None, got {n!r}")
    return int(n)


def random_rows(total: int, n: int | None, seed: int) -> np.ndarray:
    """Sorted positions of a seeded uniform subset of ``n`` of ``total`` rows (all if None)."""
    if n is None or n >= total:
        return np.arange(total, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))


def keep_queries(qrels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The qrels of the query rows ``keep`` (sorted), renumbered 0..len(keep)-1."""
    new = np.full(int(qrels[:, 0].max(initial=-1)) + 1, -1, dtype=np.int64)
    keep = keep[keep < len(new)]
    new[keep] = np.arange(len(keep))
    rows = qrels[:, 0].astype(np.int64)
    out = qrels[new[rows] >= 0].copy()
    out[:, 0] = new[out[:, 0].astype(np.int64)]
    return out


def with_relevant(qrels: np.ndarray, n_queries: int, n: int | None, seed: int) -> np.ndarray:
    """Query rows that have a relevant document, capped at ``n`` by a seeded subset."""
    has = np.flatnonzero(np.bincount(qrels[:, 0].astype(np.int64), minlength=n_queries) > 0)
    return has[random_rows(len(has), n, seed)]


def _update_array(h: hashlib._Hash, tag: str, arr: np.ndarray) -> None:
    arr = np.asarray(arr) if not isinstance(arr, np.ndarray) else arr
    h.update(f"{tag}|{arr.dtype.str}|{arr.shape}\n".encode())
    rows = arr.shape[0] if arr.ndim else 1
    flat = arr.reshape(rows, int(np.prod(arr.shape[1:], dtype=np.int64)) if arr.ndim else 1)
    for start in range(0, len(flat), _HASH_ROWS):
        h.update(np.ascontiguousarray(flat[start:start + _HASH_ROWS]).tobytes())


def fingerprint(parts: dict[str, Dataset], vectors: dict[str, np.ndarray] | None,
                classification: tuple[str, str] | None, retrieval: Retrieval | None,
                pairs: Pairs | None) -> str:
    """``"sha256:<hex>"`` over the content used, in a fixed order: each part (sorted by name:
    its texts or images, labels and class names), each vector array, then the task definitions
    (classification parts, retrieval qrels and groups, pair scores)."""
    h = hashlib.sha256()
    for name in sorted(parts):
        ds = parts[name]
        h.update(f"part|{name}|{len(ds)}|{json.dumps(ds.classes)}\n".encode())
        if isinstance(ds, TextDataset):
            for text in ds.texts:
                raw = text.encode("utf-8", "surrogatepass")
                h.update(struct.pack("<Q", len(raw)) + raw)
        else:
            _update_array(h, "images", ds.images)
        _update_array(h, "labels", np.asarray(ds.labels, dtype=np.int64))
    for name in sorted(vectors or {}):
        _update_array(h, f"vectors|{name}", vectors[name])
    h.update(f"classification|{classification}\n".encode())
    if retrieval is not None:
        h.update(f"retrieval|{retrieval.queries}|{retrieval.corpus}|"
                 f"{retrieval.group_names}\n".encode())
        _update_array(h, "qrels", np.asarray(retrieval.qrels, dtype=np.float64))
        if retrieval.query_groups is not None:
            _update_array(h, "groups", np.asarray(retrieval.query_groups, dtype=np.int64))
    if pairs is not None:
        h.update(f"pairs|{pairs.first}|{pairs.second}\n".encode())
        _update_array(h, "scores", np.asarray(pairs.scores, dtype=np.float64))
    return "sha256:" + h.hexdigest()


def card_data(name: str, spec: str, modality: str, parts: dict[str, Dataset], *, about: str,
          fit_part: str, vectors: dict[str, np.ndarray] | None = None,
          classification: tuple[str, str] | None = None, retrieval: Retrieval | None = None,
          pairs: Pairs | None = None) -> CardData:
    fp = fingerprint(parts, vectors, classification, retrieval, pairs)
    return CardData(name, spec, fp, modality, parts, vectors, classification, retrieval, pairs,
                    fit_part, about)


def short_data_name(path: str) -> str:
    """``"data/reviews.csv"`` -> ``"reviews"``; ``"org/name"`` -> ``"name"``."""
    tail = Path(path.rstrip("/")).name or path
    return Path(tail).stem if Path(tail).suffix else tail


