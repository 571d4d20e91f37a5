"""Running one job: extract (or read from the cache) the features of its layer, probe them with
the config's protocol, and write its parquet parts.

Running a job writes three parquet parts under the run folder (:mod:`drprobe.experiment.store`):
``timings/``, ``summary/`` and, last, ``results/`` -- so a results part means the job is
complete.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from drprobe.analysis import FaithfulProtocol, analyze_layer, apply_task
from drprobe.devices import resolve_device
from drprobe.errors import InvalidValueError
from drprobe.experiment.bundles import BundleLoader, load_bundle
from drprobe.experiment.config import DatasetConfig, ExperimentConfig
from drprobe.experiment.plan import Job
from drprobe.experiment.store import PROBE_KEYS, TIMING_COLUMNS, part_path, write_part
from drprobe.features import PRECOMPUTED, extract_layers, get_features
from drprobe.probes import ProbeBank
from drprobe.probes.faithful import FaithfulBank
from drprobe.probes.faithful_settings import paper_weight_decay
from drprobe.sources.datasets import load_dataset, subsample
from drprobe.sources.layers import resolve_layer

__all__ = ["SAMPLE_SEED", "check_counts", "read_job_parts", "run_job"]

#: The seed of a job's stratified subsamples of its dataset's splits (n_train, n_test).
SAMPLE_SEED = 0


def check_counts(config: ExperimentConfig, d: int, layer: str = "the layer") -> None:
    """Refuse ``counts`` above the width d of ``layer`` (before any work is done)."""
    over = [c for c in config.counts or () if c > d]
    if over:
        raise InvalidValueError(
            f"counts {over} exceed the width d={d} of {layer}; valid counts: 1 to {d} "
            "(or give fractions)")


def run_job(
    config: ExperimentConfig, job: Job, out: str | os.PathLike, *,
    cache_dir: str | os.PathLike | None = None, progress: bool = False,
    loader: BundleLoader = load_bundle, log: Callable[[str], None] | None = None,
    extract_with: Sequence[str] = (),
) -> bool:
    """Run ``job`` and write its parts under ``out``; skip it if its results part exists.

    ``extract_with``: more layers of the same (model, weights, dataset) whose features are
    extracted in the same pass over each split as the job's own (cache entries for later jobs).

    Returns True if the job ran, False if it was already complete.
    """
    if part_path(out, "results", job.id).exists():
        return False
    model, data = config.models[job.model], config.datasets[job.dataset]
    if model.spec == PRECOMPUTED:
        source, layer, weights, size = PRECOMPUTED, job.layer, job.weights, data.image_size
    else:
        source = loader(model, job.weights)
        layer, weights = resolve_layer(source, job.layer), source.weights
        size = data.image_size or source.input_size
    device = str(resolve_device(config.device, mps=False))  # probes run on CPU or CUDA
    sizes = {"train": data.n_train, "test": data.n_test}
    images = {}  # the faithful protocol trains on the very images the features come from
    if config.protocol == "faithful":
        images = {split: subsample(load_dataset(data.name, split, root=data.data_root), n,
                                   SAMPLE_SEED) for split, n in sizes.items()}
    if source == PRECOMPUTED:
        feats = {split: get_features(source, layer, data.name, split, pooling=config.pooling,
                                     image_size=data.image_size, n=n, sample_seed=SAMPLE_SEED,
                                     data_root=data.data_root, cache_dir=cache_dir,
                                     progress=progress)
                 for split, n in sizes.items()}
    else:  # one pass over each split for this layer and the group's others
        layers = [layer, *(resolve_layer(source, other) for other in extract_with)]
        feats = {split: extract_layers(source, layers, data.name, split, pooling=config.pooling,
                                       image_size=data.image_size, n=n, sample_seed=SAMPLE_SEED,
                                       data_root=data.data_root, cache_dir=cache_dir,
                                       progress=progress, device=config.device,
                                       data=images.get(split))[(layer, config.pooling)]
                 for split, n in sizes.items()}
    X_train, y_train, X_test, y_test = apply_task(
        feats["train"].X, feats["train"].y, feats["test"].X, feats["test"].y,
        labels=data.labels, null=data.baseline)
    d = int(X_train.shape[1])
    check_counts(config, d, layer)
    if log:
        log(f"probing {model.label} [{weights}] {layer} on {data.display} (d={d})")
    context = {"run_id": config.run_id(), "model": model.label, "weights": weights,
               "layer": layer, "pooling": config.pooling, "dataset": data.display,
               "image_size": size}
    if config.protocol == "faithful":
        bank = FaithfulProtocol(faithful_bank(config, data, source, layer, device, progress),
                                images["train"], images["test"])
    else:
        bank = ProbeBank(l2_grid=list(config.probe.l2_grid), max_steps=config.probe.max_steps,
                         tol=config.probe.tol, patience=config.probe.patience,
                         device=device, keep_predictions=True, progress=progress)
    res = analyze_layer(
        X_train, y_train, X_test, y_test, selectors=config.selectors,
        fractions=config.fractions or (), counts=config.counts, seeds=config.seeds,
        deltas=config.deltas, val_fraction=config.probe.val_fraction, context=context,
        bank=bank, progress=progress, memory_budget_gb=config.memory_budget_gb,
    )
    timings = res.results[PROBE_KEYS + TIMING_COLUMNS]
    results = res.results.drop(columns=TIMING_COLUMNS)
    write_part(timings, Path(out) / "timings", job.id)
    write_part(res.summary, Path(out) / "summary", job.id)
    write_part(results, Path(out) / "results", job.id)  # last: its presence = job complete
    return True


def faithful_bank(config: ExperimentConfig, dataset: DatasetConfig, model: Any, layer: str,
                  device: str, progress: bool = False) -> FaithfulBank:
    """The :class:`FaithfulBank` of a job: the config's ``faithful`` settings, the weight decay
    of ``dataset`` as the paper sets it unless the config gives one; its families, images and
    train/validation split come from :func:`analyze_layer` (through :class:`FaithfulProtocol`)."""
    f = config.faithful
    weight_decay = f.weight_decay if f.weight_decay is not None else \
        paper_weight_decay(dataset.name)
    return FaithfulBank(
        model, layer, pooling=config.pooling, image_size=dataset.image_size,
        epochs=f.epochs, step_size=f.step_size, gamma=f.gamma, batch_size=f.batch_size, lr=f.lr,
        momentum=f.momentum, weight_decay=weight_decay, device=device, random_state=0,
        progress=progress)


def read_job_parts(out: str | os.PathLike, job: Job) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results, summary) parts of a finished job."""
    return (pd.read_parquet(part_path(out, "results", job.id)),
            pd.read_parquet(part_path(out, "summary", job.id)))
