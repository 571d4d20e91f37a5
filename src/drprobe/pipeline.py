"""The whole study in one call (``drprobe study``, ``make study``): pretrain, run, report, copy.

A study folder (``configs/study/``) holds ``pretrain.yaml`` (a ``drprobe pretrain`` grid) and
run configs (every other ``*.yaml`` whose name does not start with ``pretrain``). The run
configs name the checkpoints as ``ckpt:OUT/pretrain/<variant>/seed<k>/model.pt`` relative to the
working directory, so ``out`` must be the folder they name (``runs/study`` for the full study).

Stages, each resumable (a second call skips finished work):

1. ``drprobe pretrain pretrain.yaml --out OUT/pretrain``;
2. ``drprobe run NAME.yaml --out OUT/NAME`` for each run config, in name order;
3. ``drprobe report OUT/NAME`` (variants compared with ``reference`` when the run has it);
4. every report PNG copied to ``figures/NAME-<figure>.png``; the report's ``variants.csv`` and
   ``tasks.csv`` and the run's ``summary.csv`` to ``figures/NAME-<table>.csv``.

Wall and CPU seconds of each stage go to ``OUT/timings.json`` (this call) and are appended, one
line per call, to ``OUT/timings.jsonl`` (so the first, full call is not lost to a resumed one).
Memory: that of the largest stage (a pretraining process per job, or one run's largest feature
array).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import click

from drprobe.errors import InvalidValueError

__all__ = ["run_configs", "run_study", "study"]

PRETRAIN = "pretrain.yaml"


def run_configs(folder: str | os.PathLike) -> list[Path]:
    """The run configs of a study folder: ``*.yaml`` not starting with ``pretrain``, sorted."""
    return sorted(p for p in Path(folder).glob("*.yaml") if not p.name.startswith("pretrain"))


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_study(
    folder: str | os.PathLike, out: str | os.PathLike, *, figures: str | os.PathLike | None = None,
    jobs: int = 2, threads: int = 1, reference: str = "ce", cache_dir: str | None = None,
    progress: bool = True, log: Callable[[str], None] | None = print,
) -> dict[str, dict[str, float]]:
    """Run every stage of the study in ``folder`` into ``out`` (see the module docstring).

    Returns the per-stage ``{"wall_seconds", "cpu_seconds"}`` also written to
    ``OUT/timings.json``.
    """
    from drprobe.experiment.config import load_config
    from drprobe.experiment.runner import run_experiment
    from drprobe.files import atomic_write_text
    from drprobe.pretrain import run as pretrain
    from drprobe.report.build import build_report
    from drprobe.report.publish import publish_run

    folder, out = Path(folder), Path(out)
    if not (folder / PRETRAIN).is_file():
        raise InvalidValueError(f"study folder {str(folder)!r} has no {PRETRAIN}; valid: a "
                                "folder with pretrain.yaml and run configs (configs/study)")
    configs = {p.stem: load_config(p) for p in run_configs(folder)}  # all checked before work
    timings: dict[str, dict[str, float]] = {}

    def stage(name: str, work: Callable[[], object]) -> None:
        if log:
            log(f"study: {name}")
        wall, cpu = time.perf_counter(), _cpu_seconds()
        work()
        timings[name] = {"wall_seconds": round(time.perf_counter() - wall, 1),
                         "cpu_seconds": round(_cpu_seconds() - cpu, 1)}

    stage("pretrain", lambda: pretrain(folder / PRETRAIN, out / "pretrain", progress=progress,
                                       threads=threads, jobs=jobs))
    for name, config in configs.items():
        def run(c=config, n: str = name) -> None:
            done = run_experiment(c, out / n, cache_dir=cache_dir, progress=progress)
            publish_run(done.results, done.summary, out / n, plot=False)
        stage(f"run {name}", run)
    for name in configs:
        def report(n: str = name) -> None:
            try:
                build_report(out / n, formats="png", progress=progress, reference=reference)
            except InvalidValueError as err:  # no variant named `reference` in this run
                if "reference variant" not in str(err):
                    raise
                build_report(out / n, formats="png", progress=progress)
        stage(f"report {name}", report)
    if figures is not None:
        figures = Path(figures)
        figures.mkdir(parents=True, exist_ok=True)
        for name in configs:
            for src in sorted((out / name / "report").glob("*.png")):
                shutil.copyfile(src, figures / f"{name}-{src.name}")
            for src, what in ((out / name / "report" / "variants.csv", "variants"),
                              (out / name / "report" / "tasks.csv", "tasks"),
                              (out / name / "summary.csv", "summary")):
                if src.is_file():
                    shutil.copyfile(src, figures / f"{name}-{what}.csv")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "timings.json", json.dumps(timings, indent=1) + "\n")
    with open(out / "timings.jsonl", "a", encoding="utf-8") as history:
        history.write(json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                  "stages": timings}) + "\n")
    return timings


@click.command()
@click.argument("folder", type=click.Path(path_type=Path), default=Path("configs/study"))
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/study"),
              show_default=True, help="Study folder (the run configs' ckpt: paths point in it).")
@click.option("--figures", type=click.Path(path_type=Path), default=None,
              help="Copy every report figure and table here [default: nowhere].")
@click.option("--jobs", type=int, default=2, show_default=True,
              help="Pretraining runs at once, one process each.")
@click.option("--threads", type=int, default=1, show_default=True,
              help="CPU threads for torch per pretraining process.")
@click.option("--reference", default="ce", show_default=True,
              help="Variant the others are compared with in each report's variants.csv.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Show progress bars.")
def study(folder, out, figures, jobs, threads, reference, progress) -> None:
    """The whole study: pretrain, every run config, reports, figures copied.

    \b
    Example:
      drprobe study configs/study --out runs/study --figures docs/img/findings
    """
    timings = run_study(folder, out, figures=figures, jobs=jobs, threads=threads,
                        reference=reference, progress=progress, log=click.echo)
    for name, t in timings.items():
        click.echo(f"{name}: {t['wall_seconds']:.0f} s wall, {t['cpu_seconds']:.0f} s CPU")
