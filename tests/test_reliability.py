"""Faults: damaged cache entries, two extractors racing, failing writes, failing result parts.

Everything runs on the real MobileNetV2 weights and scikit-learn digits at 32 px, block 14
(160 neurons), 200 training images, so each extraction takes well under a second.
"""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import drprobe.features as features_mod
from drprobe.cli import main
from drprobe.errors import CacheError
from drprobe.features import get_features
from drprobe.features.cache import CacheWarning, FeatureCache, file_sha256
from drprobe.sources.models import load_model

MODEL, LAYER, DATASET = "builtin:mobilenet_v2", "features.14", "digits"
KW = {"n": 200, "image_size": 32, "progress": False}


_BUNDLE: list = []  # the model, loaded once per module


def extract(cache_dir: Path, **extra):
    if not _BUNDLE:
        _BUNDLE.append(load_model(MODEL))
    return get_features(_BUNDLE[0], LAYER, DATASET, "train", cache_dir=cache_dir, **KW, **extra)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    """A single-process extraction into its own cache: the reference (X (200, 160), y (200,))."""
    entry = get_features(MODEL, LAYER, DATASET, "train", **KW,
                         cache_dir=tmp_path_factory.mktemp("reference-cache"))
    return np.array(entry.X), np.array(entry.y)


def entries(root: Path) -> list[Path]:
    """Entry folders (``<root>/<ab>/<key>``) that hold files."""
    return sorted(p for p in root.glob("??/*") if p.is_dir())


def temp_dirs(root: Path) -> list[Path]:
    return sorted(root.glob(".tmp-*"))


def assert_intact(root: Path, X: np.ndarray, y: np.ndarray) -> None:
    """Exactly one entry, its files match meta.json's hashes, its arrays equal (X, y)."""
    (entry,) = entries(root)
    assert sorted(p.name for p in entry.iterdir()) == ["features.npy", "labels.npy", "meta.json"]
    meta = json.loads((entry / "meta.json").read_text())
    for name in ("features.npy", "labels.npy"):
        assert file_sha256(entry / name) == meta["files"][name]["sha256"], name
    np.testing.assert_array_equal(np.load(entry / "features.npy"), X)
    np.testing.assert_array_equal(np.load(entry / "labels.npy"), y)
    assert temp_dirs(root) == []


def plan_files_only(out: Path) -> bool:
    """No results, summaries, timings or tables in a run folder: at most its plan files."""
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} \
        if out.exists() else set()
    return names <= {"config.yaml", "plan.json"}


def assert_nothing_written(root: Path) -> None:
    """No file under ``root`` but the runners' lock (empty key-prefix folders are harmless),
    and no temp dir."""
    if root.exists():
        assert [p for p in root.rglob("*") if p.is_file() and p.name != ".runners.lock"] == []
        assert temp_dirs(root) == []


# ------------------------------------------------------------------- damaged cache entries


