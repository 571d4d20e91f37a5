"""The pretraining grid: every (variant, seed) of a config into ``<out>/<variant>/seed<k>/``.

Finished runs are skipped, killed ones resume (see :mod:`drprobe.pretrain.train`). After the
grid, ``<out>/pretrain.yaml`` holds the resolved config and ``<out>/models.csv`` one row per
(variant, seed): its ``ckpt:`` spec, d, source test accuracy, epochs, seconds and sha256.

Memory: one variant's network and batch at a time, plus each source dataset's whole training
split as uint8 (loaded once per dataset for the whole grid).
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from drprobe.errors import unknown
from drprobe.experiment.store import atomic_write_text
from drprobe.pretrain.config import PretrainConfig, load_pretrain_config, parse_pretrain_config
from drprobe.pretrain.data import load_source
from drprobe.pretrain.train import MODEL_FILE, PROVENANCE_FILE, train_one

__all__ = ["PretrainResult", "resolve_device", "run", "run_folder"]

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


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; other names as torch reads them."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def run_folder(out: str | os.PathLike, variant: str, seed: int) -> Path:
    """``<out>/<variant>/seed<seed>``."""
    return Path(out) / variant / f"seed{seed}"


def _index(config: PretrainConfig, out: Path) -> str:
    """models.csv: every finished (variant, seed) of ``config`` under ``out``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["variant", "seed", "spec", "d", "test_acc", "epochs", "wall_seconds",
                     "sha256"])
    for variant in config.variants:
        for seed in config.seeds:
            folder = run_folder(out, variant.name, seed)
            if not (folder / PROVENANCE_FILE).exists():
                continue
            p = json.loads((folder / PROVENANCE_FILE).read_text())
            spec = PretrainResult(variant.name, seed, folder, False, p).spec
            writer.writerow([variant.name, seed, spec, p["d"], p["test_acc"], p["epochs"],
                             p["wall_seconds"], p["sha256"]])
    return buf.getvalue()


def run(config: PretrainConfig | dict | str | os.PathLike, out: str | os.PathLike, *,
        progress: bool = True, variants: list[str] | None = None,
        device: str | None = None, threads: int | None = None) -> list[PretrainResult]:
    """Train every (variant, seed) of ``config`` into ``out``, variant by variant.

    Args:
        config: a :class:`PretrainConfig`, its plain data, or the path of its YAML file.
        out: the output folder (created).
        progress: show tqdm bars (epochs and batches).
        variants: train only these variants (default all, in config order).
        device: override the config's ``device``.
        threads: ``torch.set_num_threads(threads)`` for this process (None: leave it).

    Returns:
        one :class:`PretrainResult` per (variant, seed) trained or found finished.

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
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / CONFIG_FILE,
                      yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    target = resolve_device(device or config.device)
    if threads is not None:
        torch.set_num_threads(threads)
    loaded: dict[tuple, dict] = {}
    results = []
    for name in names:
        recipe = config.resolved(name)
        splits = loaded.setdefault((recipe.data.dataset, recipe.data.data_root), {})
        source = None
        for seed in config.seeds:
            folder = run_folder(out, name, seed)
            if source is None and not (folder / PROVENANCE_FILE).exists():
                source = load_source(recipe.data, target, splits)
            provenance, trained = train_one(recipe, seed, folder, source, target, progress)
            results.append(PretrainResult(name, seed, folder, trained, provenance))
    atomic_write_text(out / INDEX_FILE, _index(config, out))
    return results
