"""Training augmentations: known answers, identities, determinism, and K-view features."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from drprobe.errors import InvalidValueError
from drprobe.features.extract import iter_features
from drprobe.sources.augment import (
    GREY_WEIGHTS,
    Augment,
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    augment_images,
    augmented_features,
    crop_params,
    flip,
    resized_crops,
    rotate,
)
from drprobe.sources.models import ModelBundle
from drprobe.sources.transforms import preprocess, resize_center_crop

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    """(6, 3, 20, 28) random images in [0, 1]."""
    return torch.rand(6, 3, 20, 28, generator=gen(0))


def test_shapes_range_and_per_image_draws(batch):
    out = Augment(16)(batch, gen(1))
    assert out.shape == (6, 3, 16, 16) and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    # one image repeated: each copy gets its own crop / flip / jitter / angle
    same = batch[:1].expand(6, -1, -1, -1)
    out = Augment(16)(same, gen(1))
    assert all(not torch.allclose(out[0], out[i]) for i in range(1, 6))


def test_deterministic_per_generator_seed(batch):
    aug = Augment(16)
    assert torch.equal(aug(batch, gen(5)), aug(batch, gen(5)))
    assert not torch.allclose(aug(batch, gen(5)), aug(batch, gen(6)))
    g = gen(5)
    first, second = aug(batch, g), aug(batch, g)  # the generator advances between calls
    assert not torch.allclose(first, second)


def test_flip_twice_is_identity_and_flips_only_masked(batch):
    mask = torch.tensor([True, False, True, True, False, False])
    once = flip(batch, mask)
    assert torch.equal(flip(once, mask), batch)
    assert torch.equal(once[0], batch[0].flip(-1))
    assert torch.equal(once[0, :, :, 0], batch[0, :, :, -1])
    assert torch.equal(once[1], batch[1])


def test_full_square_crop_equals_the_evaluation_resize():
    x = torch.rand(3, 3, 24, 24, generator=gen(2))
    assert crop_params(24, 24, (1.0, 1.0), (1.0, 1.0), gen(0)) == (0, 0, 24, 24)
    for size in (24, 16, 40):
        aug = Augment(size, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0.0, brightness=0.0,
                      contrast=0.0, saturation=0.0, rotation=0.0)
        torch.testing.assert_close(aug(x, gen(3)), resize_center_crop(x, size))
    assert torch.equal(resized_crops(x, 24, [(0, 0, 24, 24)] * 3), x)


def test_crop_params_obey_the_standard_definition():
    g = gen(4)
    for H, W in ((32, 32), (20, 50), (64, 24)):
        for _ in range(300):
            top, left, h, w = crop_params(H, W, (0.08, 1.0), (3 / 4, 4 / 3), g)
            assert 0 <= top <= H - h and 0 <= left <= W - w and h >= 1 and w >= 1
            area = h * w / (H * W)
            # rounding w and h moves area and ratio by at most about one pixel per side
            assert 0.08 * (1 - 2 / math.sqrt(0.08 * H * W)) - 1e-9 <= area <= 1.0
            slack = 1 / h + 1 / w
            assert 3 / 4 * (1 - slack) <= w / h <= 4 / 3 * (1 + slack) or (h, w) == (H, W)


def test_crop_falls_back_to_the_central_crop():
    # a 10 x 200 strip: no crop of area >= 0.9 with ratio <= 4/3 fits, so the fallback is the
    # central crop of the largest allowed ratio: h = 10, w = round(10 * 4/3) = 13
    assert crop_params(10, 200, (0.9, 1.0), (3 / 4, 4 / 3), gen(0)) == (0, 93, 10, 13)
    assert crop_params(200, 10, (0.9, 1.0), (3 / 4, 4 / 3), gen(0)) == (93, 0, 13, 10)
    # scale 1 on a square: a try fits only with w = h = 10, and the fallback (image ratio 1 is
    # inside the range) is the whole image too
    for seed in range(20):
        assert crop_params(10, 10, (1.0, 1.0), (0.5, 2.0), gen(seed)) == (0, 0, 10, 10)


def test_rotation_by_zero_is_identity_and_ninety_is_rot90(batch):
    x = batch[:, :, :, :20]  # square
    torch.testing.assert_close(rotate(x, torch.zeros(6)), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(rotate(x, torch.full((6,), 90.0)), torch.rot90(x, 1, (2, 3)),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(rotate(x, torch.full((6,), -90.0)),
                               torch.rot90(x, -1, (2, 3)), atol=1e-5, rtol=0)


def test_jitter_factor_one_is_identity_and_formulas(batch):
    ones = torch.ones(6)
    for op in (adjust_brightness, adjust_contrast, adjust_saturation):
        torch.testing.assert_close(op(batch, ones), batch, atol=1e-6, rtol=0)
    xn = batch.double().numpy()
    grey = np.einsum("bchw,c->bhw", xn, np.array(GREY_WEIGHTS))[:, None]
    f = torch.linspace(0.0, 1.5, 6)
    fn = f.double().numpy()[:, None, None, None]
    np.testing.assert_allclose(adjust_brightness(batch, f).numpy(), np.clip(xn * fn, 0, 1),
                               atol=1e-6)
    contrast = fn * xn + (1 - fn) * grey.mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(adjust_contrast(batch, f).numpy(), np.clip(contrast, 0, 1),
                               atol=1e-6)
    saturation = fn * xn + (1 - fn) * grey
    np.testing.assert_allclose(adjust_saturation(batch, f).numpy(), np.clip(saturation, 0, 1),
                               atol=1e-6)
    # factor 0: contrast gives a flat grey image, saturation a grey (equal-channel) image
    flat = adjust_contrast(batch, torch.zeros(6))
    assert torch.allclose(flat, flat[:, :1, :1, :1].expand_as(flat))
    grey_img = adjust_saturation(batch, torch.zeros(6))
    assert torch.allclose(grey_img[:, 0], grey_img[:, 1]) and torch.allclose(grey_img[:, 1],
                                                                             grey_img[:, 2])


def test_identity_augment_matches_preprocess():
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 36), dtype=np.uint8)
    got = augment_images(images, Augment.identity(24), MEAN, STD, gen(0))
    torch.testing.assert_close(got, preprocess(images, 24, MEAN, STD))


def test_bad_settings_are_refused(batch):
    for bad in ({"scale": (0.5, 0.1)}, {"scale": (0.1, 1.5)}, {"ratio": (0.0, 1.0)},
                {"flip": 1.5}, {"brightness": -0.1}, {"rotation": float("nan")}):
        with pytest.raises(InvalidValueError):
            Augment(16, **bad)(batch, gen(0))
    with pytest.raises(InvalidValueError, match="size"):
        Augment(0)(batch, gen(0))
    with pytest.raises(InvalidValueError, match=r"\(b, 3, H, W\)"):
        Augment(16)(batch[:, :1], gen(0))


# ------------------------------------------------------------------------- K augmented views


def tiny_bundle() -> ModelBundle:
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("conv", nn.Conv2d(3, 8, 3, padding=1))
    net.add_module("act", nn.ReLU())
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(8, 3))
    net.eval().requires_grad_(False)
    return ModelBundle("test:tiny", "random", 0, net, 16, MEAN, STD, "fc", None)


def test_augmented_features_layout_and_identity_views():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (7, 20, 20, 3), dtype=np.uint8)
    labels = np.arange(7) % 3
    bundle = tiny_bundle()
    clean = np.concatenate(list(iter_features(bundle, "penultimate", images, image_size=16,
                                              batch_size=3, progress=False)))
    X, y = augmented_features(bundle, "penultimate", images, labels, views=3, image_size=16,
                              augment=Augment.identity(16), batch_size=3, progress=False)
    assert X.shape == (21, 8) and X.dtype == np.float32
    np.testing.assert_array_equal(y, np.repeat(labels, 3))
    np.testing.assert_allclose(X, np.repeat(clean, 3, axis=0), rtol=1e-5, atol=1e-6)

    X1, _ = augmented_features(bundle, "penultimate", images, labels, views=2, image_size=16,
                               batch_size=3, random_state=4, progress=False)
    X2, _ = augmented_features(bundle, "penultimate", images, labels, views=2, image_size=16,
                               batch_size=3, random_state=4, progress=False)
    np.testing.assert_array_equal(X1, X2)
    assert not np.allclose(X1[0::2], X1[1::2])  # the two views of an image differ
    with pytest.raises(InvalidValueError, match="views"):
        augmented_features(bundle, "penultimate", images, labels, views=0, progress=False)
    with pytest.raises(InvalidValueError, match="augment size"):
        augmented_features(bundle, "penultimate", images, labels, image_size=16,
                           augment=Augment(12), progress=False)
