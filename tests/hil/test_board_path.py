"""The board path (llmcu.hil.board) up to its two boundaries, the probe and the UART, without a board.

The probe is replaced by a fake programmer whose "board" is the QEMU twin: flashing starts it halted with its
console on a TCP socket, resetting lets it run. Everything else is what a board session does: the console
found or named, opened through llmcu.device.uart before the reset, one reset on the first command, the ready line
awaited before each command, refusals answered and the next command served on the same connection.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import create_autospec

import pytest

from llmcu.builder.settings import RunParams
from llmcu.device import flashing
from llmcu.device.probes import ProbeInfo, select_probe
from llmcu.hil.board import FlashRequest, PyocdProgrammer, RemoteProbeFactory, find_console, open_board
from llmcu.hil.device import DeviceError
from llmcu.hil.firmware import FirmwareBuild
from llmcu.hil.hwmap import parse_hardware_map
from support.qemu_board import QemuBoard

needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-arm") is None, reason="qemu-system-arm missing")
pytest.importorskip("serial", reason="the board console needs pyserial (requirements.txt)")

PROBE = "FAKE0123456789"


@needs_qemu
def test_flash_reset_and_commands_over_the_uart(hil_firmware: FirmwareBuild, qemu_board: QemuBoard) -> None:
    entry = parse_hardware_map([{"platform": "stm32h743", "board": "nucleo-h743zi", "id": PROBE,
                                 "serial": qemu_board.url, "baud": 921600}]).entries[0]  # fmt: skip
    device = open_board(entry, hil_firmware, programmer=qemu_board)
    try:
        assert qemu_board.flashed == [FlashRequest(hil_firmware.elf, PROBE, hil_firmware.target, "nucleo-h743zi")]
        assert hil_firmware.elf.name == "firmware.elf" and "twin" not in hil_firmware.elf.parts  # the board's image
        assert qemu_board.resets == 0  # not before the console is open
        assert device.info.mode == "board" and device.info.runs_on == "nucleo-h743zi"
        assert device.info.properties == {"probe": PROBE, "serial": qemu_board.url, "baud": "921600"}

        refused = device.send(b"run seed=none\n")
        assert refused.status == "rejected" and refused.end.get("detail") == "seed"
        assert qemu_board.resets == 1
        out = device.run(RunParams("Once upon a time", 12, 0.0, 0.9, 1))  # the same connection, no reset
        assert qemu_board.resets == 1
        assert out.ok and len(out.tokens) == 12 and out.text.startswith(b"Once upon a time")
        assert out.header["target"] == hil_firmware.twin  # the stand-in says what it is
    finally:
        device.close()


@needs_qemu
def test_a_board_that_fails_the_run_is_an_error(hil_firmware: FirmwareBuild, qemu_board: QemuBoard) -> None:
    entry = parse_hardware_map([{"platform": "stm32h743", "id": PROBE, "serial": qemu_board.url}]).entries[0]
    device = open_board(entry, hil_firmware, programmer=qemu_board)
    try:
        with pytest.raises(DeviceError, match=r"prompt_too_long"):
            device.run(RunParams("1234567890" * 90, 256, 0.0, 0.9, 1))
    finally:
        device.close()


def port(device: str, usb_id: str, serial: str) -> SimpleNamespace:
    vid, pid = (int(part, 16) for part in usb_id.split(":"))
    return SimpleNamespace(device=device, vid=vid, pid=pid, serial_number=serial, description="ST-Link VCP")


def test_the_console_is_found_by_usb_id_and_probe() -> None:
    ids = ("0483:374b", "0483:374e")
    two = [port("/dev/ttyACM0", "0483:374b", "066A"), port("/dev/ttyACM1", "0483:374e", "066B"),
           port("/dev/ttyUSB0", "0403:6001", "FT1")]  # fmt: skip
    assert find_console(ids, "066B", lambda: two) == "/dev/ttyACM1"  # the probe's own virtual COM port
    assert find_console(ids, "other", lambda: two[:1]) == "/dev/ttyACM0"  # the only ST-LINK
    with pytest.raises(DeviceError, match=r"more than one .*give `serial:` in the hardware map"):
        find_console(ids, "other", lambda: two)
    with pytest.raises(DeviceError, match="no serial port with USB id"):
        find_console(ids, "066A", lambda: two[2:])
    with pytest.raises(DeviceError, match="lists no console usb_ids"):
        find_console((), "066A", lambda: two)


def test_an_entry_without_serial_uses_the_board_files_usb_ids(hil_firmware: FirmwareBuild) -> None:
    calls = []

    class Programmer:
        def flash(self, request: FlashRequest) -> None:
            calls.append(("flash", request.probe))

        def reset(self, request: FlashRequest) -> None:
            calls.append(("reset", request.probe))

    def finder(usb_ids: tuple[str, ...], probe: str) -> str:
        calls.append(("find", usb_ids, probe))
        return "/dev/ttyACM7"

    links = []

    def open_link(url: str, baud: int, name: str, reset) -> object:
        links.append((url, baud, name))
        reset()
        return SimpleNamespace(close=lambda: calls.append(("close",)))

    entry = parse_hardware_map([{"platform": "stm32h743", "id": "066A"}]).entries[0]
    device = open_board(entry, hil_firmware, programmer=Programmer(), find_port=finder, open_link=open_link)
    assert calls[0][0] == "find" and "0483:374b" in calls[0][1] and calls[0][2] == "066A"
    assert calls[1] == ("flash", "066A") and not links  # the console opens with the first command
    device._console()
    assert links == [("/dev/ttyACM7", 115200, "stm32h743 board nucleo-h743zi (/dev/ttyACM7)")]  # the board's baud
    device.close()
    assert calls[2:] == [("reset", "066A"), ("close",)]


def test_the_pyocd_programmer_goes_through_llmcu_flashing(hil_firmware: FirmwareBuild) -> None:
    """Flashing is llmcu.device.flashing's flash_firmware (without its reset: the board is reset once the console
    is open), resetting a pyOCD session through the probe selection of llmcu.device.probes; a probe behind `pyocd
    server` (remote:HOST:PORT, a labgrid exporter's) gets a session factory of its own, since pyOCD does not list
    it. The fake flash_firmware has the real one's signature (autospec)."""
    calls: list[tuple] = []

    class Session:
        target = SimpleNamespace(reset=lambda: calls.append(("reset",)))

        def close(self) -> None:
            calls.append(("close",))

    class Factory:
        def probes(self) -> list:
            return [ProbeInfo("066A", "STLINK-V2-1"), ProbeInfo("0670", "STLINK-V3")]

        def open(self, probe, options) -> Session:
            calls.append(("open", probe.uid, dict(options)))
            return Session()

    def flashed(image, target, **options) -> None:
        calls.append(("flash", image, target.name, options))

    programmer = PyocdProgrammer(create_autospec(flashing.flash_firmware, side_effect=flashed), Factory)
    request = FlashRequest(Path("build/firmware.elf"), "0670", hil_firmware.target, "nucleo-h743zi")
    programmer.flash(request)
    programmer.reset(request)
    assert calls == [
        ("flash", Path("build/firmware.elf"), "stm32h743", {"probe_uid": "0670", "reset": False, "progress": False,
                                                           "session_factory": None}),
        ("open", "0670", {"target_override": "stm32h743xx"}),
        ("reset",),
        ("close",),
    ]  # fmt: skip
    calls.clear()
    remote = FlashRequest(Path("fw.elf"), "remote:lab-host:5555", hil_firmware.target, "nucleo-h743zi")
    programmer.flash(remote)
    factory = calls[0][3]["session_factory"]
    assert isinstance(factory, RemoteProbeFactory)
    assert select_probe(factory.probes(), remote.probe).uid == "remote:lab-host:5555"
