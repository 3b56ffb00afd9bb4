"""optimize=: the compiler's -O for the runtime. Whatever the level, the output is the same to the byte (the
numeric contract forbids fast-math and FMA contraction, so no level may reorder the float arithmetic): fp32 on the
host still equals llama2.c's run.c, and the twin's tokens do not move; -Os makes the firmware's code smaller."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest

from llmcu.builder.settings import configure
from llmcu.device.protocol import parse
from llmcu.device.qemu import run_firmware
from support.build import case_args, scons

LEVELS = {"speed": "", "fast": "-O3", "size": "-Os"}


def test_the_level_names_the_build_folder(stories260k: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMCU_MODELS", str(stories260k.parent))
    names = {level: configure({"quant": "q8", "optimize": level}, download=False).out_dir.name for level in LEVELS}
    assert names == {"speed": "260k-q8", "fast": "260k-q8-O3", "size": "260k-q8-Os"}


@pytest.mark.parametrize("level", ["fast", "size"])
def test_host_fp32_still_reproduces_run_c(
    level: str, tmp_path: Path, stories260k: Path, golden_cases: list[dict]
) -> None:
    args = ["target=host", "model=260k", "quant=fp32", f"optimize={level}", f"build_dir={tmp_path}"]
    scons([*args, "compiledb"], stories260k.parent)
    commands = json.loads((tmp_path / "host" / f"260k-fp32{LEVELS[level]}" / "compile_commands.json").read_text())
    matmul = next(entry for entry in commands if entry["file"].endswith("kernels/x86/matmul.c"))
    words = shlex.split(matmul["command"])
    assert [word for word in words if word.startswith("-O")][-1] == LEVELS[level]  # after the target's -O2
    scons(args, stories260k.parent)
    program = tmp_path / "host" / f"260k-fp32{LEVELS[level]}" / "llmcu"
    for case in golden_cases:
        out = parse(
            __import__("subprocess")
            .run([str(program), *case_args(case)], capture_output=True, check=True, timeout=120)
            .stdout
        )
        assert out.text.decode() == case["stdout"], case["prompt"]


@pytest.mark.skipif(shutil.which("qemu-system-arm") is None, reason="qemu-system-arm missing (tools/setup.sh)")
def test_size_shrinks_the_twins_code_and_keeps_its_tokens(tmp_path: Path, stories260k: Path) -> None:
    built = {}
    for level in ("speed", "size"):
        scons(["target=qemu-m7", "model=260k", "quant=q8", f"optimize={level}", f"build_dir={tmp_path}"],
              stories260k.parent)  # fmt: skip
        folder = tmp_path / "qemu-m7" / f"260k-q8{LEVELS[level]}"
        code_bytes = json.loads((folder / "memory_report.json").read_text())["code_bytes"]
        options = {"target": "qemu-m7", "quant": "q8", "optimize": level, "build_dir": str(tmp_path),
                   "prompt": "Once upon a time", "steps": "24", "temperature": "0"}  # fmt: skip
        settings = configure(options, download=False)
        assert settings.out_dir == folder
        built[level] = (code_bytes, run_firmware(folder / "firmware.elf", settings.run))
    assert built["size"][0] < built["speed"][0]
    assert built["size"][1].token_sequence() == built["speed"][1].token_sequence()
