"""An experiment's jobs: the plan (config -> jobs, cost estimate) and running one job.

A job is one (model, weights, dataset, layer) with all of the config's selectors x fractions
(or counts) x seeds. Its id is readable and filesystem-safe, e.g.
``mobilenet_v2-pretrained-digits-features.14``. Running a job writes three parquet parts under
the run folder (:mod:`drprobe.experiment.store`): ``timings/``, ``summary/`` and, last,
``results/`` -- so a results part means the job is complete.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from drprobe.errors import InvalidValueError
from drprobe.experiment.config import PRECOMPUTED, ExperimentConfig, ModelConfig
from drprobe.experiment.store import part_path, write_part

__all__ = ["KEY_COLUMNS", "TIMING_COLUMNS", "Job", "estimate_cost", "format_plan", "plan_jobs",
           "run_job"]

#: Columns that name one probe; the timings parts carry them beside the seconds.
KEY_COLUMNS = ["model", "weights", "layer", "dataset", "selector", "seed", "k"]
#: Wall-clock columns: kept out of the results parts so those are identical between runs.
TIMING_COLUMNS = ["fit_seconds", "select_seconds"]
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Job:
    """One (model, weights, dataset, layer) of an experiment; ``model``/``dataset`` index the
    config's lists."""

    id: str
    model: int
    weights: str
    dataset: int
    layer: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _safe(text: str) -> str:
    """A filesystem-safe form of ``text`` (runs of other characters become ``_``)."""
    return _UNSAFE.sub("_", text).strip("_.") or "_"


def model_slug(model: ModelConfig) -> str:
    """Short name of a model in job ids: its ``name``, else the spec without ``builtin:``."""
    return _safe(model.name or model.spec.removeprefix("builtin:"))


def plan_jobs(config: ExperimentConfig) -> list[Job]:
    """Every job of ``config``, ordered model, weights, dataset, layer (the tables' order).

    Raises:
        InvalidValueError: two jobs would get the same id (give models/datasets distinct names).
    """
    from drprobe.experiment.config import ConfigError

    jobs: list[Job] = []
    seen: dict[str, Job] = {}
    for mi, model in enumerate(config.models):
        for weights in model.weights:
            for di, data in enumerate(config.datasets):
                for layer in config.layers_of(model):
                    parts = (model_slug(model), weights, _safe(data.display), _safe(layer))
                    job = Job("-".join(parts), mi, weights, di, layer)
                    if job.id in seen:
                        raise ConfigError(
                            f"jobs {seen[job.id]} and {job} would share the id {job.id!r}; "
                            "give models a distinct `name` or datasets a distinct `label`")
                    seen[job.id] = job
                    jobs.append(job)
    return jobs


# ----------------------------------------------------------------------------- cost estimate

