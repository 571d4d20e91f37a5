"""The paper's architectures from torchvision / timm: layouts, parameter counts, layers, twins."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from drprobe.errors import MissingDataError
from drprobe.sources.layers import layer_features, list_layers
from drprobe.sources.models import available_models, load_model
from drprobe.sources.zoo import SPECS
from drprobe.sources.zoo.heads import BlurConv2d

# Published parameter counts: torchvision's model docs (num_params) for the CNNs, timm's for the
# ViTs. WideResNet50-4 has no published figure; it is checked against the closed form below.
PARAMS = {
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "resnet50_blurpool": 25_557_032,  # the blur filters are buffers, not parameters
    "wide_resnet50_2": 68_883_240,
    "vgg16_bn": 138_365_992,
    "vit_small_patch16_224": 22_050_664,
    "vit_small_patch32_224": 22_878_952,
}
# state_dict entries (parameters + buffers) of torchvision's / timm's models.
ENTRIES = {"resnet18": 122, "resnet50": 320, "resnet50_blurpool": 326, "wide_resnet50_2": 320,
           "wide_resnet50_4": 320, "vgg16_bn": 97, "vit_small_patch16_224": 152,
           "vit_small_patch32_224": 152}
WIDTH = {"resnet18": 512, "resnet50": 2048, "resnet50_blurpool": 2048, "wide_resnet50_2": 2048,
         "wide_resnet50_4": 2048, "vgg16_bn": 4096, "vit_small_patch16_224": 384,
         "vit_small_patch32_224": 384}
CLASSIFIER = {"vgg16_bn": "classifier.6", "vit_small_patch16_224": "head",
              "vit_small_patch32_224": "head"}
CNNS = [n for n in SPECS if not n.startswith("vit")]
VITS = [n for n in SPECS if n.startswith("vit")]


def _meta(name: str) -> torch.nn.Module:
    """The architecture without allocating memory (shapes and names only)."""
    with torch.device("meta"):
        return SPECS[name].make()


def _bottleneck_resnet50_params(width_per_group: int) -> int:
    """Parameters of a torchvision-style bottleneck ResNet50, counted by hand."""
    total = 3 * 64 * 49 + 2 * 64  # stem conv + bn
    c_in = 64
    for stage, (planes, depth) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
        width, c_out = planes * width_per_group // 64, planes * 4
        for block in range(depth):
            total += c_in * width + 2 * width + 9 * width * width + 2 * width
            total += width * c_out + 2 * c_out
            if block == 0:
                total += c_in * c_out + 2 * c_out
            c_in = c_out
    return total + 2048 * 1000 + 1000


def test_all_specs_registered():
    assert {f"builtin:{n}" for n in SPECS} <= set(available_models())
    assert set(SPECS) == set(WIDTH)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_parameter_counts_and_state_entries(name):
    model = _meta(name)
    count = sum(p.numel() for p in model.parameters())
    if name in PARAMS:
        assert count == PARAMS[name]
    assert len(model.state_dict()) == ENTRIES[name]


def test_closed_form_counts_agree_with_published_and_wrn50_4():
    assert _bottleneck_resnet50_params(64) == PARAMS["resnet50"]
    assert _bottleneck_resnet50_params(128) == PARAMS["wide_resnet50_2"]
    wrn4 = sum(p.numel() for p in _meta("wide_resnet50_4").parameters())
    assert wrn4 == _bottleneck_resnet50_params(256) == 223_439_144


@pytest.mark.parametrize("name, key, shape", [
    ("resnet18", "layer2.0.downsample.0.weight", (128, 64, 1, 1)),
    ("resnet18", "layer4.1.bn2.running_var", (512,)),
    ("resnet50", "layer1.0.downsample.0.weight", (256, 64, 1, 1)),
    ("resnet50", "layer4.2.conv3.weight", (2048, 512, 1, 1)),
    ("wide_resnet50_2", "layer4.1.conv1.weight", (1024, 2048, 1, 1)),
    ("wide_resnet50_4", "layer4.1.conv2.weight", (2048, 2048, 3, 3)),
    ("resnet50_blurpool", "layer2.0.conv2.conv.weight", (128, 128, 3, 3)),
    ("resnet50_blurpool", "layer2.0.conv2.blur_filter", (128, 1, 3, 3)),
    ("resnet50_blurpool", "layer4.0.downsample.0.conv.weight", (2048, 1024, 1, 1)),
    ("resnet50_blurpool", "layer4.0.downsample.0.blur_filter", (1024, 1, 3, 3)),
    ("vgg16_bn", "features.40.weight", (512, 512, 3, 3)),
    ("vgg16_bn", "features.41.running_mean", (512,)),
    ("vgg16_bn", "classifier.0.weight", (4096, 25088)),
    ("vgg16_bn", "classifier.6.weight", (1000, 4096)),
    ("vit_small_patch16_224", "patch_embed.proj.weight", (384, 3, 16, 16)),
    ("vit_small_patch16_224", "pos_embed", (1, 197, 384)),
    ("vit_small_patch16_224", "blocks.11.attn.qkv.weight", (1152, 384)),
    ("vit_small_patch16_224", "blocks.0.mlp.fc2.weight", (384, 1536)),
    ("vit_small_patch32_224", "pos_embed", (1, 50, 384)),
    ("vit_small_patch32_224", "cls_token", (1, 1, 384)),
    ("vit_small_patch32_224", "head.weight", (1000, 384)),
])
def test_torchvision_and_timm_key_layout(name, key, shape):
    assert tuple(_meta(name).state_dict()[key].shape) == shape


def test_blurpool_wraps_exactly_the_strided_convs():
    model = _meta("resnet50_blurpool")
    wrapped = sorted(n for n, m in model.named_modules() if isinstance(m, BlurConv2d))
    assert wrapped == sorted(f"layer{i}.0.{c}" for i in (2, 3, 4)
                             for c in ("conv2", "downsample.0"))
    plain = {k for k in _meta("resnet50").state_dict()}
    blurred = {k.replace(".conv.", ".") for k in model.state_dict() if "blur_filter" not in k}
    assert blurred == plain


def test_blur_conv_matches_a_direct_stencil():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 5, 3, 2, 1, bias=False)
    blur = BlurConv2d(conv)
    x = torch.randn(2, 4, 9, 9)
    padded = F.pad(x, (1, 1, 1, 1))
    taps = [1.0, 2.0, 1.0]
    stencil = sum(taps[i] * taps[j] / 16 * padded[..., i:i + 9, j:j + 9]
                  for i in range(3) for j in range(3))
    with torch.no_grad():
        torch.testing.assert_close(blur(x), conv(stencil), rtol=1e-5, atol=1e-6)


class _LoadedOnFirstUse(dict):
    def __missing__(self, name: str):
        self[name] = load_model(f"builtin:{name}", "random", 0)
        return self[name]


@pytest.fixture(scope="module")
def bundles():
    """Each architecture's random-init bundle, built when a test first asks for it."""
    return _LoadedOnFirstUse()


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SPECS))
def test_bundle_penultimate_and_classifier(bundles, images, name):
    bundle = bundles[name]
    assert bundle.classifier == CLASSIFIER.get(name, "fc")
    assert (bundle.input_size, bundle.weights, bundle.seed, bundle.weights_sha256) == (
        224, "random", 0, None)
    half = name.startswith("vit")
    assert bundle.mean == ((0.5,) * 3 if half else (0.485, 0.456, 0.406))
    assert not bundle.module.training
    assert not any(p.requires_grad for p in bundle.module.parameters())
    size = 64 if name in CNNS else 224
    x = images if size == 64 else torch.randn(1, 3, 224, 224)
    rows = list_layers(bundle, size)
    assert rows[0].name == "penultimate" and rows[0].shape == (WIDTH[name],)
    pen = layer_features(bundle, "penultimate", x)
    assert pen.shape == (x.shape[0], WIDTH[name])
    with torch.inference_mode():
        logits = bundle.module(x)
        again = bundle.module.get_submodule(bundle.classifier)(pen)
    assert logits.shape == (x.shape[0], 1000)
    torch.testing.assert_close(again, logits)
    assert torch.isfinite(logits).all() and pen.std() > 1e-3


