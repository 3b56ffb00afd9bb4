"""What fits each board (llmcu.builder.boardfit): the tables in README.md and docs/boards.md are the planner's
output now; the arrays it plans from the shape alone are the ones a build links; the boards' bandwidths; and the
facts the issue asks of the biggest models (15M on the boards with 128 MB of QSPI, not on the Daisy Seed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llmcu.builder import boardfit, codegen, imageplan
from llmcu.core.paths import MODELS_DIR, ROOT, TARGETS_DIR
from llmcu.model import presets
from llmcu.model.quantize import QuantPlan
from llmcu.model.sources import read_checkpoint, read_tokenizer
from llmcu.platform.stm32h7 import load_board
from llmcu.platform.targets import load_target

TARGET = load_target("stm32h743", TARGETS_DIR)
PRESETS = presets.list_presets(MODELS_DIR)


def board(name: str):
    return load_board(TARGET.folder, name)


def test_readme_and_docs_tables_are_the_planners_output() -> None:
    """README.md's "Boards" summary and docs/boards.md's details are what tools/board_fit.py computes now
    (regenerate them with tools/board_fit.py --write after changing a board file, the planner or a preset)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import board_fit
    finally:
        sys.path.remove(str(ROOT / "tools"))
    summary, details = board_fit.tables("stm32h743", ["fp32", "q8", "q4"])
    for path, table in ((ROOT / "README.md", summary), (ROOT / "docs" / "boards.md", details)):
        text = path.read_text()
        assert board_fit.replaced(text, table) == text, f"{path} is out of date: run tools/board_fit.py --write"
    assert "`daisy-seed`" in summary and "`h743-sdram-qspi`" not in summary  # real boards only, not the template


def test_tool_prints_the_tables() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "board_fit.py"), "--quants", "q4"],
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert result.stdout.startswith("| model | quant | `daisy-seed`") and "| `stm32h743i-eval` | `15m` | q4 |" in (
        result.stdout
    )


@pytest.mark.parametrize("quant", ["fp32", "q8", "q4", "q4z"])
def test_shape_sections_are_the_arrays_a_build_links(stories260k: Path, tok512: Path, quant: str) -> None:
    """The planner's input from the shape alone equals what codegen makes of the real checkpoint: same sections,
    same sizes, same heat (so a cell of the table is the plan the build makes)."""
    plan = QuantPlan.parse(quant, 32)
    model = codegen.prepare(read_checkpoint(stories260k), read_tokenizer(tok512, 512), plan, seq_len=512,
                            rope_table=True, reports=False)  # fmt: skip
    built = {section.section: (section.size, section.heat) for section in imageplan.planner_blobs(model)}
    preset = PRESETS["260k"]
    shaped = boardfit.weight_sections(preset.shape, plan, 512) + boardfit.tokenizer_sections(preset)
    mine = {section.section: (section.size, section.heat) for section in shaped}
    tokenizer = {name for name in built if name.startswith(".llmcu_tokenizer")}
    assert {k: v for k, v in mine.items() if k not in tokenizer} == {
        k: v for k, v in built.items() if k not in tokenizer
    }
    # the tokenizer's pieces are estimated from tokenizer.bin's size (the preset's); the other three are exact
    for name in tokenizer - {".llmcu_tokenizer.llmcu_tok_bytes"}:
        assert mine[name] == built[name]
    assert abs(mine[".llmcu_tokenizer.llmcu_tok_bytes"][0] - built[".llmcu_tokenizer.llmcu_tok_bytes"][0]) <= 64


def test_each_boards_bandwidth_follows_its_buses() -> None:
    mb = 1e6
    assert board("nucleo-h743zi2").read_bandwidth() == {"flash": 240e6 * 8 / 5}  # 4 wait states at 240 MHz
    dk, daisy, weact = board("stm32h750b-dk"), board("daisy-seed"), board("weact-mini-h743")
    assert dk.read_bandwidth()["qspi"] == 2 * daisy.read_bandwidth()["qspi"] == 80 * mb  # two chips at 80 MHz
    assert weact.read_bandwidth()["qspi"] == 60 * mb  # one chip at 120 MHz
    assert daisy.read_bandwidth()["sdram"] == 2 * dk.read_bandwidth()["sdram"]  # 32-bit bus against 16-bit


def test_15m_fits_the_boards_with_128mb_of_qspi_not_the_daisy_seed() -> None:
    for name in ("stm32h750b-dk", "stm32h743i-eval"):
        cell = boardfit.fit(TARGET, board(name), PRESETS["15m"], "q8")
        assert cell.fits and "qspi" in cell.weights and cell.kv_region == "sdram", name
    copied = boardfit.fit(TARGET, board("stm32h743i-eval"), PRESETS["15m"], "q8")
    assert copied.sdram_tok_per_s > copied.tok_per_s  # 32 MB of 32-bit SDRAM holds the weights, and reads faster
    for quant in ("q8", "q4"):
        daisy = boardfit.fit(TARGET, board("daisy-seed"), PRESETS["15m"], quant)
        assert not daisy.fits and not daisy.longest and daisy.problem.startswith("the weights (")


def test_a_context_that_does_not_fit_gives_the_longest_that_does() -> None:
    cell = boardfit.fit(TARGET, board("weact-mini-h743"), PRESETS["15m"], "q4")
    assert not cell.fits and 0 < cell.longest < 256 and cell.cell().endswith(f"(seq_len<={cell.longest})")
