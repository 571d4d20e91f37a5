"""Extraction at scale: memory-budgeted batch sizes, devices, autocast, the GPU input path.

Known answers for the batch arithmetic, MobileNetV2's architecture for the activation estimate,
fp32 as the reference for bf16 autocast, and ``preprocess`` as the reference for the on-device
preprocessing. CUDA-only checks skip on machines without a GPU.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from helpers import SliceRecorder

import drprobe.features.extract as extract_mod
from drprobe.errors import DrprobeError, InvalidValueError, UnknownNameError
from drprobe.features import get_features
from drprobe.features.batching import (
    ACTIVATION_FACTOR,
    fit_batch_size,
    gpu_batch_cap,
    plan_batches,
    resolve_device,
    resolve_precision,
)
from drprobe.features.extract import iter_features
from drprobe.sources.layers import PENULTIMATE
from drprobe.sources.models import ModelBundle, load_model
from drprobe.sources.transforms import preprocess

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def mnet() -> ModelBundle:
    return load_model("builtin:mobilenet_v2")


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, size=(10, 24, 24, 3), dtype=np.uint8)


def _run(bundle: ModelBundle, layer: str, images: np.ndarray, **kwargs) -> list[np.ndarray]:
    return list(iter_features(bundle, layer, images, progress=False, **kwargs))


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---- batch arithmetic ------------------------------------------------------------------------

@pytest.mark.parametrize("requested, item, budget, expected", [
    (256, 100, 1000, 10), (256, 100, 999, 9), (8, 100, 10_000, 8), (256, 100, 50, 1),
    (256, 100, None, 256), (7, 3, 21, 7), (7, 3, 20, 6),
])
def test_fit_batch_size_known_answers(requested, item, budget, expected):
    assert fit_batch_size(requested, item, budget) == expected


def test_gpu_cap_reads_overhead_and_slope_from_two_passes():
    seen = []

    def peak(b: int) -> float:  # 100 bytes fixed + 10 per example
        seen.append(b)
        return 100 + 10 * b

    assert gpu_batch_cap(256, peak, free_bytes=1000, fraction=0.5) == 40  # (500 - 100) / 10
    assert seen == [1, 4]
    assert gpu_batch_cap(16, peak, free_bytes=1000, fraction=0.5) == 16
    assert gpu_batch_cap(256, peak, free_bytes=1000, fraction=1.0) == 90
    assert gpu_batch_cap(256, peak, free_bytes=100, fraction=0.5) == 1  # never below one


def test_plan_counts_largest_activation_and_features(mnet):
    # MobileNetV2 at 32 px, up to features.4: the largest output is features.2's expansion,
    # 96 x 16 x 16; features.4 flattened is 32 x 4 x 4.
    plan = plan_batches(mnet, "features.4", pooling="flatten", image_size=32, max_batch_mb=None)
    assert plan.d == 512 and plan.device == torch.device("cpu") and plan.precision == "fp32"
    assert plan.item_bytes == 4 * (ACTIVATION_FACTOR * 96 * 16 * 16 + 512)
    assert plan.batch_size == 256 and plan.budget_bytes is None and plan.gpu_cap is None
    wide = plan_batches(mnet, "features.4", pooling="flatten", image_size=64, max_batch_mb=None)
    assert wide.d == 32 * 8 * 8
    assert wide.item_bytes == 4 * (ACTIVATION_FACTOR * 96 * 32 * 32 + 32 * 8 * 8)


@pytest.mark.parametrize("layer, pooling, items", [("features.4", "flatten", 3.5),
                                                   (PENULTIMATE, "avg", 2.0),
                                                   ("features.14", "flatten", 0.3)])
def test_batches_produced_respect_the_budget(mnet, rgb, layer, pooling, items):
    images = rgb[:5]
    item = plan_batches(mnet, layer, pooling=pooling, image_size=32, max_batch_mb=None).item_bytes
    budget_mb = items * item / 2**20
    plan = plan_batches(mnet, layer, pooling=pooling, image_size=32, max_batch_mb=budget_mb)
    expected = max(1, int(items))
    assert plan.batch_size == expected
    batches = _run(mnet, layer, images, pooling=pooling, image_size=32, max_batch_mb=budget_mb)
    sizes = [b.shape[0] for b in batches]
    assert sizes[:-1] == [expected] * (len(sizes) - 1) and 0 < sizes[-1] <= expected
    assert sum(sizes) == len(images)
    if items >= 1:
        assert max(sizes) * plan.item_bytes <= budget_mb * 2**20
    ref = np.concatenate(_run(mnet, layer, images, pooling=pooling, image_size=32))
    np.testing.assert_allclose(np.concatenate(batches), ref, rtol=1e-5, atol=1e-5)


def test_requested_batch_size_is_an_upper_bound(mnet, rgb):
    sizes = [b.shape[0] for b in _run(mnet, "features.4", rgb, image_size=32, batch_size=4,
                                      max_batch_mb=1000)]
    assert sizes == [4, 4, 2]


def test_flatten_extraction_allocates_no_full_matrix(mnet, tmp_path):
    """Python-side allocations (numpy is traced) stay far below one (n, d) float32 array: what
    remains is constant, mostly two 4 MiB read buffers of the sha256 of the files."""
    n = 192
    images = np.random.default_rng(2).integers(0, 256, size=(n, 48, 48, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=images, y_train=np.arange(n) % 4,
             x_test=images[:4], y_test=np.arange(4))
    d = 32 * 48 * 48  # features.0 at 96 px
    tracemalloc.start()
    try:
        feats = get_features(mnet, "features.0", f"npz:{tmp_path / 'd.npz'}", "train",
                             pooling="flatten", image_size=96, dtype="float16", max_batch_mb=4,
                             cache_dir=tmp_path / "cache", progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert feats.X.shape == (n, d) and feats.X.dtype == np.float16
    assert peak < 10 * 2**20 < n * d * 4 / 5, (peak, n * d * 4)


# ---- devices and precision -------------------------------------------------------------------

def test_device_and_precision_resolution(mnet):
    assert resolve_device(None, mnet) == torch.device("cpu")
    assert resolve_device("cpu", mnet) == torch.device("cpu")
    if CUDA:
        assert resolve_device("auto", mnet) == torch.device("cuda", torch.cuda.current_device())
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    if not CUDA:
        assert resolve_device("auto", mnet).type in ("cpu", "mps")
        with pytest.raises(InvalidValueError, match="'cuda' is not available"):
            resolve_device("cuda", mnet)


@pytest.mark.parametrize("kwargs, kind, needles", [
    ({"device": "tpu"}, InvalidValueError, ["'tpu'", "auto", "cpu", "cuda"]),
    ({"precision": "fp8"}, UnknownNameError, ["'fp8'", "bf16", "fp16", "fp32"]),
    ({"max_batch_mb": 0}, InvalidValueError, ["max_batch_mb", "0"]),
    ({"max_batch_mb": True}, InvalidValueError, ["max_batch_mb", "True"]),
    ({"gpu_memory_fraction": 1.5}, InvalidValueError, ["gpu_memory_fraction", "1.5"]),
])
def test_bad_arguments_are_refused_before_iterating(mnet, rgb, kwargs, kind, needles):
    with pytest.raises(kind) as err:
        iter_features(mnet, PENULTIMATE, rgb, progress=False, **kwargs)  # no next()
    assert isinstance(err.value, DrprobeError) and "\n" not in str(err.value)
    assert all(needle in str(err.value) for needle in needles)


def test_cpu_autocast_bf16_is_close_to_fp32(mnet, rgb):
    for layer, pooling in ((PENULTIMATE, "avg"), ("features.6", "flatten")):
        fp32 = np.concatenate(_run(mnet, layer, rgb, pooling=pooling, image_size=32,
                                   precision="fp32", device="cpu"))
        bf16 = _run(mnet, layer, rgb, pooling=pooling, image_size=32, precision="bf16",
                    device="cpu", batch_size=4)
        assert all(b.dtype == np.float32 for b in bf16)
        bf16 = np.concatenate(bf16)
        err = _rel_err(bf16, fp32)
        assert 0.0 < err < 0.05, err  # bf16 has 8 significand bits: close, not equal
        corr = np.corrcoef(bf16.ravel(), fp32.ravel())[0, 1]
        assert corr > 0.998
    auto = np.concatenate(_run(mnet, PENULTIMATE, rgb, image_size=32))
    assert np.array_equal(auto, np.concatenate(_run(mnet, PENULTIMATE, rgb, image_size=32,
                                                    precision="fp32")))


@pytest.mark.parametrize("make", [
    lambda r: r,                                     # RGB uint8
    lambda r: r[..., 0],                             # grey uint8
    lambda r: r[..., :1],                            # grey with a channel axis
    lambda r: r.astype(np.float32) / 255.0,          # float in [0, 1]
])
def test_tensor_preprocessing_matches_numpy_preprocessing(rgb, make):
    images = make(rgb)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for size in (24, 40, 16):
        ours = preprocess(torch.from_numpy(np.array(images)), size, mean, std)
        torch.testing.assert_close(ours, preprocess(images, size, mean, std))


def test_tensor_preprocessing_refuses_bad_shapes():
    with pytest.raises(InvalidValueError, match="shape"):
        preprocess(torch.zeros(2, 8, 8, 2), 8, (0.0,) * 3, (1.0,) * 3)


def test_pipelined_order_runs_one_batch_ahead(mnet, rgb, monkeypatch):
    """The CUDA schedule (batch i handed out after batch i+1 is queued), forced on CPU."""
    plain = _run(mnet, "features.6", rgb, image_size=32, batch_size=3)
    monkeypatch.setattr(extract_mod, "_pipelined", lambda device: True)
    source = SliceRecorder(rgb)
    batches = iter_features(mnet, "features.6", source, image_size=32, batch_size=3,
                            progress=False)
    first = next(batches)
    assert source.starts == [0, 3]  # the second batch was queued before the first came out
    rest = list(batches)
    assert source.starts == [0, 3, 6, 9]
    assert [b.shape[0] for b in [first, *rest]] == [3, 3, 3, 1]
    for ours, ref in zip([first, *rest], plain):
        np.testing.assert_array_equal(ours, ref)  # batches not overwritten by later ones


# ---- CUDA (skipped without a GPU) ------------------------------------------------------------

@needs_cuda
def test_cuda_extraction_matches_cpu_and_puts_the_model_back(mnet, rgb):
    cpu = np.concatenate(_run(mnet, "features.6", rgb, pooling="flatten", image_size=32))
    gpu = np.concatenate(_run(mnet, "features.6", rgb, pooling="flatten", image_size=32,
                              device="cuda", precision="fp32", batch_size=3))
    assert _rel_err(gpu, cpu) < 1e-2  # convolutions may use TF32
    half = np.concatenate(_run(mnet, "features.6", rgb, pooling="flatten", image_size=32,
                               device="cuda", batch_size=3))  # auto: bf16 / fp16
    assert half.dtype == np.float32 and _rel_err(half, cpu) < 0.05
    assert next(mnet.module.parameters()).device.type == "cpu"


@needs_cuda
def test_cuda_plan_measures_gpu_memory(mnet):
    plan = plan_batches(mnet, "features.4", pooling="flatten", image_size=224, batch_size=10**6,
                        device="cuda", max_batch_mb=None)
    assert plan.device.type == "cuda" and plan.precision in ("bf16", "fp16")
    assert plan.gpu_cap is not None and 1 <= plan.batch_size == plan.gpu_cap < 10**6
    assert plan.item_bytes == 2 * 4 * plan.d
    assert next(mnet.module.parameters()).device.type == "cpu"
