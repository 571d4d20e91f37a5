"""The paper's `faithful` probe protocol: linear heads trained through the frozen backbone.

Every epoch each training image is augmented afresh (:class:`~drprobe.sources.augment.Augment`),
run through the frozen backbone up to the probed layer, mapped to each head's subset of neurons
and fed to that head's linear layer. Defaults are the paper's scripts'
(:mod:`~drprobe.probes.faithful_settings`): SGD (lr 0.1, momentum 0.9, weight decay 1e-4; the
paper used 5e-4 for CIFAR and Places365, which a job picks by dataset), StepLR gamma 0.1 every
10 of 50 epochs, batch 256; the validation images are the caller's (the analysis holds out the
same stratified share as for the cached protocol), and the head of the epoch with the best
validation accuracy is kept (ties: the earliest epoch).

:class:`FaithfulBank` trains many heads at once -- every (family, k) of a list of
:class:`~drprobe.selectors.SubsetFamily` (one head: a family with a single k). It keeps the
probe trainers' contract (:class:`~drprobe.probes.contract.ProbeTrainer`) with images for X:
``fit(images_train, y_train, images_val, y_val, families)``. Each probe seed is its own run, as
in the paper: the heads of the families of one seed draw their batch order and augmentations
from one stream seeded by (random_state, seed), and share each augmented batch -- one backbone
forward per batch serves all of them, which is what makes the protocol affordable (the cost
grows with the number of seeds, not of heads). :func:`augmented_features` is the middle ground
between this and the `cached` protocol: K augmented views per training image as an ordinary
feature matrix for the :class:`~drprobe.probes.bank.ProbeBank`.

Validation and test images get the evaluation transform (resize + centre crop); the backbone is
frozen, so their features are computed once and kept (per family: n x max k floats). Heads and
the SGD state are the only things that learn. Weight decay applies to weights and bias (plain
``torch.optim.SGD`` on all head parameters). Heads start from ``nn.Linear``'s default init
(U(-1/sqrt(k), 1/sqrt(k))) drawn from a generator seeded by (random_state, family seed,
selector, k), so a head's training does not depend on which other heads share its batches.
Memory: the clean validation and test features per family, plus one augmented batch through the
backbone; the recorded batch orders take epochs x n_train integers per seed.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from drprobe.devices import resolve_device
from drprobe.errors import InvalidValueError
from drprobe.features.extract import feature_dim
from drprobe.probes import design, inputs
from drprobe.probes.contract import ProbeTrainer
from drprobe.probes.faithful_settings import (
    BATCH_SIZE,
    EPOCHS,
    GAMMA,
    LR,
    MOMENTUM,
    STEP_SIZE,
    WEIGHT_DECAY,
    head_seed,
    stream_seed,
)
from drprobe.probes.results import ProbeResult, class_probabilities, probe_result
from drprobe.selectors import SubsetFamily
from drprobe.sources.augment import (
    Augment,
    augment_images,
    augmented_features,
    check_images,
    image_bundle,
    training_augment,
)
from drprobe.sources.layers import layer_features, resolve_layer
from drprobe.sources.models import ModelBundle
from drprobe.sources.transforms import preprocess

__all__ = ["FaithfulBank", "augmented_features", "head_seed", "stream_seed"]


def _clean_features(
    bundle: ModelBundle, layer: str, images: np.ndarray, pooling: str, size: int, batch: int,
) -> Iterator[torch.Tensor]:
    """(b, d) float32 features of the evaluation transform, batch by batch, on the model device."""
    for lo in range(0, len(images), batch):
        x = preprocess(images[lo:lo + batch], size, bundle.mean, bundle.std)
        yield layer_features(bundle, layer, x, pooling).float()


class FaithfulBank(ProbeTrainer):
    """Linear heads for every (family, k) of the families given to ``fit``, trained through
    the frozen backbone.

    Args:
        model: a loaded :class:`ModelBundle` (moved to ``device`` in place) or a model spec.
        layer, pooling: the probed layer and how its map is pooled (see ``layer_features``).
        image_size: input side in pixels (None = the model's native size).
        epochs, step_size, gamma: StepLR schedule, lr_e = lr * gamma ** (e // step_size).
        batch_size: images per SGD step (the last batch of an epoch may be smaller).
        lr, momentum, weight_decay: SGD settings.
        augment: the training augmentation (None = ``Augment(image_size)`` with its defaults);
            its ``size`` must equal the input size.
        device: ``"cpu"`` or ``"cuda[:i]"``; backbone, images and heads all run there.
        random_state: with each family's seed, seeds the batch order, augmentations (one
            stream per family seed) and head inits.
        progress: show a progress bar over epochs.

    A :class:`~drprobe.probes.contract.ProbeTrainer` on images (``space = "images"``, protocol
    ``faithful``): the X of ``fit`` / ``evaluate`` are (n, H, W[, 3]) uint8 or [0, 1] float
    images -- arrays or lazy row views indexable by slices and by position arrays -- the very
    rows the analysed features came from. Results keep the predicted labels.

    Learned attributes: ``classes_`` (C,), ``families_``, ``heads_`` (list of (family index,
    k)), ``coefs_`` / ``intercepts_`` (per head, (C, k) / (C,) at the best epoch),
    ``best_epoch_`` (H,), ``val_acc_`` (H,), ``history_`` (``"lr"`` (E,), ``"train_loss"``
    (H, E) mean batch loss, ``"val_acc"`` (H, E)), ``batch_orders_`` (family seed -> (E,
    n_train) positions in the training images in the order each epoch drew them),
    ``steps_per_epoch_``, ``fit_seconds_``, ``bundle_`` (the loaded model).
    """

    space = "images"
    protocol = "faithful"

    def __init__(
        self, model: str | ModelBundle, layer: str = "penultimate", *, pooling: str = "avg",
        image_size: int | None = None, epochs: int = EPOCHS, step_size: int = STEP_SIZE,
        gamma: float = GAMMA, batch_size: int = BATCH_SIZE, lr: float = LR,
        momentum: float = MOMENTUM, weight_decay: float = WEIGHT_DECAY,
        augment: Augment | None = None, device: str = "cpu", random_state: int = 0,
        progress: bool = True,
    ) -> None:
        self.model = model
        self.layer = layer
        self.pooling = pooling
        self.image_size = image_size
        self.epochs = epochs
        self.step_size = step_size
        self.gamma = gamma
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.augment = augment
        self.device = device
        self.random_state = random_state
        self.progress = progress

    def compute_device(self) -> str:
        return str(self.device)

    # -------------------------------------------------------------------------- set-up
    def _check(self) -> None:
        for name in ("epochs", "step_size", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InvalidValueError(f"{name}={value!r} must be an integer >= 1")
        for name, low in (("lr", 0.0), ("gamma", 0.0)):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > low):
                raise InvalidValueError(f"{name}={getattr(self, name)!r} must be > {low}")
        for name in ("momentum", "weight_decay"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise InvalidValueError(f"{name}={getattr(self, name)!r} must be >= 0")

    def _setup(self) -> tuple[ModelBundle, str, int, Augment]:
        self._check()
        bundle = image_bundle(self.model, resolve_device(self.device, mps=False))
        layer = resolve_layer(bundle, self.layer)
        size = int(self.image_size or bundle.input_size)
        return bundle, layer, size, training_augment(self.augment, size)

    def _bases(self, dev: torch.device) -> list[design.Basis]:
        return [design.Basis(fam, dev, torch.float32, int(max(fam.ks))) for fam in self.families_]

    def _features(self, bundle: ModelBundle, images: np.ndarray, bases: list[design.Basis]
                  ) -> list[torch.Tensor]:
        """Per family, the (n, m_f) basis coordinates of the clean ``images``."""
        parts: list[list[torch.Tensor]] = [[] for _ in bases]
        for f in _clean_features(bundle, self.layer_, images, self.pooling, self.size_,
                                 int(self.batch_size)):
            for part, basis in zip(parts, bases):
                part.append(basis(f))
        return [torch.cat(p) for p in parts]

    # ----------------------------------------------------------------------------- fit
    def fit(self, X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray,
            y_val: np.ndarray, families: Sequence[SubsetFamily]) -> FaithfulBank:
        """Train a head per (family, k) of ``families`` on the images X_train (n_train, H,
        W[, 3]) with labels y_train (n_train,), keeping each head's best epoch on X_val
        (n_val, H, W[, 3]) / y_val (n_val,). Returns self."""
        t_start = time.perf_counter()
        bundle, self.layer_, self.size_, aug = self._setup()
        self.bundle_ = bundle
        X_train, X_val = check_images(X_train, "X_train"), check_images(X_val, "X_val")
        ytr = inputs.check_labels(y_train, X_train.shape[0], "y_train")
        yva = inputs.check_labels(y_val, X_val.shape[0], "y_val")
        self.classes_ = np.unique(np.concatenate([ytr, yva]))
        if len(self.classes_) < 2:
            raise InvalidValueError(f"labels have {len(self.classes_)} class; need at least 2")
        families = list(families)
        if not families:
            raise InvalidValueError("families is empty; pass at least one SubsetFamily")
        d = feature_dim(bundle, self.layer_, self.pooling, self.size_)
        for i, fam in enumerate(families):
            inputs.check_family(fam, i, d)
        self.families_ = families
        self.heads_ = [(i, int(k)) for i, fam in enumerate(families) for k in fam.ks]
        dev = resolve_device(self.device, mps=False)
        bases = self._bases(dev)
        n_tr = int(X_train.shape[0])
        y_idx = torch.as_tensor(inputs.encode(ytr, self.classes_, "y_train"), device=dev)
        y_val_idx = torch.as_tensor(inputs.encode(yva, self.classes_, "y_val"), device=dev)
        Z_val = self._features(bundle, X_val, bases)
        params = self._init_heads(dev)
        opt = torch.optim.SGD([p for pair in params for p in pair], lr=self.lr,
                              momentum=self.momentum, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.StepLR(opt, int(self.step_size), self.gamma)
        streams: dict[int, list[int]] = {}  # family seed -> its heads: one run per probe seed
        for h, (i, _) in enumerate(self.heads_):
            streams.setdefault(int(families[i].seed), []).append(h)
        gens = {s: torch.Generator().manual_seed(stream_seed(self.random_state, s))
                for s in streams}
        H, E = len(self.heads_), int(self.epochs)
        self.batch_orders_ = {s: np.empty((E, n_tr), dtype=np.int64) for s in streams}
        self.history_ = {"lr": np.zeros(E), "train_loss": np.zeros((H, E)),
                         "val_acc": np.zeros((H, E))}
        self.best_epoch_ = np.full(H, -1)
        self.val_acc_ = np.full(H, -1.0)
        self.coefs_: list[np.ndarray] = [np.empty(0)] * H
        self.intercepts_: list[np.ndarray] = [np.empty(0)] * H
        self.steps_per_epoch_ = math.ceil(n_tr / int(self.batch_size))
        bar = tqdm(range(E), desc="faithful", unit="epoch", file=sys.stderr,
                   disable=not self.progress)
        for epoch in bar:
            self.history_["lr"][epoch] = opt.param_groups[0]["lr"]
            for seed, heads in streams.items():
                g = gens[seed]
                order = torch.randperm(n_tr, generator=g).numpy()
                self.batch_orders_[seed][epoch] = order
                self.history_["train_loss"][heads, epoch] = self._epoch(
                    bundle, X_train, order, y_idx, aug, g, bases, params, opt, heads)
            sched.step()
            self._validate(epoch, params, Z_val, y_val_idx)
            bar.set_postfix(val=f"{self.history_['val_acc'][:, epoch].mean():.3f}")
        self.fit_seconds_ = time.perf_counter() - t_start
        return self

    def _init_heads(self, dev: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """nn.Linear's default init per head, from the head's own seeded generator."""
        C, out = len(self.classes_), []
        for i, k in self.heads_:
            g = torch.Generator().manual_seed(head_seed(self.random_state, self.families_[i], k))
            bound = 1.0 / math.sqrt(k)
            W = (torch.rand(C, k, generator=g) * 2 - 1) * bound
            b = (torch.rand(C, generator=g) * 2 - 1) * bound
            out.append((W.to(dev).requires_grad_(), b.to(dev).requires_grad_()))
        return out

    def _epoch(
        self, bundle: ModelBundle, images: np.ndarray, order: np.ndarray, y_idx: torch.Tensor,
        aug: Augment, g: torch.Generator, bases: list[design.Basis],
        params: list[tuple[torch.Tensor, torch.Tensor]], opt: torch.optim.Optimizer,
        heads: list[int],
    ) -> np.ndarray:
        """One pass over the training images for the heads ``heads`` of one stream (their
        batches and augmentations drawn from ``g``); returns their mean batch losses."""
        totals = torch.zeros(len(heads), dtype=torch.float64)
        dev = params[0][0].device
        fams = sorted({self.heads_[h][0] for h in heads})
        for lo in range(0, len(order), int(self.batch_size)):
            idx = order[lo:lo + int(self.batch_size)]
            x = augment_images(images[idx], aug, bundle.mean, bundle.std, g, dev)
            f = layer_features(bundle, self.layer_, x, self.pooling).float().clone()
            Z = {i: bases[i](f) for i in fams}
            target = y_idx[torch.as_tensor(idx, device=dev)]
            losses = torch.stack([
                F.cross_entropy(Z[i][:, :k] @ params[h][0].T + params[h][1], target)
                for h in heads for i, k in (self.heads_[h],)])
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
            totals += losses.detach().double().cpu() * len(idx)
        return (totals / len(order)).numpy()

    @torch.no_grad()
    def _validate(self, epoch: int, params: list[tuple[torch.Tensor, torch.Tensor]],
                  Z_val: list[torch.Tensor], y_val: torch.Tensor) -> None:
        """Record validation accuracy; keep a copy of each head that beats its best."""
        for h, ((i, k), (W, b)) in enumerate(zip(self.heads_, params)):
            pred = (Z_val[i][:, :k] @ W.T + b).argmax(1)
            acc = float((pred == y_val).double().mean())
            self.history_["val_acc"][h, epoch] = acc
            if acc > self.val_acc_[h]:
                self.val_acc_[h], self.best_epoch_[h] = acc, epoch
                self.coefs_[h] = W.detach().cpu().numpy().copy()
                self.intercepts_[h] = b.detach().cpu().numpy().copy()

    # ------------------------------------------------------------------------ inference
    def _check_fitted(self) -> None:
        if not hasattr(self, "coefs_"):
            raise InvalidValueError(f"this {type(self).__name__} is not fitted; call fit first")

    @torch.no_grad()
    def _logits_all(self, images: np.ndarray) -> list[torch.Tensor]:
        """(n, C) logits of every head (in ``heads_`` order) on the clean ``images``."""
        self._check_fitted()
        dev = resolve_device(self.device, mps=False)
        bundle = image_bundle(self.bundle_, dev)
        Z = self._features(bundle, check_images(images, "images"), self._bases(dev))
        out = []
        for (i, k), W, b in zip(self.heads_, self.coefs_, self.intercepts_):
            W_t, b_t = torch.as_tensor(W, device=dev), torch.as_tensor(b, device=dev)
            out.append(Z[i][:, :k] @ W_t.T + b_t)
        return out

    def predict_proba_all(self, images: np.ndarray) -> list[np.ndarray]:
        """Class probabilities (n, C) of every head (in ``heads_`` order) on clean images."""
        return [class_probabilities(z) for z in self._logits_all(images)]

    def evaluate(self, X_test: np.ndarray, y_test: np.ndarray) -> list[ProbeResult]:
        """Test every head on the clean images X_test (n, H, W[, 3]) with labels y_test (n,);
        one ProbeResult per head, in ``heads_`` order. ``l2`` holds the SGD weight decay,
        ``n_steps`` the SGD steps up to the kept (best-validation) epoch, ``fit_seconds`` the
        head's share of the fit time."""
        self._check_fitted()
        X_test = check_images(X_test, "X_test")
        y = inputs.encode(inputs.check_labels(y_test, X_test.shape[0], "y_test"), self.classes_,
                          "y_test")
        return [probe_result(
            self.families_[i], list(self.families_[i].ks).index(k),
            l2=self.weight_decay, val_acc=self.val_acc_[h], logits=logits, y_test=y,
            classes=self.classes_, n_steps=(self.best_epoch_[h] + 1) * self.steps_per_epoch_,
            fit_seconds=self.fit_seconds_ / len(self.heads_), keep_predictions=True,
            keep_proba=False,
        ) for h, ((i, k), logits) in enumerate(zip(self.heads_, self._logits_all(X_test)))]
