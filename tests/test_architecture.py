"""The library's layers as a contract (pyproject.toml [tool.importlinter]: cli > hil > reports > power > device >
builder > model > platform > core), checked by import-linter; no import cycle at any depth, counting the imports inside
functions and under TYPE_CHECKING that import-linter does not see; and the C board layer without call cycles between
its files."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llmcu.builder.boardconfig import write_board_config
from llmcu.platform.stm32h7 import load_board
from support.build import ROOT

LINT = shutil.which("lint-imports")
needs_linter = pytest.mark.skipif(LINT is None, reason="import-linter missing (pip install -r requirements.txt)")


def lint_imports(package_parent: Path, config: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(package_parent), "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
    command = [LINT or "lint-imports", "--config", str(config), "--no-cache"]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=config.parent, timeout=120)


@needs_linter
def test_the_layers_are_kept() -> None:
    result = lint_imports(ROOT / "site_scons", ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@needs_linter
def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    """A planted import of the device layer from the model layer: CI fails, naming both."""
    shutil.copytree(ROOT / "site_scons" / "llmcu", tmp_path / "site_scons" / "llmcu")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    planted = tmp_path / "site_scons" / "llmcu" / "model" / "sampler.py"
    planted.write_text(planted.read_text() + "\nfrom ..device import protocol  # noqa: E402,F401\n")
    result = lint_imports(tmp_path / "site_scons", tmp_path / "pyproject.toml")
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "llmcu.model.sampler -> llmcu.device.protocol" in result.stdout


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, wherever the import stands (in a function, under
    TYPE_CHECKING, ...): what a cycle hidden from the layer contract would use."""

    def name_of(path: Path) -> str:
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    modules = {name_of(path): path for path in package.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = here.split(".")[: len(here.split(".")) - node.level + 1] if node.level else []
                target = ".".join([*base, *([node.module] if node.module else [])])
                candidates = [target, *(f"{target}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            graph[name] |= {c for c in candidates if c in modules and c != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    cycles.append(sorted(group))
    return cycles


def test_no_import_cycle_at_any_depth() -> None:
    assert import_cycles(import_graph(ROOT / "site_scons" / "llmcu")) == []


def test_a_cycle_hidden_in_a_function_is_found(tmp_path: Path) -> None:
    """A planted pair: one imports the other at the top, the other imports it back inside a function."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "a.py").write_text("from . import b\n")
    (package / "sub" / "b.py").write_text("def late():\n    from .a import x\n    return x\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .sub import a\n")
    assert import_cycles(import_graph(package)) == [["pkg.sub.a", "pkg.sub.b"]]
    (package / "sub" / "b.py").write_text("def late():\n    return 1\n")
    assert import_cycles(import_graph(package)) == []


def test_no_package_of_the_library_is_flat_again() -> None:
    """Every module lives in a layer; the package's own folder holds only __init__.py and the layers."""
    top = ROOT / "site_scons" / "llmcu"
    assert sorted(p.name for p in top.glob("*.py")) == ["__init__.py"]
    assert {p.name for p in top.iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        "core", "platform", "model", "builder", "device", "reports", "power", "hil", "cli"}  # fmt: skip


CC = "arm-none-eabi-gcc"


@pytest.mark.skipif(shutil.which(CC) is None, reason=f"{CC} missing (tools/setup.sh installs it)")
def test_the_board_layer_has_no_call_cycle_between_its_files(tmp_path: Path) -> None:
    """Who calls whom among targets/stm32h743/*.c, from the objects' defined and undefined symbols: no two files
    (nor a longer loop) depend on each other (the SDRAM's delay lives in timing.c, not board.c)."""
    folder = ROOT / "targets" / "stm32h743"
    write_board_config(load_board(folder, "h743-sdram-qspi"), tmp_path / "board_config.h")
    defines: dict[str, str] = {}
    uses: dict[str, set[str]] = {}
    for source in sorted(folder.glob("*.c")):
        obj = tmp_path / f"{source.stem}.o"
        subprocess.run([CC, "-mcpu=cortex-m7", "-mthumb", "-O2", "-c", f"-I{tmp_path}", f"-I{folder}",
                        f"-I{ROOT / 'targets' / 'cortex-m'}", str(source), "-o", str(obj)], check=True)  # fmt: skip
        symbols = subprocess.run(["arm-none-eabi-nm", str(obj)], capture_output=True, text=True, check=True).stdout
        uses[source.name] = set()
        for line in symbols.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in "TDRB":
                defines[parts[2]] = source.name
            elif len(parts) == 2 and parts[0] == "U":
                uses[source.name].add(parts[1])
    graph = {
        name: {defines[s] for s in symbols if s in defines and defines[s] != name} for name, symbols in uses.items()
    }

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})) for nxt in graph[start])

    cycles = sorted(name for name in graph if reaches(name, name, {name}))
    assert cycles == [], {name: sorted(graph[name]) for name in cycles}
    assert "board.c" not in graph["sdram.c"]


def test_no_two_classes_of_the_library_share_a_name() -> None:
    """A class name says one thing: two ``Window``s (a sliding KV window and a span on a meter's timeline) made
    every import of one a question of which."""
    seen: dict[str, list[str]] = {}
    for path in sorted((ROOT / "site_scons" / "llmcu").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                seen.setdefault(node.name, []).append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}
