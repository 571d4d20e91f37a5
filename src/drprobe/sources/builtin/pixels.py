"""Raw pixels as a model: ``builtin:pixels`` (short form ``pixels``), the baseline of "logistic
regression on raw pixels" run with the same probes, splits and report as the networks.

The module has three layers:

- ``grey``: the mean over the 3 channels of the (b, 3, S, S) normalised input -> (b, 1, S, S).
  Grey datasets (Fashion-MNIST, MNIST, digits) are replicated to RGB by the preprocessing, and
  the normalisation is the identity (mean 0, std 1), so this is the pixel itself in [0, 1];
  for RGB datasets it is the unweighted mean of R, G and B.
- ``flatten``: (b, 1, S, S) -> (b, S*S), row by row as ``images.reshape(n, -1)``.
- ``classifier``: a stand-in head whose input is the penultimate vector, so ``penultimate`` =
  the S*S pixels. It accepts any width (a dataset's ``image_size`` sets S, and d = S*S
  follows) and returns zero logits for :data:`CLASSES` classes: there is no classification use.

There is nothing to learn. ``"pretrained"`` and ``"random"`` (any seed) build the same module and
give identical features; ``"random"`` is accepted so that configs asking every model for its
pretrained and random-init twins work unchanged. There is no weights file (sha256 None).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CLASSES", "CLASSIFIER", "INPUT_SIZE", "MEAN", "STD", "ChannelMean", "PixelHead",
           "build"]

INPUT_SIZE = 28  # Fashion-MNIST / MNIST native side; a dataset's image_size overrides it
MEAN = (0.0, 0.0, 0.0)
STD = (1.0, 1.0, 1.0)
CLASSIFIER = "classifier"
CLASSES = 10


class ChannelMean(nn.Module):
    """(b, C, H, W) -> (b, 1, H, W): the mean over the channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1, keepdim=True)


class PixelHead(nn.Module):
    """A head for a (b, d) vector of any width d: zero logits (b, classes).

    Its zero bias is a parameter only so that the module has a device to move to (extraction
    sends the inputs where the model's parameters are); it never depends on the weights choice.
    """

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], -1)


def build(weights: str = "pretrained", seed: int = 0) -> tuple[nn.Module, None]:
    """The raw-pixel module; the same for every ``weights`` and ``seed`` (nothing to learn).

    Args:
        weights: ``"pretrained"`` or ``"random"``; both give the identical module.
        seed: ignored.

    Returns:
        ``(model, None)``: (b, 3, S, S) -> logits (b, :data:`CLASSES`), whose ``classifier``
        input is the (b, S*S) channel-mean pixels; in train mode, the caller freezes it.
    """
    del weights, seed  # deterministic whatever they are
    model = nn.Sequential()
    model.add_module("grey", ChannelMean())
    model.add_module("flatten", nn.Flatten(1))
    model.add_module(CLASSIFIER, PixelHead())
    return model, None
