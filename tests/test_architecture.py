"""The library's layers as a contract (pyproject.toml [tool.importlinter]: hil > reports > power > device > build >
model > core), checked by import-linter, and the C board layer without call cycles between its files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from buildutil import ROOT
from llmcu.build.boards import load_board, write_board_config

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


def test_no_package_of_the_library_is_flat_again() -> None:
    """Every module lives in a layer; the package's own folder holds only __init__.py and the layers."""
    top = ROOT / "site_scons" / "llmcu"
    assert sorted(p.name for p in top.glob("*.py")) == ["__init__.py"]
    assert {p.name for p in top.iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        "core", "model", "build", "device", "reports", "power", "hil"}  # fmt: skip


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
