"""Shared fixtures: a per-session feature cache so end-to-end tests extract each entry once."""

from __future__ import annotations

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
