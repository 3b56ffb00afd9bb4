"""Each real board builds, plans from its own memory map, and runs its QEMU twin: stories260K q8, greedy, the same
tokens on every board (a board changes where the arrays live, never what the model computes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmcu.core.paths import TARGETS_DIR
from llmcu.platform.stm32h7 import list_boards, load_board
from support.build import scons

# In the default run the boards that cover the variants (the default NUCLEO, built by other tests too; an STM32H750
# with 32-bit SDRAM on bank 1; one with SDRAM on bank 2 and two QSPI chips); the rest in the slow run.
DEFAULT_RUN = ("nucleo-h743zi", "daisy-seed", "stm32h750b-dk")
BOARDS = [name if name in DEFAULT_RUN else pytest.param(name, marks=pytest.mark.slow)
          for name in list_boards(TARGETS_DIR / "stm32h743", templates=False)]  # fmt: skip
PROMPT, STEPS = "Once upon a time", 24


@pytest.mark.parametrize("name", BOARDS)
def test_board_builds_plans_and_runs_its_twin(shared_build_root: Path, stories260k: Path, name: str) -> None:
    build_root = shared_build_root
    board = load_board(TARGETS_DIR / "stm32h743", name)
    args = ["target=stm32h743", f"board={name}", "model=260k", "quant=q8", f"build_dir={build_root}"]
    result = scons([*args, "hil=qemu", "run", f"prompt={PROMPT}", "temperature=0", f"steps={STEPS}"],
                   stories260k.parent)  # fmt: skip
    assert "Once upon a time, there was a little girl" in result.stdout and f"{STEPS} tokens" in result.stdout
    variant = "260k-q8" if name == "nucleo-h743zi" else f"260k-q8-{name}"
    report = json.loads((build_root / "stm32h743" / variant / "memory_report.json").read_text())
    regions = {region["name"]: region for region in report["regions"]}
    # the plan took every size and address from the board file: the part's flash, the SDRAM's bank and size
    assert regions["flash"]["size"] == board.flash_size
    if board.sdram is not None:
        assert (regions["sdram"]["origin"], regions["sdram"]["size"]) == (board.sdram.base, board.sdram.size)
    if board.qspi is not None:
        assert regions["qspi"]["size"] == board.qspi.size
    assert set(regions) - {"itcm", "flash", "dtcm", "axi_sram", "sram123", "sram4"} == set(board.memories)
    if board.flash_size < 256 << 10:  # an STM32H750: the weights spilled into QSPI, the code stayed in flash
        assert regions["qspi"]["used"] > 250_000 and regions["flash"]["used"] < board.flash_size
