"""The probe protocols as strategies: the cached one reads memory-mapped features lazily, the
faithful one trains on the job's own subsample and split, with the paper's weight decay per
downstream dataset."""

from __future__ import annotations

import numpy as np
import pytest

from drprobe.errors import InvalidValueError
from drprobe.experiment import analysis
from drprobe.experiment.analysis import analyze_layer
from drprobe.experiment.config import parse_config
from drprobe.experiment.protocol import FaithfulProtocol, faithful_bank
from drprobe.probes import ProbeBank, design
from drprobe.probes.faithful_settings import paper_weight_decay


class RowsOnly:
    """A feature matrix that can only be read by rows: it records how many rows each read takes
    and refuses to be converted whole (what ``np.asarray(X[idx])`` of all rows would do)."""

    def __init__(self, X: np.ndarray) -> None:
        self.X, self.shape, self.dtype, self.reads = X, X.shape, X.dtype, []

    def __getitem__(self, rows):
        out = self.X[rows]
        self.reads.append(len(out))
        return out

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("the whole feature matrix was read into memory")


def blobs(n: int, d: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = rng.normal(size=(n, d)).astype(np.float32)
    X[:, 0] += 2 * y
    return X, y


def test_memory_mapped_features_are_read_block_by_block(tmp_path, monkeypatch):
    X, y = blobs(900)
    np.save(tmp_path / "X.npy", X)
    mapped = np.load(tmp_path / "X.npy", mmap_mode="r")
    monkeypatch.setattr(analysis, "STATS_BLOCK_ROWS", 64)
    monkeypatch.setattr(design, "CHUNK_BYTES", 64 * X.shape[1] * 4)  # 64 rows per chunk
    train, test = RowsOnly(mapped[:600]), RowsOnly(mapped[600:])
    kw = {"selectors": ("random",), "fractions": (0.25, 1.0), "seeds": (1, 2), "n_boot": 20,
              "progress": False}
    lazy = analyze_layer(train, y[:600], test, y[600:],
                         bank=ProbeBank(keep_predictions=True, progress=False), **kw)
    assert max(train.reads) <= 64 and max(test.reads) <= 64  # never more than a block
    eager = analyze_layer(X[:600], y[:600], X[600:], y[600:],
                          bank=ProbeBank(keep_predictions=True, progress=False), **kw)
    cols = ["selector", "seed", "k", "test_acc", "cka", "cka_debiased", "l2", "n_classes"]
    assert lazy.results[cols].equals(eager.results[cols])


def test_n_classes_counts_the_training_labels():
    X, y = blobs(300)
    y = np.where(y == 2, 7, y)  # labels 0, 1, 7: three classes, not eight
    out = analyze_layer(X[:200], y[:200], X[200:], y[200:], fractions=(0.5,), seeds=(1,),
                        n_boot=10, progress=False)
    assert set(out.results["n_classes"]) == {3}
    assert (out.results["probe_params"] == (out.results["k"] + 1) * 3).all()


@pytest.mark.parametrize("dataset, expected", [
    ("cifar10", 5e-4), ("cifar100", 5e-4), ("hf:uoft-cs/cifar100", 5e-4),
    ("imagefolder:data/Places365/", 5e-4), ("fashion-mnist", 1e-4), ("digits", 1e-4),
    ("imagefolder:data/flowers102", 1e-4), ("hf:timm/oxford-iiit-pet", 1e-4),
])
def test_paper_weight_decay_by_downstream_dataset(dataset, expected):
    assert paper_weight_decay(dataset) == expected


def faithful_config(dataset: str, **faithful) -> dict:
    return {"name": "f", "models": [{"spec": "builtin:mobilenet_v2", "weights": ["random"]}],
            "datasets": [{"name": dataset, "n_train": 100, "n_test": 50}],
            "protocol": "faithful", "faithful": faithful}


@pytest.mark.parametrize("dataset, given, expected", [
    ("cifar10", {}, 5e-4), ("cifar100", {}, 5e-4), ("digits", {}, 1e-4),
    ("fashion-mnist", {}, 1e-4), ("cifar10", {"weight_decay": 3e-4}, 3e-4),
    ("digits", {"weight_decay": 0.0}, 0.0),
])
def test_a_jobs_faithful_bank_takes_the_datasets_weight_decay(dataset, given, expected):
    config = parse_config(faithful_config(dataset, **given))
    bank = faithful_bank(config, config.datasets[0], "builtin:mobilenet_v2", "penultimate",
                         "cpu")
    assert bank.weight_decay == expected
    assert (bank.epochs, bank.step_size) == (config.faithful.epochs, config.faithful.step_size)


def test_faithful_protocol_refuses_images_that_are_not_the_features_rows():
    class Split:
        images = np.zeros((10, 8, 8), dtype=np.uint8)
        labels = np.arange(10) % 2

    config = parse_config(faithful_config("digits"))
    protocol = FaithfulProtocol(faithful_bank(config, config.datasets[0], "builtin:mobilenet_v2",
                                              "penultimate", "cpu"), Split(), Split())
    X, y = blobs(12)
    with pytest.raises(InvalidValueError, match="not the rows of the 12 cached features"):
        protocol.train(X, y, np.arange(10), np.arange(10, 12), [])
