"""Small networks for 28-32 px images that ``drprobe pretrain`` trains and ``ckpt:`` loads.

Two architectures, both built from timm's own classes:

- ``resnet``: timm's :class:`~timm.models.resnet.ResNet` with basic blocks and a CIFAR-style stem
  (one 3x3 stride-1 convolution, no max-pool), stage widths ``base_channels * (1, 2, 4, 8)``
  times the width multiplier; ``d = 8 * base_channels * width``. Block outputs are the
  top-level modules ``layer1`` ... ``layer4``.
- ``vit``: timm's :class:`~timm.models.vision_transformer.VisionTransformer` with a small
  patch and ``d = embed_dim * width`` (rounded to a multiple of the heads); block outputs are
  ``blocks.0`` ... ``blocks.<depth-1>``.

Both expose the same pretraining interface: :meth:`embed` gives the d-wide pooled vector (the
penultimate layer), ``penultimate_dropout`` is the dropout applied to it during training only,
and the module named by :attr:`classifier_name` is the head, which always receives the whole
d-wide vector: a plain ``Linear``, the FF-k head
:class:`~drprobe.sources.zoo.heads.PrefixLinear` (reads only the first k neurons) or a
:class:`MatryoshkaHead` (one Linear per nested prefix). So drprobe's
``penultimate`` (the input of the classifier) is d-wide for every variant.

The constructor arguments are plain data (:func:`build_network` ``(**args)``), stored in
each checkpoint beside the weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from drprobe.errors import InvalidValueError, MissingDataError, unknown
from drprobe.sources.zoo.heads import PrefixLinear

__all__ = ["ARCHS", "HEADS", "MatryoshkaHead", "build_network",
           "default_widths", "penultimate_width"]

ARCHS = ("resnet", "vit")
HEADS = ("linear", "fixed_feature", "matryoshka")

#: Default shape of each architecture (overridable through :func:`build_network`).
RESNET_DEFAULTS: dict[str, Any] = {"base_channels": 16, "blocks": (1, 1, 1, 1)}
VIT_DEFAULTS: dict[str, Any] = {"patch_size": 4, "embed_dim": 64, "depth": 4, "num_heads": 4,
                                "mlp_ratio": 2.0}


class MatryoshkaHead(nn.Module):
    """Matryoshka (MRL) classifier: one Linear per nested prefix width ``m`` of the d neurons.

    :meth:`all_logits` gives every prefix's logits (training sums their losses); ``forward``
    gives the full-width head's logits (the last width is always d).
    """

    def __init__(self, d: int, widths: list[int] | tuple[int, ...], n_classes: int) -> None:
        super().__init__()
        widths = [int(m) for m in widths]
        if not widths or widths != sorted(set(widths)) or widths[0] < 1 or widths[-1] != d:
            raise InvalidValueError(
                f"matryoshka widths must be strictly increasing, >= 1 and end at d = {d}; "
                f"got {widths}")
        self.widths = widths
        self.heads = nn.ModuleList(nn.Linear(m, n_classes) for m in widths)

    def all_logits(self, z: torch.Tensor) -> list[torch.Tensor]:
        """One (b, n_classes) logits tensor per prefix width, narrowest first."""
        return [head(z[:, :m]) for m, head in zip(self.widths, self.heads)]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.heads[-1](z)


def default_widths(d: int) -> list[int]:
    """MRL's nesting: 8, 16, 32, ... below d, then d itself."""
    widths, m = [], 8
    while m < d:
        widths.append(m)
        m *= 2
    return [*widths, d]


def _scaled(value: int, width: float, multiple: int = 1) -> int:
    return max(multiple, round(value * width / multiple) * multiple)


def penultimate_width(arch: str, width: float = 1.0, **options: Any) -> int:
    """d, the width of the pooled penultimate vector, without building the network."""
    if arch == "resnet":
        base = options.get("base_channels", RESNET_DEFAULTS["base_channels"])
        return _scaled(base * 8, width)
    if arch == "vit":
        heads = options.get("num_heads", VIT_DEFAULTS["num_heads"])
        return _scaled(options.get("embed_dim", VIT_DEFAULTS["embed_dim"]), width, heads)
    raise unknown("architecture", arch, ARCHS)


