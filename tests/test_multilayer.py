"""One forward pass for many layers: ``layers_features``, ``iter_layer_features``,
``extract_layers`` and ``FeatureCache.put_many`` against one-layer-at-a-time references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from drprobe.errors import CacheError, InvalidValueError
from drprobe.features import extract_layers, get_features, iter_features, iter_layer_features
from drprobe.features.cache import FeatureCache
from drprobe.sources.layers import PENULTIMATE, layer_features, layers_features
from drprobe.sources.models import ModelBundle, load_model

MNET = "builtin:mobilenet_v2"


@pytest.fixture(scope="module")
def mnet() -> ModelBundle:
    return load_model(MNET, "random", 3)


def _images(n: int = 20, side: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def _npz(tmp_path, n: int = 20) -> str:
    path = tmp_path / "data.npz"
    images = _images(n)
    np.savez(path, x_train=images, y_train=np.arange(n) % 4, x_test=images[:6],
             y_test=np.arange(6) % 4)
    return f"npz:{path}"


def _forward_counter(bundle: ModelBundle) -> tuple[list[int], object]:
    """Batch sizes of the forward passes of ``bundle.module`` (the stem sees every pass)."""
    seen: list[int] = []
    stem = bundle.module.features[0]
    handle = stem.register_forward_pre_hook(lambda _m, args: seen.append(int(args[0].shape[0])))
    return seen, handle


REQUESTS = [(PENULTIMATE, "avg"), ("features.14", "avg"), ("features.14", "flatten"),
            ("features.3", "flatten")]


def test_one_pass_equals_one_layer_at_a_time(mnet):
    x = torch.randn(3, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    together = layers_features(mnet, REQUESTS, x)
    for (layer, pooling), got in zip(REQUESTS, together):
        torch.testing.assert_close(got, layer_features(mnet, layer, x, pooling), rtol=0, atol=0)


def test_captured_maps_survive_later_in_place_ops():
    """torchvision's ResNet runs an in-place ReLU right after ``bn1``: the flattened ``bn1``
    read together with a later layer must still hold bn1's output, negative values included."""
    bundle = load_model("torchvision:resnet18", "random", 0)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    alone = layer_features(bundle, "bn1", x, "flatten")
    together, _ = layers_features(bundle, [("bn1", "flatten"), ("layer1", "avg")], x)
    assert float(alone.min()) < 0
    torch.testing.assert_close(together, alone, rtol=0, atol=0)


def test_stream_makes_one_pass_per_batch(mnet):
    images = _images(20)
    seen, handle = _forward_counter(mnet)
    try:
        batches = list(iter_layer_features(mnet, REQUESTS, images, image_size=32, batch_size=8,
                                           progress=False))
    finally:
        handle.remove()
    assert [b for b in seen if b > 1] == [8, 8, 4]  # dummy planning passes have one example
    assert len(batches) == 3 and all(len(group) == len(REQUESTS) for group in batches)
    for j, (layer, pooling) in enumerate(REQUESTS):
        alone = np.concatenate(list(iter_features(mnet, layer, images, pooling=pooling,
                                                  image_size=32, batch_size=8, progress=False)))
        np.testing.assert_array_equal(np.concatenate([g[j] for g in batches]), alone)


def test_extract_layers_fills_the_entries_get_features_reads(mnet, tmp_path):
    dataset = _npz(tmp_path)
    kw = {"image_size": 32, "batch_size": 8, "progress": False}
    entries = extract_layers(mnet, [PENULTIMATE, "features.14"], dataset, "train",
                             pooling=["avg", "flatten"], cache_dir=tmp_path / "a", **kw)
    assert list(entries) == [(PENULTIMATE, "avg"), (PENULTIMATE, "flatten"),
                             ("features.14", "avg"), ("features.14", "flatten")]
    for (layer, pooling), entry in entries.items():
        same = get_features(mnet, layer, dataset, "train", pooling=pooling,
                            cache_dir=tmp_path / "a", **kw)
        assert same.path == entry.path  # found, not rebuilt: the same key
        fresh = get_features(mnet, layer, dataset, "train", pooling=pooling,
                             cache_dir=tmp_path / "b", **kw)  # one layer, its own pass
        np.testing.assert_array_equal(np.asarray(entry.X), np.asarray(fresh.X))
        np.testing.assert_array_equal(entry.y, fresh.y)
    assert len({e.path for e in entries.values()}) == 4


