"""The one way a trained probe's test scores become a :class:`ProbeResult`.

Every trainer (the probe bank, the streaming trainer, the faithful trainer, and through the bank
the wide path's sample-space probes) hands :func:`probe_result` its probe's test logits; the
softmax, the argmax, the accuracy and the per-class accuracy are computed here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from drprobe.metrics.fairness import per_class_accuracy
from drprobe.selectors import SubsetFamily

__all__ = ["ProbeResult", "class_probabilities", "probe_result"]


@dataclass
class ProbeResult:
    """Test-set outcome of one probe (one family, one size k, its chosen L2 strength)."""

    selector: str
    seed: int
    k: int
    fraction: float | None
    l2: float  # chosen on validation
    val_acc: float
    test_acc: float
    per_class_acc: np.ndarray  # (C,) test accuracy per class (NaN for classes absent from test)
    n_steps: int  # optimisation steps actually run for the chosen probe
    fit_seconds: float  # wall time attributed to this probe (its share of the batched work)
    test_pred: np.ndarray | None = None  # (n_test,) predicted labels, when keep_predictions
    test_proba: np.ndarray | None = None  # (n_test, C), when keep_proba


def class_probabilities(logits: torch.Tensor | np.ndarray) -> np.ndarray:
    """(n, C) softmax of (n, C) logits, computed in the logits' own library and dtype: a torch
    tensor by ``torch.softmax`` (on its device, then moved to the CPU), a numpy array by the
    max-shifted exponential normalised per row."""
    if isinstance(logits, torch.Tensor):
        return torch.softmax(logits, dim=1).cpu().numpy()
    proba = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba /= proba.sum(axis=1, keepdims=True)
    return proba


def probe_result(
    family: SubsetFamily, j: int, *, l2: float, val_acc: float, logits: torch.Tensor | np.ndarray,
    y_test: np.ndarray, classes: np.ndarray, n_steps: int, fit_seconds: float,
    keep_predictions: bool, keep_proba: bool,
) -> ProbeResult:
    """The result of the probe of size ``family.ks[j]`` of ``family`` from its test logits.

    Args:
        family: the probe's family (selector, seed, sizes, fractions).
        j: position of the probe's size in ``family.ks``.
        l2, val_acc, n_steps, fit_seconds: reported as given.
        logits: (n_test, C) test logits (torch or numpy; see :func:`class_probabilities`).
        y_test: (n_test,) test labels encoded as indices into ``classes``.
        classes: (C,) the class labels; predictions are reported as labels.
        keep_predictions, keep_proba: keep the (n_test,) predicted labels / (n_test, C)
            probabilities on the result.
    """
    proba = class_probabilities(logits)
    pred = proba.argmax(1)
    return ProbeResult(
        selector=family.selector, seed=int(family.seed), k=int(family.ks[j]),
        fraction=None if family.fractions is None else float(family.fractions[j]),
        l2=float(l2), val_acc=float(val_acc), test_acc=float((pred == y_test).mean()),
        per_class_acc=per_class_accuracy(y_test, pred, len(classes)), n_steps=int(n_steps),
        fit_seconds=float(fit_seconds),
        test_pred=classes[pred] if keep_predictions else None,
        test_proba=proba if keep_proba else None,
    )
