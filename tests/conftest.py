"""Shared fixtures: a per-session feature cache so end-to-end tests extract each entry once, the
digits as precomputed features, a no-network guard and a recorder of feature extractions.

Plain helpers (a tiny experiment config, the in-process CLI, ...) are in ``helpers.py``.
"""

from __future__ import annotations

import socket

import numpy as np
import pytest


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory: pytest.TempPathFactory):
    """A feature-cache folder shared by the end-to-end tests of one pytest session."""
    return tmp_path_factory.mktemp("feature-cache")


@pytest.fixture
def digits_npz(tmp_path):
    """scikit-learn's digits as a precomputed-features npz (1,000 train / 797 test rows)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    path = tmp_path / "digits.npz"
    np.savez(path, X_train=X[:1000].astype(np.float32), y_train=y[:1000],
             X_test=X[1000:].astype(np.float32), y_test=y[1000:])
    return path


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test loudly.

    A file opts in with ``pytestmark = pytest.mark.usefixtures("no_network")``; fixtures of a
    wider scope (a module's model, say) are set up before it and are not guarded.
    """

    def refuse(*_args, **_kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def extractions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records the layer of every extraction ``get_features`` starts: one entry per requested
    layer of each cache miss (a hit adds nothing), in order.
    """
    import drprobe.features as features_mod  # here, so that tests not using it skip torch

    seen: list[str] = []
    real = features_mod.iter_layer_features

    def recording(bundle, requests, images, **kwargs):
        seen.extend(layer for layer, _pooling in requests)
        return real(bundle, requests, images, **kwargs)

    monkeypatch.setattr(features_mod, "iter_layer_features", recording)
    return seen
