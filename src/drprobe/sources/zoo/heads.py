"""What the MRL / FF-k checkpoints need on top of torchvision's ResNet50: BlurPool, prefix heads.

The Matryoshka (MRL) and fixed-feature (FF-k) ResNet50 checkpoints were trained with FFCV's
ImageNet recipe, which blurs before every strided convolution with at least 16 input channels
-- ``layer{2,3,4}.0.conv2`` and ``layer{2,3,4}.0.downsample.0`` of a ResNet50.
:func:`add_blurpool` wraps those convolutions of a torchvision ResNet in :class:`BlurConv2d`,
which first blurs its input with a fixed depthwise 3x3 binomial filter ``[1, 2, 1] x [1, 2, 1] /
16`` (stride 1, zero padding 1) and then runs the original strided convolution. State-dict keys
become ``<conv>.conv.weight`` and ``<conv>.blur_filter`` (a persistent ``(C_in, 1, 3, 3)``
buffer). The stem convolution (3 input channels) is untouched. This differs from the
``antialiased-cnns`` layout (blur *after* a stride-1 conv, keys ``.filt``).

:class:`PrefixLinear` is the FF-k classifier: it reads only the first k pooled neurons.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BLUR_MIN_CHANNELS", "BlurConv2d", "PrefixLinear", "add_blurpool"]

#: FFCV blurs strided convolutions with at least this many input channels.
BLUR_MIN_CHANNELS = 16


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


def add_blurpool(model: nn.Module) -> nn.Module:
    """Wrap, in place, every strided Conv2d with >= 16 input channels in :class:`BlurConv2d`.

    Returns ``model``. Buffers are created on the device of each wrapped convolution.
    """
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, nn.Conv2d) and max(m.stride) > 1
               and m.in_channels >= BLUR_MIN_CHANNELS]
    for name, conv in targets:
        parent, _, child = name.rpartition(".")
        blur = BlurConv2d(conv).to(conv.weight.device)
        setattr(model.get_submodule(parent) if parent else model, child, blur)
    return model


class PrefixLinear(nn.Linear):
    """A Linear layer that reads only the first ``in_features`` entries of its input.

    The fixed-feature (FF-k) baseline of the MRL paper: the network's pooled vector keeps its full
    width d (so the "penultimate" layer is d-dimensional) while the classifier sees its first k.
    Its state_dict keys are a plain Linear's (``weight`` (C, k), ``bias`` (C,)).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, d >= k) -> (b, C) logits from ``x[:, :k]``."""
        return F.linear(x[..., : self.in_features], self.weight, self.bias)