@pytest.mark.parametrize("name, listed", [
    ("resnet50", {"layer1.0": (256, 16, 16), "layer4.2": (2048, 2, 2), "avgpool": (2048, 1, 1)}),
    ("vgg16_bn", {"features.43": (512, 2, 2), "classifier.5": (4096,)}),
])
def test_cnn_layer_shapes_at_64px(bundles, name, listed):
    rows = {row.name: row.shape for row in list_layers(bundles[name], 64)}
    assert {k: rows[k] for k in listed} == listed


@pytest.mark.parametrize("name, size, tokens", [
    ("vit_small_patch16_224", 224, 197), ("vit_small_patch16_224", 64, 17),
    ("vit_small_patch32_224", 64, 5),
])
def test_vit_layers_at_native_and_small_sizes(bundles, name, size, tokens):
    rows = {row.name: row.shape for row in list_layers(bundles[name], size)}
    assert rows["blocks.11"] == rows["norm"] == (tokens, 384)
    assert rows["penultimate"] == (384,)


def test_vit_penultimate_is_the_normed_cls_token(bundles):
    bundle = bundles["vit_small_patch32_224"]
    model = bundle.module
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        patches = F.conv2d(x, model.patch_embed.proj.weight, model.patch_embed.proj.bias,
                           stride=32).flatten(2).transpose(1, 2)
        tokens = torch.cat([model.cls_token.expand(2, -1, -1), patches], 1)
        tokens = model.norm(model.blocks(tokens + model.pos_embed))
    torch.testing.assert_close(layer_features(bundle, "penultimate", x), tokens[:, 0])


