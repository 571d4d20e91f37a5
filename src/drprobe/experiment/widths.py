"""Each job's layer width and plan for ``drprobe run --dry-run``.

The width needs the architecture only: each model is built once with random weights (no
checkpoint is read) and one dummy forward pass lists its layers' shapes
(:func:`drprobe.wide.widths.layer_width`). The plan is made by the run's own builder,
:func:`drprobe.analysis.plan.layer_plan`, from the job's task sizes
(:func:`~drprobe.experiment.cost.task_sizes`: the configured sizes, else the whole splits').
"""

from __future__ import annotations

from dataclasses import dataclass

from drprobe.analysis.plan import LayerPlan, layer_plan
from drprobe.errors import DrprobeError, InvalidValueError
from drprobe.experiment.config import ExperimentConfig
from drprobe.experiment.cost import task_sizes
from drprobe.experiment.plan import Job
from drprobe.features import PRECOMPUTED
from drprobe.sources import models
from drprobe.sources.datasets import validation_size
from drprobe.wide.widths import layer_width

__all__ = ["JobPlan", "job_plan", "job_plans"]


@dataclass(frozen=True)
class JobPlan:
    """A job's layer width and its plan, or why the plan refuses it."""

    d: int
    plan: LayerPlan | None
    refused: str = ""

    def describe(self) -> str:
        """``d=802,816 · pca: ...; cka: ...; probes: ...`` or ``d=... · refused: ...``."""
        if self.plan is None:
            return f"d={self.d:,} · refused: {self.refused}"
        return f"d={self.d:,} · {self.plan.memory.describe()}"


def job_plan(config: ExperimentConfig, job: Job, d: int) -> LayerPlan:
    """The plan :func:`~drprobe.analysis.analyze_layer` makes for ``job`` on a d-wide layer: the
    same builder with the sizes the job's task will have.

    Raises:
        InvalidValueError: the task's size is unknown (no ``n_train``/``n_test`` and no table
            entry), or the plan refuses (one line).
    """
    data = config.datasets[job.dataset]
    sizes = task_sizes(data)
    if sizes.n_train is None or sizes.n_test is None:
        raise InvalidValueError(f"the size of dataset {data.name!r} is unknown before loading "
                                "it; give its n_train and n_test")
    n_val = validation_size(sizes.n_train, config.probe.val_fraction)  # as the run splits
    return layer_plan(
        d, n_train=sizes.n_train - n_val, n_val=n_val, n_test=sizes.n_test,
        n_classes=sizes.n_classes, selectors=config.selectors, fractions=config.fractions,
        counts=config.counts, seeds=config.seeds,
        n_l2=len(config.probe.l2_grid) if config.protocol == "cached" else 1,
        memory_budget_gb=config.memory_budget_gb)


def job_plans(config: ExperimentConfig, jobs: list[Job]) -> dict[str, JobPlan]:
    """Job id -> its width and plan (jobs whose model cannot be built here, or whose dataset
    size is unknown, are left out)."""
    out: dict[str, JobPlan] = {}
    bundles: dict[int, object] = {}
    for job in jobs:
        model, data = config.models[job.model], config.datasets[job.dataset]
        sizes = task_sizes(data)
        if model.spec == PRECOMPUTED or sizes.n_train is None or sizes.n_test is None:
            continue
        try:
            if job.model not in bundles:
                bundles[job.model] = models.load_model(model.spec, "random", model.init_seed)
            d = layer_width(bundles[job.model], job.layer, config.pooling, data.image_size)
        except (DrprobeError, OSError, RuntimeError, StopIteration):
            continue
        try:
            out[job.id] = JobPlan(d, job_plan(config, job, d))
        except DrprobeError as err:
            out[job.id] = JobPlan(d, None, str(err))
    return out
