"""How a job trains its heads: the probe protocol as a strategy.

Both protocols get the same inputs from :func:`~drprobe.experiment.analysis.analyze_layer`: the
subset families (built on the cached features), the cached training features with the positions
of the train and validation rows, and the test split; they differ only in how a head is trained:

- :class:`CachedProtocol` (``cached``): the :class:`~drprobe.probes.ProbeBank` on the cached
  features, read lazily through :class:`~drprobe.features.views.RowView`;
- :class:`FaithfulProtocol` (``faithful``): a :class:`~drprobe.probes.faithful.FaithfulBank`
  trained through the frozen backbone on augmented images of the very subsample the features
  were extracted from (the job loads it once), with the same train/validation positions, and
  tested on the clean test images.

Each returns one :class:`~drprobe.probes.ProbeResult` per (family, k) from ``evaluate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from drprobe.errors import InvalidValueError
from drprobe.experiment.config import DatasetConfig, ExperimentConfig
from drprobe.features.views import RowView
from drprobe.probes import ProbeBank, ProbeResult
from drprobe.probes.faithful import FaithfulBank
from drprobe.probes.faithful_settings import paper_weight_decay
from drprobe.selectors import SubsetFamily

__all__ = ["CachedProtocol", "FaithfulProtocol", "as_protocol", "faithful_bank"]


class CachedProtocol:
    """Heads trained by a :class:`ProbeBank` on the cached features (the default protocol).

    Memory: the bank's design matrices (n x (k + 1) per family group, bounded by its
    ``max_memory_gb``); the features are read in row blocks, never copied whole.
    """

    name = "cached"

    def __init__(self, bank: ProbeBank) -> None:
        self.bank = bank

    @property
    def device(self) -> str:
        return str(self.bank.device)

    def train(self, X_train: Any, y_train: np.ndarray, train_idx: np.ndarray,
              val_idx: np.ndarray, families: Sequence[SubsetFamily]) -> CachedProtocol:
        """Fit every probe of ``families`` on rows ``train_idx``; choose L2 on ``val_idx``."""
        self.bank.fit(RowView(X_train, train_idx), y_train[train_idx],
                      RowView(X_train, val_idx), y_train[val_idx], families)
        return self

    def evaluate(self, X_test: Any, y_test: np.ndarray) -> list[ProbeResult]:
        return self.bank.evaluate(RowView(X_test), y_test)


class FaithfulProtocol:
    """Heads trained through the frozen backbone on augmented images (the paper's loop).

    Args:
        bank: a configured :class:`~drprobe.probes.faithful.FaithfulBank` (its ``families``
            are replaced by the ones the analysis builds).
        train, test: the loaded image splits whose features the analysis probes (same rows,
            same order: the job hands the same subsample to the feature cache and to this).

    Memory: the bank's (clean validation and test features per family, n x max k floats)
    plus one augmented batch through the backbone.
    """

    name = "faithful"

    def __init__(self, bank: FaithfulBank, train: Any, test: Any) -> None:
        self.bank, self.train_split, self.test_split = bank, train, test

    @property
    def device(self) -> str:
        return str(self.bank.device)

    def train(self, X_train: Any, y_train: np.ndarray, train_idx: np.ndarray,
              val_idx: np.ndarray, families: Sequence[SubsetFamily]) -> FaithfulProtocol:
        """Train the heads of ``families`` on the images at ``train_idx``, validating on those
        at ``val_idx`` (positions in the features' rows, which are the images' rows)."""
        labels = np.asarray(self.train_split.labels)
        if len(labels) != len(y_train) or not np.array_equal(labels, y_train):
            raise InvalidValueError(
                f"the faithful protocol's {len(labels)} training images are not the rows of the "
                f"{len(y_train)} cached features; pass the subsample the features came from")
        self.bank.families = list(families)
        self.bank.fit(self.train_split.images, labels, train_idx=train_idx, val_idx=val_idx)
        return self

    def evaluate(self, X_test: Any, y_test: np.ndarray) -> list[ProbeResult]:
        return self.bank.evaluate(self.test_split.images, self.test_split.labels)


def as_protocol(bank: Any, progress: bool = True) -> CachedProtocol | FaithfulProtocol:
    """A protocol for :func:`~drprobe.experiment.analysis.analyze_layer`'s ``bank``: a protocol
    as it is, a :class:`ProbeBank` as :class:`CachedProtocol`, None as a default bank."""
    if bank is None:
        return CachedProtocol(ProbeBank(keep_predictions=True, progress=progress))
    if isinstance(bank, ProbeBank):
        return CachedProtocol(bank)
    if hasattr(bank, "train") and hasattr(bank, "evaluate") and hasattr(bank, "name"):
        return bank
    raise InvalidValueError(f"bank must be a ProbeBank or a probe protocol (CachedProtocol, "
                            f"FaithfulProtocol); got {type(bank).__name__}")


def faithful_bank(config: ExperimentConfig, dataset: DatasetConfig, model: Any, layer: str,
                  device: str, progress: bool = False) -> FaithfulBank:
    """The :class:`FaithfulBank` of a job: the config's ``faithful`` settings, the weight decay
    of ``dataset`` as the paper sets it unless the config gives one, the config's validation
    share; its families and split come later from :class:`FaithfulProtocol`."""
    f = config.faithful
    weight_decay = f.weight_decay if f.weight_decay is not None else \
        paper_weight_decay(dataset.name)
    return FaithfulBank(
        model, [], layer, pooling=config.pooling, image_size=dataset.image_size,
        epochs=f.epochs, step_size=f.step_size, gamma=f.gamma, batch_size=f.batch_size, lr=f.lr,
        momentum=f.momentum, weight_decay=weight_decay,
        val_fraction=config.probe.val_fraction, device=device, random_state=0, progress=progress)
