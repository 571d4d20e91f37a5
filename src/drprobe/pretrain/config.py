"""Pretraining configs: a YAML file -> a validated :class:`PretrainConfig`.

The file gives a base recipe (data, architecture, epochs, batch size, optimiser, seeds) and a
list of named ``variants``, each overriding parts of the base: the loss (``adversarial``,
``matryoshka``, ``decov``), ``dropout`` on the penultimate layer, a ``fixed_feature`` head,
the ``width`` multiplier, the pretraining-set size ``n_train``, or the whole ``arch``.
Every field is checked before any training; problems are one line naming the file and field,
as for experiment configs::

    pretrain.yaml: variants[2].adversarial.norm: must be one of 'l2', 'linf', got 'l1'

:meth:`PretrainConfig.resolved` merges a variant into the base: the result
(:class:`Recipe`) is everything that decides one trained network except its seed, and is
what each run's ``provenance.json`` records.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from drprobe.devices import check_device
from drprobe.errors import ConfigError
from drprobe.files import read_yaml
from drprobe.sources import smallnets
from drprobe.validation import checked_by, validate

__all__ = ["Adversarial", "Arch", "Data", "DeCov", "Matryoshka", "Optimizer", "PretrainConfig",
           "Recipe", "Variant", "load_pretrain_config", "parse_pretrain_config"]

PositiveInt = Annotated[int, Field(gt=0, strict=True)]
PositiveFloat = Annotated[float, Field(gt=0)]
VARIANT_NAME = r"[A-Za-z0-9][A-Za-z0-9_.+-]*"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Data(_Strict):
    """The source task: a dataset spec (``drprobe datasets``), the stratified training subset
    (``n_train``; None = the whole split; the subset of ``subset_seed``, nested across sizes),
    the test subset that measures source accuracy, and the input side in pixels."""

    dataset: str = "fashion-mnist"
    n_train: PositiveInt | None = None
    n_test: PositiveInt | None = 2000
    image_size: PositiveInt = 28
    subset_seed: int = Field(0, strict=True)
    data_root: str | None = None

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        from drprobe.sources.datasets import DATASETS, PREFIXES, parse_spec

        key, path, _ = parse_spec(name)
        if (path is None and key not in DATASETS) or (path is not None and key not in PREFIXES):
            valid = sorted(DATASETS) + [f"{p}:PATH" for p in sorted(PREFIXES)]
            raise ValueError(f"unknown dataset {name!r}; valid choices: {', '.join(valid)}")
        return name


class Arch(_Strict):
    """The network (:mod:`drprobe.sources.smallnets`): ``resnet`` (a CIFAR-stem ResNet with
    basic blocks, stage widths ``base_channels * (1, 2, 4, 8) * width``) or ``vit`` (patch
    ``patch_size``, ``embed_dim * width`` wide, ``depth`` blocks of ``num_heads`` heads)."""

    name: Literal["resnet", "vit"] = "resnet"
    width: PositiveFloat = 1.0
    base_channels: PositiveInt = smallnets.RESNET_DEFAULTS["base_channels"]
    blocks: list[PositiveInt] = Field(
        default_factory=lambda: list(smallnets.RESNET_DEFAULTS["blocks"]),
        min_length=4, max_length=4)
    patch_size: PositiveInt = smallnets.VIT_DEFAULTS["patch_size"]
    embed_dim: PositiveInt = smallnets.VIT_DEFAULTS["embed_dim"]
    depth: PositiveInt = smallnets.VIT_DEFAULTS["depth"]
    num_heads: PositiveInt = smallnets.VIT_DEFAULTS["num_heads"]
    mlp_ratio: PositiveFloat = smallnets.VIT_DEFAULTS["mlp_ratio"]

    def options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~drprobe.sources.smallnets.build_network` for the arch."""
        if self.name == "resnet":
            return {"base_channels": self.base_channels, "blocks": list(self.blocks)}
        return {"patch_size": self.patch_size, "embed_dim": self.embed_dim,
                "depth": self.depth, "num_heads": self.num_heads, "mlp_ratio": self.mlp_ratio}

    @property
    def d(self) -> int:
        """Width of the penultimate (pooled) vector."""
        return smallnets.penultimate_width(self.name, self.width, **self.options())


