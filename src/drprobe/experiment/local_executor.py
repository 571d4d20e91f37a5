"""The local executor: the pending jobs one after another in this process, one progress bar."""

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
    with job_bar(total, total - len(pending), progress) as bar:
        for job in pending:
            run_job(config, job, out, cache_dir=cache, progress=progress,
                    loader=bundles.loader, log=log)
            bar.update(1)
