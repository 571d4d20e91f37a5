"""Precomputed features ("bring your own features") in every format, and their door through
``get_features("precomputed", layer, "features:PATH", split)``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from drprobe.errors import DrprobeError, InvalidValueError, MissingDataError, UnknownNameError
from drprobe.features import get_features
from drprobe.sources.data.arrays import read_precomputed
from drprobe.sources.datasets import load_precomputed, stratified_subsample


def make_arrays(seed: int = 0, d: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "X_train": rng.standard_normal((12, d)).astype(np.float32),
        "y_train": np.arange(12, dtype=np.int64) % 3,
        "X_test": rng.standard_normal((6, d)).astype(np.float32),
        "y_test": np.array([2, 1, 0, 0, 1, 2], dtype=np.int64),
    }


def write_npy(folder: Path, arrays: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, v in arrays.items():
        np.save(folder / f"{k}.npy", v)
    return folder


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **arrays)
    return path


def write_safetensors(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    st = pytest.importorskip("safetensors.numpy")
    st.save_file(arrays, str(path), metadata={"classes": json.dumps(["a", "b", "c"])})
    return path


def write_parquet_list(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    rows = {"features": [], "label": [], "split": []}
    for s in ("train", "test"):
        rows["features"] += arrays[f"X_{s}"].tolist()
        rows["label"] += arrays[f"y_{s}"].tolist()
        rows["split"] += [s] * len(arrays[f"y_{s}"])
    pq.write_table(pa.table(rows), path)
    return path


def write_parquet_columns(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    d = arrays["X_train"].shape[1]
    # test rows first: the split column, not the row order, decides
    X = np.concatenate([arrays["X_test"], arrays["X_train"]])
    cols = {f"f{j}": X[:, j] for j in range(d)}
    cols["label"] = np.concatenate([arrays["y_test"], arrays["y_train"]])
    cols["split"] = ["test"] * len(arrays["y_test"]) + ["train"] * len(arrays["y_train"])
    pq.write_table(pa.table(cols), path)
    return path


WRITERS = {
    "npy": lambda tmp, a: write_npy(tmp / "feats", a),
    "npz": lambda tmp, a: write_npz(tmp / "f.npz", a),
    "safetensors": lambda tmp, a: write_safetensors(tmp / "f.safetensors", a),
    "parquet-list": lambda tmp, a: write_parquet_list(tmp / "f.parquet", a),
    "parquet-columns": lambda tmp, a: write_parquet_columns(tmp / "f.parquet", a),
}


@pytest.mark.parametrize("fmt", list(WRITERS))
@pytest.mark.parametrize("split", ["train", "test"])
def test_every_format_roundtrips(tmp_path: Path, fmt: str, split: str):
    arrays = make_arrays()
    path = WRITERS[fmt](tmp_path, arrays)
    X, y = load_precomputed(path, split)
    np.testing.assert_array_equal(np.asarray(X, np.float32), arrays[f"X_{split}"])
    np.testing.assert_array_equal(y, arrays[f"y_{split}"])
    assert y.dtype == np.int64
    classes = read_precomputed(path, split).classes
    assert classes == (["a", "b", "c"] if fmt == "safetensors" else ["0", "1", "2"])


def test_npy_folder_is_memory_mapped_and_lower_case_names(tmp_path: Path):
    arrays = {k.lower(): v for k, v in make_arrays(1).items()}
    folder = write_npy(tmp_path / "f", arrays)
    np.save(folder / "classes.npy", np.array(["r", "g", "b"]))
    out = read_precomputed(folder, "train")
    assert isinstance(out.X, np.memmap) and out.classes == ["r", "g", "b"]
    np.testing.assert_array_equal(out.X, arrays["x_train"])


def test_get_features_door(tmp_path: Path):
    arrays = make_arrays(2, d=7)
    path = write_npz(tmp_path / "f.npz", arrays)
    feats = get_features("precomputed", "penultimate", f"features:{path}", "test")
    np.testing.assert_array_equal(feats.X, arrays["X_test"])
    np.testing.assert_array_equal(feats.y, arrays["y_test"])
    assert feats.meta["layer"] == "penultimate" and feats.meta["format"] == ".npz"
    assert (feats.meta["n"], feats.meta["d"]) == (6, 7) and feats.meta["indices"] is None
    small = get_features("precomputed", "penultimate", f"features:{path}", "train", n=6,
                         sample_seed=3, dtype="float64")
    idx = stratified_subsample(arrays["y_train"], 6, 3)
    assert small.meta["indices"] == idx.tolist() and small.X.dtype == np.float64
    np.testing.assert_array_equal(small.X, arrays["X_train"][idx].astype(np.float64))
    np.testing.assert_array_equal(small.y, arrays["y_train"][idx])
    rel = get_features("precomputed", "x", "features:f.npz", "train", data_root=tmp_path)
    assert rel.X.shape == (12, 7)


def test_get_features_npy_stays_mapped(tmp_path: Path):
    folder = write_npy(tmp_path / "f", make_arrays(3))
    feats = get_features("precomputed", "layer3", f"features:{folder}", "train")
    assert isinstance(feats.X, np.memmap) or isinstance(feats.X.base, np.memmap)


def test_parquet_string_labels_and_no_split_column(tmp_path: Path):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((20, 3))
    labels = ["dog", "cat"] * 10
    pq.write_table(pa.table({"emb": X.tolist(), "label": labels}), tmp_path / "s.parquet")
    tr = read_precomputed(tmp_path / "s.parquet", "train")
    te = read_precomputed(tmp_path / "s.parquet", "test", test_fraction=0.5, seed=1)
    assert tr.classes == ["cat", "dog"] and (len(tr.y), len(te.y)) == (16, 10)
    rows = {tuple(r): lab for r, lab in zip(np.round(X, 12).tolist(), labels)}
    for x, y in zip(tr.X, tr.y):
        assert rows[tuple(np.round(x, 12).tolist())] == tr.classes[y]
    feats = get_features("precomputed", "emb", f"features:{tmp_path / 's.parquet'}?seed=1"
                         "&test_fraction=0.5", "test")
    np.testing.assert_array_equal(feats.X, te.X.astype(np.float32))


def test_errors(tmp_path: Path):
    with pytest.raises(MissingDataError, match="X_train.npy") as info:
        load_precomputed(tmp_path / "none.npz", "train")
    assert "\n" not in str(info.value)
    np.savez(tmp_path / "bad.npz", X_train=np.zeros((3, 2)), y_train=[0, 1],
             X_test=np.zeros((1, 2)), y_test=[0])
    with pytest.raises(DrprobeError, match="3 feature rows and 2 labels"):
        load_precomputed(tmp_path / "bad.npz", "train")
    np.savez(tmp_path / "nd.npz", X_train=np.zeros((3, 2, 2)), y_train=[0, 1, 0],
             X_test=np.zeros((1, 2)), y_test=[0])
    with pytest.raises(InvalidValueError, match=r"\(n, d\)"):
        load_precomputed(tmp_path / "nd.npz", "train")
    np.savez(tmp_path / "miss.npz", X_train=np.zeros((3, 2)), y_train=[0, 1, 0])
    with pytest.raises(MissingDataError, match="y_test"):
        load_precomputed(tmp_path / "miss.npz", "train")
    np.savez(tmp_path / "names.npz", **make_arrays(), classes=np.array(["only-one"]))
    with pytest.raises(InvalidValueError, match="1 class names for labels up to 2"):
        load_precomputed(tmp_path / "names.npz", "train")
    pq.write_table(pa.table({"f": ["a", "b"], "label": [0, 1], "split": ["train"] * 2}),
                   tmp_path / "str.parquet")
    with pytest.raises(InvalidValueError, match="not numeric: f"):
        load_precomputed(tmp_path / "str.parquet", "train")
    with pytest.raises(MissingDataError, match="split == 'test'"):
        load_precomputed(tmp_path / "str.parquet", "test")
    with pytest.raises(UnknownNameError, match="'val'"):
        load_precomputed(tmp_path / "bad.npz", "val")


def test_door_refuses_mismatched_model_and_dataset(tmp_path: Path):
    path = write_npz(tmp_path / "f.npz", make_arrays())
    with pytest.raises(InvalidValueError, match="'precomputed' goes with"):
        get_features("builtin:mobilenet_v2", "penultimate", f"features:{path}", "train")
    with pytest.raises(InvalidValueError, match="'precomputed' goes with"):
        get_features("precomputed", "penultimate", "digits", "train")
    with pytest.raises(UnknownNameError, match="features dtype"):
        get_features("precomputed", "penultimate", f"features:{path}", "train", dtype="int8")
