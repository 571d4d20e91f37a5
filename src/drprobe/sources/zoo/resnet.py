"""ResNets (He et al. 2016) in plain PyTorch, laid out so torchvision's state_dicts load strictly.

Module names follow torchvision's ``resnet``: ``conv1``, ``bn1``, ``relu``, ``maxpool``,
``layer1`` ... ``layer4`` (each a Sequential of blocks ``0``, ``1``, ... with ``conv1``, ``bn1``,
``conv2``, ``bn2`` [, ``conv3``, ``bn3``] and ``downsample.0`` / ``downsample.1``), ``avgpool``,
``fc``. Downsampling sits in the 3x3 convolution of a bottleneck (torchvision's "v1.5"), which is
also the layout of the robustness library's ImageNet ResNets and WideResNets.

The BlurPool variant (``blur=True``) is the one the Matryoshka (MRL) and fixed-feature (FF-k)
ResNet50 checkpoints were trained with (FFCV's ImageNet recipe): every strided convolution with at
least 16 input channels -- ``layer{2,3,4}.0.conv2`` and ``layer{2,3,4}.0.downsample.0`` -- is
wrapped in :class:`BlurConv2d`, which first blurs its input with a fixed depthwise 3x3 binomial
filter ``[1, 2, 1] x [1, 2, 1] / 16`` (stride 1, zero padding 1) and then runs the original
strided convolution. State-dict keys become ``<conv>.conv.weight`` and ``<conv>.blur_filter``
(a persistent ``(C_in, 1, 3, 3)`` buffer). The stem convolution (3 input channels) is untouched.
This differs from the ``antialiased-cnns`` layout (blur *after* a stride-1 conv, keys ``.filt``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from drprobe.errors import InvalidValueError

__all__ = ["BasicBlock", "BlurConv2d", "Bottleneck", "PrefixLinear", "ResNet"]


class BlurConv2d(nn.Module):
    """Depthwise 3x3 binomial blur (stride 1) followed by the wrapped strided convolution.

    Children/buffers: ``conv`` (the original Conv2d), ``blur_filter`` (C_in, 1, 3, 3).
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(taps, taps) / 16.0
        self.conv = conv
        self.register_buffer("blur_filter", kernel.expand(conv.in_channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, C_in, H, W) -> the wrapped conv's output on the blurred input."""
        blurred = F.conv2d(x, self.blur_filter, padding=1, groups=self.conv.in_channels)
        return self.conv(blurred)


class PrefixLinear(nn.Linear):
    """A Linear layer that reads only the first ``in_features`` entries of its input.

    The fixed-feature (FF-k) baseline of the MRL paper: the network's pooled vector keeps its full
    width d (so the "penultimate" layer is d-dimensional) while the classifier sees its first k.
    Its state_dict keys are a plain Linear's (``weight`` (C, k), ``bias`` (C,)).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, d >= k) -> (b, C) logits from ``x[:, :k]``."""
        return F.linear(x[..., : self.in_features], self.weight, self.bias)


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)


def _conv1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, stride, bias=False)


def _maybe_blur(conv: nn.Conv2d, blur: bool) -> nn.Module:
    """Wrap strided convs with >= 16 input channels in BlurConv2d when ``blur`` (FFCV's rule)."""
    if blur and max(conv.stride) > 1 and conv.in_channels >= 16:
        return BlurConv2d(conv)
    return conv


def _downsample(c_in: int, c_out: int, stride: int, blur: bool) -> nn.Sequential | None:
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(_maybe_blur(_conv1x1(c_in, c_out, stride), blur), nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet18/34); ``expansion`` 1."""

    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int = 1, width_per_group: int = 64,
                 blur: bool = False) -> None:
        super().__init__()
        if width_per_group != 64:
            raise InvalidValueError(
                f"BasicBlock needs width_per_group 64, got {width_per_group!r}"
            )
        self.conv1 = _maybe_blur(_conv3x3(c_in, planes, stride), blur)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(c_in, planes, stride, blur)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, c_in, H, W) -> (b, planes, H/stride, W/stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (strided) -> 1x1 expand, residual; ``expansion`` 4.

    The inner width is ``planes * width_per_group / 64``: 64 gives ResNet50, 128 WideResNet50-2,
    256 WideResNet50-4.
    """

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1, width_per_group: int = 64,
                 blur: bool = False) -> None:
        super().__init__()
        width = planes * width_per_group // 64
        c_out = planes * self.expansion
        self.conv1 = _conv1x1(c_in, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _maybe_blur(_conv3x3(width, width, stride), blur)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, c_out)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(c_in, c_out, stride, blur)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, c_in, H, W) -> (b, 4 * planes, H/stride, W/stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """(b, 3, H, W) normalised images -> (b, num_classes) logits.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        depths: blocks per stage, e.g. (2, 2, 2, 2) for ResNet18, (3, 4, 6, 3) for ResNet50.
        width_per_group: bottleneck inner width per 64 planes (64 standard, 128 / 256 wide).
        num_classes: outputs of ``fc``.
        blur: BlurPool the strided convolutions (see the module docstring).

    The penultimate vector (the input of ``fc``) is the global average of ``layer4``'s output:
    512-d for BasicBlock nets, 2048-d for Bottleneck nets.
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], depths: tuple[int, ...],
                 width_per_group: int = 64, num_classes: int = 1000, blur: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c_in = 64
        for i, (planes, depth) in enumerate(zip((64, 128, 256, 512), depths)):
            blocks = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(block(c_in, planes, stride, width_per_group, blur))
                c_in = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, 3, H, W) -> (b, num_classes)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
