"""Card data in the users' own formats: ``beir:DIR`` (retrieval), ``pairs:PATH`` (scored
sentence pairs) and ``features:PATH`` (vectors already computed), see docs/card-data.md.

Memory: the whole file in memory (texts: O(total characters); vectors: O(n d) once subsampled,
else the memmap), plus O(m) qrels.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from drprobe.card.parts import (
    CardData,
    Pairs,
    Retrieval,
    card_data,
    keep_queries,
    random_rows,
    short_data_name,
    unlabelled,
    with_relevant,
)
from drprobe.errors import DrprobeError, InvalidValueError, MissingDataError
from drprobe.sources.data.arrays import read_precomputed
from drprobe.sources.data.base import (
    Dataset,
    TextDataset,
    stratified_subsample,
)
from drprobe.sources.data.text import TEXT_SUFFIXES

__all__ = ["BEIR_FILES", "PAIR_COLUMNS", "load_beir", "load_features", "load_pairs"]

PAIR_COLUMNS = ("sentence1", "sentence2", "score")
BEIR_FILES = ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv")


# -------------------------------------------------------------------------------------- beir


def _read_jsonl(path: Path, fields: tuple[str, ...]) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                raise DrprobeError(f"{path}:{number}: not JSON ({err})") from None
            if not isinstance(row, dict) or "_id" not in row or "text" not in row:
                raise InvalidValueError(
                    f"{path}:{number}: each line needs keys {', '.join(fields)}")
            rows.append(row)
    return rows


def _ids(rows: list[dict], path: Path) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, row in enumerate(rows):
        key = str(row["_id"])
        if key in index:
            raise InvalidValueError(f"{path}: duplicate _id {key!r}")
        index[key] = i
    return index


def _read_qrels(path: Path, queries: dict[str, int], docs: dict[str, int]) -> np.ndarray:
    """(m, 3) rows of positive relevance; unknown ids are refused, score <= 0 rows skipped."""
    rows = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        next(reader, None)  # header: query-id, corpus-id, score
        for number, rec in enumerate(reader, 2):
            if not rec:
                continue
            if len(rec) < 3:
                raise InvalidValueError(f"{path}:{number}: need query-id, corpus-id, score")
            qid, did, score = rec[0], rec[1], rec[2]
            for kind, key, known in (("query", qid, queries), ("corpus", did, docs)):
                if key not in known:
                    raise InvalidValueError(f"{path}:{number}: unknown {kind} id {key!r} "
                                            f"(not in the {kind} file)")
            try:
                value = float(score)
            except ValueError:
                raise InvalidValueError(f"{path}:{number}: score {score!r} is not a number") \
                    from None
            if value > 0:
                rows.append((queries[qid], docs[did], value))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)


def load_beir(spec: str, folder: Path, n: int | None, seed: int) -> CardData:
    """Retrieval on a BEIR folder: ``corpus.jsonl`` (``_id``, ``title``, ``text``),
    ``queries.jsonl`` (``_id``, ``text``), ``qrels/test.tsv`` (query-id, corpus-id, score,
    after a header line). A document is ``title + " " + text``, stripped. Qrels rows with
    score <= 0 are skipped; queries without a relevant document are dropped; ``n`` caps the
    queries (seeded subset), never the corpus."""
    paths = [folder / f for f in BEIR_FILES]
    for p in paths:
        if not p.is_file():
            raise MissingDataError(f"beir: {p} not found; a BEIR folder holds "
                                   f"{', '.join(BEIR_FILES)}")
    docs = _read_jsonl(paths[0], ("_id", "text", "title (optional)"))
    queries = _read_jsonl(paths[1], ("_id", "text"))
    qrels = _read_qrels(paths[2], _ids(queries, paths[1]), _ids(docs, paths[0]))
    keep = with_relevant(qrels, len(queries), n, seed)
    if keep.size == 0:
        raise InvalidValueError(f"beir: {paths[2]} has no row with a positive score")
    qrels = keep_queries(qrels, keep)
    name = short_data_name(str(folder))
    corpus = [f"{row.get('title') or ''} {row['text']}".strip() for row in docs]
    parts: dict[str, Dataset] = {
        "queries": unlabelled(name, "queries", [str(queries[i]["text"]) for i in keep]),
        "corpus": unlabelled(name, "corpus", corpus),
    }
    retrieval = Retrieval("queries", ("corpus",), qrels, None, None)
    return card_data(name, spec, "text", parts, about=f"BEIR-format folder {folder} (licence: "
                 f"that of its source)", fit_part="corpus", retrieval=retrieval)


# ------------------------------------------------------------------------------------- pairs


def _read_pairs(path: Path):
    import pandas as pd

    kind = TEXT_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InvalidValueError(f"pairs file {path} has unknown suffix {path.suffix!r}; valid: "
                                f"{', '.join(sorted(TEXT_SUFFIXES))}")
    try:
        if kind == "jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        if kind == "tsv":  # TSV sentences often hold unbalanced quote characters
            return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False,
                               quoting=csv.QUOTE_NONE)
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DrprobeError(f"{path}: cannot parse as {kind} ({reason})") from None


def load_pairs(spec: str, path: Path, n: int | None, seed: int) -> CardData:
    """Similarity pairs: columns ``sentence1``, ``sentence2``, ``score`` (a finite number).
    The strategies are fitted on the first sentences (part ``"first"``); ``n`` caps the pairs
    (seeded subset)."""
    if not path.is_file():
        raise MissingDataError(f"pairs file {path} not found; give a .csv, .tsv or .jsonl file "
                               f"with columns {', '.join(PAIR_COLUMNS)}")
    df = _read_pairs(path)
    if any(c not in df.columns for c in PAIR_COLUMNS):
        raise InvalidValueError(f"{path}: columns found: {', '.join(map(str, df.columns))}; "
                                f"required: {', '.join(PAIR_COLUMNS)}")
    try:
        scores = df["score"].astype(np.float64).to_numpy()
    except (TypeError, ValueError):
        raise InvalidValueError(f"{path}: column 'score' must hold numbers") from None
    if scores.size == 0 or not np.all(np.isfinite(scores)):
        raise InvalidValueError(f"{path}: need at least one pair and finite scores")
    keep = random_rows(len(scores), n, seed)
    name = short_data_name(str(path))
    parts: dict[str, Dataset] = {
        part: unlabelled(name, part, [str(df[col].iloc[i]) for i in keep])
        for part, col in (("first", "sentence1"), ("second", "sentence2"))
    }
    pairs = Pairs("first", "second", scores[keep].copy())
    return card_data(name, spec, "text", parts, about=f"sentence pairs from {path} (licence: that "
                 f"of its source)", fit_part="first", pairs=pairs)


# ---------------------------------------------------------------------------------- features


def _npz_retrieval(path: Path, d: int, n: int | None, seed: int):
    """(queries (nq', d), corpus (nc, d), qrels) from an npz's optional arrays, or None."""
    with np.load(path, allow_pickle=False) as z:
        if not {"queries", "corpus", "qrels"} <= set(z.files):
            return None
        queries, corpus, qrels = z["queries"], z["corpus"], z["qrels"]
    for what, arr in (("queries", queries), ("corpus", corpus)):
        if arr.ndim != 2 or arr.shape[1] != d or arr.dtype.kind not in "fiu":
            raise InvalidValueError(f"{path}: '{what}' must be numeric (n, {d}), got "
                                    f"{arr.shape} {arr.dtype}")
    qrels = np.asarray(qrels, dtype=np.float64)
    if qrels.ndim != 2 or qrels.shape[1] != 3:
        raise InvalidValueError(f"{path}: 'qrels' must be (m, 3), got {qrels.shape}")
    rows = qrels[:, :2]
    if (np.any(rows != np.round(rows)) or np.any(rows < 0) or np.any(qrels[:, 0] >= len(queries))
            or np.any(qrels[:, 1] >= len(corpus)) or not np.all(np.isfinite(qrels))):
        raise InvalidValueError(f"{path}: 'qrels' rows must be (query row < {len(queries)}, "
                                f"corpus row < {len(corpus)}, relevance)")
    qrels = qrels[qrels[:, 2] > 0]
    keep = with_relevant(qrels, len(queries), n, seed)
    if keep.size == 0:
        raise InvalidValueError(f"{path}: 'qrels' has no row with a positive relevance")
    return queries[keep], corpus, keep_queries(qrels, keep)


def load_features(spec: str, path: Path, n: int | None, seed: int) -> CardData:
    """Precomputed embeddings (:func:`~drprobe.sources.data.arrays.read_precomputed`):
    train/test vectors with labels; an ``.npz`` may add ``queries`` (nq, d), ``corpus`` (nc, d)
    and ``qrels`` (m, 3) for retrieval (queries without a relevant row are dropped, ``n``
    caps the queries)."""
    name = short_data_name(str(path))
    parts: dict[str, Dataset] = {}
    vectors: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        got = read_precomputed(path, split)
        idx = stratified_subsample(got.y, n, seed)
        vectors[split] = got.X if len(idx) == len(got.y) else np.asarray(got.X[idx])
        parts[split] = TextDataset(name, split, [""] * len(idx), got.y[idx], list(got.classes),
                                   None if len(idx) == len(got.y) else idx)
    retrieval = None
    extra = (_npz_retrieval(path, vectors["train"].shape[1], n, seed)
             if path.suffix == ".npz" else None)
    if extra is not None:
        vectors["queries"], vectors["corpus"], qrels = extra
        for part in ("queries", "corpus"):
            parts[part] = unlabelled(name, part, [""] * len(vectors[part]))
        retrieval = Retrieval("queries", ("corpus",), qrels, None, None)
    return card_data(name, spec, "vectors", parts, vectors=vectors, about=f"precomputed embeddings "
                 f"from {path}", fit_part="train", classification=("train", "test"),
                 retrieval=retrieval)