class Optimizer(_Strict):
    """SGD (Nesterov-free, ``momentum``) or AdamW; the learning rate follows a per-step cosine
    decay to 0 (``schedule: cosine``) or stays constant."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: PositiveFloat = 0.05
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"


class Adversarial(_Strict):
    """PGD adversarial training (Madry et al.) in [0, 1] pixel space: ``steps`` steps of size
    ``step_size`` (default 2.5 * eps / steps) inside the ``norm`` ball of radius ``eps``, from a
    random start by default, the attack run in eval mode (the robustness library's recipe); the
    network trains on the perturbed images only. Costs (steps + 1) x a clean epoch."""

    norm: Literal["l2", "linf"]
    eps: PositiveFloat
    steps: PositiveInt = 3
    step_size: PositiveFloat | None = None
    random_start: bool = True

    @property
    def alpha(self) -> float:
        """The step size actually used."""
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps


class Matryoshka(_Strict):
    """Matryoshka loss: the sum of the cross-entropies of one head per nested prefix of the
    penultimate layer; ``widths`` default 8, 16, 32, ... below d, then d (d is added if
    missing)."""

    widths: list[PositiveInt] | None = Field(None, min_length=1)


class DeCov(_Strict):
    """DeCov penalty ``alpha * 1/2 (||S||_F^2 - ||diag S||^2)``, S the batch covariance of the
    penultimate features (before dropout)."""

    alpha: PositiveFloat = 1e-4


class _Recipe(_Strict):
    """The fields a variant may override (None there = keep the base's)."""

    arch: Arch | None = None
    width: PositiveFloat | None = None
    n_train: PositiveInt | None = None
    epochs: PositiveInt | None = None
    batch_size: PositiveInt | None = None
    optimizer: Optimizer | None = None
    adversarial: Adversarial | None = None
    matryoshka: Matryoshka | None = None
    decov: DeCov | None = None
    dropout: float | None = Field(None, ge=0, lt=1)
    fixed_feature: PositiveInt | None = None


def _distinct(seeds: list[int]) -> list[int]:
    dup = [s for i, s in enumerate(seeds) if s in seeds[:i]]
    if dup:
        raise ValueError(f"seed {dup[0]} is listed twice")
    return seeds


class Variant(_Recipe):
    """One named variant of the base recipe (``name`` is its folder under the output);
    ``seeds`` replaces the grid's seeds for this variant (e.g. fewer for a secondary arm)."""

    name: str
    seeds: list[Annotated[int, Field(strict=True, ge=0)]] | None = Field(None, min_length=1)

    @field_validator("name")
    @classmethod
    def _folder_name(cls, name: str) -> str:
        if not re.fullmatch(VARIANT_NAME, name):
            raise ValueError(f"variant name {name!r} must be letters, digits and _ . + - "
                             "(it names a folder)")
        return name

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int] | None) -> list[int] | None:
        return None if seeds is None else _distinct(seeds)


class Recipe(_Strict):
    """Everything that decides one trained network except its seed (a variant merged into
    its base): what ``provenance.json`` records under ``config``."""

    name: str
    data: Data
    arch: Arch
    epochs: PositiveInt
    batch_size: PositiveInt
    optimizer: Optimizer
    adversarial: Adversarial | None = None
    matryoshka: Matryoshka | None = None
    decov: DeCov | None = None
    dropout: float = Field(0.0, ge=0, lt=1)
    fixed_feature: PositiveInt | None = None

    @model_validator(mode="after")
    def _fits_the_network(self) -> Recipe:
        d = self.arch.d
        if self.arch.name == "vit" and self.data.image_size % self.arch.patch_size:
            raise ValueError(f"image_size {self.data.image_size} is not a multiple of the ViT "
                             f"patch_size {self.arch.patch_size}")
        if self.fixed_feature is not None and self.fixed_feature > d:
            raise ValueError(f"fixed_feature k = {self.fixed_feature} exceeds the penultimate "
                             f"width d = {d}")
        if self.matryoshka is not None:
            if self.fixed_feature is not None:
                raise ValueError("matryoshka and fixed_feature cannot be combined (both set "
                                 "the head); choose one")
            big = [m for m in self.matryoshka.widths or () if m > d]
            if big:
                raise ValueError(f"matryoshka width {big[0]} exceeds the penultimate width "
                                 f"d = {d}")
        return self

    def network_args(self, n_classes: int) -> dict[str, Any]:
        """The constructor arguments of :func:`~drprobe.sources.smallnets.build_network`."""
        head, head_args = "linear", {}
        if self.fixed_feature is not None:
            head, head_args = "fixed_feature", {"k": self.fixed_feature}
        elif self.matryoshka is not None:
            d = self.arch.d
            widths = sorted(set(self.matryoshka.widths or smallnets.default_widths(d)) | {d})
            head, head_args = "matryoshka", {"widths": widths}
        return {"arch": self.arch.name, "n_classes": int(n_classes),
                "image_size": self.data.image_size, "width": self.arch.width, "head": head,
                "head_args": head_args, "dropout": self.dropout, **self.arch.options()}


