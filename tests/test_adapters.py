"""Adapters: module:, hf: (vision), timm:, torchvision: -- checked against direct computations.

``module:`` factories live in a module this file writes to a temporary folder on sys.path;
``hf:`` models are tiny random-init ViT / ConvNeXt checkpoints written with ``save_pretrained``.
timm and torchvision also run against small stand-ins that follow their documented API (the
real libraries are tested in ``test_libraries.py``).
"""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from drprobe.errors import InvalidValueError, MissingDataError, UnknownNameError
from drprobe.features.extract import feature_dim, iter_features
from drprobe.sources.adapters import HiddenStatesBundle, from_factory
from drprobe.sources.adapters.common import state_sha256
from drprobe.sources.layers import PENULTIMATE, layer_features, list_layers
from drprobe.sources.models import ModelBundle, load_model

NETS = "drprobe_adapter_test_nets"
NETS_SOURCE = '''
import torch
from torch import nn

from drprobe.sources.models import ModelBundle


class Tiny(nn.Module):
    """conv -> relu -> avgpool -> fc1 -> relu -> fc2: penultimate = relu(fc1(.))."""

    def __init__(self, width=6, hidden=10, classes=4):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x):
        z = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return self.fc2(torch.relu(self.fc1(z)))


def _fill(net):
    """Fixed "pretrained" weights: a deterministic function of each element's index."""
    with torch.no_grad():
        for i, p in enumerate(net.parameters()):
            p.copy_(torch.sin(torch.arange(p.numel(), dtype=torch.float32) * 0.37 + i)
                    .reshape(p.shape) * 0.5)
    return net


def build(pretrained=True, width=6):
    CALLS.append({"pretrained": pretrained, "width": width})
    net = Tiny(width=width)
    return _fill(net) if pretrained else net


def plain(width=6):
    return _fill(Tiny(width=width))


def with_attrs():
    net = _fill(Tiny())
    net.drprobe_input_size = 20
    net.drprobe_mean = (0.5, 0.5, 0.5)
    net.drprobe_std = 0.25
    net.drprobe_classifier = "fc1"
    return net


def as_dict():
    return {"module": _fill(Tiny()), "input_size": 12, "mean": [0.1, 0.2, 0.3],
            "std": [1.0, 2.0, 3.0]}


def as_bundle():
    return ModelBundle(spec="x", weights="pretrained", seed=None, module=_fill(Tiny()),
                       input_size=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                       classifier="fc2", weights_sha256="abc")


def bad_dict():
    return {"module": Tiny(), "colour": "red"}


def not_a_model():
    return 42


def no_linear():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())


def broken():
    raise RuntimeError("factory exploded\\non two lines")


CALLS = []
'''

pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("nets")
    (folder / f"{NETS}.py").write_text(NETS_SOURCE)
    (folder / "drprobe_adapter_broken.py").write_text("import math\nraise ValueError('boom')\n")
    (folder / "drprobe_adapter_needs_dep.py").write_text("import drprobe_no_such_dep\n")
    sys.path.insert(0, str(folder))
    try:
        yield __import__(NETS)
    finally:
        sys.path.remove(str(folder))
        for name in (NETS, "drprobe_adapter_broken", "drprobe_adapter_needs_dep"):
            sys.modules.pop(name, None)


