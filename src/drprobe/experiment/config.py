"""Experiment configs: a YAML file (or dict) -> a validated :class:`ExperimentConfig`.

An experiment is a grid: models (each with its weights variants) x datasets x layers, every job
probing the config's selectors x fractions (or counts) x seeds. Every field is checked before any
work: unknown fields are refused, names (selectors, model specs, dataset specs, poolings) are
looked up in their registries without loading weights or touching the network, and each problem
is reported on one line naming the file, the field path and what would be valid::

    offline.yaml: datasets[1].n_train: must be a positive integer, got -5

Paths in a config (``checkpoint``, ``data_root``, dataset paths) are taken relative to the
working directory, as on the command line.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from drprobe.analysis.tasks import resolve_grouping
from drprobe.devices import check_device
from drprobe.errors import ConfigError, DrprobeError
from drprobe.experiment.patterns import expand_model_patterns
from drprobe.features import PRECOMPUTED
from drprobe.files import read_yaml
from drprobe.metrics.redundancy import DEFAULT_DELTAS
from drprobe.probes import faithful_settings as fs
from drprobe.probes.bank import DEFAULT_L2_GRID, DEFAULT_TOL
from drprobe.selectors import DEFAULT_SEEDS
from drprobe.selectors.family import check_fraction
from drprobe.validation import checked_by, validate
from drprobe.wide.memory import budget_bytes

__all__ = ["DatasetConfig", "ExperimentConfig", "ModelConfig", "ProbeConfig", "Resources",
           "load_config", "parse_config"]

PositiveInt = Annotated[int, Field(gt=0, strict=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _unique(values: list, what: str, hint: str = "") -> list:
    dup = [v for i, v in enumerate(values) if v in values[:i]]
    if dup:
        raise ValueError(f"{what} {dup[0]!r} is listed twice{hint}")
    return values


def _in_unit(value: float, closed: bool) -> float:
    if not (0 < value < 1 or (closed and value == 1)):
        raise ValueError(f"must be in (0, 1{']' if closed else ')'}, got {value!r}")
    return value


#: A fraction in (0, 1] (deltas) and one in (0, 1) (validation share).
UnitFraction = Annotated[float, AfterValidator(lambda v: _in_unit(v, True))]
OpenFraction = Annotated[float, AfterValidator(lambda v: _in_unit(v, False))]
#: A fraction of a layer's neurons, checked by the selectors' own check.
NeuronFraction = Annotated[float, checked_by(check_fraction)]


class ModelConfig(_Strict):
    """One network: its spec, which weights to probe and, optionally, a checkpoint file.

    ``weights``: ``pretrained`` (the packaged weights, or ``checkpoint`` when given) and/or
    ``random`` (the seeded random-init twin, seed ``init_seed``). ``name``: the label used in
    results and job ids (default: the spec). ``layers``: overrides the experiment's layers.
    """

    spec: str
    weights: list[Literal["pretrained", "random"]] = Field(
        default_factory=lambda: ["pretrained", "random"], min_length=1)
    init_seed: int = Field(0, strict=True)
    checkpoint: str | None = None
    format: str = "auto"
    trust_checkpoint: bool = False
    name: str | None = Field(None, min_length=1)
    layers: list[Annotated[str, Field(min_length=1)]] | None = Field(None, min_length=1)

    @field_validator("spec")
    @classmethod
    def _known_spec(cls, spec: str) -> str:
        if spec == PRECOMPUTED:
            return spec
        from drprobe.sources import models, registry

        canonical = registry.canonical_spec(spec)
        if not registry.known_spec(canonical):
            valid = sorted(models.available_models()) + [f"{p}:NAME" for p in
                                                        registry.registered_prefixes()]
            raise ValueError(f"unknown model {spec!r}; valid choices: {', '.join(valid)}, "
                             f"{PRECOMPUTED} (with a features:PATH dataset)")
        return canonical

    @field_validator("weights")
    @classmethod
    def _distinct_weights(cls, weights: list[str]) -> list[str]:
        return _unique(weights, "weights")

    @model_validator(mode="after")
    def _precomputed_has_one_variant(self) -> ModelConfig:
        if self.spec == PRECOMPUTED and self.weights != ["pretrained"]:
            raise ValueError("precomputed features have no random twin; use weights: [pretrained]")
        return self

    @property
    def label(self) -> str:
        """The model's name in results: ``name`` if given, else the spec."""
        return self.name or self.spec


