"""The progress bar of a run whose text is not shown (llmcu.device.progress): one step per piece of text, never past
the steps asked for, on a terminal only; a twin run with it gives the same output as without."""

from __future__ import annotations

import shutil
import sys

import pytest

from llmcu.builder.settings import RunParams
from llmcu.device import qemu
from llmcu.device.progress import TextProgress


def test_the_bar_counts_pieces_up_to_the_steps(capsys) -> None:
    with TextProgress("twin", 3, enabled=True) as bar:
        for piece in (b"Once", b" upon", b" a", b" time"):
            bar(piece)
        assert bar.pieces == 4 and bar.bar.n == 3  # capped at the total
    shown = capsys.readouterr().err
    assert "twin:" in shown and "/3 " in shown  # drawn on stderr (and cleared at the end: leave=False)
    with TextProgress("quiet", 3, enabled=False) as bar:
        bar(b"x")
    assert capsys.readouterr().err == ""


@pytest.mark.skipif(shutil.which("qemu-system-arm") is None, reason="qemu-system-arm missing")
def test_a_twin_run_with_a_bar_is_the_same_run(q8_build_root, monkeypatch, capsys) -> None:
    elf = q8_build_root / "qemu-m7" / "260k-q8" / "firmware.elf"
    params = RunParams("Once upon a time", 20, 0.0, 0.9, 1)
    plain = qemu.run_firmware(elf, params)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    with_bar = qemu.run_firmware(elf, params, progress=True)
    assert with_bar.token_sequence() == plain.token_sequence() and with_bar.text == plain.text
    assert "260k-q8 on QEMU" in capsys.readouterr().err