def _images(n: int = 5, side: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


def _params(bundle: ModelBundle) -> list[torch.Tensor]:
    return [p.detach().clone() for p in bundle.module.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------- module:

def test_module_penultimate_is_input_of_last_linear(nets):
    bundle = load_model(f"module:{NETS}:build")
    assert bundle.classifier == "fc2" and bundle.input_size == 224
    assert bundle.mean == (0.485, 0.456, 0.406) and bundle.std == (0.229, 0.224, 0.225)
    net = bundle.module
    x = torch.randn(3, 3, 9, 9, generator=torch.Generator().manual_seed(0))
    expected = torch.relu(net.fc1(torch.relu(net.conv(x)).mean(dim=(2, 3))))
    torch.testing.assert_close(layer_features(bundle, PENULTIMATE, x), expected)
    assert list_layers(bundle, 9)[0].shape == (10,)
    assert not net.training and not any(p.requires_grad for p in net.parameters())


def test_module_pretrained_flag_options_and_spec(nets):
    nets.CALLS.clear()
    bundle = load_model(f"module:{NETS}:build?width=3")
    assert nets.CALLS == [{"pretrained": True, "width": 3}]
    assert bundle.spec == f"module:{NETS}:build?width=3"
    assert bundle.module.conv.out_channels == 3
    assert bundle.weights_sha256 == state_sha256(bundle.module) and bundle.seed is None
    load_model(f"module:{NETS}:build", weights="random", seed=1)
    assert nets.CALLS[-1] == {"pretrained": False, "width": 6}


def test_module_random_twin_is_seeded(nets):
    for name in ("build", "plain"):  # with and without a `pretrained` parameter
        spec = f"module:{NETS}:{name}"
        pre = _params(load_model(spec))
        a = load_model(spec, weights="random", seed=5)
        b, c = load_model(spec, weights="random", seed=5), load_model(spec, weights="random", seed=6)
        assert a.seed == 5 and a.weights_sha256 is None and a.weights == "random"
        assert _same(_params(a), _params(b))
        assert not _same(_params(a), _params(c)) and not _same(_params(a), pre)


def test_module_plain_pretrained_keeps_factory_weights(nets):
    bundle = load_model(f"module:{NETS}:plain")
    expected = nets.plain()
    assert _same(_params(bundle), [p.detach() for p in expected.parameters()])


def test_module_attribute_dict_and_bundle_overrides(nets):
    attrs = load_model(f"module:{NETS}:with_attrs")
    assert (attrs.input_size, attrs.mean, attrs.std, attrs.classifier) == (
        20, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "fc1")
    as_dict = load_model(f"module:{NETS}:as_dict")
    assert (as_dict.input_size, as_dict.mean, as_dict.std) == (12, (0.1, 0.2, 0.3), (1.0, 2.0, 3.0))
    as_bundle = load_model(f"module:{NETS}:as_bundle")
    assert as_bundle.spec == f"module:{NETS}:as_bundle" and as_bundle.input_size == 16
    assert as_bundle.weights_sha256 == "abc"
    # Keywords of from_factory beat what the factory says.
    over = from_factory(nets.with_attrs, input_size=8, classifier="fc2")
    assert over.input_size == 8 and over.classifier == "fc2"
    assert over.spec == f"module:{NETS}:with_attrs"


def test_module_features_through_iter_features(nets):
    bundle = load_model(f"module:{NETS}:as_dict")
    images = _images(7)
    out = np.concatenate(list(iter_features(bundle, PENULTIMATE, images, batch_size=3,
                                            progress=False)))
    from drprobe.sources.transforms import preprocess

    x = preprocess(images, 12, bundle.mean, bundle.std)
    np.testing.assert_allclose(out, layer_features(bundle, PENULTIMATE, x).numpy(), atol=1e-6)
    assert out.shape == (7, feature_dim(bundle, PENULTIMATE))


@pytest.mark.parametrize("spec, error, pieces", [
    ("module:drprobe_no_such_pkg.nets:build", UnknownNameError,
     ["'drprobe_no_such_pkg.nets'", "sys.path"]),
    (f"module:{NETS}:nope", UnknownNameError, ["no factory 'nope'", "build", "plain"]),
    (f"module:{NETS}", InvalidValueError, ["module:package.module:factory"]),
    ("module:drprobe_adapter_broken:build", InvalidValueError,
     ["'drprobe_adapter_broken'", "ValueError: boom"]),
    ("module:drprobe_adapter_needs_dep:build", MissingDataError,
     ["'drprobe_adapter_needs_dep'", "drprobe_no_such_dep"]),
    (f"module:{NETS}:bad_dict", InvalidValueError, ["'colour'", "module"]),
    (f"module:{NETS}:not_a_model", InvalidValueError, ["int", "nn.Module"]),
    (f"module:{NETS}:no_linear", InvalidValueError, ["no nn.Linear"]),
    (f"module:{NETS}:broken", InvalidValueError, ["factory exploded on two lines"]),
    (f"module:{NETS}:build?pretrained=True", InvalidValueError, ["weights="]),
    (f"module:{NETS}:build?width", InvalidValueError, ["key=value"]),
])
def test_module_errors_are_one_line(nets, spec, error, pieces):
    with pytest.raises(error) as err:
        load_model(spec)
    message = str(err.value)
    assert "\n" not in message
    for piece in pieces:
        assert piece in message


def test_module_bad_classifier_lists_linears(nets):
    with pytest.raises(UnknownNameError) as err:
        from_factory(nets.plain, classifier="head")
    assert str(err.value).endswith("valid choices: fc1, fc2")


# ---------------------------------------------------------------- hf: vision

@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory: pytest.TempPathFactory):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=64,
                                    num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=128)
    folder = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    transformers.ViTModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def vit(vit_dir) -> HiddenStatesBundle:
    return load_model(f"hf:{vit_dir}")


