"""Checks made before a run writes anything: the run folder, and everything the pending jobs
need (network weights, layers, dataset files, counts against layer widths)."""

from __future__ import annotations

import os
from pathlib import Path

from drprobe.errors import DrprobeError, InvalidValueError
from drprobe.experiment.bundles import Bundles
from drprobe.experiment.config import ExperimentConfig, parse_config
from drprobe.experiment.job_runner import check_counts
from drprobe.experiment.plan import Job
from drprobe.experiment.store import TEMP_PATTERN
from drprobe.features import PRECOMPUTED

__all__ = ["check_run_folder", "prepare_output", "validate_jobs"]


def prepare_output(out: str | os.PathLike) -> Path:
    """Check that ``out`` can be a results folder (it must not be a file); do not create it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidValueError(f"output folder {str(out)!r} exists and is a file; pass a folder path")
    return out


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


def validate_jobs(config: ExperimentConfig, jobs: list[Job], bundles: Bundles) -> None:
    """Load what the pending jobs need (weights, layers, dataset files) before any write.

    Networks are checked in reverse job order and each model's layers on its first variant,
    so the store ends up holding the first job's network with its layers already listed.
    """
    from drprobe.analysis.layer import check_layer_inputs
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
                check_counts(config, int(widths[j.dataset]), j.layer)
                continue
            bundle = bundles.get(j.model, first[j.model])
            layer = resolve_layer(bundle, j.layer)
            check_counts(config, feature_dim(bundle, layer, config.pooling, data.image_size), layer)