def test_only_missing_entries_are_computed(mnet, tmp_path):
    dataset = _npz(tmp_path)
    kw = {"image_size": 32, "batch_size": 8, "progress": False, "cache_dir": tmp_path / "c"}
    first = get_features(mnet, "features.14", dataset, "train", **kw)
    stamp = (first.path / "features.npy").stat().st_mtime_ns
    seen, handle = _forward_counter(mnet)
    try:
        both = extract_layers(mnet, ["features.14", "features.5"], dataset, "train", **kw)
        again = extract_layers(mnet, ["features.14", "features.5"], dataset, "train", **kw)
    finally:
        handle.remove()
    assert [b for b in seen if b > 1] == [8, 8, 4]  # features.5 only, once
    assert both[("features.14", "avg")].path == first.path
    assert (first.path / "features.npy").stat().st_mtime_ns == stamp
    assert {k: v.path for k, v in again.items()} == {k: v.path for k, v in both.items()}


def test_a_failing_stream_publishes_nothing(tmp_path):
    cache = FeatureCache(tmp_path)
    parts = [{"name": "a"}, {"name": "b"}]

    def broken():
        yield [np.ones((2, 3)), np.ones((2, 5))]
        raise RuntimeError("killed mid-way")

    with pytest.raises(RuntimeError, match="killed"):
        cache.put_many(parts, 4, broken(), np.zeros(4, dtype=int))
    assert all(cache.get(p) is None for p in parts)
    assert not list(tmp_path.glob(".tmp-*"))
    with pytest.raises(CacheError, match="holds 1 arrays, expected 2"):
        cache.put_many(parts, 2, iter([[np.ones((2, 3))]]), np.zeros(2, dtype=int))
    with pytest.raises(CacheError, match="one m"):
        cache.put_many(parts, 2, iter([[np.ones((2, 3)), np.ones((1, 3))]]),
                       np.zeros(2, dtype=int))
    written = cache.put_many(parts, 2, iter([[np.ones((2, 3)), 2 * np.ones((2, 5))]]),
                             np.arange(2))
    assert [e.X.shape for e in written] == [(2, 3), (2, 5)]
    assert float(np.asarray(written[1].X).max()) == 2.0
    assert cache.get(parts[1]).path == written[1].path


def test_bad_requests_are_refused(mnet, tmp_path):
    with pytest.raises(InvalidValueError, match="at least one"):
        iter_layer_features(mnet, [], _images(2))
    with pytest.raises(InvalidValueError, match="non-empty list of layers"):
        extract_layers(mnet, "features.14", _npz(tmp_path), "train")
    with pytest.raises(InvalidValueError, match="unknown pooling 'max'"):
        extract_layers(mnet, ["features.14"], _npz(tmp_path), "train", pooling=["avg", "max"])


def test_runner_reads_and_forwards_each_split_once_per_model_variant(tmp_path, monkeypatch):
    """Two layers of one model variant on one dataset: one extraction pass per split, holding
    both layers; the results equal those of one-layer runs (each layer in its own pass)."""
    from drprobe import features as features_mod
    from drprobe.experiment.config import parse_config
    from drprobe.experiment.runner import run_experiment
    from drprobe.experiment.store import read_results

    config = {"name": "two-layers",
              "models": [{"spec": MNET, "weights": ["random"], "init_seed": 3}],
              "layers": ["penultimate", "features.6"],
              "datasets": [{"name": "digits", "n_train": 200, "n_test": 100, "image_size": 32}],
              "fractions": [0.5], "seeds": [1]}
    passes: list[list[str]] = []
    real = features_mod.iter_layer_features

    def counting(bundle, requests, images, **kwargs):
        passes.append([layer for layer, _pooling in requests])
        return real(bundle, requests, images, **kwargs)

    monkeypatch.setattr(features_mod, "iter_layer_features", counting)
    together = run_experiment(parse_config(config), tmp_path / "a", cache_dir=tmp_path / "c1",
                              progress=False)
    assert passes == [[PENULTIMATE, "features.6"]] * 2  # train, test
    passes.clear()
    alone = [run_experiment(parse_config(config | {"layers": [layer]}), tmp_path / layer,
                            cache_dir=tmp_path / f"c-{layer}", progress=False)
             for layer in config["layers"]]
    assert passes == [[PENULTIMATE]] * 2 + [["features.6"]] * 2
    columns = ["layer", "k", "seed", "test_acc", "val_acc", "l2"]
    got = read_results(tmp_path / "a" / "results")[columns].sort_values(columns[:3])
    want = pd.concat([a.results for a in alone])[columns].sort_values(columns[:3])
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))
    assert len(together.ran) == 2
