"""Which probe trainer :func:`~drprobe.analysis.layer.analyze_layer` uses, and what it trains on.

Every trainer keeps one contract (:class:`~drprobe.probes.ProbeTrainer`: ``fit(X_train,
y_train, X_val, y_val, families)``, ``evaluate(X_test, y_test)``) and declares what its X are
(``space``):

- ``"features"`` (:class:`~drprobe.probes.ProbeBank`, the ``cached`` protocol and the default;
  :class:`~drprobe.wide.streaming.StreamingProbes`): the cached features' rows, read lazily
  through :class:`~drprobe.features.views.RowView`;
- ``"images"`` (:class:`~drprobe.probes.faithful.FaithfulBank`, ``faithful``): the images those
  rows came from, which the analysis gets from :class:`FaithfulProtocol` -- the trainer with the
  image splits the job extracted the features from (same rows, same order), read as lazy row
  views of the images (:class:`~drprobe.features.views.RowView` in their own dtype, no copy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from drprobe.errors import InvalidValueError
from drprobe.features.views import RowView
from drprobe.probes import ProbeBank, ProbeTrainer

__all__ = ["FaithfulProtocol", "as_trainer"]


@dataclass(frozen=True, eq=False)
class FaithfulProtocol:
    """A trainer on images (``bank.space == "images"``, e.g. a configured
    :class:`~drprobe.probes.faithful.FaithfulBank`) with the loaded image splits whose
    features the analysis probes (``train`` / ``test``: ``.images`` (n, H, W[, 3]) and
    ``.labels`` (n,); the job hands the same subsample to the feature cache and to this).

    Memory: the trainer's own (clean validation and test features per family, n x max k
    floats, plus one augmented batch through the backbone); the images are not copied.
    """

    bank: ProbeTrainer
    train: Any
    test: Any

    def inputs(self, y_train: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray,
               y_test: np.ndarray) -> tuple[RowView, RowView, Any]:
        """The images standing for the feature rows: (train rows, validation rows, test),
        after checking that the splits' labels are the features' labels, row for row."""
        for what, split, y in (("training", self.train, y_train), ("test", self.test, y_test)):
            labels = np.asarray(split.labels)
            if len(labels) != len(y) or not np.array_equal(labels, y):
                raise InvalidValueError(
                    f"the faithful protocol's {len(labels)} {what} images are not the rows of "
                    f"the {len(y)} cached features; pass the subsample the features came from")
        return (RowView(self.train.images, train_idx, None),
                RowView(self.train.images, val_idx, None),
                self.test.images)


def as_trainer(bank: ProbeTrainer | FaithfulProtocol | None, progress: bool = True
               ) -> ProbeTrainer:
    """The trainer of :func:`~drprobe.analysis.layer.analyze_layer`'s ``bank``: a trainer on
    features as it is, a :class:`FaithfulProtocol`'s trainer on images, None as the default
    ``ProbeBank(keep_predictions=True)``."""
    if bank is None:
        return ProbeBank(keep_predictions=True, progress=progress)
    trainer = bank.bank if isinstance(bank, FaithfulProtocol) else bank
    if not isinstance(trainer, ProbeTrainer):
        raise InvalidValueError(f"bank must be a probe trainer (ProbeBank, StreamingProbes) or a "
                                f"FaithfulProtocol; got {type(trainer).__name__}")
    wanted = "images" if isinstance(bank, FaithfulProtocol) else "features"
    if trainer.space != wanted:
        raise InvalidValueError(
            f"{type(trainer).__name__} trains on {trainer.space}, not {wanted}; "
            + ("wrap a trainer on images in FaithfulProtocol(bank, train, test)"
               if trainer.space == "images" else "FaithfulProtocol takes a trainer on images"))
    return trainer
