"""The one contract of every probe trainer: ``fit`` on train/validation, ``evaluate`` on test.

A trainer trains one head per (family, k) of a list of
:class:`~drprobe.selectors.SubsetFamily` and returns one
:class:`~drprobe.probes.results.ProbeResult` per head:

- :class:`~drprobe.probes.ProbeBank`: batched L-BFGS on feature matrices (protocol ``cached``);
- :class:`~drprobe.wide.streaming.StreamingProbes`: the same objective on coordinate families,
  streaming row chunks when neither the d x d nor the n x n form fits (``cached``);
- :class:`~drprobe.probes.faithful.FaithfulBank`: SGD heads through the frozen backbone on
  augmented images (``faithful``); its X are the images the feature rows came from.

Each is a scikit-learn estimator: ``__init__`` stores settings only (``get_params`` and
``sklearn.base.clone`` work), the families and data go to ``fit``, learned state ends in ``_``.
What a trainer can do is declared on its class, never probed: ``space`` (what its X are),
``protocol`` (the name recorded in the results) and ``wide_capable`` (whether the wide path,
:func:`~drprobe.wide.layer.analyze_wide`, can run its probes in sample space or streaming).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, Self

from sklearn.base import BaseEstimator

from drprobe.probes.results import ProbeResult
from drprobe.selectors import SubsetFamily

__all__ = ["SPACES", "ProbeTrainer"]

#: What a trainer's X are: rows of a feature matrix, or the images those rows came from.
SPACES = ("features", "images")


class ProbeTrainer(BaseEstimator, abc.ABC):
    """Abstract base of the probe trainers (see the module docstring).

    Class attributes each trainer declares:
        space: ``"features"`` (X: (n, d) arrays, memmaps or lazy row views of the features) or
            ``"images"`` (X: (n, H, W[, 3]) images, the rows the features came from).
        protocol: the name recorded in every result row's ``protocol`` column.
        wide_capable: True when :func:`~drprobe.wide.layer.analyze_wide` can take the trainer
            (the analysis then follows the memory plan onto the wide path).
    """

    space: ClassVar[Literal["features", "images"]]
    protocol: ClassVar[str]
    wide_capable: ClassVar[bool] = False

    @abc.abstractmethod
    def fit(self, X_train: Any, y_train: Any, X_val: Any, y_val: Any,
            families: Sequence[SubsetFamily]) -> Self:
        """Train a head per (family, k) of ``families`` on (X_train, y_train), select on
        (X_val, y_val); X_* in the trainer's ``space``, y_* (n_*,) labels. Returns self."""

    @abc.abstractmethod
    def evaluate(self, X_test: Any, y_test: Any) -> list[ProbeResult]:
        """One result per (family, k), in the families' order and each family's ks order."""

    def compute_device(self) -> str:
        """Where the trainer computes (``"cpu"``, ``"cuda:0"``, ...); the analysis runs its
        cross products on the same device."""
        return "cpu"

    def n_penalties(self) -> int:
        """How many penalty values each head is trained for (the memory plan counts them)."""
        return 1
