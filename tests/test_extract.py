"""Preprocessing and streaming extraction, against hand computations and one-shot results."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import SliceRecorder
from PIL import Image

from drprobe.errors import DrprobeError, InvalidValueError, UnknownNameError
from drprobe.features.extract import feature_dim, iter_features
from drprobe.sources.layers import PENULTIMATE, layer_features
from drprobe.sources.models import ModelBundle, available_models, load_model
from drprobe.sources.transforms import preprocess

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def mnet() -> ModelBundle:
    return load_model("builtin:mobilenet_v2")


@pytest.fixture(scope="module")
def grey() -> np.ndarray:
    """Ten 28x28 uint8 grey images, Fashion-MNIST-like."""
    return np.random.default_rng(0).integers(0, 256, size=(10, 28, 28), dtype=np.uint8)


# ---- preprocess ------------------------------------------------------------------------------

def test_grey_becomes_three_equal_channels(grey):
    out = preprocess(grey, 32, MEAN, STD)
    assert out.shape == (10, 3, 32, 32) and out.dtype == torch.float32
    raw = out * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    torch.testing.assert_close(raw[:, 0], raw[:, 1])
    torch.testing.assert_close(raw[:, 0], raw[:, 2])
    with_channel = preprocess(grey[..., None], 32, MEAN, STD)
    assert torch.equal(out, with_channel)
    rgb = preprocess(np.repeat(grey[..., None], 3, axis=-1), 32, MEAN, STD)
    assert torch.equal(out, rgb)


def test_constant_image_normalised_by_hand():
    images = np.empty((2, 16, 16, 3), dtype=np.uint8)
    images[...] = (51, 102, 204)
    out = preprocess(images, 16, MEAN, STD)
    expected = [(51 / 255 - MEAN[0]) / STD[0], (102 / 255 - MEAN[1]) / STD[1],
                (204 / 255 - MEAN[2]) / STD[2]]
    for channel, value in enumerate(expected):
        assert torch.allclose(out[:, channel], torch.tensor(value), atol=1e-6)


@pytest.mark.parametrize("shape, size", [((3, 28, 28), 64), ((3, 100, 100), 32),
                                         ((3, 40, 90), 32), ((3, 90, 40), 48)])
def test_resize_of_constant_image_stays_constant(shape, size):
    out = preprocess(np.full(shape, 0.25, dtype=np.float32), size, (0.0,) * 3, (1.0,) * 3)
    assert out.shape == (shape[0], 3, size, size)
    assert torch.allclose(out, torch.tensor(0.25), atol=1e-6)


def test_float_input_equals_uint8_over_255(grey):
    torch.testing.assert_close(preprocess(grey, 40, MEAN, STD),
                               preprocess(grey / 255.0, 40, MEAN, STD))
    torch.testing.assert_close(preprocess(torch.from_numpy(grey), 40, MEAN, STD),
                               preprocess(grey, 40, MEAN, STD))


def test_non_square_input_is_centre_cropped():
    image = np.zeros((1, 32, 64), dtype=np.uint8)
    image[:, :, 16:48] = 255  # the middle half is white; size 32 keeps exactly that
    out = preprocess(image, 32, (0.0,) * 3, (1.0,) * 3)
    assert torch.equal(out, torch.ones(1, 3, 32, 32))
    tall = preprocess(image.transpose(0, 2, 1), 32, (0.0,) * 3, (1.0,) * 3)
    assert torch.equal(tall, torch.ones(1, 3, 32, 32))


@pytest.mark.parametrize("size", [24, 20, 80])
def test_resize_matches_pillow_bilinear(size):
    """torch's antialiased bilinear agrees with Pillow's (an independent implementation)."""
    image = np.random.default_rng(size).random((48, 48)).astype(np.float32)
    reference = np.asarray(Image.fromarray(image, mode="F").resize((size, size), Image.BILINEAR))
    out = preprocess(image[None], size, (0.0,) * 3, (1.0,) * 3)[0, 0].numpy()
    np.testing.assert_allclose(out, reference, atol=1e-5)


@pytest.mark.parametrize("bad", [np.zeros((2, 8, 8, 2)), np.zeros((8, 8)), np.zeros((1, 3, 8, 8))])
def test_bad_image_shapes_are_refused(bad):
    with pytest.raises(InvalidValueError, match="shape"):
        preprocess(bad, 8, MEAN, STD)


# ---- iter_features ---------------------------------------------------------------------------

def _one_shot(bundle: ModelBundle, layer: str, images: np.ndarray, size: int,
              pooling: str = "avg") -> np.ndarray:
    x = preprocess(images, size, bundle.mean, bundle.std)
    return layer_features(bundle, layer, x, pooling).numpy()


@pytest.mark.parametrize("layer, pooling", [(PENULTIMATE, "avg"), ("features.14", "flatten"),
                                            ("features.6", "avg")])
def test_batches_concatenate_to_one_shot(mnet, grey, layer, pooling):
    batches = list(iter_features(mnet, layer, grey, pooling=pooling, image_size=32,
                                 batch_size=4, progress=False))
    assert [b.shape[0] for b in batches] == [4, 4, 2]
    assert all(b.dtype == np.float32 for b in batches)
    out = np.concatenate(batches)
    assert out.shape == (10, feature_dim(mnet, layer, pooling, 32))
    np.testing.assert_allclose(out, _one_shot(mnet, layer, grey, 32, pooling),
                               rtol=1e-5, atol=1e-5)


def test_batch_size_does_not_change_results_and_runs_repeat_bitwise(mnet, grey):
    def run(batch_size: int) -> np.ndarray:
        return np.concatenate(list(iter_features(mnet, "features.10", grey, image_size=32,
                                                 batch_size=batch_size, progress=False)))

    first = run(3)
    np.testing.assert_allclose(first, run(10), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(first, run(1), rtol=1e-5, atol=1e-5)
    assert np.array_equal(first, run(3))


def test_rows_follow_input_order(mnet, grey):
    forward = np.concatenate(list(iter_features(mnet, PENULTIMATE, grey, image_size=32,
                                                batch_size=4, progress=False)))
    backward = np.concatenate(list(iter_features(mnet, PENULTIMATE, grey[::-1], image_size=32,
                                                 batch_size=4, progress=False)))
    np.testing.assert_allclose(forward, backward[::-1], rtol=1e-5, atol=1e-5)


def test_streams_one_batch_at_a_time(mnet, grey):
    source = SliceRecorder(grey)
    batches = iter_features(mnet, PENULTIMATE, source, image_size=32, batch_size=4,
                            progress=False)
    assert source.reads == []
    next(batches)
    assert source.reads == [(0, 4)]
    list(batches)
    assert source.reads == [(0, 4), (4, 8), (8, 12)]


def test_native_size_is_the_default(mnet, grey):
    assert feature_dim(mnet, "features.14", "flatten") == 160 * 7 * 7
    assert feature_dim(mnet, "features.14", "flatten", 64) == 160 * 2 * 2
    out = next(iter_features(mnet, "features.14", grey[:1], pooling="flatten", progress=False))
    assert out.shape == (1, 160 * 7 * 7)


def test_progress_bar_goes_to_stderr(mnet, grey, capsys):
    list(iter_features(mnet, PENULTIMATE, grey, image_size=32, batch_size=5, desc="demo-bar"))
    captured = capsys.readouterr()
    assert "demo-bar" in captured.err and "10/10" in captured.err and captured.out == ""
    list(iter_features(mnet, PENULTIMATE, grey, image_size=32, progress=False, desc="silent"))
    assert "silent" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "call, kind, needles",
    [
        (lambda b, x: iter_features(b, "features.99", x), UnknownNameError,
         ["'features.99'", "features.14", "penultimate"]),
        (lambda b, x: iter_features(b, "features.14", x, pooling="max"), InvalidValueError,
         ["'max'", "avg, flatten"]),
        (lambda b, x: iter_features(b, "features.14", x, batch_size=0), InvalidValueError,
         ["batch size", "0"]),
        (lambda b, x: load_model("builtin:nonet"), UnknownNameError,
         ["'builtin:nonet'", *available_models()]),
    ],
)
def test_errors_are_one_line_and_raised_before_iterating(mnet, grey, call, kind, needles):
    with pytest.raises(kind) as err:
        call(mnet, grey)  # no next(): arguments are checked eagerly
    message = str(err.value)
    assert isinstance(err.value, DrprobeError) and "\n" not in message
    assert all(needle in message for needle in needles)
