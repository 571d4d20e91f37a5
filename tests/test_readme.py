"""The README's promises: two fresh-machine commands, both Make targets, CI runs the test one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def first_code_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```[a-z]*\n(.*?)```", text, re.DOTALL)
    assert block, "README has no code block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_demo_and_test_commands():
    assert first_code_block() == ["make demo", "make test"]


def test_make_targets_exist_and_install_first():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        match = re.search(rf"^{target}:\s*(.*)$", makefile, re.MULTILINE)
        assert match and "setup" in match.group(1), target
    assert "torch==2.14.1" in makefile and "torchvision==0.29.1" in makefile and "dataset-fashion-mnist" in makefile
    assert re.search(r"^\s+\$\(BIN\)/drprobe demo", makefile, re.MULTILINE)


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.MULTILINE)
