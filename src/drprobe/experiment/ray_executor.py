"""The Ray executor: each pending job as a Ray task (asking for the config's ``resources``),
on the Ray this process already joined, on a cluster at ``address``, or on a new local Ray on
127.0.0.1. The tasks write the parts themselves, so the run folder and the feature cache must be
on a filesystem every node sees."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from drprobe.errors import DrprobeError, MissingDataError
from drprobe.experiment.config import ExperimentConfig, parse_config
from drprobe.experiment.job_runner import run_job
from drprobe.experiment.local_executor import job_bar
from drprobe.experiment.plan import Job

__all__ = ["TASK_RETRIES", "ray_session", "run_ray"]

#: Ray reruns a job whose worker process or node died this many times (a job's parts are
#: written atomically and a rerun skips a finished job, so a rerun is safe).
TASK_RETRIES = 3


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
def ray_session(address: str | None) -> Iterator[object]:
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


def run_ray(ray, config: ExperimentConfig, pending: list[Job], out: Path, cache: Path,
             progress: bool, total: int) -> None:
    task = ray.remote(_ray_task).options(num_cpus=config.resources.cpus,
                                         num_gpus=config.resources.gpus,
                                         max_retries=TASK_RETRIES)
    data, where = config.canonical(), os.getcwd()
    refs = [task.remote(data, j.to_dict(), str(out.resolve()), str(cache.resolve()), where)
            for j in pending]
    with job_bar(total, total - len(pending), progress) as bar:
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
