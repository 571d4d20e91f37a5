"""Every python block of docs/api.md runs as written (real MobileNetV2 weights on digits)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drprobe.selectors import SELECTORS

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


@pytest.mark.slow
def test_api_examples_run(tmp_path, monkeypatch):
    monkeypatch.setenv("DRPROBE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # the examples write their files where they run
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert len(blocks) >= 6
    namespace: dict = {}
    registered = dict(SELECTORS)  # the page registers a selector; the other tests must not see it
    try:
        for i, code in enumerate(blocks):
            exec(compile(code, f"{DOC.name}[block {i}]", "exec"), namespace)  # noqa: S102
    finally:
        SELECTORS.clear()
        SELECTORS.update(registered)
    assert namespace["out"].results["test_acc"].between(0, 1).all()
