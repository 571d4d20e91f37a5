"""``builtin:pixels``: the penultimate layer is the image itself, so raw-pixel logistic regression
runs through the same extraction, probes and results as the networks.

The expected pixels are read straight from Fashion-MNIST's IDX files with gzip and numpy (not
through drprobe's reader) and scaled by 1/255.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from drprobe.experiment.config import parse_config
from drprobe.experiment.runner import run_experiment
from drprobe.features import get_features
from drprobe.sources.data.mnist import FASHION_MNIST_DEFAULT_ROOT, FASHION_MNIST_ENV
from drprobe.sources.datasets import stratified_subsample, train_val_split
from drprobe.sources.layers import list_layers
from drprobe.sources.models import available_models, load_model

pytestmark = pytest.mark.usefixtures("no_network")

LAM = 0.1  # the one L2 strength of the end-to-end probe


def _idx(name: str, header: int) -> np.ndarray:
    folder = Path(os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DEFAULT_ROOT)
    with gzip.open(folder / name, "rb") as handle:
        return np.frombuffer(handle.read(), dtype=np.uint8, offset=header)


@pytest.fixture(scope="module")
def fashion() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: ((N, 28, 28) uint8 images, (N,) labels)} read without drprobe."""
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = _idx(f"{prefix}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
        out[split] = images, _idx(f"{prefix}-labels-idx1-ubyte.gz", 8).astype(np.int64)
    return out


def test_listed_with_penultimate_the_flat_image():
    assert "builtin:pixels" in available_models()
    bundle = load_model("pixels")
    assert bundle.spec == "builtin:pixels" and bundle.weights_sha256 is None
    assert (bundle.input_size, bundle.mean, bundle.std) == (28, (0.0,) * 3, (1.0,) * 3)
    for size in (28, 12):
        rows = {row.name: row.shape for row in list_layers(bundle, size)}
        assert rows["penultimate"] == (size * size,) and rows["grey"] == (1, size, size)


@pytest.mark.parametrize("weights", ["pretrained", "random"])
def test_features_are_the_pixels(tmp_path, fashion, weights):
    feats = get_features("pixels", "penultimate", "fashion-mnist", "test", weights=weights,
                         seed=7, n=40, cache_dir=tmp_path, progress=False)
    images, labels = fashion["test"]
    idx = _rows(labels, 40)
    assert feats.X.shape == (40, 28 * 28)
    np.testing.assert_array_equal(feats.y, labels[idx])
    expected = images[idx].reshape(40, -1).astype(np.float64) / 255.0
    np.testing.assert_allclose(np.asarray(feats.X, dtype=np.float64), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", [28, 14])
def test_width_follows_the_image_size(tmp_path, fashion, size):
    feats = get_features("pixels", "penultimate", "fashion-mnist", "test", image_size=size,
                         n=20, cache_dir=tmp_path, progress=False)
    assert feats.X.shape == (20, size * size)
    images, labels = fashion["test"]
    idx = _rows(labels, 20)
    np.testing.assert_array_equal(feats.y, labels[idx])
    images = images[idx]
    x = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    if size != 28:  # the preprocessing's resize: bilinear, antialiased
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
    np.testing.assert_allclose(feats.X, x.reshape(20, -1).numpy(), rtol=0, atol=1e-6)


def test_runner_probe_is_raw_pixel_logistic_regression(tmp_path, fashion):
    """A study config with ``pixels`` beside its networks: its full-layer probe is scikit-learn's
    logistic regression on the standardised raw pixels of the same rows (within a point)."""
    config = parse_config({
        "name": "pixels-baseline",
        "models": [{"name": "pixels", "spec": "pixels", "weights": ["pretrained"]}],
        "layers": ["penultimate"],
        "datasets": [{"name": "fashion-mnist", "n_train": 500, "n_test": 300}],
        "fractions": [1.0], "seeds": [1],
        "probe": {"l2_grid": [LAM], "tol": 1e-4, "max_steps": 1000},
    })
    out = run_experiment(config, tmp_path / "run", cache_dir=tmp_path / "cache", progress=False)
    row = out.results.query("fraction == 1.0").iloc[0]
    assert (row["model"], row["layer"], row["d"], row["k"]) == ("pixels", "penultimate", 784, 784)

    (tr_images, tr_labels), (te_images, te_labels) = fashion["train"], fashion["test"]
    tr_idx, te_idx = _rows(tr_labels, 500), _rows(te_labels, 300)
    X = tr_images[tr_idx].reshape(len(tr_idx), -1) / 255.0
    y = tr_labels[tr_idx]
    X_test, y_test = te_images[te_idx].reshape(len(te_idx), -1) / 255.0, te_labels[te_idx]
    fit_rows, _val_rows = train_val_split(y, config.probe.val_fraction, 0)
    mean, std = X[fit_rows].mean(0), X[fit_rows].std(0)
    std[std == 0] = 1.0
    model = LogisticRegression(C=1 / (LAM * len(fit_rows)), max_iter=5000, tol=1e-6)
    with threadpool_limits(1):  # BLAS threads fighting over shared cores cost 20x here
        model.fit((X[fit_rows] - mean) / std, y[fit_rows])
    reference = model.score((X_test - mean) / std, y_test)
    assert 0.6 < reference < 0.95
    assert abs(row["test_acc"] - reference) <= 0.01, (row["test_acc"], reference)


def _rows(labels: np.ndarray, n: int) -> np.ndarray:
    """The positions of the stratified subsample of n rows that extraction and runs draw
    (sample seed 0); the tests check the labels they give against the extracted ones."""
    return stratified_subsample(labels, n, 0)
