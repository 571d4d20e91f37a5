"""Checkpoint formats: each written here from a random model A, loaded into B, outputs equal."""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import types

import numpy as np
import pytest
import torch
from helpers import one_line
from scipy.special import erf

from drprobe.errors import DrprobeError, InvalidValueError, MissingDataError
from drprobe.sources.layers import layer_features
from drprobe.sources.models import ModelBundle, load_model
from drprobe.sources.zoo.heads import PrefixLinear

GEN = torch.Generator().manual_seed(0)
X64 = torch.randn(2, 3, 64, 64, generator=GEN)
X224 = torch.randn(2, 3, 224, 224, generator=GEN)
NESTING = [2**i for i in range(3, 12)]  # MRL's 8, 16, ..., 2048


def _logits(bundle: ModelBundle, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return bundle.module(x)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def resnet18() -> ModelBundle:
    return load_model("builtin:resnet18", "random", 1)


@pytest.fixture(scope="module")
def blurpool50() -> ModelBundle:
    return load_model("builtin:resnet50_blurpool", "random", 2)


@pytest.fixture(scope="module")
def vit32() -> ModelBundle:
    return load_model("builtin:vit_small_patch32_224", "random", 5)


# ---------------------------------------------------------------- plain state_dict


def test_plain_state_dict_round_trip(resnet18, tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18.module.state_dict(), path)
    loaded = load_model("builtin:resnet18", checkpoint=path)
    assert (loaded.weights, loaded.seed, loaded.weights_sha256) == ("checkpoint", None, _sha(path))
    assert loaded.module is not resnet18.module and not loaded.module.training
    assert not any(p.requires_grad for p in loaded.module.parameters())
    assert torch.equal(_logits(loaded, X64), _logits(resnet18, X64))
    same = load_model("resnet18", "checkpoint", checkpoint=str(path))
    assert torch.equal(_logits(same, X64), _logits(resnet18, X64))


def test_wrapped_state_dict_without_batch_counters(resnet18, tmp_path):
    state = {k: v for k, v in resnet18.module.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    path = tmp_path / "wrapped.pt"
    torch.save({"state_dict": state, "epoch": 7, "best_acc": 0.5}, path)
    loaded = load_model("builtin:resnet18", checkpoint=path)
    assert torch.equal(_logits(loaded, X64), _logits(resnet18, X64))


def test_other_class_count_replaces_the_head(resnet18, tmp_path):
    state = dict(resnet18.module.state_dict())
    state["fc.weight"] = torch.randn(10, 512, generator=GEN)
    state["fc.bias"] = torch.randn(10, generator=GEN)
    path = tmp_path / "cifar_head.pth"
    torch.save(state, path)
    loaded = load_model("builtin:resnet18", checkpoint=path)
    pen = layer_features(loaded, "penultimate", X64)
    torch.testing.assert_close(pen, layer_features(resnet18, "penultimate", X64))
    expected = pen @ state["fc.weight"].T + state["fc.bias"]
    torch.testing.assert_close(_logits(loaded, X64), expected)


def test_vit_state_dict_loads(vit32, tmp_path):
    path = tmp_path / "vit.pth"
    torch.save(vit32.module.state_dict(), path)
    loaded = load_model("builtin:vit_small_patch32_224", checkpoint=path)
    assert torch.equal(_logits(loaded, X224[:1]), _logits(vit32, X224[:1]))


def test_checkpoints_work_for_packaged_models_too(tmp_path):
    source = load_model("builtin:mobilenet_v2", "random", 4)
    path = tmp_path / "mnet.pth"
    torch.save(source.module.state_dict(), path)
    loaded = load_model("builtin:mobilenet_v2", checkpoint=path)
    assert loaded.weights_sha256 == _sha(path)
    assert torch.equal(_logits(loaded, X64), _logits(source, X64))


# ---------------------------------------------------------------- robustness library


def _robustness_file(bundle: ModelBundle, path, lead: str = "module.") -> tuple:
    state = bundle.module.state_dict()
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).reshape(3, 1, 1)
    std = torch.tensor([0.2023, 0.1994, 0.2010]).reshape(3, 1, 1)
    model = {f"{lead}normalizer.new_mean": mean, f"{lead}normalizer.new_std": std,
             f"{lead}attacker.normalizer.new_mean": mean, f"{lead}attacker.normalizer.new_std": std}
    for key, value in state.items():
        model[f"{lead}model.{key}"] = value
        noisy = value + 1.0 if value.is_floating_point() else value
        model[f"{lead}attacker.model.{key}"] = noisy  # a different copy: must be dropped
    torch.save({"model": model, "optimizer": {"state": {}, "param_groups": []},
                "schedule": None, "epoch": 90}, path)
    return tuple(mean.flatten().tolist()), tuple(std.flatten().tolist())


@pytest.mark.parametrize("lead", ["module.", ""])
def test_robustness_checkpoint_keeps_model_drops_attacker_reads_normaliser(resnet18, tmp_path,
                                                                           lead):
    path = tmp_path / "robust_l2_eps3.ckpt"
    mean, std = _robustness_file(resnet18, path, lead)
    loaded = load_model("builtin:resnet18", checkpoint=path)
    assert torch.equal(_logits(loaded, X64), _logits(resnet18, X64))
    assert loaded.mean == pytest.approx(mean) and loaded.std == pytest.approx(std)
    assert loaded.weights_sha256 == _sha(path)


def test_robustness_file_without_model_weights_is_refused(tmp_path):
    path = tmp_path / "robust.ckpt"
    torch.save({"model": {"module.attacker.model.fc.weight": torch.zeros(1000, 512)}}, path)
    with pytest.raises(InvalidValueError, match="module.model.") as err:
        load_model("builtin:resnet18", checkpoint=path)
    one_line(err)


# ---------------------------------------------------------------- MRL and fixed-feature


def _ddp(state: dict[str, torch.Tensor], head: dict[str, torch.Tensor]) -> dict:
    trunk = {f"module.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    return trunk | {f"module.{k}": v for k, v in head.items()}


def test_mrl_nested_heads_load_with_the_largest_head(blurpool50, tmp_path):
    state = blurpool50.module.state_dict()
    heads = {}
    for i, width in enumerate(NESTING):
        small = width < 2048
        heads[f"fc.nesting_classifier_{i}.weight"] = (
            torch.randn(1000, width, generator=GEN) if small else state["fc.weight"])
        heads[f"fc.nesting_classifier_{i}.bias"] = (
            torch.randn(1000, generator=GEN) if small else state["fc.bias"])
    path = tmp_path / "mrl_r50.pt"
    torch.save(_ddp(state, heads), path)
    loaded = load_model("builtin:resnet50_blurpool", checkpoint=path)
    assert torch.equal(_logits(loaded, X64), _logits(blurpool50, X64))
    assert type(loaded.module.fc) is torch.nn.Linear


def test_mrl_efficient_single_head(resnet18, tmp_path):
    state = resnet18.module.state_dict()
    heads = {"fc.nesting_classifier_0.weight": state["fc.weight"],
             "fc.nesting_classifier_0.bias": state["fc.bias"]}
    path = tmp_path / "mrl_e.pt"
    torch.save(_ddp(state, heads), path)
    loaded = load_model("builtin:resnet18", checkpoint=path)
    assert torch.equal(_logits(loaded, X64), _logits(resnet18, X64))


def test_fixed_feature_head_reads_the_first_k_neurons(blurpool50, tmp_path):
    state = blurpool50.module.state_dict()
    weight, bias = torch.randn(1000, 64, generator=GEN), torch.randn(1000, generator=GEN)
    path = tmp_path / "ff64_r50.pt"
    torch.save(_ddp(state, {"fc.weight": weight, "fc.bias": bias}), path)
    loaded = load_model("builtin:resnet50_blurpool", checkpoint=path)
    assert isinstance(loaded.module.fc, PrefixLinear)
    pen = layer_features(loaded, "penultimate", X64)
    assert pen.shape == (2, 2048)
    torch.testing.assert_close(pen, layer_features(blurpool50, "penultimate", X64))
    torch.testing.assert_close(_logits(loaded, X64), pen[:, :64] @ weight.T + bias)


def test_fixed_feature_file_without_ddp_prefix_needs_the_format_named(resnet18, tmp_path):
    state = dict(resnet18.module.state_dict())
    weight, bias = torch.randn(1000, 64, generator=GEN), torch.randn(1000, generator=GEN)
    path = tmp_path / "ff64_plain.pt"
    torch.save(state | {"fc.weight": weight, "fc.bias": bias}, path)
    with pytest.raises(InvalidValueError, match=r"fc.weight file \(1000, 64\) vs model"):
        load_model("builtin:resnet18", checkpoint=path)
    loaded = load_model("builtin:resnet18", checkpoint=path, checkpoint_format="mrl")
    pen = layer_features(loaded, "penultimate", X64)
    torch.testing.assert_close(_logits(loaded, X64), pen[:, :64] @ weight.T + bias)


def test_blurpool_file_into_plain_resnet50_says_which_spec(blurpool50, tmp_path):
    path = tmp_path / "mrl.pt"
    torch.save({f"module.{k}": v for k, v in blurpool50.module.state_dict().items()}, path)
    with pytest.raises(InvalidValueError, match="builtin:resnet50_blurpool") as err:
        load_model("builtin:resnet50", checkpoint=path)
    assert "unexpected keys" in one_line(err)


# ---------------------------------------------------------------- AugReg npz


def _augreg_arrays(bundle: ModelBundle, big_vision: bool = False) -> dict[str, np.ndarray]:
    """Write a timm-layout ViT in Google's flax layout (HWIO convs, (in, out) denses, heads)."""
    s = {k: v.numpy() for k, v in bundle.module.state_dict().items()}
    dim, heads = s["norm.weight"].shape[0], 6
    mha, mlp, ln2 = (0, 0, 1) if big_vision else (1, 3, 2)
    a = {"embedding/kernel": s["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
         "embedding/bias": s["patch_embed.proj.bias"], "cls": s["cls_token"],
         "Transformer/posembed_input/pos_embedding": s["pos_embed"],
         "Transformer/encoder_norm/scale": s["norm.weight"],
         "Transformer/encoder_norm/bias": s["norm.bias"],
         "head/kernel": s["head.weight"].T, "head/bias": s["head.bias"]}
    for i in range(12):
        src, blk = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        att = f"{blk}MultiHeadDotProductAttention_{mha}/"
        for j, name in enumerate(("query", "key", "value")):
            rows = slice(j * dim, (j + 1) * dim)
            a[f"{att}{name}/kernel"] = s[src + "attn.qkv.weight"][rows].T.reshape(dim, heads, -1)
            a[f"{att}{name}/bias"] = s[src + "attn.qkv.bias"][rows].reshape(heads, -1)
        a[f"{att}out/kernel"] = s[src + "attn.proj.weight"].T.reshape(heads, -1, dim)
        a[f"{att}out/bias"] = s[src + "attn.proj.bias"]
        for norm, index in (("norm1", 0), ("norm2", ln2)):
            a[f"{blk}LayerNorm_{index}/scale"] = s[f"{src}{norm}.weight"]
            a[f"{blk}LayerNorm_{index}/bias"] = s[f"{src}{norm}.bias"]
        for fc, dense in (("fc1", 0), ("fc2", 1)):
            a[f"{blk}MlpBlock_{mlp}/Dense_{dense}/kernel"] = s[f"{src}mlp.{fc}.weight"].T
            a[f"{blk}MlpBlock_{mlp}/Dense_{dense}/bias"] = s[f"{src}mlp.{fc}.bias"]
    prefix = "opt/target/" if big_vision else ""
    return {prefix + k: np.ascontiguousarray(v) for k, v in a.items()}


def _flax_vit_logits(a: dict[str, np.ndarray], images: np.ndarray, patch: int) -> np.ndarray:
    """ViT forward computed directly from the flax arrays (float64): the independent reference."""
    def ln(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-6) * a[f"{name}/scale"] + a[f"{name}/bias"]

    b, _, h, w = images.shape
    x = images.transpose(0, 2, 3, 1).reshape(b, h // patch, patch, w // patch, patch, 3)
    x = x.transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, patch * patch * 3)
    kernel = a["embedding/kernel"].astype(np.float64)
    x = x @ kernel.reshape(-1, kernel.shape[-1]) + a["embedding/bias"]
    x = np.concatenate([np.broadcast_to(a["cls"], (b, 1, x.shape[-1])), x], 1)
    x = x + a["Transformer/posembed_input/pos_embedding"]
    for i in range(12):
        blk = f"Transformer/encoderblock_{i}/"
        att = f"{blk}MultiHeadDotProductAttention_1/"
        y = ln(x, f"{blk}LayerNorm_0")
        q, k, v = (np.einsum("btd,dhk->bthk", y, a[f"{att}{n}/kernel"]) + a[f"{att}{n}/bias"]
                   for n in ("query", "key", "value"))
        scores = np.einsum("bqhk,bthk->bhqt", q, k) / math.sqrt(q.shape[-1])
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        heads = np.einsum("bhqt,bthk->bqhk", scores, v)
        x = x + np.einsum("bqhk,hkd->bqd", heads, a[f"{att}out/kernel"]) + a[f"{att}out/bias"]
        y = ln(x, f"{blk}LayerNorm_2") @ a[f"{blk}MlpBlock_3/Dense_0/kernel"]
        y = y + a[f"{blk}MlpBlock_3/Dense_0/bias"]
        y = 0.5 * y * (1.0 + erf(y / math.sqrt(2.0)))
        x = x + y @ a[f"{blk}MlpBlock_3/Dense_1/kernel"] + a[f"{blk}MlpBlock_3/Dense_1/bias"]
    return ln(x, "Transformer/encoder_norm")[:, 0] @ a["head/kernel"] + a["head/bias"]


@pytest.mark.slow
def test_augreg_npz_matches_a_flax_layout_reference(vit32, tmp_path):
    arrays = _augreg_arrays(vit32)
    arrays["head/kernel"] = np.random.default_rng(0).normal(0, 0.05, (384, 10)).astype(np.float32)
    arrays["head/bias"] = np.linspace(-1, 1, 10, dtype=np.float32)
    path = tmp_path / "S_32-i21k-300ep.npz"
    np.savez(path, **arrays)
    loaded = load_model("builtin:vit_small_patch32_224", checkpoint=path)
    assert (loaded.weights, loaded.weights_sha256) == ("checkpoint", _sha(path))
    reference = _flax_vit_logits({k: v.astype(np.float64) for k, v in arrays.items()},
                                 X224.double().numpy(), 32)
    np.testing.assert_allclose(_logits(loaded, X224).numpy(), reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("big_vision", [False, True])
def test_augreg_npz_round_trip(vit32, tmp_path, big_vision):
    path = tmp_path / "vit.npz"
    np.savez(path, **_augreg_arrays(vit32, big_vision))
    loaded = load_model("builtin:vit_small_patch32_224", checkpoint=path)
    torch.testing.assert_close(_logits(loaded, X224), _logits(vit32, X224), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.slow
def test_augreg_vit_s16_round_trip(tmp_path):
    source = load_model("builtin:vit_small_patch16_224", "random", 6)
    path = tmp_path / "S_16.npz"
    np.savez(path, **_augreg_arrays(source))
    loaded = load_model("builtin:vit_small_patch16_224", checkpoint=path)
    x = X224[:1]
    torch.testing.assert_close(_logits(loaded, x), _logits(source, x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer_features(loaded, "penultimate", x),
                               layer_features(source, "penultimate", x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_augreg_npz_errors(vit32, tmp_path):
    arrays = _augreg_arrays(vit32)
    extra = tmp_path / "extra.npz"
    np.savez(extra, **arrays, **{"pre_logits/kernel": np.zeros((384, 384), np.float32)})
    with pytest.raises(InvalidValueError, match="unexpected keys: pre_logits/kernel") as err:
        load_model("builtin:vit_small_patch32_224", checkpoint=extra)
    one_line(err)
    lacking = tmp_path / "lacking.npz"
    np.savez(lacking, **{k: v for k, v in arrays.items() if k != "cls"})
    with pytest.raises(InvalidValueError, match="lacks 'cls'"):
        load_model("builtin:vit_small_patch32_224", checkpoint=lacking)
    with pytest.raises(InvalidValueError, match=r"pos_embed file \(1, 50, 384\) vs model "
                                                r"\(1, 197, 384\)") as err:
        load_model("builtin:vit_small_patch16_224", checkpoint=extra)
    one_line(err)
    with pytest.raises(InvalidValueError, match="cannot be read as format 'robustness'"):
        load_model("builtin:vit_small_patch32_224", checkpoint=extra,
                   checkpoint_format="robustness")


# ---------------------------------------------------------------- bad files


def test_key_and_shape_errors_are_one_line_and_name_the_keys(resnet18, tmp_path):
    state = dict(resnet18.module.state_dict())
    cases = {
        "unexpected": (state | {"extra.weight": torch.zeros(3)},
                       r"1 unexpected keys: extra.weight"),
        "missing": ({k: v for k, v in state.items() if k != "layer1.0.conv1.weight"},
                    r"1 missing keys: layer1.0.conv1.weight \(64, 64, 3, 3\)"),
        "shape": (state | {"layer1.0.conv1.weight": torch.zeros(32, 64, 3, 3)},
                  r"layer1.0.conv1.weight file \(32, 64, 3, 3\) vs model \(64, 64, 3, 3\)"),
        "many": ({k: v for k, v in state.items() if not k.startswith("layer4")},
                 r"missing keys: layer4.0.conv1.weight \(512, 256, 3, 3\), .* \(\+\d+ more\)"),
    }
    for name, (bad, pattern) in cases.items():
        path = tmp_path / f"{name}.pth"
        torch.save(bad, path)
        with pytest.raises(InvalidValueError, match=pattern) as err:
            load_model("builtin:resnet18", checkpoint=path)
        assert "builtin:resnet18" in one_line(err)


def test_pickled_objects_are_refused_unless_trusted(resnet18, tmp_path):
    path = tmp_path / "with_args.pt"
    torch.save({"model": resnet18.module.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(DrprobeError, match="argparse.Namespace") as err:
        load_model("builtin:resnet18", checkpoint=path)
    assert "trust_checkpoint=True" in one_line(err)
    trusted = load_model("builtin:resnet18", checkpoint=path, trust_checkpoint=True)
    assert torch.equal(_logits(trusted, X64), _logits(resnet18, X64))


def test_trusted_file_that_cannot_be_unpickled(tmp_path, monkeypatch):
    module = types.ModuleType("drprobe_vanishing_module")

    class Thing:
        pass

    Thing.__module__ = module.__name__
    Thing.__qualname__ = "Thing"
    module.Thing = Thing
    monkeypatch.setitem(sys.modules, module.__name__, module)
    path = tmp_path / "thing.pt"
    torch.save({"fc.weight": torch.zeros(2, 2), "thing": Thing()}, path)
    monkeypatch.delitem(sys.modules, module.__name__)
    with pytest.raises(DrprobeError, match="stores the Python object drprobe_vanishing_module"):
        load_model("builtin:resnet18", checkpoint=path)
    with pytest.raises(DrprobeError, match="cannot unpickle checkpoint") as err:
        load_model("builtin:resnet18", checkpoint=path, trust_checkpoint=True)
    one_line(err)


def test_unreadable_missing_and_non_state_files(tmp_path):
    junk = tmp_path / "junk.pt"
    for content in (b"not a checkpoint at all", b"hello"):
        junk.write_bytes(content)
        with pytest.raises(DrprobeError, match="cannot read checkpoint") as err:
            load_model("builtin:resnet18", checkpoint=junk)
        one_line(err)
    with pytest.raises(MissingDataError, match="does not exist"):
        load_model("builtin:resnet18", checkpoint=tmp_path / "absent.pth")
    listed = tmp_path / "list.pt"
    torch.save([1, 2, 3], listed)
    with pytest.raises(InvalidValueError, match="holds no state_dict") as err:
        load_model("builtin:resnet18", checkpoint=listed)
    one_line(err)


def test_argument_errors(resnet18, tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(resnet18.module.state_dict(), path)
    with pytest.raises(InvalidValueError, match="with a checkpoint: pretrained, checkpoint"):
        load_model("builtin:resnet18", "random", checkpoint=path)
    with pytest.raises(InvalidValueError, match="needs a checkpoint file"):
        load_model("builtin:resnet18", "checkpoint")
    with pytest.raises(InvalidValueError, match="valid choices: auto, state_dict, robustness"):
        load_model("builtin:resnet18", checkpoint=path, checkpoint_format="onnx")
    with pytest.raises(InvalidValueError, match="pretrained, random, checkpoint"):
        load_model("builtin:resnet18", "imagenet")
