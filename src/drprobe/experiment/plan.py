"""An experiment's plan: the config's grid as a list of :class:`Job`.

A job is one (model, weights, dataset, layer) with all of the config's selectors x fractions
(or counts) x seeds. Its id is readable and filesystem-safe, e.g.
``mobilenet_v2-pretrained-digits-features.14``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from drprobe.errors import ConfigError
from drprobe.experiment.config import ExperimentConfig, ModelConfig

__all__ = ["Job", "model_slug", "plan_jobs"]

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
