"""Run an experiment: every job of a config, locally or on Ray, resumable, then the tables.

:func:`run_experiment` checks everything it can before writing (names, model weights,
layers, dataset files, the run folder), writes ``out/config.yaml`` (the resolved config) and
``out/plan.json``, runs the jobs that have no results part yet, and rebuilds the tables and
figures from all parts. Rerunning the same config into the same folder resumes: finished jobs
are skipped and leftover temporary files of a killed run are removed, so the tables come out
identical to an uninterrupted run. A different config is refused.

Executors: ``"local"`` runs jobs in this process (one network in memory at a time); ``"ray"``
submits them as Ray tasks asking for the config's ``resources`` (``address=None`` starts a
local Ray on 127.0.0.1), the tasks write the parts (the run folder and the feature cache must be
on a filesystem every node sees) and this process builds the tables.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from drprobe.errors import DrprobeError, InvalidValueError, MissingDataError
from drprobe.experiment.config import PRECOMPUTED, ExperimentConfig, parse_config
from drprobe.experiment.jobs import (
    Job,
    fractions_for,
    load_bundle,
    plan_jobs,
    read_job_parts,
    run_job,
)
from drprobe.experiment.store import (
    PART_KINDS,
    TEMP_PATTERN,
    atomic_write_text,
    part_path,
    remove_temp_files,
)
from drprobe.experiment.study import build_tables, prepare_output

__all__ = ["EXECUTORS", "RunOutput", "check_run_folder", "run_experiment"]

EXECUTORS = ("local", "ray")
CACHE_LOCK = ".runners.lock"
#: Ray reruns a job whose worker process or node died this many times (a job's parts are
#: written atomically and a rerun skips a finished job, so a rerun is safe).
TASK_RETRIES = 3


@dataclass
class RunOutput:
    """What :func:`run_experiment` returns.

    Attributes:
        results: one row per probe, every job (results contract, without timing columns).
        summary: one row per (job, selector, delta).
        ran, skipped: ids of the jobs run now and of those already complete.
        figures: the PNG files written.
    """

    results: pd.DataFrame
    summary: pd.DataFrame
    ran: list[str]
    skipped: list[str]
    figures: list[Path]


def check_run_folder(config: ExperimentConfig, out: str | os.PathLike) -> Path:
    """Refuse a file, a folder of other files, or a run folder of a different config.

    Returns ``out``. A folder holding nothing but empty folders and temporary files of a run
    killed before it wrote ``config.yaml`` is accepted.
    """
    out = prepare_output(out)
    saved = out / "config.yaml"
    if out.is_dir() and not saved.exists():
        others = [p for p in out.rglob("*") if p.is_file() and not TEMP_PATTERN.match(p.name)]
        if others:
            raise InvalidValueError(
                f"output folder {str(out)!r} is not empty and holds no drprobe run "
                f"(no config.yaml; found {others[0].relative_to(out).as_posix()!r}); pass a new "
                "or empty folder")
    if saved.exists():
        import yaml

        try:
            previous = parse_config(yaml.safe_load(saved.read_text()), str(saved))
        except (DrprobeError, yaml.YAMLError):
            previous = None
        if previous is None or previous.fingerprint() != config.fingerprint():
            name = f" ({previous.name!r})" if previous else ""
            raise InvalidValueError(
                f"run folder {str(out)!r} holds a different experiment{name}; pass another "
                "--out, or delete the folder to start over")
    return out


class _Bundles:
    """The loaded networks, one at a time (loading another drops the one held)."""

    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config
        self.key: tuple[int, str] | None = None
        self.bundle: object = None

    def get(self, model_index: int, weights: str) -> object:
        if self.key != (model_index, weights):
            self.clear()  # free the old one before loading
            self.bundle = load_bundle(self.config.models[model_index], weights)
            self.key = (model_index, weights)
        return self.bundle

    def clear(self) -> None:
        self.key, self.bundle = None, None

    def loader(self, model, weights: str) -> object:
        """A :func:`~drprobe.experiment.jobs.run_job` loader backed by this store."""
        return self.get(self.config.models.index(model), weights)


def _validate(config: ExperimentConfig, jobs: list[Job], bundles: _Bundles) -> None:
    """Load what the pending jobs need (weights, layers, dataset files) before any write.

    Networks are checked in reverse job order and each model's layers on its first variant,
    so the store ends up holding the first job's network with its layers already listed.
    """
    from drprobe.experiment.analysis import check_layer_inputs
    from drprobe.features import get_features
    from drprobe.sources.datasets import load_dataset
    from drprobe.sources.layers import resolve_layer

    if config.protocol == "faithful" and any(config.models[j.model].spec == PRECOMPUTED
                                              for j in jobs):
        raise InvalidValueError(
            "protocol 'faithful' trains through the network on images, and precomputed "
            "features have neither; valid for precomputed features: cached")
    pairs = list(dict.fromkeys((j.model, j.weights) for j in jobs))
    first = {mi: w for mi, w in reversed(pairs)}  # each model's first variant in job order
    for mi, weights in reversed(pairs):
        if config.models[mi].spec == PRECOMPUTED:
            continue
        bundle = bundles.get(mi, weights)
        if first[mi] == weights:
            for layer in dict.fromkeys(j.layer for j in jobs if j.model == mi):
                resolve_layer(bundle, layer)
    widths = {}  # dataset -> d of its precomputed features
    for di in dict.fromkeys(j.dataset for j in jobs):
        data = config.datasets[di]
        if data.name.startswith("features:"):  # small enough to check before any write
            train, test = (get_features(PRECOMPUTED, "features", data.name, split, n=n,
                                        data_root=data.data_root)
                           for split, n in (("train", data.n_train), ("test", data.n_test)))
            check_layer_inputs(train.X, train.y, test.X, test.y)
            widths[di] = test.X.shape[1]
        else:
            load_dataset(data.name, "test", root=data.data_root)
    if config.counts is not None:  # a count above a layer's width is refused before any write
        from drprobe.features.batching import feature_dim

        for j in reversed(jobs):  # ends holding the first job's network, as above
            data = config.datasets[j.dataset]
            if config.models[j.model].spec == PRECOMPUTED:
                fractions_for(config, int(widths[j.dataset]), j.layer)
                continue
            bundle = bundles.get(j.model, first[j.model])
            layer = resolve_layer(bundle, j.layer)
            fractions_for(config, feature_dim(bundle, layer, config.pooling, data.image_size), layer)


@contextlib.contextmanager
def _locked(path: Path, what: str, exclusive: bool = True) -> Iterator[int]:
    """Hold an advisory lock on ``path`` (a folder or a file, created if missing)."""
    flags = os.O_RDONLY if path.is_dir() else os.O_RDWR | os.O_CREAT
    fd = os.open(path, flags, 0o644)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InvalidValueError(f"{what} {str(path)!r} is in use by another drprobe run; "
                                    "wait for it to finish or pass another --out") from None
        yield fd
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def _cache_session(cache_dir: Path) -> Iterator[None]:
    """Share the feature cache with other runs; the first run in removes dead writers' temps.

    Every runner holds a shared lock on ``<cache>/.runners.lock`` while it runs. A runner that
    can take it exclusively is alone, so every temporary entry in the cache was left by a
    killed process and is removed.
    """
    from drprobe.features.cache import FeatureCache

    cache_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(cache_dir / CACHE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            FeatureCache(cache_dir).prune_temp(max_age_s=0.0)
        except BlockingIOError:
            pass
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


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
    plot: bool = True,
) -> RunOutput:
    """Run every job of ``config`` not yet complete under ``out``, then write the tables.

    Args:
        config: a validated config (:func:`~drprobe.experiment.config.load_config`).
        out: the run folder (created; a folder of a different config is refused).
        executor: ``"local"`` or ``"ray"``; address: the Ray cluster (None: join the Ray this
            process already started, else start a local one).
        cache_dir: the feature cache (default ``$DRPROBE_CACHE`` or ``~/.cache/drprobe``).
        progress: one progress bar over jobs (and the extraction/probe bars of local jobs).
        log: called with one line per job run (e.g. ``print``); None = quiet.
        plot: also draw ``accuracy.png``, ``cka.png`` and ``gini.png``.

    Returns:
        :class:`RunOutput`. Writes, per job, ``results/``, ``summary/`` and ``timings/``
        parquet parts; then ``summary.csv``, ``summary.md``, ``efficiency.csv``,
        ``fairness.csv`` and the figures.
    """
    from drprobe.features import default_cache_dir

    if executor not in EXECUTORS:
        raise InvalidValueError(f"unknown executor {executor!r}; valid choices: local, ray")
    jobs = plan_jobs(config)
    out = check_run_folder(config, out)
    pending = [j for j in jobs if not part_path(out, "results", j.id).exists()]
    bundles = _Bundles(config)
    if pending:
        _validate(config, pending, bundles)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    uses_cache = any(config.models[j.model].spec != PRECOMPUTED for j in jobs)
    with contextlib.ExitStack() as stack:
        ray = None
        if executor == "ray" and pending:
            bundles.clear()  # the tasks load their own networks
            ray = stack.enter_context(_ray_session(address))
        out.mkdir(parents=True, exist_ok=True)
        stack.enter_context(_locked(out, "run folder"))
        if uses_cache:
            stack.enter_context(_cache_session(cache))
        _remove_temps(out)
        _write_run_files(config, jobs, out)
        pending = [j for j in jobs if not part_path(out, "results", j.id).exists()]
        if ray is not None:
            _run_ray(ray, config, pending, out, cache, progress, len(jobs))
            _remove_temps(out)  # those of task attempts killed mid-write (then rerun by Ray)
        else:
            _run_local(config, pending, out, cache, progress, log, len(jobs), bundles)
        parts = [read_job_parts(out, job) for job in jobs]
        results, summary = build_tables(parts, out)
        figures = []
        if plot:
            from drprobe.report.plots import plot_study

            figures = plot_study(results, out)
    ran = [j.id for j in pending]
    return RunOutput(results, summary, ran, [j.id for j in jobs if j.id not in ran], figures)


def _bar(total: int, done: int, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc="jobs", unit="job", disable=not progress,
                file=sys.stderr, position=0, leave=True)


def _run_local(config: ExperimentConfig, pending: list[Job], out: Path, cache: Path,
               progress: bool, log: Callable[[str], None] | None, total: int,
               bundles: _Bundles) -> None:
    groups: dict[tuple, list[str]] = {}  # one pass over the data per (model, weights, dataset)
    for job in pending:
        groups.setdefault((job.model, job.weights, job.dataset), []).append(job.layer)
    with _bar(total, total - len(pending), progress) as bar:
        for job in pending:
            run_job(config, job, out, cache_dir=cache, progress=progress,
                    loader=bundles.loader, log=log,
                    extract_with=groups[(job.model, job.weights, job.dataset)])
            bar.update(1)


# ----------------------------------------------------------------------------------- Ray


def _import_ray():
    try:
        import ray
    except ImportError:
        raise MissingDataError("the ray executor needs Ray: pip install 'drprobe[ray]' "
                               "(or use --executor local)") from None
    return ray


def _ray_task(config_data: dict, job_data: dict, out: str, cache: str, cwd: str) -> str:
    """Body of one Ray task: run one job (paths in the config are taken under ``cwd``)."""
    if os.path.isdir(cwd):
        os.chdir(cwd)
    config = parse_config(config_data, "ray task")
    job = Job(**job_data)
    run_job(config, job, out, cache_dir=cache, progress=False)
    return job.id


@contextlib.contextmanager
def _ray_session(address: str | None) -> Iterator[object]:
    """The ``ray`` module, connected: to the Ray this process already joined, to ``address``,
    or to a new local Ray on 127.0.0.1 (shut down on exit)."""
    from drprobe.experiment import cluster

    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    if address:
        cluster.join(ray, address)
    else:
        cluster.start_local(ray)
    try:
        yield ray
    finally:
        ray.shutdown()


def _run_ray(ray, config: ExperimentConfig, pending: list[Job], out: Path, cache: Path,
             progress: bool, total: int) -> None:
    task = ray.remote(_ray_task).options(num_cpus=config.resources.cpus,
                                         num_gpus=config.resources.gpus,
                                         max_retries=TASK_RETRIES)
    data, where = config.canonical(), os.getcwd()
    refs = [task.remote(data, j.to_dict(), str(out.resolve()), str(cache.resolve()), where)
            for j in pending]
    with _bar(total, total - len(pending), progress) as bar:
        while refs:
            done, refs = ray.wait(refs, num_returns=1)
            try:
                ray.get(done[0])
            except ray.exceptions.RayTaskError as err:
                for ref in refs:
                    ray.cancel(ref)
                cause = getattr(err, "cause", None)
                if isinstance(cause, DrprobeError):
                    raise type(cause)(str(cause)) from None
                raise
            bar.update(1)
