"""The source task of a pretraining run: stratified subsets in memory, pixels, fingerprint.

Images stay ``uint8`` in memory (on the training device) and become (b, 3, S, S) float pixels
in [0, 1] one batch at a time, through the same resize and grey->RGB code that feature
extraction uses (:func:`drprobe.sources.transforms.preprocess`), so a network sees the same
inputs in pretraining and when it is probed as ``ckpt:``. The normalisation (per-channel mean
and std of the training subset's pixels) is stored in the checkpoint.

Memory: the whole training split of the dataset once as uint8 (Fashion-MNIST: 47 MB), plus
one batch of float pixels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from drprobe.errors import InvalidValueError
from drprobe.pretrain.config import Data
from drprobe.sources.datasets import ImageDataset, load_dataset, stratified_subsample
from drprobe.sources.transforms import preprocess

__all__ = ["SourceData", "indices_sha256", "load_source", "pixels"]

_ZERO, _ONE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
_CHUNK = 4096


def pixels(images: torch.Tensor, size: int) -> torch.Tensor:
    """(b, H, W[, 3]) uint8 images -> (b, 3, size, size) float32 in [0, 1], on their device."""
    return preprocess(images, size, _ZERO, _ONE)


def indices_sha256(indices: np.ndarray) -> str:
    """sha256 of the positions as little-endian int64 (the data fingerprint of a subset)."""
    return hashlib.sha256(np.ascontiguousarray(indices, dtype="<i8").tobytes()).hexdigest()


@dataclass
class SourceData:
    """One source task, ready to train on.

    Attributes:
        train_x, test_x: uint8 images (n, H, W) or (n, H, W, 3), on the training device.
        train_y, test_y: int64 labels (n,), on the training device.
        classes: class names.
        mean, std: per-channel statistics of the training pixels (after resizing).
        fingerprint: dataset, splits, sizes and sha256 of the subset positions.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    fingerprint: dict


def _stats(images: torch.Tensor, size: int) -> tuple[tuple, tuple]:
    """Per-channel mean and (population) std of the pixels of ``images`` at ``size``."""
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    count = 0
    for start in range(0, images.shape[0], _CHUNK):
        x = pixels(images[start:start + _CHUNK], size).double()
        total += x.sum(dim=(0, 2, 3)).cpu()
        squares += x.pow(2).sum(dim=(0, 2, 3)).cpu()
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (squares / count - mean.pow(2)).clamp_min(1e-12).sqrt()
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def load_source(data: Data, device: torch.device,
                splits: dict[str, ImageDataset] | None = None) -> SourceData:
    """Load the subsets of ``data`` onto ``device``.

    ``splits`` (``{"train": ..., "test": ...}``) reuses whole splits already loaded (the
    grid loads each dataset once); missing ones are loaded and added to it.
    """
    splits = {} if splits is None else splits
    parts = {}
    for split, n in (("train", data.n_train), ("test", data.n_test)):
        if split not in splits:
            splits[split] = load_dataset(data.dataset, split, root=data.data_root)
        ds = splits[split]
        if not isinstance(ds, ImageDataset):
            raise InvalidValueError(f"pretraining needs an image dataset; {data.dataset!r} "
                                    f"is {type(ds).__name__}")
        idx = stratified_subsample(ds.labels, n, data.subset_seed)
        parts[split] = (torch.from_numpy(ds.images[idx]).to(device),
                        torch.from_numpy(ds.labels[idx].astype(np.int64)).to(device),
                        {"split": split, "n": len(idx), "of": len(ds),
                         "indices_sha256": indices_sha256(idx)})
    mean, std = _stats(parts["train"][0], data.image_size)
    fingerprint = {"dataset": data.dataset, "subset_seed": data.subset_seed,
                   "image_size": data.image_size,
                   "train": parts["train"][2], "test": parts["test"][2]}
    return SourceData(parts["train"][0], parts["train"][1], parts["test"][0], parts["test"][1],
                      list(splits["train"].classes), mean, std, fingerprint)