class PretrainConfig(_Strict):
    """A pretraining grid: the base recipe, its variants and the seeds each is trained with.

    ``device``: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
    """

    name: Annotated[str, Field(min_length=1)] = "pretrain"
    description: str = ""
    data: Data = Field(default_factory=Data)
    arch: Arch = Field(default_factory=Arch)
    epochs: PositiveInt = 5
    batch_size: PositiveInt = 128
    optimizer: Optimizer = Field(default_factory=Optimizer)
    device: Annotated[str, checked_by(lambda d: check_device(d, mps=False))] = "auto"
    seeds: list[Annotated[int, Field(strict=True, ge=0)]] = Field(
        default_factory=lambda: [0, 1, 2], min_length=1)
    variants: list[Variant] = Field(
        default_factory=lambda: [Variant(name="ce")], min_length=1)

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        return _distinct(seeds)

    def _variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    def seeds_of(self, name: str) -> list[int]:
        """The seeds variant ``name`` is trained with (its own, else the grid's)."""
        seeds = self._variant(name).seeds
        return seeds if seeds is not None else self.seeds

    @model_validator(mode="after")
    def _variants_resolve(self) -> PretrainConfig:
        names = [v.name for v in self.variants]
        dup = [n for i, n in enumerate(names) if n in names[:i]]
        if dup:
            raise ValueError(f"variant {dup[0]!r} is listed twice")
        for i, variant in enumerate(self.variants):
            try:
                self.resolved(variant.name)
            except ValidationError as err:
                problem = err.errors(include_url=False)[0]["msg"]
                problem = problem.removeprefix("Value error, ")
                raise ValueError(f"variant {variant.name!r} (variants[{i}]): {problem}") from None
        return self

    def resolved(self, name: str) -> Recipe:
        """The base recipe with variant ``name``'s overrides applied."""
        overrides = {k: v for k, v in self._variant(name) if v is not None and k not in ("name", "seeds")}
        arch = overrides.pop("arch", self.arch)
        if "width" in overrides:
            arch = arch.model_copy(update={"width": overrides.pop("width")})
        data = self.data
        if "n_train" in overrides:
            data = data.model_copy(update={"n_train": overrides.pop("n_train")})
        base = {"name": name, "data": data, "arch": arch, "epochs": self.epochs,
                "batch_size": self.batch_size, "optimizer": self.optimizer}
        return Recipe(**{**base, **overrides})


def parse_pretrain_config(data: Any, source: str = "config") -> PretrainConfig:
    """Validate plain data (as read from YAML) into a :class:`PretrainConfig`.

    Raises:
        ConfigError: one line ``SOURCE: FIELD.PATH: problem`` for the first problem found.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a pretraining config must be a mapping of fields "
                          f"(data, arch, epochs, variants, ...), got {type(data).__name__}")
    return validate(PretrainConfig, data, source)


def load_pretrain_config(path: str | os.PathLike) -> PretrainConfig:
    """Read and validate a YAML pretraining config.

    Raises:
        ConfigError: missing file, malformed YAML or an invalid field (one line).
    """
    return parse_pretrain_config(read_yaml(path), str(path))
