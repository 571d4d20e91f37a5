"""The pretraining grid: every (variant, seed) of a config into ``<out>/<variant>/seed<k>/``.

Finished runs are skipped, killed ones resume (see :mod:`drprobe.pretrain.train`). After the
grid, ``<out>/pretrain.yaml`` holds the resolved config and ``<out>/models.csv`` one row per
(variant, seed): its ``ckpt:`` spec, d, source test accuracy, epochs, seconds and sha256.

Runs go one after the other, or ``jobs`` at a time in worker processes (``--jobs``).

Memory: per training process, one network and batch at a time, plus each source dataset's
whole training split as uint8 (loaded once per dataset and process).
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from drprobe.devices import resolve_device
from drprobe.errors import InvalidValueError, unknown
from drprobe.files import atomic_write_text
from drprobe.pretrain.config import (
    Data,
    PretrainConfig,
    load_pretrain_config,
    parse_pretrain_config,
)
from drprobe.pretrain.data import SourceData, load_source
from drprobe.pretrain.train import MODEL_FILE, PROVENANCE_FILE, train_one

__all__ = ["PretrainResult", "run", "run_folder"]

INDEX_FILE, CONFIG_FILE = "models.csv", "pretrain.yaml"


@dataclass(frozen=True)
class PretrainResult:
    """One (variant, seed) of a grid: where it is, whether it trained now, its provenance."""

    variant: str
    seed: int
    folder: Path
    trained: bool
    provenance: dict

    @property
    def spec(self) -> str:
        """The model spec that probes it: ``ckpt:<folder>/model.pt``."""
        return f"ckpt:{(self.folder / MODEL_FILE).as_posix()}"


def run_folder(out: str | os.PathLike, variant: str, seed: int) -> Path:
    """``<out>/<variant>/seed<seed>``."""
    return Path(out) / variant / f"seed{seed}"


def _index(config: PretrainConfig, out: Path) -> str:
    """models.csv: every finished (variant, seed) of ``config`` under ``out``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["variant", "seed", "spec", "d", "test_acc", "epochs", "wall_seconds",
                     "cpu_seconds", "sha256"])
    for variant in config.variants:
        for seed in config.seeds_of(variant.name):
            folder = run_folder(out, variant.name, seed)
            if not (folder / PROVENANCE_FILE).exists():
                continue
            p = json.loads((folder / PROVENANCE_FILE).read_text())
            spec = PretrainResult(variant.name, seed, folder, False, p).spec
            writer.writerow([variant.name, seed, spec, p["d"], p["test_acc"], p["epochs"],
                             p["wall_seconds"], p.get("cpu_seconds"), p["sha256"]])
    return buf.getvalue()


class _Trainer:
    """Trains (variant, seed) runs in this process, loading each dataset and subset once."""

    def __init__(self, device: torch.device, progress: bool) -> None:
        self.device, self.progress = device, progress
        self.splits: dict[tuple, dict] = {}
        self.sources: dict[Data, SourceData] = {}

    def __call__(self, config: PretrainConfig, name: str, seed: int,
                 out: Path) -> PretrainResult:
        recipe, folder = config.resolved(name), run_folder(out, name, seed)
        source = self.sources.get(recipe.data)
        if source is None and not (folder / PROVENANCE_FILE).exists():
            splits = self.splits.setdefault((recipe.data.dataset, recipe.data.data_root), {})
            source = self.sources[recipe.data] = load_source(recipe.data, self.device, splits)
        provenance, trained = train_one(recipe, seed, folder, source, self.device,
                                        self.progress)
        return PretrainResult(name, seed, folder, trained, provenance)


_WORKER: dict[str, _Trainer] = {}


