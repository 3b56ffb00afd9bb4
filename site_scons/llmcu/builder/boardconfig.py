"""``board_config.h``: the register values llmcu.platform.stm32h7 derived from a board file, as C defines for the
board layer (targets/stm32h743/)."""

from __future__ import annotations

from pathlib import Path

from ..core.fileio import write_text_atomic
from ..platform.stm32h7 import PORTS, Board, Pin
from .templating import environment


def port_mask(pins: tuple[Pin, ...]) -> int:
    """RCC_AHB4ENR GPIOxEN bits of the ports these pins are on."""
    mask = 0
    for pin in pins:
        mask |= 1 << pin.port
    return mask


def render_board_config(board: Board) -> str:
    """The text of ``board_config.h`` for ``board``."""
    template = environment().get_template("board_config.h.j2")
    return template.render(
        board=board,
        source=f"targets/{board.path.parent.parent.name}/boards/{board.path.name}",
        ports=PORTS,
        port_mask=port_mask,
        hex=lambda value, width=8: f"0x{value:0{width}X}u",
    )


def write_board_config(board: Board, path: Path) -> None:
    """Write ``board_config.h`` atomically (a reader never sees half a header)."""
    write_text_atomic(path, render_board_config(board))
