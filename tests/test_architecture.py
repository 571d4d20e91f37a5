"""The layer order of docs/architecture.md holds: import-linter's contract in pyproject.toml
passes, and it names the same layers, in the same order, as the page draws."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def contract_layers() -> list[str]:
    """The ``layers`` list of the one import-linter contract in pyproject.toml."""
    text = (ROOT / "pyproject.toml").read_text().split("[tool.importlinter]", 1)[1]
    (block,) = re.findall(r"^layers = \[(.*?)^\]", text, flags=re.MULTILINE | re.DOTALL)
    return re.findall(r'"([\w.]+)"', block)


def test_documented_layers_are_the_contracts_layers():
    page = (ROOT / "docs" / "architecture.md").read_text()
    drawing = page.split("```")[3]  # the layer drawing, top layer first
    drawn = re.findall(r"^\s*(drprobe(?:\.\w+)?)\s", drawing, flags=re.MULTILINE)
    assert drawn == contract_layers()


def test_each_layer_imports_only_the_layers_below_it():
    script = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}  # this checkout's drprobe
    command = [str(script), "--no-cache", "--config", str(ROOT / "pyproject.toml")]
    proc = subprocess.run(command, cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout
