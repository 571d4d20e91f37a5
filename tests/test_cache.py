"""Content-addressed feature cache: roundtrip, keys, verification, atomicity, concurrency."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from drprobe.errors import CacheError, InvalidValueError, UnknownNameError
from drprobe.features.cache import CachedFeatures, CacheWarning, FeatureCache

PARTS = {
    "model": "builtin:mobilenet_v2",
    "layer": "penultimate",
    "preprocess": {"size": 64, "mean": [0.485, 0.456, 0.406]},
    "indices": np.array([3, 1, 4, 1, 5]),
    "dtype": "float32",
}


def data(n: int = 103, d: int = 17, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, 5, n)


def batched(X: np.ndarray, size: int = 10) -> Iterator[np.ndarray]:
    for i in range(0, len(X), size):
        yield X[i:i + size]


def leftovers(root: Path) -> list[str]:
    """Everything under root except complete entries' files."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir())


# ------------------------------------------------------------------------------- keys


def test_key_stable_and_order_free():
    k = FeatureCache.key(PARTS)
    assert len(k) == 64 and int(k, 16) >= 0
    shuffled = dict(reversed(list(PARTS.items())))
    shuffled["preprocess"] = {"mean": [0.485, 0.456, 0.406], "size": 64}
    assert FeatureCache.key(shuffled) == k
    # same index values in another integer type, as a numpy scalar, or a fresh copy: same key
    same = dict(PARTS, indices=np.array([3, 1, 4, 1, 5], dtype=np.int32))
    assert FeatureCache.key(same) == k
    assert FeatureCache.key(dict(PARTS, dtype=np.str_("float32"))) == k


def test_key_known_answer():
    # sha256 of the canonical JSON written out by hand
    parts = {"b": [1, 2.5, None], "a": "x"}
    expected = hashlib.sha256(b'{"a":"x","b":[1,2.5,null]}').hexdigest()
    assert FeatureCache.key(parts) == expected


@pytest.mark.parametrize(
    "change",
    [
        {"model": "builtin:efficientnet_lite0"},
        {"layer": "features.14"},
        {"preprocess": {"size": 96, "mean": [0.485, 0.456, 0.406]}},
        {"preprocess": {"size": 64, "mean": [0.485, 0.456, 0.407]}},
        {"indices": np.array([3, 1, 4, 1, 6])},
        {"indices": np.array([3, 1, 4, 1])},
        {"indices": np.array([[3, 1, 4, 1, 5]])},
        {"indices": None},
        {"dtype": "float16"},
        {"extra": 1},
    ],
)
def test_key_changes_with_any_part(change: dict):
    assert FeatureCache.key(dict(PARTS, **change)) != FeatureCache.key(PARTS)


def test_key_rejects_unhashable_objects():
    with pytest.raises(InvalidValueError, match="object"):
        FeatureCache.key({"model": object()})
    with pytest.raises(InvalidValueError, match="object arrays"):
        FeatureCache.key({"indices": np.array([1, None])})


# ---------------------------------------------------------------------------- roundtrip


def test_roundtrip(tmp_path: Path):
    X, y = data()
    cache = FeatureCache(tmp_path / "c")
    assert cache.get(PARTS) is None
    put = cache.put(PARTS, len(X), batched(X, 7), y)
    got = cache.get(PARTS)
    for entry in (put, got):
        assert isinstance(entry, CachedFeatures)
        assert isinstance(entry.X, np.memmap) and not entry.X.flags.writeable
        np.testing.assert_array_equal(entry.X, X)
        np.testing.assert_array_equal(entry.y, y)
        assert entry.y.dtype == np.int64 and entry.X.dtype == np.float32
    key = FeatureCache.key(PARTS)
    assert got.path == tmp_path / "c" / key[:2] / key
    assert sorted(p.name for p in got.path.iterdir()) == ["features.npy", "labels.npy",
                                                           "meta.json"]
    meta = json.loads((got.path / "meta.json").read_text())
    assert meta["parts"]["layer"] == "penultimate" and meta["n"] == 103 and meta["d"] == 17
    assert meta["parts"]["indices"]["shape"] == [5]
    digest = hashlib.sha256((got.path / "features.npy").read_bytes()).hexdigest()
    assert meta["files"]["features.npy"]["sha256"] == digest
    assert meta["created"].startswith("20")
    assert leftovers(tmp_path / "c") == [key[:2], f"{key[:2]}/{key}"]


def test_float16_storage_and_tensor_batches(tmp_path: Path):
    torch = pytest.importorskip("torch")
    X, y = data(n=40, d=6)
    cache = FeatureCache(tmp_path)
    entry = cache.put(PARTS, 40, (torch.from_numpy(b) for b in batched(X)), y, dtype="float16")
    assert entry.X.dtype == np.float16 and entry.meta["dtype"] == "float16"
    np.testing.assert_array_equal(entry.X, X.astype(np.float16))
    assert cache.get(PARTS).X.dtype == np.float16
    with pytest.raises(UnknownNameError, match="int8.*float16, float32, float64"):
        cache.put(dict(PARTS, v=2), 40, batched(X), y, dtype="int8")


def test_get_or_create_calls_make_batches_once(tmp_path: Path):
    X, y = data()
    calls = []

    def make():
        calls.append(1)
        return batched(X)

    cache = FeatureCache(tmp_path)
    a = cache.get_or_create(PARTS, len(X), make, y)
    b = cache.get_or_create(PARTS, len(X), make, y)
    c = FeatureCache(tmp_path, verify="size").get_or_create(PARTS, len(X), make, y)
    assert len(calls) == 1
    for entry in (a, b, c):
        np.testing.assert_array_equal(entry.X, X)
    other = cache.get_or_create(dict(PARTS, layer="x"), len(X), make, y)
    assert len(calls) == 2 and other.path != a.path


def test_get_or_create_refuses_a_key_that_hides_differences(tmp_path: Path):
    X, y = data()
    cache = FeatureCache(tmp_path)
    cache.get_or_create(PARTS, len(X), lambda: batched(X), y)
    with pytest.raises(CacheError, match="dtype"):
        cache.get_or_create(PARTS, len(X), lambda: batched(X), y, dtype="float16")
    with pytest.raises(CacheError, match="labels"):
        cache.get_or_create(PARTS, len(X), lambda: batched(X), (y + 1) % 5)


# ------------------------------------------------------------------------- corruption


def corrupt_truncate(path: Path) -> None:
    f = path / "features.npy"
    f.write_bytes(f.read_bytes()[:-8])


def corrupt_flip(path: Path) -> None:
    f = path / "features.npy"
    raw = bytearray(f.read_bytes())
    raw[-100] ^= 0x01
    f.write_bytes(bytes(raw))


def corrupt_labels(path: Path) -> None:
    (path / "labels.npy").unlink()


def corrupt_meta(path: Path) -> None:
    (path / "meta.json").write_text("{not json")


@pytest.mark.parametrize("corrupt", [corrupt_truncate, corrupt_flip, corrupt_labels,
                                     corrupt_meta])
def test_corrupt_entry_is_removed_and_rebuilt(tmp_path: Path, corrupt):
    X, y = data()
    cache = FeatureCache(tmp_path)
    path = cache.put(PARTS, len(X), batched(X), y).path
    corrupt(path)
    with pytest.warns(CacheWarning, match="corrupt"):
        assert cache.get(PARTS) is None
    assert not path.exists()
    calls = []
    entry = cache.get_or_create(PARTS, len(X), lambda: calls.append(1) or batched(X), y)
    assert calls == [1] and entry.path == path
    np.testing.assert_array_equal(entry.X, X)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_verify_size_skips_hash_but_checks_size(tmp_path: Path):
    X, y = data()
    cache = FeatureCache(tmp_path)
    path = cache.put(PARTS, len(X), batched(X), y).path
    corrupt_flip(path)  # same size: only the hash can see it
    assert cache.get(PARTS, verify="size") is not None
    corrupt_truncate(path)
    with pytest.warns(CacheWarning):
        assert cache.get(PARTS, verify="size") is None
    with pytest.raises(UnknownNameError, match="sometimes"):
        cache.get(PARTS, verify="sometimes")


