"""``text:PATH``: text classification data from a CSV / TSV or JSON-lines file.

Columns ``text`` and ``label`` (``text_column=`` / ``label_column=`` override). Labels may be
strings or integers; they are encoded over the whole file with sorted class names
(:func:`~drprobe.sources.data.base.encode_labels`), so codes agree between splits. With a
``split`` column, ``train`` rows form the train split and ``test`` rows (else ``validation``,
else ``val``) the test split, other rows are left out; without one, a seeded stratified split
(``test_fraction``, ``seed``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from drprobe.errors import DrprobeError, InvalidValueError, MissingDataError
from drprobe.sources.data.base import (
    DEFAULT_SPLIT_SEED,
    DEFAULT_TEST_FRACTION,
    TextDataset,
    check_split,
    encode_labels,
    split_positions,
)

TEXT_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
TEST_SPLITS = ("test", "validation", "val")


def read_table(path: Path, text_column: str = "text"):
    """The file as a pandas DataFrame; ``text_column`` is read as strings from CSV / TSV."""
    import pandas as pd

    kind = TEXT_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InvalidValueError(
            f"text file {path} has unknown suffix {path.suffix!r}; valid: "
            f"{', '.join(sorted(TEXT_SUFFIXES))}"
        )
    try:
        if kind == "jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        return pd.read_csv(path, sep="\t" if kind == "tsv" else ",", keep_default_na=False,
                           dtype={text_column: str})
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DrprobeError(f"{path}: cannot parse as {kind} ({reason})") from None


def load_text(
    path: str | os.PathLike,
    split: str,
    *,
    text_column: str = "text",
    label_column: str = "label",
    split_column: str = "split",
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = DEFAULT_SPLIT_SEED,
    name: str | None = None,
) -> TextDataset:
    """One split of a text classification file (see the module docstring)."""
    check_split(split)
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(
            f"text file {path} not found; give a .csv, .tsv or .jsonl file with "
            f"'{text_column}' and '{label_column}' columns"
        )
    df = read_table(path, text_column)
    missing = [c for c in (text_column, label_column) if c not in df.columns]
    if missing:
        raise InvalidValueError(
            f"{path}: no column {missing[0]!r}; columns: {', '.join(map(str, df.columns))}"
        )
    labels, classes = encode_labels(df[label_column].to_numpy(), f"{path} {label_column}")
    if split_column in df.columns:
        values = df[split_column].astype(str).str.strip().str.lower().to_numpy()
        wanted = "train" if split == "train" else next(
            (s for s in TEST_SPLITS if np.any(values == s)), "test"
        )
        keep = np.flatnonzero(values == wanted)
        if keep.size == 0:
            raise MissingDataError(f"{path}: no rows with {split_column} == {wanted!r}")
    else:
        keep = split_positions(labels, split, test_fraction, seed)
    texts = df[text_column].to_numpy()[keep]
    if not all(isinstance(t, str) for t in texts):
        raise InvalidValueError(f"{path}: column {text_column!r} must hold strings only")
    return TextDataset(name or f"text:{path}", split, list(texts), labels[keep], classes)