def _head(kind: str, d: int, n_classes: int, head_args: dict[str, Any]) -> nn.Module:
    if kind == "linear":
        return nn.Linear(d, n_classes)
    if kind == "fixed_feature":
        k = int(head_args["k"])
        if not 1 <= k <= d:
            raise InvalidValueError(f"fixed_feature k must be in [1, {d}] (d = {d}), got {k}")
        return PrefixLinear(k, n_classes)
    if kind == "matryoshka":
        return MatryoshkaHead(d, head_args.get("widths") or default_widths(d), n_classes)
    raise unknown("head", kind, HEADS)


def _timm() -> Any:
    try:
        import timm.models.resnet
        import timm.models.vision_transformer
    except Exception as err:  # the networks need the timm extra
        raise MissingDataError(f"the pretraining networks need timm ({type(err).__name__}); "
                               "install it with pip install 'drprobe[timm]'") from err
    return timm


class _Pretrainable:
    """Mixin: pooled d-vector -> dropout -> head, on top of a timm model built headless."""

    classifier_name: str

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(b, 3, H, W) normalised images -> (b, d) pooled penultimate vector (no dropout)."""
        return self.forward_head(self.forward_features(x), pre_logits=True)

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """(b, d) penultimate vector -> (b, n_classes) logits (dropout in training mode)."""
        return getattr(self, self.classifier_name)(self.penultimate_dropout(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(x))


_CLASSES: dict[str, type] = {}


def _classes() -> dict[str, type]:
    """The two network classes, defined on first use (they subclass timm's)."""
    if _CLASSES:
        return _CLASSES
    timm = _timm()

    class CifarResNet(_Pretrainable, timm.models.resnet.ResNet):
        """timm ResNet with a CIFAR stem; the head is ``fc``."""

        classifier_name = "fc"

    class SmallViT(_Pretrainable, timm.models.vision_transformer.VisionTransformer):
        """timm VisionTransformer for small images; the head is ``head``."""

        classifier_name = "head"

    _CLASSES.update(resnet=CifarResNet, vit=SmallViT)
    return _CLASSES


def build_network(arch: str = "resnet", n_classes: int = 10, image_size: int = 28,
                  width: float = 1.0, head: str = "linear", head_args: dict | None = None,
                  dropout: float = 0.0, **options: Any) -> nn.Module:
    """Build a pretraining network with PyTorch's default (seeded by the caller) init.

    Args:
        arch: ``"resnet"`` or ``"vit"``.
        n_classes: classes of the source task.
        image_size: input side (the ViT's patch grid depends on it).
        width: width multiplier of every layer.
        head: ``"linear"``, ``"fixed_feature"`` (``head_args={"k": k}``) or ``"matryoshka"``
            (``head_args={"widths": [...]}``, default :func:`default_widths`).
        dropout: rate of the dropout on the penultimate vector (active in training only).
        **options: ``base_channels``, ``blocks`` (resnet); ``patch_size``, ``embed_dim``,
            ``depth``, ``num_heads``, ``mlp_ratio`` (vit).

    Returns:
        the network; ``net.embed(x)`` is (b, d), ``net(x)`` is (b, n_classes).
    """
    if arch not in ARCHS:
        raise unknown("architecture", arch, ARCHS)
    classes = _classes()
    d = penultimate_width(arch, width, **options)
    if arch == "resnet":
        opts = {**RESNET_DEFAULTS, **options}
        base = opts["base_channels"]
        stem = _scaled(base, width, 2)
        # timm's stems start with a stride-2 convolution; its "deep" stem makes the stem
        # output (and layer1's input) 2 * stem_width wide: swap it for one 3x3 stride-1 conv.
        net = classes["resnet"](
            block=_timm().models.resnet.BasicBlock, layers=tuple(opts["blocks"]),
            channels=(stem, *(_scaled(base * 2 ** i, width) for i in range(1, 4))),
            stem_type="deep", stem_width=stem // 2, num_classes=0)
        net.conv1 = nn.Conv2d(3, stem, 3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
    else:
        opts = {**VIT_DEFAULTS, **options}
        net = classes["vit"](
            img_size=image_size, patch_size=opts["patch_size"], embed_dim=d,
            depth=opts["depth"], num_heads=opts["num_heads"], mlp_ratio=opts["mlp_ratio"],
            num_classes=0)
    net.penultimate_dropout = nn.Dropout(dropout)
    setattr(net, net.classifier_name, _head(head, d, n_classes, head_args or {}))
    return net
