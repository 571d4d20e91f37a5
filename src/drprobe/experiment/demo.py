"""The demo as an experiment config: ``drprobe demo`` runs ``configs/quickstart.yaml`` with the
demo's options -- MobileNetV2 (ImageNet weights) and its seeded random-init twin on
Fashion-MNIST, penultimate layer and block 14."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from drprobe.probes.bank import DEFAULT_TOL
from drprobe.selectors.family import DEFAULT_SEEDS

if TYPE_CHECKING:
    from drprobe.experiment.config import ExperimentConfig

__all__ = ["DEMO_FRACTIONS", "demo_config"]

#: The demo's fraction grid (coarser than the paper's: the demo's layers are narrow).
DEMO_FRACTIONS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0)


def demo_config(
    model: str = "builtin:mobilenet_v2",
    layers: Sequence[str] = ("penultimate", "features.14"),
    dataset: str = "fashion-mnist",
    n_train: int | None = 10_000,
    n_test: int | None = 2_000,
    image_size: int | None = 64,
    fractions: Sequence[float] = DEMO_FRACTIONS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    twin: bool = True,
    checkpoint: str | None = None,
    data_root: str | None = None,
    probe_tol: float = DEFAULT_TOL,
) -> ExperimentConfig:
    """The demo's experiment: defaults equal ``configs/quickstart.yaml``.

    ``twin`` adds the seeded random-init copy (``weights: [pretrained, random]``);
    ``checkpoint`` replaces the pretrained weights. ``probe_tol``: the probes' stopping
    tolerance on max |gradient| (default the bank's :data:`~drprobe.probes.bank.DEFAULT_TOL`,
    1e-3, what ``configs/quickstart.yaml`` sets).

    Raises:
        ConfigError: an invalid option, named as its config field.
    """
    from drprobe.experiment.config import parse_config

    return parse_config({
        "name": "quickstart",
        "models": [{"spec": model, "weights": ["pretrained", "random"] if twin else ["pretrained"],
                    "checkpoint": checkpoint}],
        "layers": list(layers),
        "datasets": [{"name": dataset, "n_train": n_train, "n_test": n_test,
                      "image_size": image_size, "data_root": data_root}],
        "selectors": ["random"],
        "fractions": list(fractions),
        "seeds": list(seeds),
        "probe": {"tol": probe_tol},
    }, source="demo options")
