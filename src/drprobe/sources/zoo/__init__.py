"""The paper's architectures, built by torchvision and timm, and its checkpoint formats.

Specs (all ``builtin:``, native input 224 px), as ``name: constructor; classifier; penultimate``:

- ``resnet18``: ``torchvision.models.resnet18()``; ``fc``; 512
- ``resnet50``: ``torchvision.models.resnet50()``; ``fc``; 2048
- ``resnet50_blurpool``: ``resnet50()`` with FFCV's BlurPool (the MRL / FF-k checkpoints,
  :func:`~drprobe.sources.zoo.heads.add_blurpool`); ``fc``; 2048
- ``wide_resnet50_2``: ``torchvision.models.wide_resnet50_2()``; ``fc``; 2048
- ``wide_resnet50_4``: torchvision's ``ResNet(Bottleneck, [3, 4, 6, 3], width_per_group=256)``
  (the robustness library's WRN-50-4); ``fc``; 2048
- ``vgg16_bn``: ``torchvision.models.vgg16_bn()``; ``classifier.6``; 4096
- ``vit_small_patch16_224``, ``vit_small_patch32_224``: ``timm.create_model(name,
  dynamic_img_size=True)`` (position embeddings resampled for other input sides); ``head``; 384
  (the normed CLS token)

No weights for these install on an offline machine, so ``weights="pretrained"`` needs a file:
``load_model(spec, checkpoint=PATH)`` (CLI ``--checkpoint PATH``), in any format of
:mod:`drprobe.sources.zoo.formats`. ``weights="random"`` gives the seeded twin: CNNs with
:func:`drprobe.sources.builtin.random_init`, ViTs with timm's own initialisation (truncated
normal, std 0.02). The ViTs use mean = std = 0.5 per channel, the normalisation the AugReg
weights were trained with (timm's configuration for them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from drprobe.errors import MissingDataError
from drprobe.sources.builtin import random_init, seeded_init
from drprobe.sources.registry import ModelBundle, freeze, register_model
from drprobe.sources.zoo.heads import add_blurpool

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "SPECS", "ZooSpec", "build"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


def _torchvision(name: str, **kwargs: object) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        from torchvision import models

        return getattr(models, name)(**kwargs)
    return make


def _wide_resnet50_4() -> nn.Module:
    from torchvision.models.resnet import Bottleneck, ResNet

    return ResNet(Bottleneck, [3, 4, 6, 3], width_per_group=64 * 4)


def _blurpool_resnet50() -> nn.Module:
    return add_blurpool(_torchvision("resnet50")())


def _timm(name: str) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, dynamic_img_size=True)
    return make


def _library_init(model: nn.Module) -> nn.Module:
    return model


@dataclass(frozen=True)
class ZooSpec:
    """How to build one architecture and describe it in a :class:`ModelBundle`.

    ``make`` runs the library constructor; ``init`` re-initialises the result for the seeded
    random twin (both run under :func:`seeded_init`).
    """

    make: Callable[[], nn.Module]
    init: Callable[[nn.Module], nn.Module]
    classifier: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: int = 224


SPECS: dict[str, ZooSpec] = {
    "resnet18": ZooSpec(_torchvision("resnet18"), random_init, "fc"),
    "resnet50": ZooSpec(_torchvision("resnet50"), random_init, "fc"),
    "resnet50_blurpool": ZooSpec(_blurpool_resnet50, random_init, "fc"),
    "wide_resnet50_2": ZooSpec(_torchvision("wide_resnet50_2"), random_init, "fc"),
    "wide_resnet50_4": ZooSpec(_wide_resnet50_4, random_init, "fc"),
    "vgg16_bn": ZooSpec(_torchvision("vgg16_bn"), random_init, "classifier.6"),
    "vit_small_patch16_224": ZooSpec(_timm("vit_small_patch16_224"), _library_init, "head",
                                     HALF, HALF),
    "vit_small_patch32_224": ZooSpec(_timm("vit_small_patch32_224"), _library_init, "head",
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
    return ModelBundle(
        spec=spec, weights="random", seed=seed, module=freeze(build(name, seed)),
        input_size=zoo.input_size, mean=zoo.mean, std=zoo.std, classifier=zoo.classifier,
        weights_sha256=None,
    )


for _name in SPECS:
    register_model(f"builtin:{_name}", _factory)
