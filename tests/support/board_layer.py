"""The STM32H743 board layer compiled for the unicorn register model (support.mmio_emu): each board's board_config.h
rendered from its board file, every C source of targets/stm32h743 compiled warning-free and linked at the chip's
flash (code) and AXI SRAM (data)."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from llmcu.builder.boardconfig import write_board_config
from llmcu.platform.stm32h7 import Board, load_board
from support.build import ROOT

TARGET = ROOT / "targets" / "stm32h743"
CC = "arm-none-eabi-gcc"
CPU_FLAGS = ["-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-d16", "-mfloat-abi=hard"]
WARNINGS = ["-Wall", "-Wextra", "-Wshadow", "-Werror"]

LINKER_SCRIPT = """
MEMORY
{
    FLASH (rx) : ORIGIN = 0x08000000, LENGTH = 2M
    RAM (rw) : ORIGIN = 0x24000000, LENGTH = 512K
}
SECTIONS
{
    .text : { *(.text .text.*) *(.rodata .rodata.*) } > FLASH
    .data : { *(.data .data.*) } > RAM
    .bss : { *(.bss .bss.*) *(COMMON) } > RAM
}
"""


def require_tools() -> None:
    """Skip when the cross compiler or unicorn is missing (tools/setup.sh installs both)."""
    if shutil.which(CC) is None:
        pytest.skip(f"{CC} not installed (tools/setup.sh installs it)")
    pytest.importorskip("unicorn", reason="unicorn not installed (pip install -r requirements.txt)")


def compile_board_layer(board: Board, folder: Path) -> Path:
    """``folder/board.elf``: the board layer for ``board``."""
    sources = [
        TARGET / source
        for source in tomllib.loads((TARGET / "target.toml").read_text())["board"]["sources"]
        if not source.startswith("../")
    ]
    write_board_config(board, folder / "board_config.h")
    (folder / "test.ld").write_text(LINKER_SCRIPT)
    elf = folder / "board.elf"
    command = [CC, *CPU_FLAGS, "-std=c99", "-O2", *WARNINGS, "-ffunction-sections", "-fdata-sections"]
    command += ["-I", str(ROOT / "targets" / "cortex-m"), "-I", str(folder), "-T", str(folder / "test.ld")]
    command += ["-nostdlib", *map(str, sources), "-lgcc", "-o", str(elf)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return elf


def compile_boards(names: tuple[str, ...], tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Board]]:
    """Each named board's board layer and its checked board file."""
    require_tools()
    built = {}
    for name in names:
        board = load_board(TARGET, name)
        built[name] = (compile_board_layer(board, tmp_path_factory.mktemp(name)), board)
    return built


def soc_for(elf: Path, board: Board, **options):  # -> support.mmio_emu.Stm32h743
    """The emulated chip as ``board`` carries it: its part's DEV_ID and flash size, its QSPI chip(s) (one per bank in
    dual-flash mode). ``options`` go to Stm32h743 and override these."""
    from support.mmio_emu import NorFlash, Stm32h743

    chips = ()
    if board.qspi is not None:
        chips = tuple(NorFlash.of(board.qspi.chip) for _ in range(board.qspi.chips))
    setup = {"dev_id": board.part.dev_id, "flash_kb": board.part.flash_kb, "nor": chips} if board.part else {}
    return Stm32h743(elf, **(setup | options))


def board_variant(tmp_path: Path, name: str, edits: list[tuple[str, str]]) -> Path:
    """A copy of the target's data files with one board file edited (each ``old`` replaced once by ``new``);
    returns the copy's target folder."""
    folder = tmp_path / "stm32h743"
    (folder / "boards").mkdir(parents=True, exist_ok=True)
    for data in ("target.toml", "limits.toml", "parts.toml"):
        shutil.copy(TARGET / data, folder / data)
    text = (TARGET / "boards" / f"{name}.toml").read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    (folder / "boards" / f"{name}.toml").write_text(text)
    return folder


SELFTEST_REGIONS = """
#include "selftest.h"
const selftest_region llmcu_selftest_regions[] = {{{{"sdram", 0x{base:08X}u, 0x{size:X}u, 1, 1}}}};
const unsigned llmcu_selftest_region_count = 1u;
"""
GUARD = (0x20000000, 0x20000800)  # the MPU guard below the stack (DTCM), as startup.c's symbols name it


def compile_selftest(board: Board, folder: Path, region_bytes: int) -> Path:
    """``folder/selftest.elf``: the board layer with the bring-up self-test (selftest=1), walking one region: the
    first ``region_bytes`` of the board's SDRAM."""
    assert board.sdram is not None
    sources = [
        TARGET / source
        for source in tomllib.loads((TARGET / "target.toml").read_text())["board"]["sources"]
        if not source.startswith("../")
    ]
    sources.append(ROOT / "targets" / "cortex-m" / "selftest.c")
    write_board_config(board, folder / "board_config.h")
    (folder / "regions.c").write_text(SELFTEST_REGIONS.format(base=board.sdram.base, size=region_bytes))
    (folder / "test.ld").write_text(LINKER_SCRIPT)
    elf = folder / "selftest.elf"
    command = [CC, *CPU_FLAGS, "-std=c99", "-O2", *WARNINGS, "-ffunction-sections", "-fdata-sections"]
    command += ["-DLLMCU_SELFTEST=1", '-DLLMCU_TARGET_NAME="stm32h743"']
    command += ["-I", str(ROOT / "targets" / "cortex-m"), "-I", str(folder), "-T", str(folder / "test.ld")]
    command += [f"-Wl,--defsym=__stack_guard={GUARD[0]}", f"-Wl,--defsym=__stack_limit={GUARD[1]}"]
    # --specs=nano.specs -lc: the firmware's C library (the compiler turns selftest.c's loops into strlen)
    command += ["-nostdlib", "--specs=nano.specs", *map(str, sources), str(folder / "regions.c"), "-lc", "-lgcc"]
    command += ["-o", str(elf)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return elf
