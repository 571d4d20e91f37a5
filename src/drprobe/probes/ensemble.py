"""Probe ensembles: soft votes over probes on different random subsets of the same size.

The authors' code also asks whether several small random subsets together recover the full
layer's accuracy. The ensemble of probes at one size k averages their predicted class
probabilities (soft vote) and predicts the most probable class.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from drprobe.errors import InvalidValueError
from drprobe.probes.bank import ProbeBank


def soft_vote(probas: Sequence[np.ndarray]) -> np.ndarray:
    """Average of the members' class probabilities: list of (n, C) -> (n, C)."""
    arrays = [np.asarray(p, dtype=np.float64) for p in probas]
    if not arrays:
        raise InvalidValueError("an ensemble needs at least one member; got none")
    shape = arrays[0].shape
    if len(shape) != 2 or any(a.shape != shape for a in arrays):
        raise InvalidValueError(f"ensemble members must share one (n, C) shape; got "
                                f"{sorted({a.shape for a in arrays})}")
    return np.mean(arrays, axis=0)


def family_indices(bank: ProbeBank, k: int, selector: str = "random") -> list[int]:
    """Indices of the bank's families of ``selector`` that probed size ``k``."""
    found = [i for i, f in enumerate(bank.families_) if f.selector == selector and k in f.ks]
    if not found:
        sizes = sorted({k for f in bank.families_ if f.selector == selector for k in f.ks})
        raise InvalidValueError(f"no {selector!r} probe of size k={k} in the bank; valid "
                                f"choices: {sizes}")
    return found


def bank_probas(bank: ProbeBank, X: np.ndarray, k: int, selector: str = "random"
                ) -> list[np.ndarray]:
    """Probabilities (n, C) of every ``selector`` probe of size k (one per seed) on X (n, d)."""
    return bank.predict_proba_many(X, [(i, k) for i in family_indices(bank, k, selector)])


def ensemble_accuracy(
    source: ProbeBank | Sequence[np.ndarray], y_test: np.ndarray,
    X_test: np.ndarray | None = None, k: int | None = None, selector: str = "random",
    classes: np.ndarray | None = None,
) -> float:
    """Accuracy of the soft-vote ensemble.

    ``source`` is either a fitted :class:`ProbeBank` (then X_test (n, d) and k are required and
    the members are its ``selector`` probes of size k, labels mapped through ``bank.classes_``)
    or a list of (n, C) probability arrays (column j means label ``classes[j]``; default j).
    """
    if isinstance(source, ProbeBank):
        if X_test is None or k is None:
            raise InvalidValueError("ensemble_accuracy(bank, ...) needs X_test and k")
        probas, classes = bank_probas(source, X_test, k, selector), source.classes_
    else:
        probas = list(source)
    mean = soft_vote(probas)
    y = np.asarray(y_test)
    if y.shape != (mean.shape[0],):
        raise InvalidValueError(f"y_test has shape {y.shape}; expected ({mean.shape[0]},)")
    labels = np.arange(mean.shape[1]) if classes is None else np.asarray(classes)
    return float(np.mean(labels[mean.argmax(axis=1)] == y))


def ensemble_curve(bank: ProbeBank, X_test: np.ndarray, y_test: np.ndarray,
                   selector: str = "random") -> dict[int, float]:
    """Soft-vote ensemble accuracy at every size k the bank probed for ``selector``."""
    sizes = sorted({k for f in bank.families_ if f.selector == selector for k in f.ks})
    if not sizes:
        raise InvalidValueError(f"no {selector!r} families in the bank; valid choices: "
                                f"{sorted({f.selector for f in bank.families_})}")
    wanted = [(i, k) for k in sizes for i in family_indices(bank, k, selector)]
    probas = dict(zip(wanted, bank.predict_proba_many(X_test, wanted)))
    return {k: ensemble_accuracy([p for (i, kk), p in probas.items() if kk == k], y_test,
                                 classes=bank.classes_) for k in sizes}
