"""Training-time image augmentation in plain torch (no torchvision), deterministic per generator.

The paper's `faithful` probe protocol trains on augmented images every epoch. :class:`Augment`
applies, in this order, to a (b, 3, H, W) float batch in [0, 1]:

1. **random resized crop** -- the standard definition (Szegedy et al. 2015, as in torchvision's
   ``RandomResizedCrop``): up to 10 tries draw an area fraction s ~ U(scale) and a log-uniform
   aspect ratio r in ``ratio``; the crop is w = round(sqrt(s*H*W*r)) by h = round(sqrt(s*H*W/r))
   at a uniform position if it fits; otherwise the central crop of the largest in-range ratio.
   Each crop is resized to ``size`` x ``size`` (bilinear, antialiased);
2. **horizontal flip** with probability ``flip``;
3. **colour jitter** with factors drawn uniformly in [max(0, 1 - a), 1 + a] for
   brightness (x * f), contrast (blend with the image's mean grey level) and saturation (blend
   with each pixel's grey level), applied in that fixed order **[ours]**, clamped to [0, 1];
4. **rotation** by an angle ~ U(-rotation, rotation) degrees about the centre (``affine_grid`` +
   ``grid_sample``, bilinear, zero fill).

Every random number is drawn on the CPU from the caller's ``torch.Generator``, so a seed gives
the same augmentation on any device. The evaluation transform is resize + centre crop
(:func:`~drprobe.sources.transforms.preprocess`). Defaults: jitter 0.25 and rotation 2 degrees,
small perturbations in the style of the robustness library's training transforms **[ours]**.

:func:`augmented_features` runs a backbone on K augmented views of each image: the `cached`
protocol's middle ground towards `faithful` (:mod:`drprobe.probes.faithful`).
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from drprobe.devices import resolve_device
from drprobe.errors import InvalidValueError
from drprobe.sources.adapters.tokens import is_text
from drprobe.sources.layers import layer_features, resolve_layer
from drprobe.sources.models import ModelBundle, load_model
from drprobe.sources.transforms import _as_float_nchw, resize_center_crop

__all__ = ["GREY_WEIGHTS", "Augment", "adjust_brightness", "adjust_contrast",
           "adjust_saturation", "augment_images", "augmented_features", "check_images",
           "crop_params", "flip", "image_bundle", "resized_crops", "resolve_device", "rotate",
           "training_augment"]

#: ITU-R 601 luma weights, the grey level used by contrast and saturation jitter.
GREY_WEIGHTS = (0.299, 0.587, 0.114)


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    """(n,) float64 draws from U[low, high) on the CPU generator ``g``."""
    return low + (high - low) * torch.rand(n, generator=g, dtype=torch.float64)


def crop_params(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
    g: torch.Generator,
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of one random resized crop of an image of ``height`` x ``width``."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        s = float(_uniform(1, scale[0], scale[1], g))
        r = math.exp(float(_uniform(1, log_lo, log_hi, g)))
        w = round(math.sqrt(area * s * r))
        h = round(math.sqrt(area * s / r))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=g))
            left = int(torch.randint(0, width - w + 1, (1,), generator=g))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crops(
    x: torch.Tensor, size: int, boxes: Sequence[tuple[int, int, int, int]]
) -> torch.Tensor:
    """(b, C, H, W) -> (b, C, size, size): crop image i to ``boxes[i]`` = (top, left, h, w) and
    resize it (bilinear, antialiased; a crop already ``size`` x ``size`` is kept as is)."""
    out = []
    for img, (top, left, h, w) in zip(x, boxes):
        crop = img[None, :, top:top + h, left:left + w]
        if (h, w) != (size, size):
            crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True,
                                 align_corners=False)
        out.append(crop)
    return torch.cat(out)


def flip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror the images (b, C, H, W) whose ``mask`` (b,) bool entry is True, left to right."""
    return torch.where(mask.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)


