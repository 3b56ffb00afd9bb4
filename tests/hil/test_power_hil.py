"""Power in HIL tests (llmcu.hil.power): the device's run under a meter, logged, with power.json beside it.

On a "board" (the board path with QEMU standing in behind a fake programmer, tests/hil/qemu_board.py) the meter is
an X-NUCLEO-LPM01A fake on pyserial's socket://; on the twin, the estimate; and the hil_power fixture takes its
settings from the command line or the hardware map, as `scons run power=...` does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llmcu.builder.settings import RunParams
from llmcu.core.errors import OptionError
from llmcu.hil.board import open_board
from llmcu.hil.device import QemuDevice
from llmcu.hil.firmware import FirmwareBuild
from llmcu.hil.hwmap import MeterEntry, parse_hardware_map
from llmcu.hil.power import HilPower, settings_for
from llmcu.power import PowerSettings
from llmcu.power.estimate import ANCHORS
from support.power import FakeShield
from support.qemu_board import QemuBoard

needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-arm") is None, reason="qemu-system-arm missing")
PARAMS = RunParams("Once upon a time", 16, 0.0, 0.9, 1)


@needs_qemu
def test_a_board_run_under_a_meter_on_a_socket(hil_firmware: FirmwareBuild, qemu_board: QemuBoard, tmp_path: Path):
    shield = FakeShield("".join(["1000-04\r\n"] * 3000) + "TimeStamp: 3s 0ms, buff 0%\r\n")
    shield.start()
    entry = parse_hardware_map([{"platform": "stm32h743", "board": "nucleo-h743zi", "id": "FAKE0123",
                                 "serial": qemu_board.url}]).entries[0]  # fmt: skip
    device = open_board(entry, hil_firmware, programmer=qemu_board)
    power = HilPower(PowerSettings("lpm01a", f"socket://127.0.0.1:{shield.port}", 3.3, "board"), tmp_path, model="260k",
                     quant="q8", board="nucleo-h743zi")  # fmt: skip
    try:
        measured = power.measure(device, PARAMS)
    finally:
        device.close()
    shield.join(timeout=5)
    assert measured.output.ok and len(measured.output.tokens) == 16
    assert shield.commands[shield.commands.index("start") :] == ["start", "stop", "hrc"]
    assert measured.power is not None and measured.power["generation"]["avg_current_a"] == pytest.approx(0.1, 1e-3)
    summary = json.loads((measured.log_dir / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["runner"] == "board" and summary["start_marker_time"]
    assert (measured.log_dir / "raw.bin").read_bytes().count(b"\x1etok") == 16  # every byte, as `run` logs it
    assert (measured.log_dir / "power.csv").is_file()


@needs_qemu
def test_the_twin_takes_the_estimate_only(hil_firmware: FirmwareBuild, tmp_path: Path) -> None:
    assert hil_firmware.twin_elf is not None
    device = QemuDevice(hil_firmware.twin_elf, "stm32h743", "qemu-m7")
    estimate = HilPower(
        PowerSettings("estimate", "", 3.3, "board"), tmp_path, model="260k", quant="q8", board="nucleo-h743zi"
    )
    measured = estimate.measure(device, PARAMS)
    costs = [token.cost for token in measured.output.tokens]
    cpu_hz, current_a = ANCHORS[0]
    expected = current_a * 3.3 * sum(costs) / cpu_hz / len(costs) * 1e3
    assert measured.power is not None and measured.power["estimated"]
    assert measured.power["generation"]["energy_per_token_mj"] == pytest.approx(expected, rel=1e-6)
    meter = HilPower(PowerSettings("ppk2", "", 3.3, "board"), tmp_path, model="260k", quant="q8", board="")
    with pytest.raises(OptionError, match="a QEMU run has none"):
        meter.measure(device, PARAMS)


def test_settings_come_from_the_command_line_or_the_hardware_map() -> None:
    mapped = MeterEntry("lpm01a", "/dev/ttyACM1")
    assert settings_for("none", "", 3.3, "board", mapped) == PowerSettings("lpm01a", "/dev/ttyACM1", 3.3, "board")
    assert settings_for("ppk2", "", 3.0, "meter", mapped) == PowerSettings("ppk2", "", 3.0, "meter")
    assert settings_for("none", "", 3.3, "board", None).meter == "none"
    with pytest.raises(OptionError, match="power_meter type 'ina219' is not one of"):
        settings_for("none", "", 3.3, "board", MeterEntry("ina219", "/dev/ttyUSB1"))
