"""Greedy forward selection of neurons on a validation split (exact ridge-proxy scores)."""

from __future__ import annotations

from typing import Any

import numpy as np

from drprobe.errors import InvalidValueError
from drprobe.selectors.base import Selector, need_labels


class GreedyForward(Selector):
    """Forward selection of neurons on a validation split, nested by construction.

    Proxy [ours]: ridge regression from standardised train features to centred one-hot labels
    (intercept = class frequencies, penalty λ = ``alpha``·n_train), evaluated on the validation
    split. ``criterion="mse"`` adds the neuron that most lowers the validation squared error;
    ``"accuracy"`` the one that most raises validation accuracy of argmax(prediction), ties broken
    by squared error. Every candidate's score is *exact* (equal to refitting the ridge on S ∪ {j}):
    the method is Gram–Schmidt in the metric G = XᵀX + λI, keeping the Schur complement G_res,
    the residual targets β = XᵀY − G[:, S]W_S and the residualised validation features R, each
    updated by one rank-one step per added neuron (O(d² + n_val·d·C) per step).
    Without ``X_val``, a ``val_fraction`` of the training rows (drawn with ``random_state``) is held
    out. Learned: ``indices_`` (k,), ``val_mse_`` (k,) and ``val_accuracy_`` (k,) after each step.
    """

    needs_labels = True
    uses_validation = True
    wide_refusal = "its exact scores need the layer's d×d ridge Gram"

    def __init__(
        self, n_components: int, random_state: Any = None, alpha: float = 1e-3,
        criterion: str = "mse", val_fraction: float = 0.2,
    ) -> None:
        super().__init__(n_components, random_state)
        self.alpha = alpha
        self.criterion = criterion
        self.val_fraction = val_fraction

    def _split(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
        n = X.shape[0]
        n_val = round(self.val_fraction * n)
        if not (0.0 < self.val_fraction < 1.0) or n_val < 1 or n - n_val < 2:
            raise InvalidValueError(
                f"val_fraction {self.val_fraction!r} must be in (0, 1) and leave >= 1 validation "
                f"and >= 2 training rows; got n={n}"
            )
        perm = np.random.default_rng(self.random_state).permutation(n)
        return X[perm[n_val:]], y[perm[n_val:]], X[perm[:n_val]], y[perm[:n_val]]

    def fit(self, X: Any, y: Any = None, X_val: Any = None, y_val: Any = None) -> GreedyForward:
        d = self._width(X)
        k = self._k(d)
        need_labels("greedy", y)
        if self.criterion not in ("mse", "accuracy"):
            raise InvalidValueError(f"criterion {self.criterion!r}; valid choices: accuracy, mse")
        Xt, yt = np.asarray(X, dtype=np.float64), np.asarray(y)
        if X_val is None:
            Xt, yt, Xv, yv = self._split(Xt, yt)
        elif y_val is None:
            raise InvalidValueError("greedy got X_val without y_val; pass both or neither")
        else:
            Xv, yv = np.asarray(X_val, dtype=np.float64), np.asarray(y_val)
        classes = np.unique(yt)
        Yt, Yv = ((v[:, None] == classes[None, :]).astype(np.float64) for v in (yt, yv))
        yv_idx = np.where(Yv.any(axis=1), Yv.argmax(axis=1), -1)  # unseen class: never right
        mu, sd = Xt.mean(axis=0), Xt.std(axis=0)
        sd[sd == 0] = 1.0
        Xs, R = (Xt - mu) / sd, (Xv - mu) / sd
        G = Xs.T @ Xs + self.alpha * Xs.shape[0] * np.eye(d)
        beta = Xs.T @ (Yt - Yt.mean(axis=0))
        pred = np.tile(Yt.mean(axis=0), (Xv.shape[0], 1))
        avail = np.ones(d, dtype=bool)
        chosen, mses, accs = [], [], []
        for _ in range(k):
            gam = np.where(avail, np.diag(G), 1.0)  # ≥ λ > 0 for unselected columns
            W = beta / gam[:, None]
            # drop in validation SSE from adding j: 2 r_jᵀE w_j − ‖r_j‖²‖w_j‖², E = Y_val − pred
            gain = 2.0 * np.sum((R.T @ (Yv - pred)) * W, axis=1) - np.sum(R * R, axis=0) * np.sum(
                W * W, axis=1)
            gain[~avail] = -np.inf
            if self.criterion == "accuracy":
                acc = self._candidate_accuracy(pred, R, W, yv_idx, avail)
                gain = np.where(acc >= acc.max() - 1e-12, gain, -np.inf)
            j = int(np.argmax(gain))
            g = G[:, j].copy()
            pred += np.outer(R[:, j], W[j])
            R -= np.outer(R[:, j], g / g[j])
            beta -= np.outer(g, beta[j] / g[j])
            G -= np.outer(g, g / g[j])
            avail[j] = False
            chosen.append(j)
            mses.append(float(np.mean(np.sum((Yv - pred) ** 2, axis=1))))
            accs.append(float(np.mean(pred.argmax(axis=1) == yv_idx)))
        self.indices_ = np.asarray(chosen, dtype=np.int64)
        self.val_mse_, self.val_accuracy_ = np.asarray(mses), np.asarray(accs)
        return self

    @staticmethod
    def _candidate_accuracy(
        pred: np.ndarray, R: np.ndarray, W: np.ndarray, yv_idx: np.ndarray, avail: np.ndarray,
        chunk: int = 64,
    ) -> np.ndarray:
        """(d,) validation accuracy after adding each available neuron (−inf for the others)."""
        acc = np.full(R.shape[1], -np.inf)
        cand = np.flatnonzero(avail)
        for lo in range(0, len(cand), chunk):
            J = cand[lo:lo + chunk]
            P = pred[:, None, :] + R[:, J, None] * W[None, J, :]  # (n_val, |J|, C)
            acc[J] = np.mean(P.argmax(axis=2) == yv_idx[:, None], axis=0)
        return acc

