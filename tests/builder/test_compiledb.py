"""`scons compiledb`: compile_commands.json for clangd and IDEs, per target and build directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from support.build import ROOT, scons


@pytest.mark.parametrize(
    ("target", "compiler", "flag"),
    [("host", "gcc", "-ffp-contract=off"), ("qemu-m7", "arm-none-eabi-gcc", "-mcpu=cortex-m7")],
)
def test_compile_commands_have_the_real_compiler_and_flags(
    target: str, compiler: str, flag: str, tmp_path: Path, stories260k: Path
) -> None:
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} missing (tools/setup.sh installs it)")
    scons([f"target={target}", "model=260k", "quant=q8", f"build_dir={tmp_path}", "compiledb"], stories260k.parent)
    path = tmp_path / target / "260k-q8" / "compile_commands.json"
    entries = json.loads(path.read_text())
    files = {Path(entry["file"]).name for entry in entries}
    assert {"transformer.c", "generate.c", "attention_q16.c", "model_weights.c"} <= files
    for entry in entries:
        assert Path(entry["file"]).is_absolute() and Path(entry["directory"]) == ROOT
        command = entry["command"]
        assert command.split()[0].endswith(compiler) and (flag in command or entry["file"].endswith(".S"))
    # only the database and the generated sources it names (clangd must find model_config.h): nothing compiled
    assert not list((tmp_path / target / "260k-q8").rglob("*.o"))
    assert (tmp_path / target / "260k-q8" / "gen" / "model_config.h").is_file()
