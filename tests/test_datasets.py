"""Dataset registry, IDX reader and stratified sampling."""

from __future__ import annotations

import gzip
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from drprobe.errors import DrprobeError, InvalidValueError, MissingDataError, UnknownNameError
from drprobe.sources.datasets import (
    FASHION_MNIST_CLASSES,
    ImageDataset,
    available_datasets,
    load_dataset,
    parse_idx,
    read_idx,
    stratified_subsample,
    subsample,
    train_val_split,
)

# type byte, big-endian struct code: an independent writer built on `struct`, not numpy.
IDX_TYPES = {
    np.uint8: (0x08, "B"), np.int8: (0x09, "b"), np.int16: (0x0B, "h"),
    np.int32: (0x0C, "i"), np.float32: (0x0D, "f"), np.float64: (0x0E, "d"),
}


def idx_bytes(arr: np.ndarray) -> bytes:
    code, fmt = IDX_TYPES[arr.dtype.type]
    head = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
    flat = arr.ravel().tolist()
    return head + struct.pack(f">{len(flat)}{fmt}", *flat)


def sample_array(dtype: type, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return (rng.standard_normal(shape) * 1e3).astype(dtype)


# ------------------------------------------------------------------------------ IDX reader


@pytest.mark.parametrize("dtype", list(IDX_TYPES))
@pytest.mark.parametrize("shape", [(7,), (3, 4, 5)])
@pytest.mark.parametrize("compress", [True, False])
def test_idx_roundtrip(tmp_path: Path, dtype: type, shape: tuple[int, ...], compress: bool):
    arr = sample_array(dtype, shape, seed=len(shape))
    raw = idx_bytes(arr)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    path.write_bytes(gzip.compress(raw) if compress else raw)
    got = read_idx(path)
    assert got.dtype == np.dtype(dtype).newbyteorder("=")
    assert got.shape == shape
    np.testing.assert_array_equal(got, arr)


def test_idx_known_bytes():
    raw = bytes([0, 0, 0x0B, 2, 0, 0, 0, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE])
    np.testing.assert_array_equal(parse_idx(raw), np.array([[258, -2]], dtype=np.int16))


def test_idx_truncated_raises_one_line(tmp_path: Path):
    raw = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    path = tmp_path / "cut-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(raw[:-5]))
    with pytest.raises(DrprobeError, match="truncated") as info:
        read_idx(path)
    assert "cut-idx3-ubyte.gz" in str(info.value) and "\n" not in str(info.value)


def test_idx_truncated_gzip_stream(tmp_path: Path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((50, 50), np.uint8)))[:-12])
    with pytest.raises(DrprobeError, match="cut.gz"):
        read_idx(path)


@pytest.mark.parametrize("raw", [b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", b"\x00\x00", b""])
def test_idx_bad_magic(raw: bytes):
    with pytest.raises(DrprobeError, match="magic") as info:
        parse_idx(raw, source="bad.idx")
    assert "bad.idx" in str(info.value) and "\n" not in str(info.value)


def test_idx_unknown_type_and_trailing_bytes():
    with pytest.raises(DrprobeError, match="0x07"):
        parse_idx(bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 9]))
    with pytest.raises(DrprobeError, match="trailing"):
        parse_idx(idx_bytes(np.arange(3, dtype=np.uint8)) + b"\x00")


