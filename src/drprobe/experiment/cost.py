"""A rough cost model of a plan, for ``drprobe run --dry-run``: images to extract, probes to
train and an estimated time. Nothing is loaded; sizes of whole splits come from tables."""

from __future__ import annotations

from typing import Any

from drprobe.experiment.config import ExperimentConfig
from drprobe.experiment.plan import Job
from drprobe.features import PRECOMPUTED
from drprobe.selectors import is_seeded

__all__ = ["estimate_cost", "format_plan"]


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
    sizes = len(config.counts or config.fractions or range(15)) + 1  # + the full layer
    seeded = sum(len(config.seeds) if is_seeded(s) else 1 for s in config.selectors)
    return seeded * sizes


def _faithful_streams(config: ExperimentConfig) -> int:
    """Training runs per faithful job: one per probe seed (unseeded selectors share seed 0)."""
    return len({s for sel in config.selectors for s in (config.seeds if is_seeded(sel) else [0])})


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
    streams = _faithful_streams(config)
    for job in jobs:
        data = config.datasets[job.dataset]
        n_train = data.n_train or SPLIT_SIZES.get(data.name, (10_000,))[0]
        if config.protocol == "faithful":  # per seed and epoch: each image through the net
            spec = config.models[job.model].spec.removeprefix("builtin:")
            gflops = GFLOPS.get(spec, 4.0) * ((data.image_size or 224) / 224) ** 2
            seconds += streams * config.faithful.epochs * n_train * gflops * SECONDS_PER_GFLOP
        else:
            seconds += per_job * len(config.probe.l2_grid) * n_train * PROBE_SECONDS
    return {"jobs": len(jobs), "extraction": rows, "images": images_total,
            "probes": per_job * len(jobs), "l2_values": len(config.probe.l2_grid),
            "seconds": seconds}


def format_plan(config: ExperimentConfig, jobs: list[Job], done: set[str] = frozenset(),
                widths: bool = False) -> str:
    """The dry-run listing: jobs (marked done when their results part exists) and the cost;
    with ``widths``, each job's layer width and memory plan (builds each model once, random
    weights: :func:`~drprobe.experiment.widths.job_plans`)."""
    cost = estimate_cost(config, jobs)
    lines = [(f"experiment {config.name!r}: {len(jobs)} jobs "
             f"({len(done)} done), protocol {config.protocol}")]
    from drprobe.experiment.widths import job_plans

    plans = job_plans(config, jobs) if widths else {}
    lines += [f"  {'done' if j.id in done else 'todo'}  {j.id}  {plans.get(j.id, '')}".rstrip()
              for j in jobs]
    lines.append("images to extract (train + test, per layer):")
    for r in cost["extraction"]:
        images = "all of both splits (size unknown)" if r["images"] is None else f"{r['images']:,}"
        lines.append(f"  {r['model']} [{r['weights']}] on {r['dataset']}: {r['layers']} layer(s),"
                     f" {images} images at {r['image_size'] or 'native'} px")
    if config.protocol == "faithful":
        lines.append(f"heads to train: {cost['probes']:,} (SGD through the network, "
                     f"{config.faithful.epochs} epochs of augmented images per seed and job, "
                     f"{_faithful_streams(config)} seed(s))")
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
