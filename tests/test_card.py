"""``drprobe card`` end to end on real assets: all-MiniLM-L6-v2 on BBC News (probe, kNN, title ->
article retrieval), the exported cut checked by independent code on the card's own test split and
on held-out articles, the page in Chromium, and refusals (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import CHROMIUM, image_check, run_cli
from sklearn.linear_model import LogisticRegression

from drprobe.card.cut import Cut, apply_cut
from drprobe.card.data import load_card_data
from drprobe.card.embed import embed

MODEL, N, TOKENS = "hf:all-MiniLM-L6-v2", 150, 128
EXPORT = ("pca-k", 64)


def _knn_accuracy(train, ytr, test, yte, k=10):
    """Cosine 10-NN majority vote, written out (ties: the nearest tied class)."""
    sims = test @ train.T
    right = 0
    for i in range(len(test)):
        order = sorted(range(len(train)), key=lambda j: (-sims[i, j], j))[:k]
        votes = {}
        for j in order:
            votes[ytr[j]] = votes.get(ytr[j], 0) + 1
        top = max(votes.values())
        label = next(ytr[j] for j in order if votes[ytr[j]] == top)
        right += label == yte[i]
    return right / len(test)


def _ndcg(queries, corpus, relevant, k=10):
    """Mean nDCG@10 with binary relevance, written out (relevant: query row -> corpus rows)."""
    sims = queries @ corpus.T
    total = 0.0
    for i, rel in relevant.items():
        ranked = sorted(range(len(corpus)), key=lambda j: (-sims[i, j], j))[:k]
        dcg = sum(1 / math.log2(r + 2) for r, j in enumerate(ranked) if j in rel)
        ideal = sum(1 / math.log2(r + 2) for r in range(min(len(rel), k)))
        total += dcg / ideal
    return total / len(relevant)


def _unit(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def card_run(tmp_path_factory, feature_cache):
    out = tmp_path_factory.mktemp("card") / "out"
    argv = ["card", MODEL, "bbc-news", "--n", str(N), "--max-tokens", str(TOKENS),
            "--n-boot", "300", "--out", str(out), "--export", f"{EXPORT[0]}:{EXPORT[1]}",
            "--cache-dir", str(feature_cache), "--no-progress"]
    from drprobe.cli import main

    assert main(argv) == 0
    data = load_card_data("bbc-news", n=N)
    emb = embed(MODEL, data, max_tokens=TOKENS, cache_dir=feature_cache, progress=False)
    return out, json.loads((out / "card.json").read_text()), data, emb


def _point(card, task, strategy, k):
    return next(p for p in card["tasks"][task]["curves"][strategy] if p["dim"] == k)


@pytest.mark.slow
def test_card_json_speaks_the_ecosystem_words(card_run):
    _out, card, data, _emb = card_run
    assert card["model"]["name"] == "all-MiniLM-L6-v2" and card["model"]["dimension"] == 384
    assert card["data"]["fingerprint"] == data.fingerprint
    assert set(card["tasks"]) == {"probe", "knn", "retrieval"}
    for task, t in card["tasks"].items():
        full = t["full"]["quality"]
        assert t["full"]["low"] <= full <= t["full"]["high"]
        for strategy, curve in t["curves"].items():
            widest = curve[-1]["dim"]  # PCA: at most the fit part's rank (150 articles)
            assert widest == 384 or (strategy == "pca-k" and widest < N)
            for keep, row in t["smallest_dim"][strategy].items():
                # the smallest size is the first grid point whose quality reaches keep x full
                ok = [p["dim"] for p in curve if p["quality"] >= float(keep) * full - 1e-12]
                assert row["dim"] == (ok[0] if ok else None)
    # the full width of first-k is the full vectors themselves on the cosine tasks
    for task in ("knn", "retrieval"):
        last = card["tasks"][task]["curves"]["first-k"][-1]
        assert last["quality"] == pytest.approx(card["tasks"][task]["full"]["quality"])
    st = card["sentence_transformers"]["truncate_dim"]
    worst = max((card["tasks"][t]["smallest_dim"]["first-k"]["0.99"]["dim"] or 10**9)
                for t in card["tasks"])
    assert st == (worst if worst < 384 else None)
    dims = card["hf_config"]["matryoshka_dimensions"]
    assert dims and dims[-1] == 384 and isinstance(card["hf_config"]["is_matryoshka"], bool)
    mteb = [m for m in card["mteb"] if m["task_type"] == "Retrieval"]
    assert {m["truncate_dim"] for m in mteb} == {p["dim"] for p in
                                                 card["tasks"]["retrieval"]["curves"]["first-k"]}
    assert all(set(m["scores"]["test"][0]) >= {"main_score", "ndcg_at_10", "recall_at_10",
                                               "mrr_at_10", "hf_subset", "languages"}
               for m in mteb)


@pytest.mark.slow
def test_the_exported_cut_reproduces_the_card_on_its_test_split(card_run):
    out, card, data, emb = card_run
    cut = Cut.load(out / "cut.npz")
    assert (cut.strategy, cut.k, cut.d_in) == (*EXPORT, 384)
    assert cut.data_fingerprint == data.fingerprint and cut.model == MODEL
    P = emb.parts
    tr, te = apply_cut(P["train"], cut), apply_cut(P["test"], cut)
    assert np.allclose(np.linalg.norm(te, axis=1), 1.0, atol=1e-5)  # cut, then re-normalised
    knn = _knn_accuracy(tr, data.parts["train"].labels, te, data.parts["test"].labels)
    assert knn == pytest.approx(_point(card, "knn", *EXPORT)["quality"], abs=1e-12)
    r = data.retrieval
    corpus = np.concatenate([apply_cut(P[p], cut) for p in r.corpus])
    relevant = {}
    for q, c, _rel in r.qrels:
        relevant.setdefault(int(q), set()).add(int(c))
    ndcg = _ndcg(apply_cut(P[r.queries], cut), corpus, relevant)
    assert ndcg == pytest.approx(_point(card, "retrieval", *EXPORT)["quality"], abs=1e-9)


@pytest.mark.slow
def test_the_exported_cut_holds_on_held_out_articles(card_run, feature_cache):
    """Articles of the test split the card never saw: their kNN accuracy, probe accuracy and
    title -> article nDCG@10 through the cut agree with the card's figures at that size (a
    two-sample z-test at 5%: |held-out - card| <= 1.96 x the two standard errors combined)."""
    out, card, data, emb = card_run
    cut = Cut.load(out / "cut.npz")
    whole = load_card_data("bbc-news")
    seen = set(data.parts["test"].texts) | set(data.parts["train"].texts)
    test = whole.parts["test"]
    keep = [i for i, t in enumerate(test.texts) if t not in seen][:200]
    from drprobe.card.data import CardData
    from drprobe.sources.datasets import TextDataset

    def part(texts, labels):
        return TextDataset("bbc-news-held-out", "test", texts, np.asarray(labels), test.classes)

    held = CardData(
        name="bbc-held-out", spec="bbc-news#held-out", fingerprint="held-out", modality="text",
        parts={"test": part([test.texts[i] for i in keep], test.labels[keep]),
               "queries": part([whole.parts["queries"].texts[i] for i in keep],
                               test.labels[keep])},
        vectors=None, classification=None, retrieval=None, pairs=None, fit_part="test",
        about="held-out BBC articles")
    vecs = embed(MODEL, held, max_tokens=TOKENS, cache_dir=feature_cache, progress=False).parts
    ytr, yho = data.parts["train"].labels, test.labels[keep]
    tr, ho = apply_cut(emb.parts["train"], cut), apply_cut(vecs["test"], cut)
    n_card, n_held = len(data.parts["test"].labels), len(keep)

    def agrees(held_value, card_value):
        se = math.sqrt(card_value * (1 - card_value) / n_card
                       + held_value * (1 - held_value) / n_held)
        assert abs(held_value - card_value) <= 1.96 * se + 1e-12, (held_value, card_value)

    agrees(_knn_accuracy(tr, ytr, ho, yho), _point(card, "knn", *EXPORT)["quality"])
    probe = LogisticRegression(C=1.0, max_iter=2000).fit(tr, ytr)
    agrees(float((probe.predict(ho) == yho).mean()), _point(card, "probe", *EXPORT)["quality"])
    ndcg = _ndcg(apply_cut(vecs["queries"], cut), ho, {i: {i} for i in range(n_held)})
    agrees(ndcg, _point(card, "retrieval", *EXPORT)["quality"])


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make browser)")
def test_the_card_page_renders_every_figure(card_run, tmp_path):
    out, card, _data, _emb = card_run
    page = out / "card.html"
    text = page.read_text()
    assert text.count("<img ") == len(card["tasks"])
    assert "truncate_dim" in text and "is_matryoshka" in text
    check = image_check(tmp_path, page)
    assert check["data-status"] == "ok", check["text"]
    assert check["data-images"] == str(len(card["tasks"]))


@pytest.mark.parametrize(("args", "message"), [
    (["glove", "bbc-news", "--strategies", "first-k,middle-k"], "unknown strategy 'middle-k'"),
    (["glove", "bbc-news", "--tasks", "sts"], "task 'sts' needs scored sentence pairs"),
    (["glove", "bbc-news", "--tasks", "ranking"], "unknown task 'ranking'"),
    (["glove", "bbc-news", "--export", "first-k"], "--export takes STRATEGY:SIZE"),
    (["glove", "bbc-news", "--export", "top-k:8"], "unknown strategy 'top-k'"),
    (["glove", "bbc-news", "--sizes", "8,999"], "sizes must be integers in [1, 50]"),
    (["glove", "no-such-data"], "no-such-data"),
    (["glove", "bbc-news", "--n", "0"], "--n must be a positive integer"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(capsys, tmp_path, feature_cache,
                                                           args, message):
    out = tmp_path / "card"
    code, _stdout, err = run_cli(capsys, "card", *args, "--out", str(out), "--cache-dir",
                                 str(feature_cache), "--no-progress")
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], err
    assert not out.exists()


def test_a_card_of_vectors_already_in_a_store(capsys, tmp_path, digits_npz):
    """Precomputed vectors (scikit-learn's digits as 64-d vectors): the card needs no model."""
    out = tmp_path / "card"
    code, stdout, err = run_cli(capsys, "card", "precomputed", f"features:{digits_npz}",
                                "--tasks", "knn", "--sizes", "8,16,32", "--n-boot", "50",
                                "--out", str(out), "--export", "first-k:16", "--no-progress")
    assert code == 0, err
    card = json.loads((out / "card.json").read_text())
    assert card["model"]["dimension"] == 64 and "knn (accuracy" in stdout
    assert [p["dim"] for p in card["tasks"]["knn"]["curves"]["first-k"]] == [8, 16, 32, 64]
    cut = Cut.load(out / "cut.npz")
    np.testing.assert_array_equal(cut.indices, np.arange(16))


DOC_CARDS = sorted((Path(__file__).resolve().parents[1] / "docs" / "cards").glob("*/card.html"))


def test_the_repository_holds_the_documented_cards():
    names = {p.parent.name for p in DOC_CARDS}
    assert {"minilm-bbc-news", "e5-small-bbc-news", "minilm-fine-foods",
            "mobilenet-fashion-mnist"} <= names
    made = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert all(f"docs/cards/{name}" in made for name in names)  # make card-demo writes each


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make browser)")
@pytest.mark.parametrize("page", DOC_CARDS, ids=lambda p: p.parent.name)
def test_the_documented_cards_render_in_chromium(tmp_path, page):
    check = image_check(tmp_path, page)
    assert check["data-status"] == "ok", check["text"]
    assert int(check["data-images"]) >= 2