class DatasetConfig(_Strict):
    """One downstream task: a dataset spec (``drprobe datasets``, ``PREFIX:PATH``) and its sizes.

    ``n_train`` / ``n_test``: stratified subsamples (None = the whole split; 10% of train, by
    default, becomes validation). ``image_size``: input side in pixels (None = the model's).
    ``max_tokens``: a text model's token limit per text (longer texts are cut; None = the
    model's own), for ``text:`` datasets only; it travels as ``image_size`` does (which still
    works for text models, but ``max_tokens`` is the setting to use), so both may be given only
    when equal.
    ``label``: its name in results and job ids (default: the spec, plus ``+GROUPING`` /
    ``+BASELINE`` when those are set). ``labels``: regroup the classes, by name (``parity``, ``ge5``,
    ``pairs``, ``fashion3``) or as ``{class: group}``; ``baseline``: a null baseline (``gaussian``
    features or ``shuffled_labels``); see :mod:`drprobe.analysis.tasks`.
    """

    name: str
    n_train: PositiveInt | None = None
    n_test: PositiveInt | None = None
    image_size: PositiveInt | None = None
    max_tokens: PositiveInt | None = None
    data_root: str | None = None
    label: str | None = Field(None, min_length=1)
    labels: Annotated[str | dict[int, int], checked_by(resolve_grouping)] | None = None
    baseline: Literal["gaussian", "shuffled_labels"] | None = None

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        from drprobe.sources import datasets

        try:
            key, path, _options = datasets.parse_spec(name)
        except DrprobeError as err:
            raise ValueError(str(err)) from None
        known = (key in datasets.DATASETS if path is None
                 else key in datasets.PREFIXES or key == datasets.PRECOMPUTED_PREFIX)
        if not known:
            forms = ", ".join(datasets.PREFIX_FORMS)
            raise ValueError(f"unknown dataset {name!r}; valid choices: "
                             f"{', '.join(datasets.available_datasets())}; or {forms}")
        return name

    @model_validator(mode="after")
    def _max_tokens_is_the_token_length(self) -> DatasetConfig:
        if self.max_tokens is None:
            return self
        if not self.name.startswith("text:"):
            raise ValueError(f"max_tokens sets a text model's token limit, and dataset "
                             f"{self.name!r} holds images; valid: image_size, or a text:PATH "
                             "dataset")
        if self.image_size is not None and self.image_size != self.max_tokens:
            raise ValueError(f"max_tokens {self.max_tokens} and image_size {self.image_size} "
                             "disagree; give max_tokens alone")
        return self.model_copy(update={"image_size": self.max_tokens})

    @property
    def display(self) -> str:
        """The dataset's name in results: ``label`` if given, else the spec (+ grouping, null)."""
        if self.label:
            return self.label
        grouping = self.labels if isinstance(self.labels, str) or self.labels is None else "grouped"
        return "+".join([self.name] + [x for x in (grouping, self.baseline) if x])


class ProbeConfig(_Strict):
    """Probe-bank settings (:class:`drprobe.probes.ProbeBank`) and the validation split;
    ``tol`` defaults to the bank's own :data:`~drprobe.probes.bank.DEFAULT_TOL`."""

    tol: float = Field(DEFAULT_TOL, gt=0)
    max_steps: PositiveInt = 300
    l2_grid: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: list(DEFAULT_L2_GRID), min_length=1)
    patience: PositiveInt | None = None
    val_fraction: OpenFraction = 0.1


class FaithfulConfig(_Strict):
    """Settings of the ``faithful`` protocol (:class:`drprobe.probes.faithful.FaithfulBank`):
    SGD with StepLR through the frozen backbone on augmented images, the paper's scripts'
    defaults (:mod:`drprobe.probes.faithful_settings`). ``weight_decay`` None: by downstream
    dataset as the paper sets it (5e-4 CIFAR-10/100 and Places365, 1e-4 the others)."""

    epochs: PositiveInt = fs.EPOCHS
    step_size: PositiveInt = fs.STEP_SIZE
    gamma: float = Field(fs.GAMMA, gt=0)
    batch_size: PositiveInt = fs.BATCH_SIZE
    lr: float = Field(fs.LR, gt=0)
    momentum: float = Field(fs.MOMENTUM, ge=0)
    weight_decay: float | None = Field(None, ge=0)


class Resources(_Strict):
    """What one job asks of a Ray cluster (ignored by the local executor)."""

    cpus: float = Field(1.0, gt=0)
    gpus: float = Field(0.0, ge=0)