@pytest.fixture(scope="module")
def vit_reference(vit_dir):
    """The same checkpoint loaded by transformers itself, without drprobe."""
    from transformers import ViTModel

    return ViTModel.from_pretrained(vit_dir).eval()


def _x32(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_hf_vit_layers_listed(vit):
    rows = list_layers(vit)
    assert [r.name for r in rows] == [PENULTIMATE, "hidden_states.0", "hidden_states.1",
                                      "hidden_states.2"]
    assert rows[0].shape == (64,)
    assert all(r.kind == "tokens" and r.shape == (17, 64) for r in rows[1:])  # 16 patches + CLS
    assert isinstance(vit, HiddenStatesBundle) and vit.modality == "image"
    assert vit.input_size == 32 and vit.classifier == "classifier"


def test_hf_vit_penultimate_is_what_the_classifier_reads(vit, vit_reference):
    x = _x32()
    pen = layer_features(vit, PENULTIMATE, x)
    with torch.no_grad():
        out = vit.module(x)
        ref = vit_reference(x, output_hidden_states=True)
    torch.testing.assert_close(vit.module.classifier(pen), out.logits)
    # The final-layernormed CLS token of the checkpoint, as transformers computes it.
    torch.testing.assert_close(pen, ref.last_hidden_state[:, 0])
    for i, h in enumerate(ref.hidden_states):
        torch.testing.assert_close(layer_features(vit, f"hidden_states.{i}", x, "cls"), h[:, 0])
        torch.testing.assert_close(layer_features(vit, f"hidden_states.{i}", x, "mean"),
                                   h.mean(dim=1))
        torch.testing.assert_close(layer_features(vit, f"hidden_states.{i}", x, "flatten"),
                                   h.reshape(3, -1))


def test_hf_vit_extraction_is_deterministic(vit):
    images = _images(6, side=40, seed=1)
    runs = [np.concatenate(list(iter_features(vit, layer, images, pooling=pool,
                                              batch_size=bs, progress=False)))
            for layer, pool, bs in [(PENULTIMATE, "avg", 4), (PENULTIMATE, "avg", 4),
                                    (PENULTIMATE, "avg", 6)]]
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_allclose(runs[0], runs[2], atol=1e-5)
    assert runs[0].shape == (6, 64)
    flat = np.concatenate(list(iter_features(vit, "hidden_states.1", images, pooling="flatten",
                                             progress=False)))
    assert flat.shape == (6, 17 * 64) == (6, feature_dim(vit, "hidden_states.1", "flatten"))


def test_hf_preprocessing_read_from_processor_config(vit_dir, tmp_path):
    folder = tmp_path / "vit_with_processor"
    folder.mkdir()
    for f in vit_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.25, 0.5],
        "size": {"height": 48, "width": 48}, "do_center_crop": True,
        "crop_size": {"height": 40, "width": 40}, "image_processor_type": "ViTImageProcessor",
    }))
    bundle = load_model(f"hf:{folder}")
    assert (bundle.input_size, bundle.mean, bundle.std) == (40, (0.5,) * 3, (0.5, 0.25, 0.5))
    assert bundle.weights_sha256 == load_model(f"hf:{vit_dir}").weights_sha256


def test_hf_vit_random_twin_is_seeded(vit_dir, vit):
    a = load_model(f"hf:{vit_dir}", weights="random", seed=3)
    b = load_model(f"hf:{vit_dir}", weights="random", seed=3)
    c = load_model(f"hf:{vit_dir}", weights="random", seed=4)
    assert a.weights_sha256 is None and a.seed == 3
    assert _same(_params(a), _params(b))
    assert not _same(_params(a), _params(c)) and not _same(_params(a), _params(vit))
    assert [r.shape for r in list_layers(a)] == [r.shape for r in list_layers(vit)]


