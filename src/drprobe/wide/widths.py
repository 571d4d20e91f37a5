"""Layer widths and memory plans before anything is extracted (for ``drprobe run --dry-run``).

The width comes from the layer listing's output shape (one dummy forward pass of the
architecture, random weights: no checkpoint is read) and the pooling rule itself; the plan is
:func:`~drprobe.wide.memory.plan_memory` for the job's split sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from drprobe.errors import DrprobeError
from drprobe.selectors import resolve_ks
from drprobe.sources.layers import list_layers, pool, resolve_layer
from drprobe.wide.memory import plan_memory, probe_families


def layer_width(bundle: Any, layer: str, pooling: str, image_size: int | None = None) -> int:
    """d, the number of neurons ``layer`` of ``bundle`` gives under ``pooling``."""
    name = resolve_layer(bundle, layer)
    shape = next(info.shape for info in list_layers(bundle, image_size) if info.name == name)
    return int(pool(torch.zeros(1, *shape), pooling).shape[1])


def plan_line(
    d: int, *, n_train: int, n_val: int, n_test: int, n_classes: int,
    selectors: Sequence[str], fractions: Sequence[float] | None, n_l2: int,
    budget_bytes: int | None = None, n_seeds: int = 1,
) -> str:
    """``d=802,816 · pca: ...; cka: ...; probes: ...`` — or the planner's refusal, on one line."""
    ks, _ = resolve_ks(d, fractions=sorted(set(fractions or ()) | {1.0}) if fractions else None)
    try:
        plan = plan_memory(n_train=n_train, n_val=n_val, n_test=n_test, d=d,
                           n_classes=n_classes, selectors=selectors, n_l2=n_l2, ks=ks,
                           budget_bytes=budget_bytes,
                           n_families=probe_families(selectors, n_seeds))
    except DrprobeError as err:
        return f"d={d:,} · refused: {err}"
    return f"d={d:,} · {plan.describe()}"
