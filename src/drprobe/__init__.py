"""drprobe: measure diffused redundancy in pretrained neural representations.

The public API is importable from the top level; submodules load on first use so that
``import drprobe`` (and the CLI's start-up) stays cheap.

>>> import drprobe
>>> feats = drprobe.get_features("builtin:mobilenet_v2", "penultimate", "fashion-mnist", "train",
...                              n=2000, image_size=64)                      # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "get_features": "drprobe.features",
    "load_model": "drprobe.sources.models",
    "list_layers": "drprobe.sources.layers",
    "load_dataset": "drprobe.sources.datasets",
    "analyze_layer": "drprobe.analysis.layer",
    "ExperimentConfig": "drprobe.experiment.config",
    "load_config": "drprobe.experiment.config",
    "run_experiment": "drprobe.experiment.runner",
    "demo_config": "drprobe.experiment.demo",
    "ProbeBank": "drprobe.probes",
    "SubsetFamily": "drprobe.selectors",
    "make_family": "drprobe.selectors",
    "resolve_ks": "drprobe.selectors",
    "linear_cka": "drprobe.metrics.cka",
    "debiased_linear_cka": "drprobe.metrics.cka",
    "CrossProductStats": "drprobe.metrics.cka_stats",
    "gini": "drprobe.metrics.fairness",
    "dr_summary": "drprobe.metrics.redundancy",
    "publish_run": "drprobe.report.publish",
    "make_card": "drprobe.card.build",
    "apply_cut": "drprobe.card.cut",
    "Cut": "drprobe.card.cut",
    "CutEncoder": "drprobe.card.cut",
    "DrprobeError": "drprobe.errors",
}

__all__ = [*sorted(_EXPORTS), "__version__"]  # noqa: PLE0604 (the lazy exports)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'drprobe' has no attribute {name!r}")
