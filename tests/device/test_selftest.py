"""The bring-up self-test (selftest=1): the firmware's tests on the STM32H743 twin, and the host's report.

On the twin the SDRAM and QSPI regions are QEMU RAM, so the tests pass and the read figures count instructions,
not time; the report's arithmetic (MB/s from cycles, the CRC verdict, failures) is tested on records as a board
would send them.
"""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path

import pytest

from llmcu.device import selftest
from llmcu.device.protocol import parse
from llmcu.platform import selftest_regions
from llmcu.platform.targets import MemoryRegion
from support.build import scons

needs_qemu = pytest.mark.skipif(
    shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
    reason="qemu-system-arm or arm-none-eabi-gcc missing (tools/setup.sh installs them)",
)


@needs_qemu
def test_selftest_on_the_boards_twin(tmp_path: Path, stories260k: Path) -> None:
    """`scons target=stm32h743 board=h743-sdram-qspi selftest=1 hil=qemu run`: every region read, the SDRAM's
    data bus, address bus and refresh-interval pattern pass, the QSPI image's CRC equals the one flashed; the
    report goes into the build directory and the log."""
    args = ["target=stm32h743", "board=h743-sdram-qspi", "model=260k", "quant=q8", "weights=qspi", "selftest=1",
            "hil=qemu", f"build_dir={tmp_path / 'build'}", f"log_dir={tmp_path / 'logs'}", "run"]  # fmt: skip
    result = scons(args, stories260k.parent)
    assert "[llmcu] selftest passed" in result.stdout
    out = tmp_path / "build" / "stm32h743" / "260k-q8-selftest-h743-sdram-qspi"
    report = (out / "selftest.md").read_text()
    assert "passed" in report
    data = (out / "selftest.json").read_text()
    for region in ("flash", "dtcm", "axi_sram", "sdram", "qspi"):
        assert f'"region": "{region}"' in data
    assert "data_bus: ok" in report and "address_bus: ok" in report and "pattern: ok" in report
    assert "crc: ok: crc32" in report and "as flashed" in report
    logs = list((tmp_path / "logs").iterdir())
    assert len(logs) == 1 and (logs[0] / "selftest.md").read_text() == report
    from llmcu.reports.report import write_report  # tools/report.py: the log's report.md has the self-test too

    written = write_report(logs[0])
    text = written.markdown.read_text()
    assert "## Self-test" in text and "address_bus: ok" in text


BOARD_RUN = (
    b"\x02llmcu 1 target=stm32h743 model=selftest quant=none unit=cycles clock_hz=480000000\n"
    b"\x1eselftest region=dtcm test=read bytes=65536 cost=16384\n"
    b"\x1eselftest region=sdram test=data_bus result=ok\n"
    b"\x1eselftest region=sdram test=address_bus result=ok\n"
    b"\x1eselftest region=sdram test=pattern result=ok bytes=8388608 errors=0 wait=30000000\n"
    b"\x1eselftest region=sdram test=read bytes=65536 cost=262144\n"
    b"\x1eselftest region=qspi test=read bytes=65536 cost=524288\n"
    b"\x1eselftest region=qspi test=crc bytes=4 crc32=CRC\n"
    b"\x03llmcu end status=ok\n"
)


def board_output(crc: int, extra: bytes = b""):
    return parse(BOARD_RUN.replace(b"CRC", f"{crc:#010x}".encode()).replace(b"\x03llmcu end", extra + b"\x03llmcu end"))


def test_report_turns_cycles_into_mb_per_s_and_checks_the_crc(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(selftest, "qspi_image_crc", lambda elf: (4, zlib.crc32(b"llmc")))
    report = selftest.analyse(board_output(zlib.crc32(b"llmc")), tmp_path / "firmware.elf")
    rates = {r.region: r.mb_per_s for r in report.regions}
    assert rates == {"dtcm": 1920.0, "sdram": 120.0, "qspi": 60.0}  # 65536 bytes x 480 MHz / cycles
    assert report.passed and report.bandwidths()["qspi"] == 60e6
    assert "as flashed" in selftest.markdown(report)
    wrong = selftest.analyse(board_output(0x12345678), tmp_path / "firmware.elf")
    assert not wrong.passed and "the image has" in wrong.regions[-1].tests["crc"]


def test_a_failed_memory_test_fails_the_report(tmp_path: Path) -> None:
    failing = b"\x1eselftest region=sdram test=address_bus result=fail offset=0x00000400\n"
    report = selftest.analyse(board_output(0, failing))
    assert not report.passed
    assert "fail (offset=0x00000400)" in {r.region: r for r in report.regions}["sdram"].tests["address_bus"]
    path = selftest.write_report(report, tmp_path)
    assert "FAILED" in path.read_text()
    assert selftest.bandwidths_from_log(tmp_path) == {"dtcm": 1920e6, "sdram": 120e6, "qspi": 60e6}


def test_region_table_source() -> None:
    regions = [MemoryRegion("sdram", 0xC0000000, 8 << 20, "ram", 4, False, True),
               MemoryRegion("qspi", 0x90000000, 16 << 20, "xip", 5, True, True)]  # fmt: skip
    text = selftest_regions.regions_source(regions)
    assert '{"sdram", 0xC0000000u, 0x00800000u, 1, 1},' in text and '{"qspi", 0x90000000u, 0x01000000u, 0, 1},' in text
    assert "llmcu_selftest_region_count = 2u;" in text


def test_selftest_is_a_firmware_option(tmp_path: Path, stories260k: Path) -> None:
    result = scons(
        ["target=host", "model=260k", "selftest=1", f"build_dir={tmp_path}"], stories260k.parent, check=False
    )
    assert result.returncode != 0 and "selftest= does not apply to target host" in result.stderr
