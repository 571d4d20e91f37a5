"""The dry run's listing (``drprobe run --dry-run``): the jobs, what they extract and train, a
rough time, and with ``widths`` each job's layer width and memory plan."""

from __future__ import annotations

from drprobe.experiment.config import ExperimentConfig
from drprobe.experiment.cost import estimate_cost, faithful_streams
from drprobe.experiment.plan import Job
from drprobe.experiment.widths import job_plans

__all__ = ["format_plan"]


def format_plan(config: ExperimentConfig, jobs: list[Job], done: set[str] = frozenset(),
                widths: bool = False) -> str:
    """The dry-run listing: jobs (marked done when their results part exists) and the cost;
    with ``widths``, each job's layer width and memory plan (builds each model once, random
    weights: :func:`~drprobe.experiment.widths.job_plans`)."""
    cost = estimate_cost(config, jobs)
    lines = [(f"experiment {config.name!r}: {len(jobs)} jobs "
             f"({len(done)} done), protocol {config.protocol}")]
    plans = job_plans(config, jobs) if widths else {}
    lines += [f"  {'done' if j.id in done else 'todo'}  {j.id}  "
              f"{plans[j.id].describe() if j.id in plans else ''}".rstrip() for j in jobs]
    lines.append("images to extract (train + test, per layer):")
    for r in cost["extraction"]:
        images = "all of both splits (size unknown)" if r["images"] is None else f"{r['images']:,}"
        lines.append(f"  {r['model']} [{r['weights']}] on {r['dataset']}: {r['layers']} layer(s),"
                     f" {images} images at {r['image_size'] or 'native'} px")
    if config.protocol == "faithful":
        lines.append(f"heads to train: {cost['probes']:,} (SGD through the network, "
                     f"{config.faithful.epochs} epochs of augmented images per seed and job, "
                     f"{faithful_streams(config)} seed(s))")
    else:
        lines.append(f"probes to train: {cost['probes']:,} "
                     f"(each over {cost['l2_values']} L2 values)")
    unknown = any(r["images"] is None for r in cost["extraction"])
    lines.append(f"rough time on 2 CPU cores: ~{_duration(cost['seconds'])}"
                 + (" (without the datasets of unknown size)" if unknown else ""))
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"
