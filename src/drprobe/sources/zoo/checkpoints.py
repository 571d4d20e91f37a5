"""Load a checkpoint file into a built model, strictly, and describe the result as a bundle.

:func:`load_checkpoint` is what ``load_model(spec, checkpoint=PATH)`` calls: the architecture
comes from the spec (its seeded random twin, then overwritten), the weights from the file, read
and renamed by :mod:`drprobe.sources.zoo.formats`. Every parameter and buffer must be matched by
name and shape, with two allowances:

- the classifier (``bundle.classifier``) takes the file's number of classes (an ImageNet-21k or
  CIFAR head loads into an ImageNet-1k architecture), and for ``"mrl"`` files it may read only the
  first k of the d penultimate neurons (fixed-feature FF-k models, :class:`PrefixLinear`);
- batch-norm ``num_batches_tracked`` counters absent from older files keep the model's value
  (they do not affect eval-mode outputs).

Anything else -- missing or unexpected keys, shape mismatches -- is refused with a one-line
:class:`~drprobe.errors.InvalidValueError` naming the first few offending keys and the shapes the
model expects.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from drprobe.errors import InvalidValueError, MissingDataError
from drprobe.sources.builtin import sha256_file
from drprobe.sources.registry import ModelBundle
from drprobe.sources.zoo.formats import Converted, convert, read_checkpoint
from drprobe.sources.zoo.heads import PrefixLinear

__all__ = ["check_fit", "load_checkpoint"]

_SHOWN = 3  # offending keys named per kind in an error message


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def _listing(keys: list[str], describe: Callable[[str], str]) -> str:
    shown = ", ".join(describe(k) for k in keys[:_SHOWN])
    return shown + (f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def check_fit(
    module: nn.Module, state: dict[str, torch.Tensor], what: str
) -> dict[str, torch.Tensor]:
    """``state`` completed with the model's own ``num_batches_tracked``; raise unless it fits.

    Args:
        module: the model the state must load into with ``strict=True``.
        state: ``{name: tensor}`` from the file, already renamed.
        what: how to name the pair in messages, e.g. ``"checkpoint 'x.pt' for builtin:resnet50"``.

    Raises:
        InvalidValueError: one line naming the first missing, unexpected and mis-shaped keys.
    """
    expected = module.state_dict()
    state = dict(state)
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if not (missing or unexpected or mismatched):
        return state
    parts = []
    if mismatched:
        parts.append(f"{len(mismatched)} shape mismatches: " + _listing(
            mismatched, lambda k: f"{k} file {_shape(state[k])} vs model {_shape(expected[k])}"))
    if missing:
        parts.append(f"{len(missing)} missing keys: " + _listing(
            missing, lambda k: f"{k} {_shape(expected[k])}"))
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: " + _listing(unexpected, str))
    hint = ""
    if any(k.endswith(".blur_filter") for k in unexpected):
        hint = " (the file has BlurPool layers: use builtin:resnet50_blurpool)"
    elif any(k.endswith(".blur_filter") for k in missing):
        hint = " (the model has BlurPool layers the file lacks: use builtin:resnet50)"
    raise InvalidValueError(f"{what} does not fit: {'; '.join(parts)}{hint}")


def _fit_classifier(module: nn.Module, name: str, state: dict[str, torch.Tensor],
                    allow_prefix: bool) -> None:
    """Swap the classifier for one shaped like the file's (class count; FF-k prefix reading)."""
    weight = state.get(f"{name}.weight")
    head = module.get_submodule(name)
    if weight is None or weight.ndim != 2 or not isinstance(head, nn.Linear):
        return
    classes, width = weight.shape
    if (classes, width) == (head.out_features, head.in_features):
        return
    bias = f"{name}.bias" in state
    if width == head.in_features:
        new: nn.Linear = nn.Linear(width, classes, bias=bias)
    elif allow_prefix and width < head.in_features:
        new = PrefixLinear(width, classes, bias=bias)
    else:
        return  # check_fit reports the mismatch
    parent, _, child = name.rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, child, new)


def load_checkpoint(
    bundle: ModelBundle,
    path: str | os.PathLike,
    checkpoint_format: str = "auto",
    trust_checkpoint: bool = False,
) -> ModelBundle:
    """Load the weights in ``path`` into ``bundle.module`` and describe the result.

    Args:
        bundle: a freshly built model of the right architecture (its weights are overwritten).
        path: the checkpoint file (see :mod:`drprobe.sources.zoo.formats` for the formats).
        checkpoint_format: ``"auto"`` or one of ``formats.FORMATS``.
        trust_checkpoint: allow full unpickling for files that need it (can run arbitrary code).

    Returns:
        A bundle with ``weights="checkpoint"``, ``seed=None``, ``weights_sha256`` = the file's
        sha256, the module frozen in eval mode, and the file's own input normalisation when it
        stores one (robustness checkpoints).

    Raises:
        MissingDataError: ``path`` is not a file.
        DrprobeError: the file needs full unpickling and ``trust_checkpoint`` is False, or it
            cannot be read.
        InvalidValueError: unknown format, or the weights do not fit the architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"checkpoint file {str(path)!r} does not exist")
    sha = sha256_file(path)
    converted: Converted = convert(read_checkpoint(path, trust_checkpoint), checkpoint_format,
                                   str(path))
    module = bundle.module
    _fit_classifier(module, bundle.classifier, converted.state, converted.fmt == "mrl")
    what = f"checkpoint {path.name!r} ({converted.fmt}) for {bundle.spec}"
    state = check_fit(module, converted.state, what)
    module.load_state_dict(state, strict=True)
    module.eval()
    module.requires_grad_(False)
    normalisation = {}
    if converted.mean is not None and converted.std is not None:
        if len(converted.mean) != 3 or len(converted.std) != 3:
            raise InvalidValueError(
                f"{what}: the stored normaliser has mean {converted.mean} and std "
                f"{converted.std}; expected 3 values each"
            )
        normalisation = {"mean": converted.mean, "std": converted.std}
    return dataclasses.replace(bundle, weights="checkpoint", seed=None, weights_sha256=sha,
                               **normalisation)
