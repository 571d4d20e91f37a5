"""The layer order of docs/architecture.md holds: import-linter's contract in pyproject.toml
passes, and it names the same layers, in the same order, as the page draws."""

from __future__ import annotations

import ast
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
    return re.findall(r'"([\w. |]+)"', block)


def test_documented_layers_are_the_contracts_layers():
    page = (ROOT / "docs" / "architecture.md").read_text()
    (drawing,) = [block for block in page.split("```")[1::2]
                  if block.lstrip().startswith("drprobe.cli")]  # the layers, top first
    drawn = re.findall(r"^\s*(drprobe(?:\.\w+)?(?: \| drprobe\.\w+)*)\s", drawing,
                       flags=re.MULTILINE)
    assert drawn == contract_layers()


def test_each_layer_imports_only_the_layers_below_it():
    script = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}  # this checkout's drprobe
    command = [str(script), "--no-cache", "--config", str(ROOT / "pyproject.toml")]
    proc = subprocess.run(command, cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout


def _module_imports() -> dict[str, set[str]]:
    """Every drprobe module -> the drprobe modules it imports anywhere in its file (at the top,
    inside functions, under ``TYPE_CHECKING``): ``from drprobe.pkg import name`` counts as an
    import of ``drprobe.pkg.name`` when that is a module, else of ``drprobe.pkg``."""
    src = ROOT / "src"
    files = {".".join(p.relative_to(src).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (src / "drprobe").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                    + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in files and t != name}
        graph[name] = edges
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_circle_finder_finds_a_circle_through_a_function_level_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_src_counting_imports_inside_functions():
    graph = _module_imports()
    assert "drprobe.sources.smallnets" in graph["drprobe.sources.adapters.ckpt"]  # in a function
    assert _circles(graph) == []
