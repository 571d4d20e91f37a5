"""Layer widths before anything is extracted (for ``drprobe run --dry-run``).

The width comes from the layer listing's output shape (one dummy forward pass of the
architecture, random weights: no checkpoint is read) and the pooling rule itself; the plan for
that width is :func:`drprobe.analysis.plan.layer_plan`'s, as in the run.
"""

from __future__ import annotations

from typing import Any

import torch

from drprobe.sources.layers import list_layers, pool, resolve_layer


def layer_width(bundle: Any, layer: str, pooling: str, image_size: int | None = None) -> int:
    """d, the number of neurons ``layer`` of ``bundle`` gives under ``pooling``."""
    name = resolve_layer(bundle, layer)
    shape = next(info.shape for info in list_layers(bundle, image_size) if info.name == name)
    return int(pool(torch.zeros(1, *shape), pooling).shape[1])