def _factor(f: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return f.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """(b, 3, H, W) -> (b, 1, H, W) luma."""
    w = torch.tensor(GREY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """(b, 3, H, W) images times per-image factors ``f`` (b,), clamped to [0, 1]."""
    return (x * _factor(f, x)).clamp(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Blend each image with its mean grey level: f * x + (1 - f) * mean, clamped."""
    f = _factor(f, x)
    mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
    return (f * x + (1.0 - f) * mean).clamp(0.0, 1.0)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Blend each pixel with its own grey level: f * x + (1 - f) * grey, clamped."""
    f = _factor(f, x)
    return (f * x + (1.0 - f) * _grey(x)).clamp(0.0, 1.0)


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate (b, C, H, W) images by ``degrees`` (b,) about their centres, zero fill; positive
    angles turn the picture counter-clockwise (90 degrees = ``torch.rot90(x, 1, (2, 3))``)."""
    rad = degrees.to(torch.float64) * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(rad)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    theta = theta.to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _pair(value: Sequence[float], what: str, low: float) -> tuple[float, float]:
    pair = tuple(float(v) for v in value)
    if len(pair) != 2 or not (low < pair[0] <= pair[1]) or not all(map(math.isfinite, pair)):
        raise InvalidValueError(f"{what}={tuple(value)!r} must be (lo, hi) with {low} < lo <= hi")
    return pair  # type: ignore[return-value]


@dataclass
class Augment:
    """The training augmentation as a callable: ``aug(x, generator)`` on (b, 3, H, W) floats.

    Attributes:
        size: output side in pixels (the model's input size).
        scale: area fraction range of the random resized crop; None = no crop, just the
            evaluation resize + centre crop.
        ratio: aspect-ratio range (w / h) of the crop, drawn log-uniformly.
        flip: probability of a horizontal flip.
        brightness, contrast, saturation: jitter strengths a (factors in [max(0, 1-a), 1+a]).
        rotation: maximum absolute rotation in degrees.
    """

    size: int
    scale: tuple[float, float] | None = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    rotation: float = 2.0

    def check(self) -> None:
        """Raise InvalidValueError for an out-of-range setting."""
        if isinstance(self.size, bool) or not isinstance(self.size, numbers.Integral) or \
                self.size < 1:
            raise InvalidValueError(f"augment size must be a positive integer, got {self.size!r}")
        if self.scale is not None:
            _pair(self.scale, "scale", 0.0)
            if self.scale[1] > 1.0:
                raise InvalidValueError(f"scale={tuple(self.scale)!r} must lie in (0, 1]")
        _pair(self.ratio, "ratio", 0.0)
        if not 0.0 <= self.flip <= 1.0:
            raise InvalidValueError(f"flip={self.flip!r} must be a probability in [0, 1]")
        for name in ("brightness", "contrast", "saturation", "rotation"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InvalidValueError(f"{name}={value!r} must be a finite number >= 0")

    @classmethod
    def identity(cls, size: int) -> Augment:
        """No randomness: the evaluation resize + centre crop only."""
        return cls(size, scale=None, flip=0.0, brightness=0.0, contrast=0.0, saturation=0.0,
                   rotation=0.0)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(b, 3, H, W) float in [0, 1] -> (b, 3, size, size) float in [0, 1], any device.

        Random draws come from ``generator`` (a CPU ``torch.Generator``) in a fixed order, so
        the result depends only on the images and the generator state.
        """
        self.check()
        if x.ndim != 4 or x.shape[1] != 3:
            raise InvalidValueError(f"augment needs (b, 3, H, W) images; got {tuple(x.shape)}")
        b, g, size = x.shape[0], generator, int(self.size)
        if self.scale is None:
            x = resize_center_crop(x, size)
        else:
            boxes = [crop_params(x.shape[2], x.shape[3], self.scale, self.ratio, g)
                     for _ in range(b)]
            x = resized_crops(x, size, boxes)
        if self.flip > 0:
            x = flip(x, torch.rand(b, generator=g) < self.flip)
        for strength, op in ((self.brightness, adjust_brightness),
                             (self.contrast, adjust_contrast),
                             (self.saturation, adjust_saturation)):
            if strength > 0:
                x = op(x, _uniform(b, max(0.0, 1.0 - strength), 1.0 + strength, g))
        if self.rotation > 0:
            x = rotate(x, _uniform(b, -self.rotation, self.rotation, g))
        return x


def augment_images(
    images: np.ndarray | torch.Tensor, augment: Augment, mean: Sequence[float],
    std: Sequence[float], generator: torch.Generator, device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Raw images -> augmented, normalised model input (the training twin of ``preprocess``).

    Args:
        images: (b, H, W) grey or (b, H, W, 3) RGB, uint8 (0..255) or float in [0, 1].
        augment: the augmentation; its ``size`` is the output side.
        mean, std: per-channel normalisation (3 values each).
        generator: CPU ``torch.Generator`` supplying every random draw.
        device: where the image arithmetic runs.

    Returns:
        (b, 3, size, size) float32 tensor ``(augment(x) - mean) / std`` on ``device``.
    """
    if len(mean) != 3 or len(std) != 3:
        raise InvalidValueError(f"mean and std need 3 values each, got {mean!r} and {std!r}")
    raw = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images))
    x = augment(_as_float_nchw(raw.to(device)), generator)  # uint8 travels, floats are made there
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous()


# ------------------------------------------------------------------- through a backbone


def image_bundle(model: str | ModelBundle, device: torch.device) -> ModelBundle:
    """The loaded, frozen image model, moved (in place) to ``device``; text models are refused."""
    bundle = model if isinstance(model, ModelBundle) else load_model(model)
    if is_text(bundle):
        raise InvalidValueError(f"model {bundle.spec!r} is a text model; augmentation needs an "
                                "image model")
    bundle.module.to(device)
    return bundle


def check_images(images: object, name: str) -> np.ndarray:
    """An (n, H, W) or (n, H, W, 3) image array with n >= 1, not copied."""
    if not hasattr(images, "shape"):
        images = np.asarray(images)
    if len(images.shape) not in (3, 4) or images.shape[0] == 0:
        raise InvalidValueError(f"{name} must have shape (n, H, W) or (n, H, W, 3) with n >= 1; "
                                f"got {tuple(images.shape)}")
    return images  # type: ignore[return-value]


def training_augment(augment: Augment | None, size: int) -> Augment:
    """``augment`` checked against the input ``size``, or the default ``Augment(size)``."""
    aug = Augment(size) if augment is None else augment
    aug.check()
    if int(aug.size) != size:
        raise InvalidValueError(f"augment size {aug.size} differs from the input size {size}")
    return aug


def augmented_features(
    model: str | ModelBundle, layer: str, images: np.ndarray, labels: np.ndarray,
    views: int = 4, *, pooling: str = "avg", image_size: int | None = None,
    augment: Augment | None = None, batch_size: int = 256, random_state: int = 0,
    device: str = "cpu", progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Features of ``views`` augmented copies of every image: the `cached` protocol with K views.

    The result is an ordinary training feature matrix for the probe bank. Pass only the images
    the probe trains on (hold the validation images out first and give them clean features),
    so that no view of a validation image is trained on.

    Args:
        model: a loaded bundle (moved to ``device`` in place) or a model spec.
        layer, pooling: the layer and its pooling (see ``layer_features``).
        images: (n, H, W[, 3]) uint8 or float in [0, 1]; labels: (n,).
        views: K, augmented copies per image.
        image_size: input side (None = the model's native size); augment: the augmentation
            (None = ``Augment(image_size)``).
        batch_size: images per forward pass; random_state: seeds the augmentations.
        device: where augmentation and backbone run.

    Returns:
        (X, y): X (n * K, d) float32 with row ``i * K + v`` = view v of image i, and
        y = ``np.repeat(labels, K)`` (n * K,).
    """
    for name, value in (("views", views), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InvalidValueError(f"{name}={value!r} must be an integer >= 1")
    dev = resolve_device(device)
    bundle = image_bundle(model, dev)
    layer = resolve_layer(bundle, layer)
    images = check_images(images, "images")
    y = np.asarray(labels)
    if y.shape != (images.shape[0],):
        raise InvalidValueError(f"labels have shape {y.shape}; expected ({images.shape[0]},)")
    aug = training_augment(augment, int(image_size or bundle.input_size))
    n, K, step = images.shape[0], int(views), int(batch_size)
    X: np.ndarray | None = None
    g = torch.Generator().manual_seed(int(random_state))
    with tqdm(total=n * K, desc=f"{K} views", unit="img", file=sys.stderr,
              disable=not progress) as bar:
        for lo in range(0, n, step):
            batch = images[lo:lo + step]
            for v in range(K):
                x = augment_images(batch, aug, bundle.mean, bundle.std, g, dev)
                f = layer_features(bundle, layer, x, pooling).float().cpu().numpy()
                if X is None:
                    X = np.empty((n * K, f.shape[1]), dtype=np.float32)
                X[lo * K + v:(lo + len(batch)) * K:K] = f
                bar.update(len(batch))
    assert X is not None
    return X, np.repeat(y, K)