def _init_worker(device: str, threads: int, parent: int) -> None:
    """Set up a worker process: its trainer, its threads, and an exit when ``parent`` dies
    (a killed ``drprobe pretrain`` must not leave workers training behind it)."""
    torch.set_num_threads(threads)
    _WORKER["trainer"] = _Trainer(torch.device(device), progress=False)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _work(config_data: dict, name: str, seed: int, out: str) -> PretrainResult:
    """One task of a worker process (its trainer, and so its loaded data, live across tasks)."""
    config = PretrainConfig.model_validate(config_data)
    return _WORKER["trainer"](config, name, seed, Path(out))


def run(config: PretrainConfig | dict | str | os.PathLike, out: str | os.PathLike, *,
        progress: bool = True, variants: list[str] | None = None,
        device: str | None = None, threads: int | None = None,
        jobs: int = 1) -> list[PretrainResult]:
    """Train every (variant, seed) of ``config`` into ``out``, all variants' first seed first.

    Args:
        config: a :class:`PretrainConfig`, its plain data, or the path of its YAML file.
        out: the output folder (created).
        progress: show tqdm bars (epochs and batches; with ``jobs > 1``, finished runs).
        variants: train only these variants (default all, in config order).
        device: override the config's ``device``.
        threads: torch CPU threads of each training process (None: torch's default in this
            process, 1 in worker processes).
        jobs: train this many runs at once, each in its own process (on a small CPU machine,
            ``jobs`` = cores with ``threads`` = 1 is the fastest way through a grid). Results
            do not depend on ``jobs``.

    Returns:
        one :class:`PretrainResult` per (variant, seed) trained or found finished, in config
        order (variants, then seeds).

    Raises:
        ConfigError: an invalid config; UnknownNameError: a variant not in the config;
        InvalidValueError: ``out`` holds runs of another config.
    """
    if isinstance(config, dict):
        config = parse_pretrain_config(config)
    elif not isinstance(config, PretrainConfig):
        config = load_pretrain_config(config)
    names = [v.name for v in config.variants]
    if variants is not None:
        for name in variants:
            if name not in names:
                raise unknown("variant", name, names)
        names = [n for n in names if n in variants]
    for what, value in (("jobs", jobs), ("threads", 1 if threads is None else threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidValueError(f"{what} must be a positive integer, got {value!r}")
    target = resolve_device(device or config.device, mps=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / CONFIG_FILE,
                      yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    # seed-major: every variant's first seed is trained before any variant's second one, so a
    # grid stopped early still compares every variant
    own = {name: config.seeds_of(name) for name in names}
    seeds = dict.fromkeys(s for name in names for s in own[name])
    tasks = [(name, seed) for seed in seeds for name in names if seed in own[name]]
    if jobs == 1 or len(tasks) == 1:
        if threads is not None:
            torch.set_num_threads(threads)
        trainer = _Trainer(target, progress)
        results = [trainer(config, name, seed, out) for name, seed in tasks]
    else:
        results = _parallel(config, tasks, out, str(target), threads or 1, jobs, progress)
    atomic_write_text(out / INDEX_FILE, _index(config, out))
    return sorted(results, key=lambda r: (names.index(r.variant), own[r.variant].index(r.seed)))


def _parallel(config: PretrainConfig, tasks: list[tuple[str, int]], out: Path, device: str,
              threads: int, jobs: int, progress: bool) -> list[PretrainResult]:
    """Run ``tasks`` on ``jobs`` spawned worker processes; the first failure stops the rest."""
    data = config.model_dump(mode="json")
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=context,
                             initializer=_init_worker,
                             initargs=(device, threads, os.getpid())) as pool:
        futures = [pool.submit(_work, data, name, seed, str(out)) for name, seed in tasks]
        try:
            with tqdm(total=len(futures), desc="pretrain runs", unit="run",
                      disable=not progress) as bar:
                for future in as_completed(futures):
                    result = future.result()
                    bar.update(1)
                    bar.set_postfix_str(f"{result.variant}/seed{result.seed} "
                                        f"acc {result.provenance['test_acc']:.3f}")
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return [future.result() for future in futures]
