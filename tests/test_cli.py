"""The command lines beside SCons (llmcu.cli, pyproject.toml [project.scripts]): each runs as ``python -m`` from a
clean process and says what it did, and a bad input is one error line and a non-zero status."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from llmcu.cli import checkpoint as checkpoint_cli
from llmcu.cli import codegen as codegen_cli
from llmcu.model.checkpoint import read_checkpoint
from support.build import ROOT


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT / "site_scons"), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, timeout=300)


def test_every_script_names_a_main_that_exists() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"llmcu-checkpoint", "llmcu-oracle", "llmcu-codegen"}
    for target in scripts.values():
        module, function = target.split(":")
        assert module.startswith("llmcu.cli.") and function == "main"
        assert (ROOT / "site_scons" / (module.replace(".", "/") + ".py")).is_file()


def test_checkpoint_random_then_info(tmp_path: Path) -> None:
    out = tmp_path / "random.bin"
    made = run_module("llmcu.cli.checkpoint", "random", "--preset", "260k", "--seed", "3", str(out))
    assert made.returncode == 0, made.stderr
    assert f"wrote {out}: 260k shape, seed 3, v0" in made.stdout
    assert read_checkpoint(out).config.dim == 64
    info = run_module("llmcu.cli.checkpoint", "info", str(out))
    assert info.returncode == 0 and "format: v0" in info.stdout and "dim: 64" in info.stdout


def test_checkpoint_info_on_a_truncated_file_is_one_error(tmp_path: Path, stories260k: Path) -> None:
    cut = tmp_path / "cut.bin"
    cut.write_bytes(stories260k.read_bytes()[:5000])
    assert checkpoint_cli.main(["info", str(cut)]) == 1


def test_codegen_writes_the_generated_files(tmp_path: Path, stories260k: Path, tok512: Path) -> None:
    out = tmp_path / "gen"
    args = ["--checkpoint", str(stories260k), "--tokenizer", str(tok512), "--quant", "q8", "--out", str(out)]
    assert codegen_cli.main(args) == 0
    assert all((out / name).is_file() for name in codegen_cli.GENERATED_FILES)
    assert (out / "quant_report.md").read_text().startswith("#")
    cut = tmp_path / "cut.bin"
    cut.write_bytes(stories260k.read_bytes()[:5000])
    assert codegen_cli.main(["--checkpoint", str(cut), *args[2:-2], "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()
