"""Each job's layer width and memory plan for ``drprobe run --dry-run``.

The width needs the architecture only: each model is built once with random weights (no
checkpoint is read) and one dummy forward pass lists its layers' shapes
(:func:`drprobe.wide.widths.layer_width`). The plan is the one :func:`analyze_layer` will make,
from the dataset's configured sizes (whole-split sizes from the dry run's table when unset).
"""

from __future__ import annotations

from drprobe.errors import DrprobeError
from drprobe.experiment.config import ExperimentConfig
from drprobe.experiment.cost import SPLIT_SIZES
from drprobe.experiment.plan import Job
from drprobe.features import PRECOMPUTED
from drprobe.wide.memory import GIB
from drprobe.wide.widths import layer_width, plan_line

__all__ = ["job_plans"]

#: Classes of the datasets with other than 10, for estimates only (like SPLIT_SIZES).
CLASS_COUNTS = {"cifar100": 100}


def job_plans(config: ExperimentConfig, jobs: list[Job]) -> dict[str, str]:
    """Job id -> ``d=… · pca: …; cka: …; probes: …`` (jobs whose model cannot be built here,
    or whose dataset size is unknown, are left out)."""
    from drprobe.sources.models import load_model

    out: dict[str, str] = {}
    bundles: dict[int, object] = {}
    for job in jobs:
        model, data = config.models[job.model], config.datasets[job.dataset]
        whole = SPLIT_SIZES.get(data.name)
        n_train = data.n_train or (whole[0] if whole else None)
        n_test = data.n_test or (whole[1] if whole else None)
        if model.spec == PRECOMPUTED or n_train is None or n_test is None:
            continue
        try:
            if job.model not in bundles:
                bundles[job.model] = load_model(model.spec, "random", model.init_seed)
            d = layer_width(bundles[job.model], job.layer, config.pooling, data.image_size)
        except (DrprobeError, OSError, RuntimeError, StopIteration):
            continue
        n_val = round(config.probe.val_fraction * n_train)
        out[job.id] = plan_line(
            d, n_train=n_train - n_val, n_val=n_val, n_test=n_test,
            n_classes=CLASS_COUNTS.get(data.name, 10), selectors=config.selectors,
            fractions=config.fractions, n_l2=len(config.probe.l2_grid), n_seeds=len(config.seeds),
            budget_bytes=None if config.memory_budget_gb is None
            else int(config.memory_budget_gb * GIB))
    return out
