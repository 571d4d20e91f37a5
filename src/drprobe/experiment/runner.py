"""Run an experiment: every job of a config, locally or on Ray, resumable.

:func:`run_experiment` checks everything it can before writing (names, model weights,
layers, dataset files, the run folder: :mod:`~drprobe.experiment.preflight`), writes
``out/config.yaml`` (the resolved config) and ``out/plan.json``, runs the jobs that have no
results part yet and returns every job's parts as two tables. Rerunning the same config into the
same folder resumes: finished jobs are skipped and leftover temporary files of a killed run are
removed, so the results come out identical to an uninterrupted run. A different config is
refused. The tables and figures of a run are the report's
(:func:`drprobe.report.publish.publish_run`).

Executors: ``"local"`` runs jobs in this process (one network in memory at a time,
:mod:`~drprobe.experiment.local_executor`); ``"ray"`` submits them as Ray tasks
(:mod:`~drprobe.experiment.ray_executor`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from drprobe.errors import InvalidValueError
from drprobe.experiment.bundles import Bundles
from drprobe.experiment.config import ExperimentConfig
from drprobe.experiment.job_runner import read_job_parts
from drprobe.experiment.local_executor import run_local
from drprobe.experiment.locks import cache_session, locked
from drprobe.experiment.plan import Job, plan_jobs
from drprobe.experiment.preflight import check_run_folder, validate_jobs
from drprobe.experiment.store import PART_KINDS, part_path, remove_temp_files
from drprobe.features import PRECOMPUTED
from drprobe.files import atomic_write_text

__all__ = ["EXECUTORS", "RunOutput", "run_experiment"]

EXECUTORS = ("local", "ray")


@dataclass
class RunOutput:
    """What :func:`run_experiment` returns.

    Attributes:
        results: one row per probe, every job (results contract, without timing columns).
        summary: one row per (job, selector, delta).
        ran, skipped: ids of the jobs run now and of those already complete.
    """

    results: pd.DataFrame
    summary: pd.DataFrame
    ran: list[str]
    skipped: list[str]


def _remove_temps(out: Path) -> None:
    for folder in (out, *(out / kind for kind in PART_KINDS)):
        remove_temp_files(folder)


def _write_run_files(config: ExperimentConfig, jobs: list[Job], out: Path) -> None:
    if not (out / "config.yaml").exists():
        atomic_write_text(out / "config.yaml", config.to_yaml())
    plan = {"name": config.name, "run_id": config.run_id(),
            "jobs": [job.to_dict() for job in jobs]}
    atomic_write_text(out / "plan.json", json.dumps(plan, indent=1) + "\n")


def run_experiment(
    config: ExperimentConfig,
    out: str | os.PathLike,
    executor: str = "local",
    address: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> RunOutput:
    """Run every job of ``config`` not yet complete under ``out``; return all jobs' parts.

    Args:
        config: a validated config (:func:`~drprobe.experiment.config.load_config`).
        out: the run folder (created; a folder of a different config is refused).
        executor: ``"local"`` or ``"ray"``; address: the Ray cluster (None: join the Ray this
            process already started, else start a local one).
        cache_dir: the feature cache (default ``$DRPROBE_CACHE`` or ``~/.cache/drprobe``).
        progress: one progress bar over jobs (and the extraction/probe bars of local jobs).
        log: called with one line per job run (e.g. ``print``); None = quiet.

    Returns:
        :class:`RunOutput`. Writes, per job, ``results/``, ``summary/`` and ``timings/``
        parquet parts.
    """
    from drprobe.features import default_cache_dir

    if executor not in EXECUTORS:
        raise InvalidValueError(f"unknown executor {executor!r}; valid choices: local, ray")
    jobs = plan_jobs(config)
    out = check_run_folder(config, out)
    pending = [j for j in jobs if not part_path(out, "results", j.id).exists()]
    bundles = Bundles(config)
    if pending:
        validate_jobs(config, pending, bundles)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    uses_cache = any(config.models[j.model].spec != PRECOMPUTED for j in jobs)
    with contextlib.ExitStack() as stack:
        ray = None
        if executor == "ray" and pending:
            bundles.clear()  # the tasks load their own networks
            from drprobe.experiment.ray_executor import ray_session

            ray = stack.enter_context(ray_session(address))
        out.mkdir(parents=True, exist_ok=True)
        stack.enter_context(locked(out, "run folder"))
        if uses_cache:
            stack.enter_context(cache_session(cache))
        _remove_temps(out)
        _write_run_files(config, jobs, out)
        pending = [j for j in jobs if not part_path(out, "results", j.id).exists()]
        if ray is not None:
            from drprobe.experiment.ray_executor import run_ray

            run_ray(ray, config, pending, out, cache, progress, len(jobs))
            _remove_temps(out)  # those of task attempts killed mid-write (then rerun by Ray)
        else:
            run_local(config, pending, out, cache, progress, log, len(jobs), bundles)
        parts = [read_job_parts(out, job) for job in jobs]
    results = pd.concat([r for r, _ in parts], ignore_index=True)
    summary = pd.concat([s for _, s in parts], ignore_index=True)
    ran = [j.id for j in pending]
    return RunOutput(results, summary, ran, [j.id for j in jobs if j.id not in ran])
