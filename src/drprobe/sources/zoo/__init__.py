"""The paper's architectures in plain PyTorch and its checkpoint formats (registers on import).

Specs (all ``builtin:``, native input 224 px), as ``name: layout; classifier; penultimate width``:

- ``resnet18``: torchvision; ``fc``; 512
- ``resnet50``: torchvision; ``fc``; 2048
- ``resnet50_blurpool``: the MRL / FF-k ResNet50 (FFCV BlurPool); ``fc``; 2048
- ``wide_resnet50_2``: torchvision; ``fc``; 2048
- ``wide_resnet50_4``: the robustness library's (width_per_group 256); ``fc``; 2048
- ``vgg16_bn``: torchvision; ``classifier.6``; 4096
- ``vit_small_patch16_224``, ``vit_small_patch32_224``: timm; ``head``; 384 (the normed CLS token)

No weights for these install on an offline machine, so ``weights="pretrained"`` needs a file:
``load_model(spec, checkpoint=PATH)`` (CLI ``--checkpoint PATH``), in any format of
:mod:`drprobe.sources.zoo.formats`. ``weights="random"`` gives the seeded twin: CNNs with
:func:`drprobe.sources.builtin.random_init`, ViTs with truncated-normal(0.02) weights
(:func:`drprobe.sources.zoo.vit.trunc_normal_init`). The ViTs use mean = std = 0.5 per channel,
the normalisation the AugReg weights were trained with (timm's configuration for them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from drprobe.errors import MissingDataError
from drprobe.sources.builtin import random_init, seeded_init
from drprobe.sources.models import ModelBundle, register_model
from drprobe.sources.zoo.resnet import BasicBlock, Bottleneck, ResNet
from drprobe.sources.zoo.vgg import VGG
from drprobe.sources.zoo.vit import VisionTransformer, trunc_normal_init

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "SPECS", "ZooSpec", "build"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)
_RESNET50 = (3, 4, 6, 3)


@dataclass(frozen=True)
class ZooSpec:
    """How to build one architecture and describe it in a :class:`ModelBundle`."""

    make: Callable[[], nn.Module]
    init: Callable[[nn.Module], nn.Module]
    classifier: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: int = 224


SPECS: dict[str, ZooSpec] = {
    "resnet18": ZooSpec(lambda: ResNet(BasicBlock, (2, 2, 2, 2)), random_init, "fc"),
    "resnet50": ZooSpec(lambda: ResNet(Bottleneck, _RESNET50), random_init, "fc"),
    "resnet50_blurpool": ZooSpec(lambda: ResNet(Bottleneck, _RESNET50, blur=True),
                                 random_init, "fc"),
    "wide_resnet50_2": ZooSpec(lambda: ResNet(Bottleneck, _RESNET50, 64 * 2), random_init, "fc"),
    "wide_resnet50_4": ZooSpec(lambda: ResNet(Bottleneck, _RESNET50, 64 * 4), random_init, "fc"),
    "vgg16_bn": ZooSpec(VGG, random_init, "classifier.6"),
    "vit_small_patch16_224": ZooSpec(lambda: VisionTransformer(16), trunc_normal_init, "head",
                                     HALF, HALF),
    "vit_small_patch32_224": ZooSpec(lambda: VisionTransformer(32), trunc_normal_init, "head",
                                     HALF, HALF),
}


def build(name: str, seed: int = 0) -> nn.Module:
    """The architecture ``name`` (a key of :data:`SPECS`) with its seeded random init."""
    spec = SPECS[name]
    with seeded_init(seed):  # the global RNG is left alone
        return spec.init(spec.make())


def _factory(spec: str, weights: str, seed: int) -> ModelBundle:
    name = spec.split(":", 1)[1]
    if weights != "random":
        raise MissingDataError(
            f"no pretrained weights for {spec} install on this machine; pass a checkpoint file: "
            f"load_model({spec!r}, checkpoint=PATH) or --checkpoint PATH"
        )
    zoo = SPECS[name]
    module = build(name, seed)
    module.eval()
    module.requires_grad_(False)
    return ModelBundle(
        spec=spec, weights="random", seed=seed, module=module, input_size=zoo.input_size,
        mean=zoo.mean, std=zoo.std, classifier=zoo.classifier, weights_sha256=None,
    )


for _name in SPECS:
    register_model(f"builtin:{_name}", _factory)
