"""Faithful protocol: heads trained through a frozen backbone on augmented images.

Checked against a plain one-head PyTorch loop (nn.Linear + SGD + StepLR + best-val copy), the
StepLR formula, multi-head vs single-head equality, determinism, and the best-val checkpoint.
One head is a bank of one family with a single k.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from drprobe.errors import InvalidValueError
from drprobe.probes.faithful import FaithfulBank, head_seed, stream_seed
from drprobe.selectors import SubsetFamily, make_family
from drprobe.sources.augment import Augment, augment_images
from drprobe.sources.data.base import train_val_split
from drprobe.sources.layers import layer_features
from drprobe.sources.models import ModelBundle
from drprobe.sources.transforms import preprocess

D, SIZE = 16, 16
FAST = {"epochs": 4, "step_size": 2, "batch_size": 32, "progress": False}


def tiny_bundle() -> ModelBundle:
    """A frozen random conv net: 16-d penultimate layer, 16 px input."""
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("conv", nn.Conv2d(3, D, 3, padding=1))
    net.add_module("act", nn.ReLU())
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(D, 3))
    net.eval().requires_grad_(False)
    return ModelBundle("test:tiny", "random", 0, net, SIZE, (0.5,) * 3, (0.25,) * 3, "fc", None)


def make_data(n: int, noise: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 20, 20, 3) uint8 images whose class (0..2) is a brighter colour channel."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    images = rng.integers(0, noise, (n, 20, 20, 3))
    images[np.arange(n), :, :, y] += 255 - noise
    return images.astype(np.uint8), y


def families() -> list[SubsetFamily]:
    return [make_family("random", np.zeros((1, D)), [2, 5, 16], seed=s, fractions=[0.1, 0.3, 1.0])
            for s in (1, 2)]


def one_head(fam: SubsetFamily, k: int) -> list[SubsetFamily]:
    """The family reduced to its size k: a bank of one head."""
    j = list(fam.ks).index(k)
    return [replace(fam, ks=[k], fractions=[fam.fractions[j]])]


def split(images: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, ...]:
    """(train images, train labels, validation images, validation labels): a stratified 10%
    held out, as the analysis does."""
    tr, va = train_val_split(y, 0.1, seed)
    return images[tr], y[tr], images[va], y[va]


@pytest.fixture(scope="module")
def data():
    return make_data(150)


@pytest.fixture(scope="module")
def bank(data):
    images, y = data
    return FaithfulBank(tiny_bundle(), image_size=SIZE, **FAST).fit(*split(images, y),
                                                                    families())


def test_loss_decreases_and_results(bank, data):
    images, y = data
    assert len(bank.heads_) == 6 and bank.history_["train_loss"].shape == (6, 4)
    loss = bank.history_["train_loss"]
    assert np.all(loss[:, -1] < loss[:, 0])
    res = bank.evaluate(images[:60], y[:60])
    assert [(r.seed, r.k, r.fraction) for r in res] == [
        (s, k, f) for s in (1, 2) for k, f in ((2, 0.1), (5, 0.3), (16, 1.0))]
    full = [r for r in res if r.k == 16]
    assert all(r.test_acc > 0.8 for r in full)  # colour classes are easy from 16 channels
    for r, h in zip(res, range(6)):
        assert r.l2 == bank.weight_decay == 1e-4 and r.val_acc == bank.val_acc_[h]  # default
        assert r.n_steps == (bank.best_epoch_[h] + 1) * math.ceil(135 / 32)
        counts = np.bincount(y[:60], minlength=3)
        assert np.isclose(np.sum(r.per_class_acc * counts) / 60, r.test_acc)


def test_step_lr_schedule_matches_formula(data):
    images, y = data
    probe = FaithfulBank(tiny_bundle(), image_size=SIZE, epochs=7, step_size=3, gamma=0.5,
                         lr=0.2, batch_size=64, progress=False).fit(
        *split(images, y), one_head(families()[0], 5))
    expected = [0.2 * 0.5 ** (e // 3) for e in range(7)]
    np.testing.assert_allclose(probe.history_["lr"], expected, rtol=1e-12)


def test_multi_head_equals_single_head(bank, data):
    images, y = data
    fam = families()[1]
    probe = FaithfulBank(tiny_bundle(), image_size=SIZE, **FAST).fit(*split(images, y),
                                                                     one_head(fam, 5))
    h = bank.heads_.index((1, 5))
    np.testing.assert_allclose(probe.coefs_[0], bank.coefs_[h], rtol=0, atol=1e-6)
    np.testing.assert_allclose(probe.intercepts_[0], bank.intercepts_[h], rtol=0, atol=1e-6)
    np.testing.assert_allclose(probe.history_["train_loss"][0], bank.history_["train_loss"][h],
                               rtol=1e-6)
    np.testing.assert_array_equal(probe.history_["val_acc"][0], bank.history_["val_acc"][h])
    assert probe.best_epoch_[0] == bank.best_epoch_[h]
    (res,) = probe.evaluate(images[:60], y[:60])
    assert res.k == 5 and res.fraction == 0.3 and res.seed == 2
    assert res.test_acc == bank.evaluate(images[:60], y[:60])[h].test_acc


def test_deterministic_on_cpu(bank, data):
    images, y = data
    again = FaithfulBank(tiny_bundle(), image_size=SIZE, **FAST).fit(*split(images, y),
                                                                     families())
    for a, b in zip(bank.coefs_, again.coefs_):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(bank.history_["train_loss"], again.history_["train_loss"])
    other = FaithfulBank(tiny_bundle(), image_size=SIZE, random_state=1,
                         **FAST).fit(*split(images, y), families())
    assert not np.allclose(bank.history_["train_loss"], other.history_["train_loss"])
    assert not np.array_equal(bank.batch_orders_[1], other.batch_orders_[1])


def test_best_validation_checkpoint_is_reported():
    images, y = make_data(150, noise=235, seed=3)  # weak signal: validation accuracy wobbles
    Xtr, ytr, Xva, yva = split(images, y)
    bank = FaithfulBank(tiny_bundle(), image_size=SIZE, epochs=8, step_size=100, lr=2.0,
                        batch_size=16, progress=False).fit(Xtr, ytr, Xva, yva, families())
    hist = bank.history_["val_acc"]
    np.testing.assert_array_equal(bank.val_acc_, hist.max(axis=1))
    np.testing.assert_array_equal(bank.best_epoch_, hist.argmax(axis=1))  # ties: earliest
    # the reported weights are the best epoch's, not the last epoch's: re-scoring the
    # validation images with them gives the best accuracy, also where the last epoch was worse
    assert np.any(hist[:, -1] < hist.max(axis=1))
    res = bank.evaluate(Xva, yva)
    np.testing.assert_allclose([r.test_acc for r in res], bank.val_acc_, atol=1e-12)


def reference_head(bundle: ModelBundle, fam: SubsetFamily, k: int, images: np.ndarray,
                   y: np.ndarray, epochs: int, step: int, batch: int, lr: float, wd: float,
                   seed: int) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """The paper's loop written plainly for one head: nn.Linear, SGD, StepLR, best-val copy."""
    tr, va = train_val_split(y, 0.1, seed)
    g = torch.Generator().manual_seed(stream_seed(seed, fam.seed))  # the family seed's stream
    head = nn.Linear(k, 3)
    init = torch.Generator().manual_seed(head_seed(seed, fam, k))
    with torch.no_grad():  # nn.Linear's own init, U(-1/sqrt(k), 1/sqrt(k)), from the head seed
        head.weight.copy_((torch.rand(3, k, generator=init) * 2 - 1) / math.sqrt(k))
        head.bias.copy_((torch.rand(3, generator=init) * 2 - 1) / math.sqrt(k))
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
    sched = torch.optim.lr_scheduler.StepLR(opt, step, 0.1)
    cols = torch.as_tensor(fam.indices[:k])
    x_val = preprocess(images[va], SIZE, bundle.mean, bundle.std)
    z_val = layer_features(bundle, "penultimate", x_val).clone()[:, cols]
    best, best_state, accs = -1.0, None, []
    aug = Augment(SIZE)
    for _ in range(epochs):
        order = tr[torch.randperm(len(tr), generator=g).numpy()]
        for lo in range(0, len(order), batch):
            idx = order[lo:lo + batch]
            x = augment_images(images[idx], aug, bundle.mean, bundle.std, g)
            z = layer_features(bundle, "penultimate", x).clone()[:, cols]
            loss = F.cross_entropy(head(z), torch.as_tensor(y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        with torch.no_grad():
            acc = float((head(z_val).argmax(1).numpy() == y[va]).mean())
        accs.append(acc)
        if acc > best:
            best = acc
            best_state = (head.weight.detach().clone().numpy(),
                          head.bias.detach().clone().numpy())
    assert best_state is not None
    return best_state[0], best_state[1], accs


def test_matches_a_plain_pytorch_loop(data):
    images, y = data
    fam = families()[0]
    ref_W, ref_b, ref_accs = reference_head(tiny_bundle(), fam, 5, images, y, epochs=5, step=2,
                                            batch=40, lr=0.1, wd=1e-4, seed=3)
    probe = FaithfulBank(tiny_bundle(), image_size=SIZE, epochs=5, step_size=2, batch_size=40,
                         weight_decay=1e-4, random_state=3, progress=False).fit(
        *split(images, y, seed=3), one_head(fam, 5))
    np.testing.assert_allclose(probe.history_["val_acc"][0], ref_accs)
    np.testing.assert_allclose(probe.coefs_[0], ref_W, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probe.intercepts_[0], ref_b, rtol=1e-5, atol=1e-6)


def test_projection_family_equals_coordinate_family(data):
    images, y = data
    idx = np.random.default_rng(0).permutation(D)[:6]
    coord = SubsetFamily("sel", 0, [3, 6], indices=idx)
    proj = SubsetFamily("sel", 0, [3, 6], components=np.eye(D)[:, idx],
                        mean=np.zeros(D))  # same map written as a projection
    a = FaithfulBank(tiny_bundle(), image_size=SIZE, **FAST).fit(*split(images, y), [coord])
    b = FaithfulBank(tiny_bundle(), image_size=SIZE, **FAST).fit(*split(images, y), [proj])
    for wa, wb in zip(a.coefs_, b.coefs_):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_refused(data):
    images, y = data
    fam = families()[0]
    data = split(images, y)
    with pytest.raises(InvalidValueError, match="epochs"):
        FaithfulBank(tiny_bundle(), epochs=0).fit(*data, [fam])
    with pytest.raises(InvalidValueError, match="k=17"):
        FaithfulBank(tiny_bundle(), image_size=SIZE).fit(*data, [replace(fam, ks=[2, 17],
                                                                          fractions=None)])
    wide = SubsetFamily("random", 0, [4], indices=np.array([0, 1, 2, 40]))
    with pytest.raises(InvalidValueError, match="indices outside"):
        FaithfulBank(tiny_bundle(), image_size=SIZE).fit(*data, [wide])
    with pytest.raises(InvalidValueError, match="augment size"):
        FaithfulBank(tiny_bundle(), image_size=SIZE, augment=Augment(12)).fit(*data, [fam])
    with pytest.raises(InvalidValueError, match="y_val"):
        FaithfulBank(tiny_bundle(), image_size=SIZE).fit(*data[:3], data[3][:-1], [fam])
    with pytest.raises(InvalidValueError, match="empty"):
        FaithfulBank(tiny_bundle(), image_size=SIZE).fit(*data, [])
    with pytest.raises(InvalidValueError, match="not fitted"):
        FaithfulBank(tiny_bundle()).evaluate(images, y)
    if not torch.cuda.is_available():
        with pytest.raises(InvalidValueError, match="CUDA"):
            FaithfulBank(tiny_bundle(), device="cuda").fit(*data, [fam])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(data):
    images, y = data
    cpu = FaithfulBank(tiny_bundle(), image_size=SIZE, **FAST).fit(*split(images, y),
                                                                   families())
    gpu = FaithfulBank(tiny_bundle(), image_size=SIZE, device="cuda",
                       **FAST).fit(*split(images, y), families())
    np.testing.assert_allclose(gpu.history_["train_loss"], cpu.history_["train_loss"],
                               rtol=1e-3)


FMNIST = Path(os.environ.get("DRPROBE_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))


@pytest.mark.slow
def test_mobilenet_v2_on_fashion_mnist():
    """Real weights, real data, 32 px, 300 images, 3 epochs: learns and beats chance (0.1)."""
    if not (FMNIST / "t10k-labels-idx1-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST is not installed")
    from drprobe.errors import MissingDataError
    from drprobe.sources.datasets import load_dataset, subsample
    from drprobe.sources.models import load_model

    try:
        bundle = load_model("builtin:mobilenet_v2")
    except MissingDataError:
        pytest.skip("MobileNetV2 weights are not installed")
    train = subsample(load_dataset("fashion-mnist", "train"), 300, 0)
    test = subsample(load_dataset("fashion-mnist", "test"), 200, 0)
    fam = make_family("random", np.zeros((1, 1280)), [128, 1280], seed=0)
    tr, va = train_val_split(train.labels, 0.1, 0)
    bank = FaithfulBank(bundle, image_size=32, epochs=3, step_size=2, batch_size=32,
                        weight_decay=1e-4, progress=False).fit(
        train.images[tr], train.labels[tr], train.images[va], train.labels[va], [fam])
    loss = bank.history_["train_loss"]
    assert np.all(loss[:, -1] < loss[:, 0])
    res = bank.evaluate(test.images, test.labels)
    assert res[1].k == 1280 and res[1].test_acc > 0.4, [r.test_acc for r in res]


def test_each_probe_seed_has_its_own_augmentation_stream_and_batch_order(data, monkeypatch):
    """Heads of seed 1 train exactly as they would alone; seed 2 draws other batches."""
    import drprobe.probes.faithful as faithful_mod

    images, y = data
    seen: list[float] = []  # the sum of each augmented batch, in the order they were drawn
    real = faithful_mod.augment_images

    def recording(batch, aug, mean, std, g, dev=None):
        x = real(batch, aug, mean, std, g, dev)
        seen.append(float(x.double().sum()))
        return x

    monkeypatch.setattr(faithful_mod, "augment_images", recording)
    both = FaithfulBank(tiny_bundle(), image_size=SIZE, **FAST).fit(*split(images, y),
                                                                    families())
    aug_both, seen[:] = list(seen), []
    alone = FaithfulBank(tiny_bundle(), image_size=SIZE, **FAST).fit(*split(images, y),
                                                                     families()[:1])
    aug_alone = list(seen)

    steps = both.steps_per_epoch_
    per_epoch = [aug_both[e * 2 * steps:(e + 1) * 2 * steps] for e in range(FAST["epochs"])]
    seed1 = [a for chunk in per_epoch for a in chunk[:steps]]
    seed2 = [a for chunk in per_epoch for a in chunk[steps:]]
    assert seed1 == aug_alone  # same seed: the same augmented batches, in the same order
    assert not set(seed1) & set(seed2)  # other seed: other augmentations
    np.testing.assert_array_equal(both.batch_orders_[1], alone.batch_orders_[1])
    assert not np.array_equal(both.batch_orders_[1], both.batch_orders_[2])
    for e in range(FAST["epochs"]):  # each epoch draws a permutation of the training positions
        assert sorted(both.batch_orders_[2][e]) == list(range(135))
    for h in range(3):  # the seed-1 heads are the same with or without the seed-2 ones
        np.testing.assert_array_equal(both.coefs_[h], alone.coefs_[h])
