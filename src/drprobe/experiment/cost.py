"""A rough cost model of a plan, for ``drprobe run --dry-run`` (:mod:`~drprobe.experiment.dryrun`):
images to extract, probes to train and an estimated time. Nothing is loaded; the sizes of a
job's task come from the config, else from tables (:func:`task_sizes`)."""

from __future__ import annotations

from typing import Any, NamedTuple

from drprobe.analysis.tasks import resolve_grouping
from drprobe.experiment.config import DatasetConfig, ExperimentConfig
from drprobe.experiment.plan import Job
from drprobe.features import PRECOMPUTED
from drprobe.selectors import is_seeded
from drprobe.selectors.family import probe_fractions

__all__ = ["CLASS_COUNTS", "SPLIT_SIZES", "TaskSizes", "estimate_cost", "faithful_streams",
           "task_sizes"]


#: Whole-split sizes (train, test) of the fixed-name datasets, for estimates only.
SPLIT_SIZES = {"fashion-mnist": (60_000, 10_000), "mnist": (8_000, 2_000),
               "digits": (1_258, 539), "cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000)}
#: Classes of the fixed-name datasets, for estimates only (10 when unknown).
CLASS_COUNTS = {"fashion-mnist": 10, "mnist": 10, "digits": 10, "cifar10": 10, "cifar100": 100}
#: Rough forward cost in GFLOPs per 224-px image (ImageNet-style nets), for estimates only.
GFLOPS = {"mobilenet_v2": 0.3, "efficientnet_lite0": 0.4, "resnet18": 1.8, "resnet50": 4.1,
          "resnet50_blurpool": 4.1, "wide_resnet50_2": 11.4, "wide_resnet50_4": 36.0,
          "vgg16_bn": 15.5, "vit_small_patch16_224": 4.6, "vit_small_patch32_224": 1.1}
SECONDS_PER_GFLOP = 0.2  # one image on 2 CPU cores (MobileNetV2 and EfficientNet-Lite0)
PROBE_SECONDS = 6e-6  # per (probe x L2 value x training example), full batch on 2 CPU cores


class TaskSizes(NamedTuple):
    """A job's task for estimates: split sizes (None when unknown) and classes."""

    n_train: int | None
    n_test: int | None
    n_classes: int


def task_sizes(data: DatasetConfig) -> TaskSizes:
    """The sizes a job on ``data`` probes, for estimates: the configured subsample sizes, else
    the whole splits of :data:`SPLIT_SIZES`; the groups of the config's label grouping, else
    :data:`CLASS_COUNTS`. Nothing is loaded."""
    whole = SPLIT_SIZES.get(data.name)
    n_train, n_test = (given or (whole[i] if whole else None)
                       for i, given in enumerate((data.n_train, data.n_test)))
    n_classes = (len(set(resolve_grouping(data.labels).values())) if data.labels is not None
                 else CLASS_COUNTS.get(data.name, 10))
    return TaskSizes(n_train, n_test, n_classes)


def _probes_per_job(config: ExperimentConfig) -> int:
    # the same sizes as the run (paper grid by default, the full layer always), before d dedupes
    sizes = len(probe_fractions(config.fractions, config.counts)) + len(config.counts or ())
    seeded = sum(len(config.seeds) if is_seeded(s) else 1 for s in config.selectors)
    return seeded * sizes


def faithful_streams(config: ExperimentConfig) -> int:
    """Training runs per faithful job: one per probe seed (unseeded selectors share seed 0)."""
    return len({s for sel in config.selectors for s in (config.seeds if is_seeded(sel) else [0])})


def estimate_cost(config: ExperimentConfig, jobs: list[Job]) -> dict[str, Any]:
    """Images to extract per (model, weights, dataset), probes to train and a rough time.

    Nothing is loaded: sizes come from :func:`task_sizes` (None when unknown).
    """
    rows, images_total, seconds = [], 0, 0.0
    groups: dict[tuple[int, str, int], int] = {}
    for job in jobs:
        key = (job.model, job.weights, job.dataset)
        groups[key] = groups.get(key, 0) + 1
    for (mi, weights, di), n_layers in groups.items():
        model, data = config.models[mi], config.datasets[di]
        n = task_sizes(data)
        images = (None if n.n_train is None or n.n_test is None
                  else n_layers * (n.n_train + n.n_test))
        size = data.image_size or 224
        gflops = GFLOPS.get(model.spec.removeprefix("builtin:"), 4.0) * (size / 224) ** 2
        if images is not None and model.spec != PRECOMPUTED:
            images_total += images
            seconds += images * gflops * SECONDS_PER_GFLOP
        rows.append({"model": model.label, "weights": weights, "dataset": data.display,
                     "layers": n_layers, "images": images, "image_size": data.image_size})
    per_job = _probes_per_job(config)
    streams = faithful_streams(config)
    for job in jobs:
        data = config.datasets[job.dataset]
        n_train = task_sizes(data).n_train or 10_000
        if config.protocol == "faithful":  # per seed and epoch: each image through the net
            spec = config.models[job.model].spec.removeprefix("builtin:")
            gflops = GFLOPS.get(spec, 4.0) * ((data.image_size or 224) / 224) ** 2
            seconds += streams * config.faithful.epochs * n_train * gflops * SECONDS_PER_GFLOP
        else:
            seconds += per_job * len(config.probe.l2_grid) * n_train * PROBE_SECONDS
    return {"jobs": len(jobs), "extraction": rows, "images": images_total,
            "probes": per_job * len(jobs), "l2_values": len(config.probe.l2_grid),
            "seconds": seconds}
