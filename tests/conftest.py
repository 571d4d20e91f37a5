"""Shared fixtures: a per-session feature cache so end-to-end tests extract each entry once."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory: pytest.TempPathFactory):
    """A feature-cache folder shared by the end-to-end tests of one pytest session."""
    return tmp_path_factory.mktemp("feature-cache")
