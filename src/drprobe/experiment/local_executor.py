"""The local executor: the pending jobs one after another in this process, one progress bar.

Jobs of one (model, weights, dataset) share their extraction: the first one reads each split
once and fills the cache entries of every pending layer of the group in one pass.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from drprobe.experiment.bundles import Bundles
from drprobe.experiment.config import ExperimentConfig
from drprobe.experiment.job_runner import run_job
from drprobe.experiment.plan import Job

__all__ = ["job_bar", "run_local"]


def job_bar(total: int, done: int, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc="jobs", unit="job", disable=not progress,
                file=sys.stderr, position=0, leave=True)


def run_local(config: ExperimentConfig, pending: list[Job], out: Path, cache: Path,
               progress: bool, log: Callable[[str], None] | None, total: int,
               bundles: Bundles) -> None:
    groups: dict[tuple, list[str]] = {}  # one pass over the data per (model, weights, dataset)
    for job in pending:
        groups.setdefault((job.model, job.weights, job.dataset), []).append(job.layer)
    with job_bar(total, total - len(pending), progress) as bar:
        for job in pending:
            run_job(config, job, out, cache_dir=cache, progress=progress,
                    loader=bundles.loader, log=log,
                    extract_with=groups[(job.model, job.weights, job.dataset)])
            bar.update(1)