def test_hf_convnext_maps_and_pooled_penultimate(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.ConvNextConfig(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1],
                                         num_stages=2, patch_size=4, image_size=32)
    torch.manual_seed(0)
    transformers.ConvNextModel(config).save_pretrained(tmp_path)
    bundle = load_model(f"hf:{tmp_path}")
    rows = {r.name: r for r in list_layers(bundle)}
    assert rows["hidden_states.2"].kind == "map" and rows["hidden_states.2"].shape == (16, 4, 4)
    x = _x32(2)
    reference = transformers.ConvNextModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        ref = reference(x, output_hidden_states=True)
    torch.testing.assert_close(layer_features(bundle, PENULTIMATE, x), ref.pooler_output)
    torch.testing.assert_close(layer_features(bundle, "hidden_states.2", x, "mean"),
                               ref.hidden_states[2].mean(dim=(2, 3)))
    with pytest.raises(InvalidValueError, match="needs a token sequence"):
        layer_features(bundle, "hidden_states.2", x, "cls")


def test_factory_returning_a_transformer_bundle_keeps_it(vit):
    wrapped = from_factory(lambda: vit, spec="module:tests:vit")
    assert isinstance(wrapped, HiddenStatesBundle) and wrapped.modality == "image"
    assert wrapped.spec == "module:tests:vit" and wrapped.classifier == "classifier"
    assert [r.name for r in list_layers(wrapped)][-1] == "hidden_states.2"


def test_hf_unknown_pooling_and_layer(vit):
    with pytest.raises(InvalidValueError) as err:
        layer_features(vit, "hidden_states.1", _x32(1), "max")
    assert str(err.value) == "unknown pooling 'max'; valid choices: avg, cls, flatten, mean"
    with pytest.raises(UnknownNameError, match="hidden_states.2"):
        layer_features(vit, "hidden_states.3", _x32(1))


def test_hf_offline_hub_name_is_a_one_line_error(monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingDataError) as err:
        load_model("hf:drprobe-nobody/no-such-model")
    message = str(err.value)
    assert "\n" not in message
    assert "'drprobe-nobody/no-such-model' is not available offline" in message
    assert "pass a local path" in message


@pytest.mark.parametrize("spec, error, piece", [
    ("hf:/drprobe/no/such/folder", MissingDataError, "no model folder"),
    ("hf:", InvalidValueError, "hf:NAME_OR_PATH"),
])
def test_hf_bad_names(spec, error, piece):
    pytest.importorskip("transformers")
    with pytest.raises(error, match=piece):
        load_model(spec)


def test_hf_bad_options(vit_dir):
    with pytest.raises(UnknownNameError, match="valid choices: modality, pooling, max_length"):
        load_model(f"hf:{vit_dir}?colour=red")
    with pytest.raises(InvalidValueError, match="unknown modality 'audio'"):
        load_model(f"hf:{vit_dir}?modality=audio")


