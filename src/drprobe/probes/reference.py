"""Reference solver: scikit-learn ``LogisticRegression``, one probe and one L2 strength at a time.

This is the slow, obviously-correct path the probe bank is tested and benchmarked against. It
uses the bank's conventions: objective mean cross-entropy + (lam / 2) ||W||^2 (bias unpenalised),
i.e. ``C = 1 / (lam * n_train)``; z-scoring with training statistics when ``standardize``;
lam chosen by validation accuracy with ties going to the larger lam.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from drprobe.errors import InvalidValueError


def sklearn_objective(model: LogisticRegression, Z: np.ndarray, y: np.ndarray, l2: float
                      ) -> float:
    """The bank's objective at a fitted model: mean CE(Z, y) + (l2 / 2) ||coef||^2.

    Z: (n, k) features (already standardised if the model saw standardised features).
    """
    proba = np.clip(model.predict_proba(Z), 1e-300, None)
    cols = np.searchsorted(model.classes_, y)
    ce = -np.log(proba[np.arange(len(y)), cols]).mean()
    return float(ce + 0.5 * l2 * np.sum(model.coef_.astype(np.float64) ** 2))


def sklearn_probe(
    Z_train: np.ndarray, y_train: np.ndarray, Z_val: np.ndarray, y_val: np.ndarray,
    Z_test: np.ndarray, y_test: np.ndarray, l2_grid: Sequence[float], standardize: bool = True,
    max_iter: int = 1000, tol: float = 1e-4,
) -> dict:
    """Fit one probe per lam with lbfgs (multinomial), select on validation, score on test.

    Z_*: (n_*, k) features of one subset; y_*: labels. Returns a dict with keys ``l2``,
    ``val_acc``, ``test_acc``, ``per_class_acc`` ((C,), NaN for classes absent from test),
    ``n_steps``, ``fit_seconds`` (all lam), ``test_pred``, ``test_proba``, ``val_accs`` (per lam
    in ascending order), ``objective`` (train objective of the chosen model) and ``model``.
    """
    grid = sorted({float(x) for x in l2_grid})
    if not grid or min(grid) <= 0:
        raise InvalidValueError(f"l2_grid={list(l2_grid)!r} must be positive numbers")
    Z_train, Z_val, Z_test = (np.asarray(Z, dtype=np.float64) for Z in (Z_train, Z_val, Z_test))
    if standardize:
        mean, sd = Z_train.mean(0), Z_train.std(0)
        sd = np.where(sd > 0, sd, 1.0)
        Z_train, Z_val, Z_test = ((Z - mean) / sd for Z in (Z_train, Z_val, Z_test))
    n = len(y_train)
    t0 = time.perf_counter()
    best = None
    val_accs = []
    for lam in grid:  # ascending: a later lam wins ties (>=)
        model = LogisticRegression(C=1.0 / (lam * n), max_iter=max_iter, tol=tol)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(Z_train, y_train)
        acc = float(np.mean(model.predict(Z_val) == np.asarray(y_val)))
        val_accs.append(acc)
        if best is None or acc >= best[0]:
            best = (acc, lam, model)
    assert best is not None
    acc, lam, model = best
    seconds = time.perf_counter() - t0
    proba = model.predict_proba(Z_test)
    pred = model.classes_[proba.argmax(1)]
    y_test = np.asarray(y_test)
    per_class = np.array([np.mean(pred[y_test == c] == c) if np.any(y_test == c) else np.nan
                          for c in model.classes_])
    return {
        "l2": lam, "val_acc": acc, "test_acc": float(np.mean(pred == y_test)),
        "per_class_acc": per_class, "n_steps": int(np.max(model.n_iter_)),
        "fit_seconds": seconds, "test_pred": pred, "test_proba": proba,
        "val_accs": np.array(val_accs), "objective": sklearn_objective(model, Z_train, y_train,
                                                                       lam),
        "model": model,
    }