class ExperimentConfig(_Strict):
    """A whole experiment. See ``configs/`` for examples and the module docstring for rules.

    ``device``: where features are extracted and probes trained (``cpu``; ``auto`` picks CUDA
    when a job's machine has it, else MPS for extraction; :func:`drprobe.devices.check_device`).
    ``resources``: what one job asks of a Ray cluster.
    ``memory_budget_gb``: the memory plan's budget per job in GiB (default a third of the
    machine's memory; :func:`drprobe.wide.memory.budget_bytes`); it picks exact paths, so it
    is not part of the fingerprint.
    """

    name: Annotated[str, Field(min_length=1)]
    description: str = ""
    models: list[ModelConfig] = Field(min_length=1)
    layers: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=lambda: ["penultimate"], min_length=1)
    pooling: str = "avg"
    datasets: list[DatasetConfig] = Field(min_length=1)
    selectors: list[str] = Field(default_factory=lambda: ["random"], min_length=1)
    fractions: list[NeuronFraction] | None = Field(None, min_length=1)
    counts: list[PositiveInt] | None = Field(None, min_length=1)
    seeds: list[Annotated[int, Field(strict=True)]] = Field(
        default_factory=lambda: list(DEFAULT_SEEDS), min_length=1)
    protocol: Literal["cached", "faithful"] = "cached"
    deltas: list[UnitFraction] = Field(
        default_factory=lambda: list(DEFAULT_DELTAS), min_length=1)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    faithful: FaithfulConfig = Field(default_factory=FaithfulConfig)
    device: Annotated[str, checked_by(lambda d: check_device(d, mps=False))] = "cpu"
    resources: Resources = Field(default_factory=Resources)
    memory_budget_gb: Annotated[float, checked_by(budget_bytes)] | None = None

    @field_validator("pooling")
    @classmethod
    def _known_pooling(cls, pooling: str) -> str:
        from drprobe.sources.layers import POOLINGS, TOKEN_POOLINGS

        valid = sorted(set(POOLINGS) | set(TOKEN_POOLINGS))
        if pooling not in valid:
            raise ValueError(f"unknown pooling {pooling!r}; valid choices: {', '.join(valid)}")
        return pooling

    @field_validator("selectors")
    @classmethod
    def _known_selectors(cls, selectors: list[str]) -> list[str]:
        from drprobe.selectors import SELECTORS

        for s in selectors:
            if s not in SELECTORS:
                raise ValueError(f"unknown selector {s!r}; valid choices: "
                                 f"{', '.join(sorted(SELECTORS))}")
        return _unique(selectors, "selector")

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        return _unique(seeds, "seed")

    @model_validator(mode="after")
    def _grid_is_well_formed(self) -> ExperimentConfig:
        if self.fractions is not None and self.counts is not None:
            raise ValueError("give fractions or counts, not both")
        _unique([m.label for m in self.models], "model",
                "; give each a distinct `name`")
        _unique([d.display for d in self.datasets], "dataset",
                "; give each a distinct `label`")
        if self.protocol == "faithful" and any(d.labels or d.baseline for d in self.datasets):
            raise ValueError("dataset labels/baseline act on cached features; protocol 'faithful' "
                             "trains on images: valid with them: protocol cached")
        tokens = [d.name for d in self.datasets if d.max_tokens is not None]
        images = [m.spec for m in self.models if not m.spec.startswith("hf:")]
        if tokens and images:  # only hf: specs can be text models
            raise ValueError(f"dataset {tokens[0]!r} sets max_tokens, a text model's token "
                             f"limit, and model {images[0]!r} is an image model; valid with "
                             "max_tokens: hf: text models")
        precomputed = [m.spec == PRECOMPUTED for m in self.models]
        features = [d.name.startswith("features:") for d in self.datasets]
        if (any(precomputed) or any(features)) and not (all(precomputed) and all(features)):
            raise ValueError("model 'precomputed' goes with features:PATH datasets only, "
                             "and features:PATH datasets with model 'precomputed' only")
        return self

    def layers_of(self, model: ModelConfig) -> list[str]:
        """The layers probed on ``model`` (its own list, else the experiment's)."""
        return list(model.layers or self.layers)

    def canonical(self) -> dict[str, Any]:
        """The resolved config as plain data (every default filled in)."""
        return self.model_dump(mode="json")

    def fingerprint(self) -> dict[str, Any]:
        """What decides the results: the resolved config without ``resources``/``description``."""
        data = self.canonical()
        data.pop("resources")
        data.pop("description")
        data.pop("memory_budget_gb", None)
        for dataset in data["datasets"]:  # unset, it leaves the run ids of older configs alone
            if dataset.get("max_tokens") is None:
                dataset.pop("max_tokens", None)
        return data

    def run_id(self) -> str:
        """A short content hash of :meth:`fingerprint`: same grid, same id."""
        import hashlib

        blob = json.dumps(self.fingerprint(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def to_yaml(self) -> str:
        """The resolved config as YAML (what ``out/config.yaml`` holds)."""
        return yaml.safe_dump(self.canonical(), sort_keys=False)


def parse_config(data: Any, source: str = "config") -> ExperimentConfig:
    """Validate plain data (as read from YAML) into an :class:`ExperimentConfig`.

    Model entries with ``variants`` / ``seeds`` are expanded first
    (:mod:`drprobe.experiment.patterns`).

    Raises:
        ConfigError: one line ``SOURCE: FIELD.PATH: problem`` for the first problem found.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: an experiment config must be a mapping of fields "
                          f"(name, models, datasets, ...), got {type(data).__name__}")
    return validate(ExperimentConfig, expand_model_patterns(data, source), source)


def load_config(path: str | os.PathLike) -> ExperimentConfig:
    """Read and validate a YAML experiment config (see :func:`parse_config`).

    Raises:
        ConfigError: missing file, malformed YAML (file, line and column) or an invalid field.
    """
    return parse_config(read_yaml(path), str(path))
