"""Datasets: one door, :func:`load_dataset`, from a dataset spec to an in-memory split.

A spec is a fixed name (:func:`available_datasets`: ``cifar10``, ``cifar100``, ``digits``,
``fashion-mnist``, ``mnist``) or a prefixed path:

===========================  =====================================================
``imagefolder:PATH``         class-per-sub-folder image trees (:mod:`.data.images`)
``hf:NAME_OR_PATH``          Hugging Face ``datasets`` (:mod:`.data.hf`)
``npz:PATH``                 ``x_train, y_train, x_test, y_test`` arrays (:mod:`.data.arrays`)
``text:PATH``                CSV / TSV / JSONL with ``text`` and ``label`` (:mod:`.data.text`)
``features:PATH``            precomputed features: not a dataset of inputs; read them with
                             ``get_features("precomputed", layer, "features:PATH", split)``
                             or :func:`~drprobe.sources.data.arrays.load_precomputed`
===========================  =====================================================

Loader options come as keyword arguments or in the spec after ``?`` (``k=v`` joined by ``&``;
values ``true``/``false``, integers and floats are converted), e.g.
``"imagefolder:pets?side=64&test_fraction=0.25"`` or ``"cifar100?labels=coarse"``.
A relative PATH is taken under ``root=`` when that is given.

Image loaders return an :class:`ImageDataset` (``uint8`` images), ``text:`` a
:class:`TextDataset`; both have ``int64`` labels and class names and work with
:func:`subsample`. Datasets without an official split get a documented seeded stratified one.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drprobe.errors import InvalidValueError, UnknownNameError
from drprobe.sources.data.arrays import load_npz, load_precomputed, read_precomputed
from drprobe.sources.data.base import (
    SPLITS,
    Dataset,
    ImageDataset,
    TextDataset,
    check_split,
    stratified_subsample,
    subsample,
    train_val_split,
    validation_size,
)
from drprobe.sources.data.cifar import load_cifar10, load_cifar100
from drprobe.sources.data.hf import load_hf
from drprobe.sources.data.images import load_imagefolder
from drprobe.sources.data.mnist import (
    DIGITS_SPLIT_SEED,
    DIGITS_TEST_FRACTION,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DEFAULT_ROOT,
    FASHION_MNIST_ENV,
    IDX_DTYPES,
    MNIST_FETCH,
    load_digits,
    load_fashion_mnist,
    load_mnist,
    parse_idx,
    read_idx,
)
from drprobe.sources.data.text import load_text

__all__ = [
    "DATASETS", "DIGITS_SPLIT_SEED", "DIGITS_TEST_FRACTION", "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DEFAULT_ROOT", "FASHION_MNIST_ENV", "IDX_DTYPES", "MNIST_FETCH", "PREFIXES",
    "SPLITS", "Dataset", "ImageDataset", "TextDataset", "available_datasets", "load_dataset",
    "load_precomputed", "parse_idx", "parse_spec", "read_idx", "read_precomputed",
    "stratified_subsample", "subsample", "train_val_split", "validation_size",
]

Loader = Callable[..., Dataset]

#: name -> loader(split, root, **options). Add new fixed-name datasets here.
DATASETS: dict[str, Loader] = {
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "digits": load_digits,
    "fashion-mnist": load_fashion_mnist,
    "mnist": load_mnist,
}

#: prefix -> loader(path, split, **options), for specs ``PREFIX:PATH``.
PREFIXES: dict[str, Loader] = {
    "imagefolder": load_imagefolder,
    "hf": load_hf,
    "npz": load_npz,
    "text": load_text,
}
PRECOMPUTED_PREFIX = "features"
PREFIX_FORMS = (
    "imagefolder:PATH", "hf:NAME_OR_PATH", "npz:PATH", "text:PATH (CSV/TSV/JSONL)",
    "features:PATH (precomputed features)",
)


def available_datasets() -> list[str]:
    """Fixed names accepted by :func:`load_dataset`, sorted (prefixed kinds: see the module)."""
    return sorted(DATASETS)


def _unknown_dataset(name: str) -> UnknownNameError:
    return UnknownNameError(
        f"unknown dataset {name!r}; valid choices: {', '.join(available_datasets())}; "
        f"or a prefixed spec: {', '.join(PREFIX_FORMS)}"
    )


def _coerce(value: str) -> Any:
    low = value.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def parse_spec(spec: str) -> tuple[str, str | None, dict[str, Any]]:
    """Split a dataset spec into (name or prefix, path or None, options).

    >>> parse_spec("imagefolder:data/pets?side=64&seed=1")
    ('imagefolder', 'data/pets', {'side': 64, 'seed': 1})
    >>> parse_spec("cifar100?labels=coarse")
    ('cifar100', None, {'labels': 'coarse'})
    """
    if not isinstance(spec, str) or not spec:
        raise InvalidValueError(f"dataset spec must be a non-empty string, got {spec!r}")
    head, _, query = spec.partition("?")
    options: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise InvalidValueError(f"dataset option {item!r} in {spec!r} must be key=value")
        options[key] = _coerce(value)
    prefix, colon, path = head.partition(":")
    if not colon:
        return head, None, options
    if not path:
        raise InvalidValueError(f"dataset spec {spec!r} has an empty path after '{prefix}:'")
    return prefix, path, options


def _check_options(loader: Loader, options: dict[str, Any], spec: str) -> None:
    params = inspect.signature(loader).parameters
    valid = sorted(p for p, v in params.items()
                   if v.kind is inspect.Parameter.KEYWORD_ONLY and p != "name")
    bad = [k for k in options if k not in valid]
    if bad:
        raise InvalidValueError(
            f"dataset {spec!r}: unknown option {bad[0]!r}; valid: {', '.join(valid) or 'none'}"
        )


def load_dataset(
    name: str, split: str, root: str | os.PathLike | None = None, **options: Any
) -> Dataset:
    """Load one whole split of a dataset.

    Args:
        name: a dataset spec (see the module docstring): a name from
            :func:`available_datasets` or ``PREFIX:PATH``, with optional ``?k=v&...`` options.
        split: ``"train"`` or ``"test"``.
        root: the folder of a fixed-name dataset's files; for ``PREFIX:PATH`` specs, the folder
            a relative PATH is taken under.
        **options: loader options (override those in the spec), e.g. ``side=64``,
            ``image_column="img"``, ``download=True``.

    Returns:
        :class:`ImageDataset`, or :class:`TextDataset` for ``text:`` specs.
    """
    key, path, spec_options = parse_spec(name)
    options = {**spec_options, **options}
    if path is None:
        if key not in DATASETS:
            raise _unknown_dataset(name)
        check_split(split)
        _check_options(DATASETS[key], options, name)
        return DATASETS[key](split, root, **options)
    if key == PRECOMPUTED_PREFIX:
        raise InvalidValueError(
            f"dataset {name!r} holds precomputed features, not inputs; read it with "
            f"get_features('precomputed', layer, {name!r}, split) or load_precomputed(path, split)"
        )
    if key not in PREFIXES:
        raise _unknown_dataset(name)
    check_split(split)
    _check_options(PREFIXES[key], options, name)
    if root is not None and not Path(path).is_absolute() and (Path(root) / path).exists():
        path = str(Path(root) / path)
    return PREFIXES[key](path, split, name=name, **options)