def _reference_resnet(state: dict[str, torch.Tensor], x: torch.Tensor, depths, bottleneck):
    """A functional ResNet forward written from torchvision's key names alone."""
    def bn(t, key):
        return F.batch_norm(t, state[f"{key}.running_mean"], state[f"{key}.running_var"],
                            state[f"{key}.weight"], state[f"{key}.bias"], eps=1e-5)

    out = F.relu(bn(F.conv2d(x, state["conv1.weight"], stride=2, padding=3), "bn1"))
    out = F.max_pool2d(out, 3, 2, 1)
    for stage, depth in enumerate(depths, start=1):
        for block in range(depth):
            key = f"layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            convs = (("conv1", 1, 0), ("conv2", stride, 1), ("conv3", 1, 0)) if bottleneck \
                else (("conv1", stride, 1), ("conv2", 1, 1))
            h = out
            for i, (conv, s, pad) in enumerate(convs):
                h = bn(F.conv2d(h, state[f"{key}.{conv}.weight"], stride=s, padding=pad),
                       f"{key}.bn{conv[-1]}")
                h = F.relu(h) if i < len(convs) - 1 else h
            if f"{key}.downsample.0.weight" in state:
                out = bn(F.conv2d(out, state[f"{key}.downsample.0.weight"], stride=stride),
                         f"{key}.downsample.1")
            out = F.relu(h + out)
    return F.linear(out.mean(dim=(2, 3)), state["fc.weight"], state["fc.bias"])


@pytest.mark.parametrize("name, depths, bottleneck", [
    ("resnet18", (2, 2, 2, 2), False), ("resnet50", (3, 4, 6, 3), True),
])
def test_resnet_forward_matches_functional_reference(bundles, images, name, depths, bottleneck):
    model = bundles[name].module
    state = model.state_dict()
    gen = torch.Generator().manual_seed(3)
    for key, value in state.items():  # non-trivial batch-norm statistics
        if key.endswith("running_mean"):
            value.copy_(torch.randn(value.shape, generator=gen) * 0.1)
        elif key.endswith("running_var"):
            value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
    with torch.inference_mode():
        torch.testing.assert_close(model(images), _reference_resnet(state, images, depths,
                                                                     bottleneck),
                                   rtol=1e-4, atol=1e-4)


def test_random_twins_are_seeded_and_leave_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = (load_model("builtin:vit_small_patch32_224", "random", s) for s in (4, 4, 5))
    assert torch.equal(torch.random.get_rng_state(), state)
    wa, wb, wc = (m.module.blocks[0].attn.qkv.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert 0.018 < float(wa.std()) < 0.021  # timm's truncated normal, std 0.02
    assert float(a.module.blocks[0].attn.qkv.bias.abs().max()) == 0.0
    assert 0.015 < float(a.module.pos_embed.std()) < 0.02


@pytest.mark.parametrize("name", sorted(SPECS))
def test_pretrained_without_checkpoint_says_how_to_pass_one(name):
    with pytest.raises(MissingDataError, match="--checkpoint PATH") as err:
        load_model(name)
    assert "\n" not in str(err.value) and f"builtin:{name}" in str(err.value)


def test_vgg_classifier_reads_the_pooled_map(bundles):
    model = bundles["vgg16_bn"].module
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        pooled = model.features(x)  # 1x1 map -> adaptive pool repeats it 49 times
        expected = model.classifier(pooled.repeat(1, 1, 7, 7).flatten(1))
        np.testing.assert_allclose(model(x).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
