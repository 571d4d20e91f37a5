"""``timm:`` and ``torchvision:`` for real: random twins, pretrained weights served offline from
files this test writes where each library looks for its downloads, layers, hooks and pooling.

Both libraries are installed by the set-up (``make setup``), so nothing here skips.
"""

from __future__ import annotations

import os

import huggingface_hub.constants
import numpy as np
import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from drprobe.cli import main
from drprobe.errors import MissingDataError, UnknownNameError
from drprobe.features.extract import iter_features
from drprobe.sources.adapters.common import state_sha256
from drprobe.sources.layers import PENULTIMATE, layer_features, list_layers
from drprobe.sources.models import load_model
from drprobe.sources.transforms import preprocess

TIMM_VIT = "test_vit"  # timm's own tiny ViT (0.37 M parameters, native input 160 px)


def _x(n: int = 2, side: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _capture(root: nn.Module, name: str, x: torch.Tensor) -> torch.Tensor:
    """Output of submodule ``name`` in a full forward pass of ``root``, by a hook of our own."""
    seen: list[torch.Tensor] = []
    handle = root.get_submodule(name).register_forward_hook(lambda _m, _a, out: seen.append(out))
    try:
        with torch.inference_mode():
            root(x)
    finally:
        handle.remove()
    return seen[0]


# ---------------------------------------------------------------- timm


def test_timm_random_twin_penultimate_and_seeds():
    bundle = load_model("timm:resnet18", weights="random", seed=0)
    assert (bundle.classifier, bundle.input_size, bundle.weights_sha256) == ("fc", 224, None)
    x = _x()
    with torch.inference_mode():
        expected = bundle.module.forward_head(bundle.module.forward_features(x), pre_logits=True)
    torch.testing.assert_close(layer_features(bundle, PENULTIMATE, x), expected)
    again, other = (load_model("timm:resnet18", weights="random", seed=s) for s in (0, 1))
    assert _same_state(bundle.module, again.module)
    assert not _same_state(bundle.module, other.module)


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face hub cache, offline: timm's downloads resolve only from it."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def _put_in_hub_cache(cache, repo_id: str, state: dict[str, torch.Tensor]) -> None:
    """Lay out ``state`` as the hub cache keeps a downloaded ``model.safetensors``."""
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    revision = "0123456789abcdef0123456789abcdef01234567"
    (folder / "snapshots" / revision).mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(revision)
    save_file({k: v.contiguous() for k, v in state.items()},
              str(folder / "snapshots" / revision / "model.safetensors"))


def test_timm_pretrained_weights_load_from_the_hub_cache(hub_cache):
    torch.manual_seed(11)
    source = timm.create_model(TIMM_VIT)
    _put_in_hub_cache(hub_cache, source.pretrained_cfg["hf_hub_id"], source.state_dict())
    bundle = load_model(f"timm:{TIMM_VIT}")
    assert (bundle.weights, bundle.seed) == ("pretrained", None)
    assert _same_state(bundle.module, source)
    assert bundle.weights_sha256 == state_sha256(source)
    cfg = source.pretrained_cfg
    assert bundle.input_size == cfg["input_size"][-1] == 160
    assert bundle.mean == pytest.approx(cfg["mean"]) and bundle.std == pytest.approx(cfg["std"])
    assert bundle.classifier == "head"


def test_timm_pretrained_offline_without_the_file_is_one_line(hub_cache):
    with pytest.raises(MissingDataError, match="could not fetch the weights of 'test_vit'") as err:
        load_model(f"timm:{TIMM_VIT}")
    assert "\n" not in str(err.value)


def test_timm_vit_layers_hooks_and_poolings():
    bundle = load_model(f"timm:{TIMM_VIT}", weights="random", seed=3)
    rows = {row.name: row.shape for row in list_layers(bundle)}
    tokens, dim = 1 + (160 // 16) ** 2, bundle.module.embed_dim
    assert rows[PENULTIMATE] == (dim,)
    assert rows["blocks.0"] == rows["norm"] == (tokens, dim)
    x = _x(2, 160, seed=4)
    block = _capture(bundle.module, "blocks.1", x)
    torch.testing.assert_close(layer_features(bundle, "blocks.1", x, "avg"), block.mean(dim=1))
    torch.testing.assert_close(layer_features(bundle, "blocks.1", x, "flatten"),
                               block.flatten(1))
    normed = _capture(bundle.module, "norm", x)
    torch.testing.assert_close(layer_features(bundle, PENULTIMATE, x), normed[:, 0])


def test_timm_features_stream_through_extraction():
    bundle = load_model("timm:resnet18", weights="random", seed=2)
    images = np.random.default_rng(0).integers(0, 256, (5, 40, 40, 3), dtype=np.uint8)
    batches = list(iter_features(bundle, "layer3", images, pooling="avg", image_size=64,
                                 batch_size=2, progress=False))
    assert [b.shape for b in batches] == [(2, 256), (2, 256), (1, 256)]
    x = preprocess(images, 64, bundle.mean, bundle.std)
    expected = _capture(bundle.module, "layer3", x).mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(np.concatenate(batches), expected, rtol=1e-4, atol=1e-5)


def test_timm_unknown_name_suggests_close_ones():
    with pytest.raises(UnknownNameError, match="resnet18"):
        load_model("timm:resnet18x")


# ---------------------------------------------------------------- torchvision


def test_torchvision_random_twin_penultimate_and_seeds():
    bundle = load_model("torchvision:resnet18", weights="random", seed=0)
    assert bundle.classifier == "fc" and bundle.input_size == 224
    assert bundle.mean == pytest.approx((0.485, 0.456, 0.406))
    x = _x()
    net = bundle.module
    with torch.inference_mode():
        expected = nn.Sequential(*list(net.children())[:-1])(x).flatten(1)
    torch.testing.assert_close(layer_features(bundle, PENULTIMATE, x), expected)
    again = load_model("torchvision:resnet18", weights="random", seed=0)
    assert _same_state(net, again.module)
    assert load_model("torchvision:vgg11", weights="random").classifier == "classifier.6"


def test_torchvision_pretrained_weights_load_from_the_torch_hub_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    default = torchvision.models.get_model_weights("mobilenet_v3_small").DEFAULT
    torch.manual_seed(12)
    source = torchvision.models.mobilenet_v3_small()
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(source.state_dict(), folder / os.path.basename(default.url))
    bundle = load_model("torchvision:mobilenet_v3_small")
    assert _same_state(bundle.module, source)
    assert bundle.weights == "pretrained" and bundle.weights_sha256 == state_sha256(source)
    preset = default.transforms()
    assert bundle.input_size == preset.crop_size[0]
    assert bundle.mean == pytest.approx(preset.mean) and bundle.std == pytest.approx(preset.std)
    assert bundle.classifier == "classifier.3"
    x = _x(2, 64)
    hidden = _capture(bundle.module, "classifier.2", x)  # input of the final Linear
    torch.testing.assert_close(layer_features(bundle, PENULTIMATE, x), hidden)


def test_torchvision_layers_and_flatten_pooling():
    bundle = load_model("torchvision:resnet18", weights="random", seed=5)
    rows = {row.name: row.shape for row in list_layers(bundle, 64)}
    assert rows["layer2.1"] == (128, 8, 8) and rows[PENULTIMATE] == (512,)
    assert "layer1.0.relu" not in rows  # a block's ReLU module runs twice per pass
    x = _x(2, 64, seed=6)
    expected = _capture(bundle.module, "layer2.1", x).flatten(1)
    torch.testing.assert_close(layer_features(bundle, "layer2.1", x, "flatten"), expected)


def test_cli_lists_the_layers_of_library_models(capsys):
    assert main(["layers", "torchvision:resnet18", "--weights", "random", "--input-size",
                 "64"]) == 0
    out = capsys.readouterr().out
    assert "layer4.1" in out and "penultimate" in out


def test_paper_architectures_are_the_library_models():
    """``builtin:resnet50`` is torchvision's ResNet50 and ``builtin:vit_small_patch16_224``
    timm's ViT-S/16: the same classes and state_dict layout as the libraries build."""
    zoo = load_model("builtin:resnet50", "random", 0).module
    assert type(zoo) is torchvision.models.ResNet
    assert zoo.state_dict().keys() == torchvision.models.resnet50().state_dict().keys()
    vit = load_model("builtin:vit_small_patch32_224", "random", 0).module
    assert isinstance(vit, timm.models.VisionTransformer)
    assert vit.state_dict().keys() == timm.create_model("vit_small_patch32_224").state_dict().keys()