#: Whole-split sizes (train, test) of the fixed-name datasets, for estimates only.
SPLIT_SIZES = {"fashion-mnist": (60_000, 10_000), "mnist": (8_000, 2_000),
               "digits": (1_258, 539), "cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000)}
#: Rough forward cost in GFLOPs per 224-px image (ImageNet-style nets), for estimates only.
GFLOPS = {"mobilenet_v2": 0.3, "efficientnet_lite0": 0.4, "resnet18": 1.8, "resnet50": 4.1,
          "resnet50_blurpool": 4.1, "wide_resnet50_2": 11.4, "wide_resnet50_4": 36.0,
          "vgg16_bn": 15.5, "vit_small_patch16_224": 4.6, "vit_small_patch32_224": 1.1}
SECONDS_PER_GFLOP = 0.2  # one image on 2 CPU cores (MobileNetV2 and EfficientNet-Lite0)
PROBE_SECONDS = 6e-6  # per (probe x L2 value x training example), full batch on 2 CPU cores


def _probes_per_job(config: ExperimentConfig) -> int:
    from drprobe.experiment.analysis import DETERMINISTIC

    sizes = len(config.counts or config.fractions or range(15)) + 1  # + the full layer
    seeded = sum(1 if s in DETERMINISTIC else len(config.seeds) for s in config.selectors)
    return seeded * sizes


def estimate_cost(config: ExperimentConfig, jobs: list[Job]) -> dict[str, Any]:
    """Images to extract per (model, weights, dataset), probes to train and a rough time.

    Nothing is loaded: sizes of whole splits come from :data:`SPLIT_SIZES` (None when unknown).
    """
    rows, images_total, seconds = [], 0, 0.0
    groups: dict[tuple[int, str, int], int] = {}
    for job in jobs:
        key = (job.model, job.weights, job.dataset)
        groups[key] = groups.get(key, 0) + 1
    for (mi, weights, di), n_layers in groups.items():
        model, data = config.models[mi], config.datasets[di]
        whole = SPLIT_SIZES.get(data.name)
        n = [given or (whole[i] if whole else None) for i, given in
             enumerate((data.n_train, data.n_test))]
        images = None if None in n else n_layers * (n[0] + n[1])
        size = data.image_size or 224
        gflops = GFLOPS.get(model.spec.removeprefix("builtin:"), 4.0) * (size / 224) ** 2
        if images is not None and model.spec != PRECOMPUTED:
            images_total += images
            seconds += images * gflops * SECONDS_PER_GFLOP
        rows.append({"model": model.label, "weights": weights, "dataset": data.display,
                     "layers": n_layers, "images": images, "image_size": data.image_size})
    per_job = _probes_per_job(config)
    for job in jobs:
        data = config.datasets[job.dataset]
        n_train = data.n_train or SPLIT_SIZES.get(data.name, (10_000,))[0]
        if config.protocol == "faithful":  # every epoch: each training image through the net
            spec = config.models[job.model].spec.removeprefix("builtin:")
            gflops = GFLOPS.get(spec, 4.0) * ((data.image_size or 224) / 224) ** 2
            seconds += config.faithful.epochs * n_train * gflops * SECONDS_PER_GFLOP
        else:
            seconds += per_job * len(config.probe.l2_grid) * n_train * PROBE_SECONDS
    return {"jobs": len(jobs), "extraction": rows, "images": images_total,
            "probes": per_job * len(jobs), "l2_values": len(config.probe.l2_grid),
            "seconds": seconds}


def format_plan(config: ExperimentConfig, jobs: list[Job], done: set[str] = frozenset()) -> str:
    """The dry-run listing: jobs (marked done when their results part exists) and the cost."""
    cost = estimate_cost(config, jobs)
    lines = [(f"experiment {config.name!r}: {len(jobs)} jobs "
             f"({len(done)} done), protocol {config.protocol}")]
    lines += [f"  {'done' if j.id in done else 'todo'}  {j.id}" for j in jobs]
    lines.append("images to extract (train + test, per layer):")
    for r in cost["extraction"]:
        images = "all of both splits (size unknown)" if r["images"] is None else f"{r['images']:,}"
        lines.append(f"  {r['model']} [{r['weights']}] on {r['dataset']}: {r['layers']} layer(s),"
                     f" {images} images at {r['image_size'] or 'native'} px")
    if config.protocol == "faithful":
        lines.append(f"heads to train: {cost['probes']:,} (SGD through the network, "
                     f"{config.faithful.epochs} epochs of augmented images per job)")
    else:
        lines.append(f"probes to train: {cost['probes']:,} "
                     f"(each over {cost['l2_values']} L2 values)")
    unknown = any(r["images"] is None for r in cost["extraction"])
    lines.append(f"rough time on 2 CPU cores: ~{_duration(cost['seconds'])}"
                 + (" (without the datasets of unknown size)" if unknown else ""))
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


# ------------------------------------------------------------------------------ one job

BundleLoader = Callable[[ModelConfig, str], Any]


def load_bundle(model: ModelConfig, weights: str) -> Any:
    """Load the network of ``model`` for ``weights`` (``pretrained`` uses ``checkpoint`` if set)."""
    from drprobe.sources.models import load_model

    if weights == "pretrained" and model.checkpoint:
        return load_model(model.spec, "checkpoint", checkpoint=model.checkpoint,
                          checkpoint_format=model.format, trust_checkpoint=model.trust_checkpoint)
    return load_model(model.spec, weights, model.init_seed)


def fractions_for(config: ExperimentConfig, d: int, layer: str = "the layer") -> list[float]:
    """The fractions probed on a d-wide layer: ``fractions``, else ``counts`` as k/d (a count
    above d is refused), else the paper's grid."""
    from drprobe.experiment.analysis import PAPER_FRACTIONS

    if config.counts is not None:
        over = [c for c in config.counts if c > d]
        if over:
            raise InvalidValueError(
                f"counts {over} exceed the width d={d} of {layer}; valid counts: 1 to {d} "
                "(or give fractions)")
        return [c / d for c in config.counts]
    return list(config.fractions or PAPER_FRACTIONS)


def probe_device(device: str) -> str:
    """The probe bank's device for a config ``device`` (``auto``: CUDA if present, else CPU)."""
    if device == "mps":
        return "cpu"  # the probe bank runs on CPU or CUDA
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class FaithfulStage:
    """The ``faithful`` protocol in :func:`analyze_layer`'s probe-bank slot: the families that
    analyze_layer built (on the clean cached features) get heads trained through the frozen
    backbone on augmented images of the same train split (same subsample, same validation
    split), and are tested on the clean test images."""

    def __init__(self, config: ExperimentConfig, bundle: object, layer: str, data: Any,
                 device: str, progress: bool) -> None:
        self.config, self.bundle, self.layer, self.data = config, bundle, layer, data
        self.device, self.progress = device, progress

    def _images(self, split: str, n: int | None) -> Any:
        from drprobe.sources.datasets import load_dataset, subsample

        return subsample(load_dataset(self.data.name, split, root=self.data.data_root), n, 0)

    def fit(self, X_train: Any, y_train: Any, X_val: Any, y_val: Any,
            families: list) -> FaithfulStage:
        from drprobe.probes.faithful import FaithfulBank

        train = self._images("train", self.data.n_train)
        f = self.config.faithful
        self.bank_ = FaithfulBank(
            self.bundle, families, self.layer, pooling=self.config.pooling,
            image_size=self.data.image_size, epochs=f.epochs, step_size=f.step_size,
            gamma=f.gamma, batch_size=f.batch_size, lr=f.lr, momentum=f.momentum,
            weight_decay=f.weight_decay, val_fraction=self.config.probe.val_fraction,
            device=self.device, random_state=0, progress=self.progress,
        ).fit(train.images, train.labels)
        return self

    def evaluate(self, X_test: Any, y_test: Any) -> list:
        test = self._images("test", self.data.n_test)
        return self.bank_.evaluate(test.images, test.labels)


def run_job(
    config: ExperimentConfig, job: Job, out: str | os.PathLike, *,
    cache_dir: str | os.PathLike | None = None, progress: bool = False,
    loader: BundleLoader = load_bundle, log: Callable[[str], None] | None = None,
    extract_with: Sequence[str] = (),
) -> bool:
    """Run ``job`` and write its parts under ``out``; skip it if its results part exists.

    ``extract_with``: more layers of the same (model, weights, dataset) whose features are
    extracted in the same pass over the data as the job's own (cache entries for later jobs).

    Returns True if the job ran, False if it was already complete.
    """
    from drprobe.experiment.analysis import analyze_layer
    from drprobe.features import extract_layers, get_features
    from drprobe.probes import ProbeBank
    from drprobe.sources.layers import resolve_layer

    if part_path(out, "results", job.id).exists():
        return False
    model, data = config.models[job.model], config.datasets[job.dataset]
    if model.spec == PRECOMPUTED:
        source, layer, weights, size = PRECOMPUTED, job.layer, job.weights, data.image_size
    else:
        source = loader(model, job.weights)
        layer, weights = resolve_layer(source, job.layer), source.weights
        size = data.image_size or source.input_size
    device = probe_device(config.device)
    splits = (("train", data.n_train), ("test", data.n_test))
    if source == PRECOMPUTED:
        feats = {split: get_features(source, layer, data.name, split, pooling=config.pooling,
                                     image_size=data.image_size, n=n, data_root=data.data_root,
                                     cache_dir=cache_dir, progress=progress)
                 for split, n in splits}
    else:  # one pass over each split for this layer and the group's others
        layers = [layer, *(resolve_layer(source, other) for other in extract_with)]
        feats = {split: extract_layers(source, layers, data.name, split, pooling=config.pooling,
                                       image_size=data.image_size, n=n,
                                       data_root=data.data_root, cache_dir=cache_dir,
                                       progress=progress, device=config.device
                                       )[(layer, config.pooling)]
                 for split, n in splits}
    d = int(feats["train"].X.shape[1])
    if log:
        log(f"probing {model.label} [{weights}] {layer} on {data.display} (d={d})")
    context = {"run_id": config.run_id(), "model": model.label, "weights": weights,
               "layer": layer, "pooling": config.pooling, "dataset": data.display,
               "image_size": size}
    if config.protocol == "faithful":
        bank = FaithfulStage(config, source, layer, data, device, progress)
    else:
        bank = ProbeBank(l2_grid=list(config.probe.l2_grid), max_steps=config.probe.max_steps,
                         tol=config.probe.tol, patience=config.probe.patience,
                         device=device, keep_predictions=True, progress=progress)
    res = analyze_layer(
        feats["train"].X, feats["train"].y, feats["test"].X, feats["test"].y,
        selectors=config.selectors, fractions=fractions_for(config, d, layer), seeds=config.seeds,
        deltas=config.deltas, val_fraction=config.probe.val_fraction, context=context,
        bank=bank, progress=progress, protocol=config.protocol,
    )
    timings = res.results[KEY_COLUMNS + TIMING_COLUMNS]
    results = res.results.drop(columns=TIMING_COLUMNS)
    write_part(timings, Path(out) / "timings", job.id)
    write_part(res.summary, Path(out) / "summary", job.id)
    write_part(results, Path(out) / "results", job.id)  # last: its presence = job complete
    return True


def read_job_parts(out: str | os.PathLike, job: Job) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results, summary) parts of a finished job."""
    return (pd.read_parquet(part_path(out, "results", job.id)),
            pd.read_parquet(part_path(out, "summary", job.id)))