def test_hf_checkpoint_missing_network_weights_is_refused(vit_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    for f in vit_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    state = load_file(tmp_path / "model.safetensors")
    kept = {k: v for k, v in state.items() if ".0." not in k}  # drop the first block
    assert len(kept) < len(state)
    save_file(kept, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(InvalidValueError, match="lacks .* weights of the network"):
        load_model(f"hf:{tmp_path}")


def test_hf_inputs_of_the_wrong_modality(vit):
    with pytest.raises(InvalidValueError, match="takes an image batch, got a dict"):
        layer_features(vit, "hidden_states.1", {"input_ids": torch.zeros(1, 4, dtype=int)})


def test_hf_checkpoint_of_wrong_kind_is_refused(vit_dir):
    with pytest.raises(InvalidValueError) as err:
        load_model(f"hf:{vit_dir}?modality=text")
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- timm:, torchvision:

@pytest.mark.parametrize("prefix, library", [("timm", "timm"), ("torchvision", "torchvision")])
def test_missing_library_is_a_one_line_error(monkeypatch, prefix, library):
    monkeypatch.setitem(sys.modules, library, None)  # makes `import library` fail
    with pytest.raises(MissingDataError) as err:
        load_model(f"{prefix}:resnet18")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{library} is not importable here")
    assert f"pip install {library}" in message


class _Net(nn.Module):
    """A stand-in for a library model: features -> pool -> ``head_attr`` (Sequential)."""

    def __init__(self, head_attr: str) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 8, 3, padding=1)
        self.extra = nn.Linear(8, 8)  # a Linear that is not the head
        setattr(self, head_attr, nn.Sequential(nn.Dropout(0.0), nn.Linear(8, 5)))
        self.head_attr = head_attr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.extra(self.features(x).mean(dim=(2, 3)))
        return getattr(self, self.head_attr)(z)

    def get_classifier(self) -> nn.Module:
        return getattr(self, self.head_attr)


def _fake_timm() -> types.ModuleType:
    timm = types.ModuleType("timm")
    timm.calls = []

    def create_model(name: str, pretrained: bool = False) -> nn.Module:
        if name not in ("tinynet_a", "tinynet_b"):
            raise RuntimeError(f"Unknown model ({name})")
        timm.calls.append((name, pretrained))
        net = _Net("head")
        net.pretrained_cfg = {"input_size": (3, 96, 96), "mean": (0.5, 0.5, 0.5),
                              "std": (0.25, 0.25, 0.25), "crop_pct": 0.9}
        return net

    def resolve_data_config(args=None, pretrained_cfg=None, model=None, **_kw):
        cfg = dict(model.pretrained_cfg)
        return {"input_size": cfg["input_size"], "mean": cfg["mean"], "std": cfg["std"],
                "crop_pct": cfg["crop_pct"], "interpolation": "bicubic"}

    timm.create_model = create_model
    timm.list_models = lambda *a, **k: ["tinynet_a", "tinynet_b"]
    timm.data = types.SimpleNamespace(resolve_data_config=resolve_data_config)
    return timm


def test_timm_adapter_against_stand_in(monkeypatch):
    timm = _fake_timm()
    monkeypatch.setitem(sys.modules, "timm", timm)
    bundle = load_model("timm:tinynet_a")
    assert timm.calls == [("tinynet_a", True)]
    assert (bundle.classifier, bundle.input_size, bundle.mean, bundle.std) == (
        "head.1", 96, (0.5,) * 3, (0.25,) * 3)
    x = _x32(2)
    net = bundle.module
    torch.testing.assert_close(layer_features(bundle, PENULTIMATE, x),
                               net.extra(net.features(x).mean(dim=(2, 3))))
    a, b = (load_model("timm:tinynet_a", weights="random", seed=1) for _ in range(2))
    assert timm.calls[-1] == ("tinynet_a", False) and _same(_params(a), _params(b))
    with pytest.raises(UnknownNameError, match="close matches: tinynet_[ab], tinynet_[ab]$"):
        load_model("timm:tinynet_c")


def _fake_torchvision() -> types.ModuleType:
    tv = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    calls = []

    class Preset:  # the attributes of torchvision's ImageClassification preset
        def __init__(self) -> None:
            self.crop_size, self.resize_size = [72], [80]
            self.mean, self.std = [0.4, 0.5, 0.6], [0.2, 0.3, 0.4]

    weights = types.SimpleNamespace(transforms=Preset)

    def get_model(name: str, weights=None) -> nn.Module:
        calls.append((name, weights))
        return _Net({"resnet_x": "fc", "vgg_x": "classifier", "vit_x": "heads"}[name])

    models.list_models = lambda module=None: ["resnet_x", "vgg_x", "vit_x"]
    models.get_model_weights = lambda name: types.SimpleNamespace(DEFAULT=weights)
    models.get_model = get_model
    models.calls, models.weights = calls, weights
    tv.models = models
    return tv


def test_torchvision_adapter_against_stand_in(monkeypatch):
    tv = _fake_torchvision()
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    for name, head in (("resnet_x", "fc.1"), ("vgg_x", "classifier.1"), ("vit_x", "heads.1")):
        bundle = load_model(f"torchvision:{name}")
        assert tv.models.calls[-1] == (name, tv.models.weights)
        assert (bundle.classifier, bundle.input_size) == (head, 72)
        assert bundle.mean == (0.4, 0.5, 0.6) and bundle.std == (0.2, 0.3, 0.4)
    rand = load_model("torchvision:vgg_x", weights="random", seed=2)
    assert tv.models.calls[-1] == ("vgg_x", None) and rand.input_size == 72
    with pytest.raises(UnknownNameError, match="unknown torchvision model 'resnet_y'"):
        load_model("torchvision:resnet_y")
