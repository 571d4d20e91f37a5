"""VGG16 with batch norm (Simonyan & Zisserman 2015) laid out like torchvision's ``vgg16_bn``.

``features`` is one flat Sequential: for each 3x3 conv (with bias) ``Conv2d, BatchNorm2d, ReLU``,
and a 2x2 max pool after each of the five stages (indices 0 ... 43). ``avgpool`` adapts the map
to 7x7 (so any input side >= 32 works), and ``classifier`` is ``Linear(25088, 4096), ReLU,
Dropout, Linear(4096, 4096), ReLU, Dropout, Linear(4096, num_classes)`` (indices 0 ... 6). The
penultimate vector, the input of ``classifier.6``, is 4096-d.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["VGG", "VGG16_STAGES"]

# Output channels of the convolutions of each stage (configuration "D" of the paper).
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class VGG(nn.Module):
    """(b, 3, H, W) normalised images -> (b, num_classes) logits; batch norm after every conv."""

    def __init__(self, stages: tuple[tuple[int, ...], ...] = VGG16_STAGES,
                 num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for stage in stages:
            for c_out in stage:
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out),
                           nn.ReLU(inplace=True)]
                c_in = c_out
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(7)
        self.classifier = nn.Sequential(
            nn.Linear(c_in * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, 3, H, W) -> (b, num_classes)."""
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))