# ------------------------------------------------------------------------- atomicity


def test_exception_midway_leaves_nothing(tmp_path: Path):
    X, y = data()
    root = tmp_path / "c"

    def boom() -> Iterator[np.ndarray]:
        yield X[:10]
        yield X[10:20]
        raise RuntimeError("extractor died")

    cache = FeatureCache(root)
    with pytest.raises(RuntimeError, match="extractor died"):
        cache.get_or_create(PARTS, len(X), boom, y)
    assert list(root.iterdir()) == []
    assert cache.get(PARTS) is None


@pytest.mark.parametrize("rows", [0, 50, 110])
def test_wrong_row_count(tmp_path: Path, rows: int):
    X, y = data(n=110)
    cache = FeatureCache(tmp_path)
    with pytest.raises(CacheError, match="rows"):
        cache.put(PARTS, 103, batched(X[:rows]), y[:103])
    assert list(tmp_path.iterdir()) == []


def test_bad_batches_and_labels(tmp_path: Path):
    X, y = data()
    cache = FeatureCache(tmp_path)
    with pytest.raises(CacheError, match="width"):
        cache.put(PARTS, len(X), iter([X[:10], X[10:, :5]]), y)
    with pytest.raises(CacheError, match="2-D"):
        cache.put(PARTS, len(X), iter([X[:, 0]]), y)
    with pytest.raises(InvalidValueError, match="labels"):
        cache.put(PARTS, len(X), batched(X), y[:-1])
    assert list(tmp_path.iterdir()) == []


def test_prune_temp(tmp_path: Path):
    (tmp_path / ".tmp-dead").mkdir()
    cache = FeatureCache(tmp_path)
    assert cache.prune_temp(max_age_s=3600) == 0
    assert cache.prune_temp(max_age_s=-1) == 1 and list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------ concurrency


def slow_batches(X: np.ndarray) -> Iterator[np.ndarray]:
    for b in batched(X, 20):
        time.sleep(0.01)
        yield b


def build(root: str, barrier, seed: int) -> str:
    """Worker: wait for the other, then get_or_create the same key; returns X's sha256."""
    X, y = data(seed=seed)
    barrier.wait()
    entry = FeatureCache(root).get_or_create(PARTS, len(X), lambda: slow_batches(X), y)
    return hashlib.sha256(np.ascontiguousarray(entry.X).tobytes()).hexdigest()


def check_single_entry(root: Path, X: np.ndarray) -> None:
    key = FeatureCache.key(PARTS)
    assert leftovers(root) == [key[:2], f"{key[:2]}/{key}"]
    np.testing.assert_array_equal(FeatureCache(root).get(PARTS).X, X)


def test_two_threads_same_key(tmp_path: Path):
    barrier = threading.Barrier(2)
    out: list[str] = []
    threads = [threading.Thread(target=lambda: out.append(build(str(tmp_path), barrier, 0)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    X, _ = data(seed=0)
    assert out == [hashlib.sha256(X.tobytes()).hexdigest()] * 2
    check_single_entry(tmp_path, X)


@pytest.mark.slow
def test_two_processes_same_key(tmp_path: Path):
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(2)
        with ctx.Pool(2) as pool:
            out = pool.starmap(build, [(str(tmp_path), barrier, 0)] * 2)
    X, _ = data(seed=0)
    assert out == [hashlib.sha256(X.tobytes()).hexdigest()] * 2
    check_single_entry(tmp_path, X)
