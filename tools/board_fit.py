#!/usr/bin/env python3
"""Which model fits which STM32H7 board: README's "Boards" table, planned from the presets' shapes.

tools/board_fit.py [--target stm32h743] [--quants fp32,q8,q4] [--write]

Nothing is downloaded or quantized: each cell is the build's own memory plan (llmcu.builder.boardfit) for the
preset's shape, the quant and the board file's memory map, with kv_type=auto, and an estimate of tok/s from the
board's read bandwidths. --write replaces the summary between README.md's boardfit markers and the details
between docs/boards.md's; without it both are printed.
"""

from __future__ import annotations

import argparse
import sys

from llmcu.builder.boardfit import fit_tables
from llmcu.core.fileio import write_text_atomic
from llmcu.core.paths import MODELS_DIR, ROOT, TARGETS_DIR
from llmcu.model import presets
from llmcu.platform.stm32h7 import list_boards, load_board
from llmcu.platform.targets import load_target

README = ROOT / "README.md"
DETAILS = ROOT / "docs" / "boards.md"
START, END = "<!-- boardfit:start -->", "<!-- boardfit:end -->"
MODELS = ("260k", "15m", "42m", "110m")  # the llama2.c stories models; TinyLlama's 1.1B fits no MCU


def tables(target_name: str, quants: list[str]) -> tuple[str, str]:
    """The summary for README.md and the details for docs/boards.md."""
    target = load_target(target_name, TARGETS_DIR)
    boards = [load_board(target.folder, name) for name in list_boards(target.folder, templates=False)]
    known = presets.list_presets(MODELS_DIR)
    summary, details = fit_tables(target, boards, [known[name] for name in MODELS], quants)
    return "\n".join(summary), "\n".join(details)


def replaced(text: str, new_table: str) -> str:
    """``text`` with the table between the boardfit markers replaced."""
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{new_table}\n{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="stm32h743")
    parser.add_argument("--quants", default="fp32,q8,q4")
    parser.add_argument("--write", action="store_true", help="replace the tables in README.md and docs/boards.md")
    args = parser.parse_args()
    summary, details = tables(args.target, args.quants.split(","))
    if args.write:
        for path, text in ((README, summary), (DETAILS, details)):
            write_text_atomic(path, replaced(path.read_text(), text))
            print(f"wrote the table into {path}")
    else:
        print(f"{summary}\n\n{details}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