# --------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.parametrize("split,n", [("train", 60000), ("test", 10000)])
def test_fashion_mnist_real(split: str, n: int):
    # Not skipped when missing: the MissingDataError message then says how to install it.
    ds = load_dataset("fashion-mnist", split)
    assert ds.images.shape == (n, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (n,) and ds.labels.dtype == np.int64
    assert ds.classes == FASHION_MNIST_CLASSES and len(ds.classes) == 10
    np.testing.assert_array_equal(np.bincount(ds.labels), np.full(10, n // 10))
    assert ds.indices is None and 0 < ds.images.mean() < 255


def test_fashion_mnist_train_rows_hold_out_images():
    whole = load_dataset("fashion-mnist", "train")
    head = load_dataset("fashion-mnist?train_rows=0:50000", "train")
    tail = load_dataset("fashion-mnist", "train", train_rows="50000:60000")
    np.testing.assert_array_equal(head.images, whole.images[:50000])
    np.testing.assert_array_equal(tail.labels, whole.labels[50000:])
    assert len(head.labels) + len(tail.labels) == len(whole.labels)
    test = load_dataset("fashion-mnist?train_rows=50000:60000", "test")
    assert len(test.labels) == 10000  # the test split stays whole


@pytest.mark.parametrize("rows", ["50000", "a:b", "10:5", "0:60001", "1:2:3"])
def test_fashion_mnist_bad_train_rows_is_one_line(rows: str):
    with pytest.raises(InvalidValueError, match="must be 'A:B' with 0 <= A < B <= 60000") as info:
        load_dataset(f"fashion-mnist?train_rows={rows}", "train")
    assert "\n" not in str(info.value)


def test_fashion_mnist_missing_folder(tmp_path: Path):
    with pytest.raises(MissingDataError, match="dataset-fashion-mnist") as info:
        load_dataset("fashion-mnist", "test", root=tmp_path)
    msg = str(info.value)
    assert "t10k-images-idx3-ubyte.gz" in msg and "DRPROBE_FASHION_MNIST" in msg
    assert "\n" not in msg


def write_fake_fashion(folder: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28)).astype(np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    return images, labels


def test_fashion_mnist_root_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    images, labels = write_fake_fashion(tmp_path / "a", 20, seed=1)
    ds = load_dataset("fashion-mnist", "train", root=tmp_path / "a")
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)
    images_b, _ = write_fake_fashion(tmp_path / "b", 30, seed=2)
    monkeypatch.setenv("DRPROBE_FASHION_MNIST", str(tmp_path / "b"))
    np.testing.assert_array_equal(load_dataset("fashion-mnist", "test").images, images_b)
    # root= wins over the environment variable
    assert len(load_dataset("fashion-mnist", "test", root=tmp_path / "a")) == 20


def test_fashion_mnist_mismatched_files(tmp_path: Path):
    write_fake_fashion(tmp_path, 20, seed=1)
    labels = np.zeros(19, np.uint8)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(DrprobeError, match="do not match"):
        load_dataset("fashion-mnist", "train", root=tmp_path)


# ---------------------------------------------------------------------------------- digits


def test_digits_splits():
    from sklearn.datasets import load_digits

    full = load_digits()
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1258, 539)
    for ds in (train, test):
        assert ds.images.dtype == np.uint8 and ds.images.shape[1:] == (8, 8)
        assert ds.labels.dtype == np.int64 and ds.classes == [str(i) for i in range(10)]
        assert ds.images.max() == 255 and ds.images.min() == 0
    # every original image lands in exactly one split (disjoint and covering, as a multiset)
    scaled = np.rint(full.images * 255 / 16).astype(np.uint8).reshape(len(full.images), -1)
    ours = np.concatenate([train.images, test.images]).reshape(len(full.images), -1)
    assert sorted(map(bytes, ours)) == sorted(map(bytes, scaled))
    # stratified: each class's test share within 1 of 30%
    total, in_test = np.bincount(full.target), np.bincount(test.labels, minlength=10)
    assert np.all(np.abs(in_test - 0.3 * total) <= 1)
    # deterministic
    again = load_dataset("digits", "test")
    np.testing.assert_array_equal(again.images, test.images)
    np.testing.assert_array_equal(again.labels, test.labels)


def test_registry_and_errors():
    assert available_datasets() == ["cifar10", "cifar100", "digits", "fashion-mnist", "mnist"]
    with pytest.raises(UnknownNameError, match="cifar11.*digits, fashion-mnist"):
        load_dataset("cifar11", "train")
    with pytest.raises(UnknownNameError, match="'val'.*test, train"):
        load_dataset("digits", "val")


# -------------------------------------------------------------------------------- sampling


def imbalanced_labels(seed: int = 0) -> np.ndarray:
    counts = [500, 123, 77, 300, 1, 9]
    labels = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(labels)


@pytest.mark.parametrize("n", [1, 2, 5, 17, 100, 499, 1009])
def test_stratified_subsample_counts(n: int):
    labels = imbalanced_labels()
    idx = stratified_subsample(labels, n, seed=3)
    assert len(idx) == n and len(np.unique(idx)) == n
    assert np.all(np.diff(idx) > 0) and idx.dtype == np.int64
    counts = np.bincount(labels, minlength=6)
    got = np.bincount(labels[idx], minlength=6)
    assert np.all(np.abs(got - n * counts / len(labels)) < 1)
    np.testing.assert_array_equal(idx, stratified_subsample(labels, n, seed=3))


def test_stratified_subsample_largest_remainder_known():
    # 3 classes of 5, 3, 2 -> n=5 quotas 2.5, 1.5, 1.0: floors 2,1,1, one left -> class 0 (tie)
    labels = np.array([0] * 5 + [1] * 3 + [2] * 2)
    got = Counter(labels[stratified_subsample(labels, 5, seed=0)].tolist())
    assert got == {0: 3, 1: 1, 2: 1}
    # quotas 0.4*[5,3,2]*... n=4: 2.0, 1.2, 0.8 -> floors 2,1,0; remainder to class 2 (0.8)
    got = Counter(labels[stratified_subsample(labels, 4, seed=0)].tolist())
    assert got == {0: 2, 1: 1, 2: 1}


def test_stratified_subsample_seed_all_and_errors():
    labels = imbalanced_labels()
    a = stratified_subsample(labels, 200, seed=0)
    b = stratified_subsample(labels, 200, seed=1)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(stratified_subsample(labels, None, 0), np.arange(len(labels)))
    np.testing.assert_array_equal(stratified_subsample(labels, 10**6, 0), np.arange(len(labels)))
    for bad in (0, -3):
        with pytest.raises(InvalidValueError, match=str(bad)):
            stratified_subsample(labels, bad, 0)
    strings = np.array(["cat", "dog", "dog", "cat", "eel", "dog"])
    assert len(stratified_subsample(strings, 3, 0)) == 3


@pytest.mark.parametrize("frac", [0.1, 0.3, 0.5, 0.9])
def test_train_val_split(frac: float):
    labels = imbalanced_labels(seed=5)
    train, val = train_val_split(labels, frac, seed=2)
    assert len(np.intersect1d(train, val)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
    assert len(val) == round(frac * len(labels))
    counts = np.bincount(labels)
    assert np.all(np.abs(np.bincount(labels[val], minlength=6) - frac * counts) < 1)
    t2, v2 = train_val_split(labels, frac, seed=2)
    np.testing.assert_array_equal(val, v2)
    np.testing.assert_array_equal(train, t2)
    assert not np.array_equal(val, train_val_split(labels, frac, seed=3)[1])


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_train_val_split_bad_fraction(bad: float):
    with pytest.raises(InvalidValueError, match="val_fraction"):
        train_val_split(np.arange(10) % 2, bad, seed=0)


def test_subsample_dataset_provenance():
    labels = imbalanced_labels()
    images = np.arange(len(labels), dtype=np.int64).astype(np.uint8)[:, None, None]
    images = np.broadcast_to(images, (len(labels), 2, 2)).copy()
    ds = ImageDataset("toy", "train", images, labels, [str(i) for i in range(6)])
    assert subsample(ds, None, 0) is ds and subsample(ds, len(ds), 0) is ds
    small = subsample(ds, 300, seed=4)
    np.testing.assert_array_equal(small.indices, stratified_subsample(labels, 300, 4))
    np.testing.assert_array_equal(small.labels, labels[small.indices])
    np.testing.assert_array_equal(small.images, images[small.indices])
    smaller = subsample(small, 50, seed=1)  # indices compose back to the full split
    np.testing.assert_array_equal(smaller.labels, labels[smaller.indices])
    np.testing.assert_array_equal(smaller.images, images[smaller.indices])
    assert set(smaller.indices) <= set(small.indices)
