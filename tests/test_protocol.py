"""The probe trainers' one contract and the protocols: every trainer is a scikit-learn
estimator with the same fit / evaluate; the cached protocol reads memory-mapped features
lazily, the faithful one trains on the job's own subsample and split, with the paper's weight
decay per downstream dataset."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from sklearn.base import clone

from drprobe.analysis import layer as analysis
from drprobe.analysis.layer import analyze_layer
from drprobe.analysis.protocol import FaithfulProtocol, as_trainer
from drprobe.errors import InvalidValueError
from drprobe.experiment.config import parse_config
from drprobe.experiment.job_runner import faithful_bank
from drprobe.probes import ProbeBank, ProbeTrainer, design
from drprobe.probes.contract import SPACES
from drprobe.probes.faithful import FaithfulBank
from drprobe.probes.faithful_settings import paper_weight_decay
from drprobe.selectors import make_family
from drprobe.wide.streaming import StreamingProbes


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
        labels = np.arange(10) % 3

    config = parse_config(faithful_config("digits"))
    protocol = FaithfulProtocol(faithful_bank(config, config.datasets[0], "builtin:mobilenet_v2",
                                              "penultimate", "cpu"), Split(), Split())
    X, y = blobs(40)
    with pytest.raises(InvalidValueError, match="10 training images are not the rows of the 30"):
        analyze_layer(X[:30], y[:30], X[30:], y[30:], bank=protocol, fractions=(1.0,),
                      seeds=(1,), n_boot=5, progress=False)
    with pytest.raises(InvalidValueError, match="10 test images are not the rows of the 10"):
        protocol.inputs(Split.labels, np.arange(8), np.arange(8, 10), Split.labels[::-1])


def test_faithful_protocol_hands_the_trainer_the_images_of_the_feature_rows():
    class Split:
        images = np.arange(10 * 4 * 4).reshape(10, 4, 4).astype(np.uint8)
        labels = np.arange(10) % 2

    protocol = FaithfulProtocol(FaithfulBank("builtin:mobilenet_v2"), Split(), Split())
    tr, va = np.array([7, 0, 3, 9, 1]), np.array([8, 2])
    Xtr, Xva, Xte = protocol.inputs(Split.labels, tr, va, Split.labels)
    assert Xtr.shape == (5, 4, 4) and len(Xva) == 2 and Xte is Split.images
    np.testing.assert_array_equal(Xtr[1:4], Split.images[[0, 3, 9]])  # a slice of the rows
    np.testing.assert_array_equal(Xtr[np.array([4, 0])], Split.images[[1, 7]])  # positions
    np.testing.assert_array_equal(Xva[:], Split.images[va])


def trainers() -> list[ProbeTrainer]:
    return [ProbeBank(l2_grid=(0.1, 1.0), progress=False, keep_predictions=True),
            StreamingProbes(l2_grid=(0.1, 1.0), max_passes=50, keep_predictions=True),
            FaithfulBank("builtin:mobilenet_v2", "features.14", epochs=2, lr=0.05)]


@pytest.mark.parametrize("trainer", trainers(), ids=lambda t: type(t).__name__)
def test_every_trainer_is_an_estimator_with_the_one_contract(trainer):
    assert isinstance(trainer, ProbeTrainer)
    params = trainer.get_params()
    twin = clone(trainer)
    assert type(twin) is type(trainer) and twin is not trainer and twin.get_params() == params
    assert "families" not in params  # the families go to fit
    changed = clone(trainer).set_params(progress=True)
    assert changed.get_params() == {**params, "progress": True}
    fit = inspect.signature(type(trainer).fit).parameters
    assert list(fit) == ["self", "X_train", "y_train", "X_val", "y_val", "families"]
    evaluate = inspect.signature(type(trainer).evaluate).parameters
    assert list(evaluate) == ["self", "X_test", "y_test"]
    assert trainer.space in SPACES and trainer.protocol in ("cached", "faithful")
    assert trainer.wide_capable == isinstance(trainer, ProbeBank)  # the wide path needs a bank


@pytest.mark.parametrize("trainer", trainers()[:2], ids=lambda t: type(t).__name__)
def test_fit_leaves_the_settings_alone_and_the_analysis_takes_any_feature_trainer(trainer):
    X, y = blobs(300)
    params = trainer.get_params()
    out = analyze_layer(X[:200], y[:200], X[200:], y[200:], bank=trainer, fractions=(0.5,),
                        seeds=(1, 2), n_boot=10, progress=False)
    assert trainer.get_params() == params
    assert set(out.results["protocol"]) == {"cached"} and len(out.results) == 4
    # the trainer analyze_layer used, called directly on the same families, gives the same rows
    tr, va = analysis.train_val_split(y[:200], 0.1, 0)
    fams = [make_family("random", X[tr], [6, 12], seed=s, fractions=[0.5, 1.0]) for s in (1, 2)]
    direct = clone(trainer).fit(X[tr], y[tr], X[va], y[va], fams).evaluate(X[200:], y[200:])
    np.testing.assert_array_equal(out.results["test_acc"], [r.test_acc for r in direct])
    np.testing.assert_array_equal(out.results["l2"], [r.l2 for r in direct])


def test_as_trainer_refuses_what_is_not_a_trainer_on_features():
    assert isinstance(as_trainer(None, progress=False), ProbeBank)
    with pytest.raises(InvalidValueError, match="trains on images.*FaithfulProtocol"):
        as_trainer(FaithfulBank("builtin:mobilenet_v2"))
    with pytest.raises(InvalidValueError, match="FaithfulProtocol takes a trainer on images"):
        as_trainer(FaithfulProtocol(ProbeBank(), None, None))
    with pytest.raises(InvalidValueError, match="probe trainer.*got dict"):
        as_trainer({"l2_grid": [1.0]})
