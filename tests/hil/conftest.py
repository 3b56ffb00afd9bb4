"""HIL tests build their firmware from the suite's model files (LLMCU_MODELS or ../shared/models)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmcu.hil.firmware import FirmwareBuild
from support.qemu_board import QemuBoard


@pytest.fixture(scope="session")
def hil_build_env(stories260k: Path, tok512: Path) -> dict[str, str]:
    """Overrides the plugin's: the firmware build finds the models where the rest of the suite does."""
    dirs = dict.fromkeys(str(path.parent) for path in (stories260k, tok512))
    return {"LLMCU_MODELS": os.pathsep.join(dirs), "LLMCU_OFFLINE": "1"}


@pytest.fixture
def qemu_board(hil_firmware: FirmwareBuild) -> Iterator[QemuBoard]:
    """A stand-in for a board behind a probe (tests/hil/qemu_board.py), stopped after the test."""
    assert hil_firmware.twin_elf is not None
    board = QemuBoard(hil_firmware.twin_elf)
    yield board
    board.stop()
