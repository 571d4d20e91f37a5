"""Layer listing, validation and hooked features, checked against direct computations."""

from __future__ import annotations

import pytest
import torch

from drprobe.errors import InvalidValueError, UnknownNameError
from drprobe.sources.layers import (
    PENULTIMATE,
    LayerInfo,
    layer_features,
    list_layers,
    pool,
    resolve_layer,
)
from drprobe.sources.models import ModelBundle, load_model

# ASSETS.md: output channels of MobileNetV2's features[i].
CHANNELS = [32, 16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320, 1280]


@pytest.fixture(scope="module")
def mnet() -> ModelBundle:
    return load_model("builtin:mobilenet_v2")


@pytest.fixture(scope="module")
def eff() -> ModelBundle:
    return load_model("builtin:efficientnet_lite0")


@pytest.fixture(scope="module")
def x224() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def x64() -> torch.Tensor:
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_list_layers_shapes_at_224(mnet):
    rows = list_layers(mnet, 224)
    assert rows[0] == LayerInfo(PENULTIMATE, "penultimate", (1280,))
    shapes = {row.name: row.shape for row in rows}
    assert shapes["features.18"] == (1280, 7, 7)
    assert shapes["features.14"] == (160, 7, 7)
    assert shapes["features.0"] == (32, 112, 112)
    assert [shapes[f"features.{i}"][0] for i in range(19)] == CHANNELS
    assert shapes["classifier.1"] == (1000,)
    kinds = {row.name: row.kind for row in rows}
    assert kinds["features.3"] == "InvertedResidual" and kinds["classifier.1"] == "Linear"
    assert len({row.name for row in rows}) == len(rows)


def test_list_layers_other_size_and_native_default(mnet):
    shapes = {row.name: row.shape for row in list_layers(mnet, 64)}
    assert shapes["features.14"] == (160, 2, 2) and shapes[PENULTIMATE] == (1280,)
    assert list_layers(mnet) == list_layers(mnet, 224)


def test_resolve_layer(mnet, eff):
    assert resolve_layer(mnet, "features.14") == "features.14"
    assert resolve_layer(mnet, PENULTIMATE) == PENULTIMATE
    with pytest.raises(UnknownNameError) as err:
        resolve_layer(mnet, "features.99")
    message = str(err.value)
    assert "\n" not in message and "'features.99'" in message
    assert all(f"features.{i}" in message for i in range(19)) and PENULTIMATE in message
    # EfficientNet's top-level activation module runs twice (stem and head): refused by name.
    assert "_swish" not in {row.name for row in list_layers(eff)}
    with pytest.raises(InvalidValueError, match="'_swish' runs 2 times.*_blocks.15"):
        resolve_layer(eff, "_swish")


def test_penultimate_is_pooled_features_and_feeds_the_classifier(mnet, x224):
    pen = layer_features(mnet, PENULTIMATE, x224)
    model = mnet.module
    with torch.inference_mode():
        manual = torch.nn.functional.adaptive_avg_pool2d(model.features(x224), 1).flatten(1)
        logits = model(x224)
        from_pen = model.classifier(pen)
    assert pen.shape == (2, 1280)
    torch.testing.assert_close(pen, manual, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(from_pen, logits, rtol=1e-5, atol=1e-5)


def test_efficientnet_penultimate_matches_its_own_feature_extractor(eff, x64):
    pen = layer_features(eff, PENULTIMATE, x64)
    model = eff.module
    with torch.inference_mode():
        manual = model.extract_features(x64).mean(dim=(2, 3))
        logits = model(x64)
    assert pen.shape == (3, 1280)
    torch.testing.assert_close(pen, manual, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.get_submodule("_fc")(pen), logits, rtol=1e-5, atol=1e-5)


def test_middle_layer_equals_direct_slice_of_the_network(mnet, x64):
    with torch.inference_mode():
        direct = mnet.module.features[:15](x64)
    torch.testing.assert_close(layer_features(mnet, "features.14", x64), direct.mean(dim=(2, 3)))
    torch.testing.assert_close(layer_features(mnet, "features.14", x64, "flatten"),
                               direct.flatten(1))


def test_flatten_pooling_of_block_14(mnet, x224):
    flat = layer_features(mnet, "features.14", x224, pooling="flatten")
    avg = layer_features(mnet, "features.14", x224, pooling="avg")
    assert flat.shape == (2, 160 * 7 * 7) and avg.shape == (2, 160)
    torch.testing.assert_close(flat.view(2, 160, 49).mean(dim=2), avg, rtol=1e-5, atol=1e-6)


def test_two_dimensional_outputs_ignore_pooling(mnet, x64):
    avg = layer_features(mnet, "classifier.0", x64, "avg")
    flat = layer_features(mnet, "classifier.0", x64, "flatten")
    assert avg.shape == (3, 1280)
    assert torch.equal(avg, flat)
    torch.testing.assert_close(avg, layer_features(mnet, PENULTIMATE, x64))


def test_pool_known_answer():
    out = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    assert torch.equal(pool(out, "avg"), torch.tensor([[1.5, 5.5, 9.5], [13.5, 17.5, 21.5]]))
    assert torch.equal(pool(out, "flatten"), out.reshape(2, 12))


def _count_calls(module: torch.nn.Module) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    calls = [0]

    def hook(*_args: object) -> None:
        calls[0] += 1

    return calls, module.register_forward_hook(hook)


def test_forward_stops_after_the_hooked_layer(mnet, x64):
    after, handle_after = _count_calls(mnet.module.features[2])
    hooked, handle_hooked = _count_calls(mnet.module.features[1])
    try:
        layer_features(mnet, "features.1", x64)
        assert (hooked[0], after[0]) == (1, 0)
        head, handle_head = _count_calls(mnet.module.classifier[1])
        try:
            layer_features(mnet, PENULTIMATE, x64)  # stops before the final Linear runs
            assert head[0] == 0 and after[0] == 1
        finally:
            handle_head.remove()
    finally:
        handle_after.remove()
        handle_hooked.remove()
    # no hook of ours is left behind
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in mnet.module.modules())


def test_unknown_pooling_lists_choices(mnet, x64):
    with pytest.raises(InvalidValueError) as err:
        layer_features(mnet, "features.14", x64, pooling="max")
    assert str(err.value) == "unknown pooling 'max'; valid choices: avg, flatten"


def test_efficientnet_pads_like_the_package_at_224_and_runs_at_small_sizes(eff, x224):
    from efficientnet_lite_pytorch import EfficientNet

    static = EfficientNet.from_name("efficientnet-lite0")  # the package's padding fixed for 224
    static.load_state_dict(eff.module.state_dict())
    static.eval()
    with torch.inference_mode():
        torch.testing.assert_close(eff.module(x224), static(x224))
    for size in (28, 33):  # static 224-px padding cannot run these
        x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
        assert layer_features(eff, PENULTIMATE, x).shape == (2, 1280)
        assert {row.name: row.shape for row in list_layers(eff, size)}[PENULTIMATE] == (1280,)


def test_avg_pooling_of_token_sequences_averages_tokens():
    from drprobe.sources.layers import pool

    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)  # (b, T, D)
    pooled = pool(tokens, "avg")
    assert pooled.shape == (2, 3)
    torch.testing.assert_close(pooled[1], tokens[1].mean(dim=0))
    assert pool(tokens, "flatten").shape == (2, 15)