def _truncate(name: str, keep: int | None = None) -> Callable[[Path], None]:
    def damage(entry: Path) -> None:
        raw = (entry / name).read_bytes()
        (entry / name).write_bytes(raw[:keep] if keep is not None else raw[: len(raw) // 2])
    return damage


def _flip_byte(name: str, at: int) -> Callable[[Path], None]:
    def damage(entry: Path) -> None:
        raw = bytearray((entry / name).read_bytes())
        raw[at] ^= 0x40
        (entry / name).write_bytes(bytes(raw))
    return damage


def _delete(name: str) -> Callable[[Path], None]:
    return lambda entry: (entry / name).unlink()


def _swap_label(entry: Path) -> None:
    y = np.load(entry / "labels.npy")
    y[0] = (y[0] + 1) % 10
    np.save(entry / "labels.npy", y)  # a valid .npy file of the right size, wrong content


def _edit_meta(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(entry: Path) -> None:
        meta = json.loads((entry / "meta.json").read_text())
        change(meta)
        (entry / "meta.json").write_text(json.dumps(meta))
    return damage


def _empty_folder(entry: Path) -> None:
    for p in entry.iterdir():
        p.unlink()


def _meta_n(meta: dict) -> None:
    meta["n"] = meta["n"] + 1


def _meta_hash(meta: dict) -> None:
    meta["files"]["features.npy"]["sha256"] = "0" * 64


def _meta_key(meta: dict) -> None:
    meta["key"] = "f" * 64


def _meta_files(meta: dict) -> None:
    del meta["files"]


DAMAGE = {
    "features-truncated": _truncate("features.npy"),
    "features-header-only": _truncate("features.npy", keep=128),
    "features-byte-flipped": _flip_byte("features.npy", at=-5),
    "features-header-flipped": _flip_byte("features.npy", at=30),
    "features-missing": _delete("features.npy"),
    "labels-truncated": _truncate("labels.npy"),
    "labels-altered": _swap_label,
    "labels-missing": _delete("labels.npy"),
    "meta-truncated": _truncate("meta.json"),
    "meta-missing": _delete("meta.json"),
    "meta-wrong-n": _edit_meta(_meta_n),
    "meta-wrong-sha256": _edit_meta(_meta_hash),
    "meta-wrong-key": _edit_meta(_meta_key),
    "meta-no-files-field": _edit_meta(_meta_files),
    "entry-folder-emptied": _empty_folder,
}


@pytest.mark.parametrize("damage", list(DAMAGE), ids=list(DAMAGE))
def test_damaged_entry_is_detected_and_rebuilt_equal_to_fresh(tmp_path, fresh, extractions, damage):
    root = tmp_path / "cache"
    first = extract(root)
    assert len(extractions) == 1
    DAMAGE[damage](first.path)
    del first
    with pytest.warns(CacheWarning, match="corrupt cache entry"):
        rebuilt = extract(root)
    assert len(extractions) == 2  # detected on read, so extracted again
    X, y = fresh
    np.testing.assert_array_equal(rebuilt.X, X)
    np.testing.assert_array_equal(rebuilt.y, y)
    assert_intact(root, X, y)
    again = extract(root)  # and the rebuilt entry is served from then on
    assert len(extractions) == 2 and again.path == rebuilt.path


def test_intact_entry_is_not_rebuilt(tmp_path, fresh, extractions):
    root = tmp_path / "cache"
    a = extract(root)
    stamp = (a.path / "features.npy").stat().st_mtime_ns
    b = extract(root)
    assert len(extractions) == 1 and (b.path / "features.npy").stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(b.X, fresh[0])


# ---------------------------------------------------------------- two extractors at once


def _racing_worker(root: str, barrier) -> tuple[int, str, str]:
    """Extract in a fresh process; both workers wait for each other after their first batch,
    so both are writing a temporary entry at the same moment. Returns (extractions started,
    sha256 of X, sha256 of y)."""
    real = features_mod.iter_layer_features
    started: list[int] = []

    def meeting(*args, **kwargs) -> Iterator[np.ndarray]:
        started.append(1)
        for i, batch in enumerate(real(*args, **kwargs)):
            yield batch
            if i == 0:
                barrier.wait(timeout=120)

    features_mod.iter_layer_features = meeting
    entry = get_features(MODEL, LAYER, DATASET, "train", cache_dir=root, batch_size=50, **KW)
    digest = hashlib.sha256(np.ascontiguousarray(entry.X).tobytes()).hexdigest()
    return len(started), digest, hashlib.sha256(entry.y.tobytes()).hexdigest()


@pytest.mark.slow
def test_two_processes_extracting_at_once_leave_one_intact_entry(tmp_path, fresh):
    root = tmp_path / "shared-cache"
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(2)
        with ctx.Pool(2) as pool:
            out = pool.starmap(_racing_worker, [(str(root), barrier)] * 2)
    X, y = fresh
    expected = (1, hashlib.sha256(X.tobytes()).hexdigest(), hashlib.sha256(y.tobytes()).hexdigest())
    assert out == [expected, expected]  # both extracted, both got the single-process arrays
    assert_intact(root, X, y)


# ------------------------------------------------------------------------- failing writes


def _no_space(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _features_half_written(self, paths, n, batches, dtype):
    paths[0].write_bytes(b"\x93NUMPY" + b"\0" * 1000)  # a partial file, then the disk is full
    _no_space()


def _labels_half_written(path, arr, *args, **kwargs):
    Path(path).write_bytes(b"\x93NUMPY\0\0")
    _no_space()


FAILURES = {
    "features-write": ("drprobe.features.cache.FeatureCache._write_features",
                       _features_half_written),
    "labels-write": ("numpy.save", _labels_half_written),
    "fsync": ("drprobe.features.cache._fsync", _no_space),
    "rename": ("drprobe.features.cache.os.rename", _no_space),
    "temp-folder": ("drprobe.features.cache.tempfile.mkdtemp", _no_space),
}


@pytest.mark.parametrize("where", list(FAILURES), ids=list(FAILURES))
def test_failing_cache_write_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, where):
    root = tmp_path / "cache"
    target, fake = FAILURES[where]
    monkeypatch.setattr(target, fake)
    with pytest.raises(CacheError) as err:
        extract(root)
    message = str(err.value)
    assert "\n" not in message
    assert str(root) in message and "No space left on device" in message
    assert_nothing_written(root)


def test_cache_folder_that_is_a_file_is_refused(tmp_path):
    root = tmp_path / "cache"
    root.write_text("not a folder")
    with pytest.raises(CacheError, match="cannot write feature cache entry") as err:
        extract(root)
    assert str(root) in str(err.value) and "\n" not in str(err.value)
    assert root.read_text() == "not a folder"


DEMO = ["--dataset", "digits", "--n-train", "200", "--n-test", "100", "--image-size", "32",
        "--layers", "features.14", "--fractions", "0.5,1", "--seeds", "1", "--no-progress"]


@pytest.mark.slow
def test_disk_full_during_demo_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("drprobe.features.cache._fsync", _no_space)
    out, cache = tmp_path / "out", tmp_path / "cache"
    code = main(["demo", "--out", str(out), "--cache-dir", str(cache), *DEMO])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("drprobe: error: cannot write feature cache entry")
    assert "No space left on device" in lines[0]
    # the run folder keeps only its plan (config.yaml, plan.json: what a rerun resumes from)
    assert plan_files_only(out)
    assert_nothing_written(cache)


@pytest.mark.slow
def test_failing_results_part_leaves_no_partial_part(tmp_path, monkeypatch, capsys):
    """The second job's part hits a full disk after writing some bytes: the first part stays
    complete, the second is absent (no partial file, no temp file), no summary is written."""
    real = pd.DataFrame.to_parquet
    written: list[str] = []

    def full_on_second(self, path, *args, **kwargs):
        if Path(path).parent.name == "results":
            if written:
                Path(path).write_bytes(b"PAR1 partial")
                _no_space()
            written.append(str(path))
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full_on_second)
    out = tmp_path / "out"
    code = main(["demo", "--out", str(out), "--cache-dir", str(tmp_path / "c"), *DEMO])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("drprobe: error: cannot write") and "No space left" in err[0], err
    monkeypatch.setattr(pd.DataFrame, "to_parquet", real)
    parts = sorted(p.name for p in (out / "results").iterdir())
    assert len(parts) == 1 and parts[0].endswith(".parquet") and not parts[0].startswith(".")
    table = pd.read_parquet(out / "results" / parts[0])
    assert len(table) == 2 and set(table["fraction"]) == {0.5, 1.0}
    assert not (out / "summary.csv").exists()


def test_stale_temp_folders_of_killed_writers_are_pruned(tmp_path, fresh):
    """A writer killed mid-entry leaves only a ``.tmp-*`` folder: never read, later pruned."""
    root = tmp_path / "cache"
    dead = root / ".tmp-killed"
    dead.mkdir(parents=True)
    (dead / "features.npy").write_bytes(b"\x93NUMPY partial")
    entry = extract(root)
    np.testing.assert_array_equal(entry.X, fresh[0])
    old = time.time() - 2 * 86400
    os.utime(dead, (old, old))
    assert FeatureCache(root).prune_temp() == 1
    assert_intact(root, *fresh)
