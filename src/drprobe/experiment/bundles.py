"""Loading the networks of an experiment's models: one function, and a one-slot store that keeps
the last loaded network (loading another drops the one held, so one is in memory at a time)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drprobe.experiment.config import ExperimentConfig, ModelConfig

__all__ = ["BundleLoader", "Bundles", "load_bundle"]

BundleLoader = Callable[[ModelConfig, str], Any]


def load_bundle(model: ModelConfig, weights: str) -> Any:
    """Load the network of ``model`` for ``weights`` (``pretrained`` uses ``checkpoint`` if set)."""
    from drprobe.sources.models import load_model

    if weights == "pretrained" and model.checkpoint:
        return load_model(model.spec, "checkpoint", checkpoint=model.checkpoint,
                          checkpoint_format=model.format, trust_checkpoint=model.trust_checkpoint)
    return load_model(model.spec, weights, model.init_seed)


class Bundles:
    """The loaded networks, one at a time (loading another drops the one held)."""

    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config
        self.key: tuple[int, str] | None = None
        self.bundle: object = None

    def get(self, model_index: int, weights: str) -> object:
        if self.key != (model_index, weights):
            self.clear()  # free the old one before loading
            self.bundle = load_bundle(self.config.models[model_index], weights)
            self.key = (model_index, weights)
        return self.bundle

    def clear(self) -> None:
        self.key, self.bundle = None, None

    def loader(self, model, weights: str) -> object:
        """A :func:`~drprobe.experiment.job_runner.run_job` loader backed by this store."""
        return self.get(self.config.models.index(model), weights)
