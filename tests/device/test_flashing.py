"""Flashing an STM32H743 through pyOCD's API, with the probe layer replaced (tests/support/flash_fakes.py).

pyOCD's MemoryLoader, FlashBuilder, memory map and, for the QSPI flash, its Flash class running llmcu's
flash algorithm (in unicorn, against QUADSPI and NOR flash models) are the real ones.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("pyocd")
pytest.importorskip("unicorn")

from pyocd.core import exceptions

from llmcu.device import flashing
from llmcu.device.flasherrors import (
    ConnectError,
    FlashError,
    ImageError,
    ImageTooLargeError,
    LockedChipError,
    NoProbeError,
    ProbeLostError,
    ProbeSelectionError,
    ProgramError,
    VerifyError,
    WrongTargetError,
)
from llmcu.device.flashprogress import FlashBars
from llmcu.device.probes import ProbeInfo, PyocdSessionFactory
from support.flash_fakes import INTERNAL_FLASH, STM32H743, FakeChip, FakeFactory, write_elf
from support.flashalgo_emu import QSPI_WINDOW, NorFlash

PROBE = ProbeInfo("066DFF555071494867222935", "STM32 STLink")
OTHER = ProbeInfo("0670FF3632524B3043205426", "STM32 STLink")
SECTOR = 0x20000


def image_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
def firmware(tmp_path: Path) -> tuple[Path, bytes]:
    """A 300 KB firmware in internal flash: three 128 KB sectors, the last one partly."""
    data = image_bytes(300_000, 1)
    return write_elf(tmp_path / "firmware.elf", [(INTERNAL_FLASH, data)]), data


def flash(elf: Path, factory: FakeFactory, **kwargs) -> flashing.FlashResult:
    kwargs.setdefault("progress", False)
    return flashing.flash_firmware(elf, STM32H743, session_factory=factory, **kwargs)


def internal(chip: FakeChip, size: int) -> bytes:
    return bytes(chip.internal[:size])


# ---- probe selection ----


@pytest.mark.fault(
    area="flash",
    kind="fault",
    what="no debug probe attached",
    sees=r"no debug probe found \(is the board connected\? `pyocd list`\)",
)
def test_no_probe_attached_is_a_clear_error(firmware: tuple[Path, bytes], sees) -> None:
    with pytest.raises(NoProbeError) as info:
        flash(firmware[0], FakeFactory([]))
    sees(str(info.value))


class ListOnly(PyocdSessionFactory):
    """pyOCD's real probe scan, but never a session: a board attached to this machine is left alone."""

    def open(self, probe: ProbeInfo, options: object) -> None:
        raise AssertionError("a test must not connect to a real board")


def test_no_probe_through_pyocds_own_probe_scan(firmware: tuple[Path, bytes]) -> None:
    """The default factory asks pyOCD's ConnectHelper, which finds nothing on a machine without a board."""
    if ListOnly().probes():
        pytest.skip("a debug probe is attached to this machine")
    with pytest.raises(NoProbeError, match="no debug probe found"):
        flashing.flash_firmware(firmware[0], STM32H743, progress=False, session_factory=ListOnly())


def test_the_only_probe_is_used(firmware: tuple[Path, bytes]) -> None:
    elf, data = firmware
    factory = FakeFactory([PROBE])
    result = flash(elf, factory)
    assert factory.opened[0][0] == PROBE
    options = factory.opened[0][1]
    assert options["target_override"] == "stm32h743xx" and options["auto_unlock"] is False
    assert internal(factory.chip, len(data)) == data
    assert factory.chip.erased == [INTERNAL_FLASH, INTERNAL_FLASH + SECTOR, INTERNAL_FLASH + 2 * SECTOR]
    (region,) = result.regions
    assert (region.name, region.start, region.end) == ("internal flash", INTERNAL_FLASH, INTERNAL_FLASH + len(data))
    assert region.sectors_written == 3 and region.verified and not result.unchanged
    assert factory.chip.resets == 1 and factory.sessions[0].closed
    assert "STM32H742/743/750/753 rev V, 2M flash" in result.lines()[0]


def test_several_probes_and_none_chosen_lists_them(firmware: tuple[Path, bytes]) -> None:
    factory = FakeFactory([PROBE, OTHER])
    with pytest.raises(ProbeSelectionError) as raised:
        flash(firmware[0], factory)
    message = str(raised.value)
    assert "2 debug probes are attached; choose one with probe=UID" in message
    assert f"{PROBE.uid}  STM32 STLink" in message and f"{OTHER.uid}  STM32 STLink" in message
    assert not factory.opened


@pytest.mark.parametrize(("uid", "chosen"), [(OTHER.uid, OTHER), ("3043205426", OTHER), ("066dff", PROBE)])
def test_probe_chosen_by_unique_id_or_a_unique_part(firmware: tuple[Path, bytes], uid: str, chosen: ProbeInfo) -> None:
    factory = FakeFactory([PROBE, OTHER])
    flash(firmware[0], factory, probe_uid=uid)
    assert factory.opened[0][0] == chosen


def test_unknown_or_ambiguous_probe_uid(firmware: tuple[Path, bytes]) -> None:
    factory = FakeFactory([PROBE, OTHER])
    with pytest.raises(ProbeSelectionError, match="no attached debug probe has unique ID 'ABC123'") as raised:
        flash(firmware[0], factory, probe_uid="ABC123")
    assert PROBE.uid in str(raised.value) and OTHER.uid in str(raised.value)
    with pytest.raises(ProbeSelectionError, match="probe=06 matches 2 debug probes; give more of the unique ID"):
        flash(firmware[0], factory, probe_uid="06")
    assert not factory.opened


# ---- the chip ----


def test_wrong_chip_is_refused_before_anything_is_written(firmware: tuple[Path, bytes]) -> None:
    factory = FakeFactory([PROBE], FakeChip(dev_id=0x483))
    with pytest.raises(WrongTargetError, match=r"DEV_ID is 0x483 \(STM32H723.*expected 0x450"):
        flash(firmware[0], factory)
    assert not factory.chip.erased and factory.sessions[0].closed


def test_a_chip_without_dbgmcu_is_not_an_stm32h7(firmware: tuple[Path, bytes]) -> None:
    with pytest.raises(WrongTargetError, match="is not an STM32H743: reading its ID code at 0x5c001000 faulted"):
        flash(firmware[0], FakeFactory([PROBE], FakeChip(idc_faults=True)))


def test_pyocds_own_dev_id_check_while_connecting_is_a_wrong_target(firmware: tuple[Path, bytes]) -> None:
    error = AssertionError("IDC.DEV_ID 0x483 did not match expected. 0x450")
    with pytest.raises(WrongTargetError, match=r"not an STM32H743 .*0x483"):
        flash(firmware[0], FakeFactory([PROBE], open_error=error))


def test_connect_failure_says_what_to_check(firmware: tuple[Path, bytes]) -> None:
    error = exceptions.TransferError("No ACK received")
    with pytest.raises(ConnectError, match=r"could not connect .*No ACK received.*SWDIO, SWCLK"):
        flash(firmware[0], FakeFactory([PROBE], open_error=error))


@pytest.mark.parametrize(("rdp", "level"), [(0xBB, 1), (0xCC, 2)])
def test_read_protected_chip_is_refused(firmware: tuple[Path, bytes], rdp: int, level: int) -> None:
    factory = FakeFactory([PROBE], FakeChip(rdp=rdp))
    with pytest.raises(LockedChipError, match=f"readout protection level {level}"):
        flash(firmware[0], factory)
    assert not factory.chip.erased


# ---- the image ----


def test_image_larger_than_the_chips_flash(tmp_path: Path) -> None:
    elf = write_elf(tmp_path / "firmware.elf", [(INTERNAL_FLASH, image_bytes(200_000, 2))])
    factory = FakeFactory([PROBE], FakeChip(flash_kb=128))
    with pytest.raises(ImageTooLargeError, match=r"up to 0x08030d3f \(200,000 bytes\) but this chip has 128K"):
        flash(elf, factory)
    assert not factory.chip.erased


def test_image_past_the_flash_region_or_outside_flash(tmp_path: Path) -> None:
    too_long = write_elf(tmp_path / "long.elf", [(INTERNAL_FLASH + (2 << 20) - 16, b"\0" * 32)])
    with pytest.raises(ImageTooLargeError, match="run past the end of flash"):
        flash(too_long, FakeFactory([PROBE]))
    in_ram = write_elf(tmp_path / "ram.elf", [(0x24000000, b"\0" * 32)])
    with pytest.raises(ImageError, match="outside internal flash"):
        flash(in_ram, FakeFactory([PROBE]))
    with pytest.raises(ImageError, match="build the firmware first"):
        flash(tmp_path / "nothing", FakeFactory([PROBE]))


def test_build_directory_is_accepted(tmp_path: Path) -> None:
    write_elf(tmp_path / "firmware.elf", [(INTERNAL_FLASH, b"\x12" * 1000)])
    factory = FakeFactory([PROBE])
    flash(tmp_path, factory)
    assert internal(factory.chip, 1000) == b"\x12" * 1000


# ---- skipping, rewriting, verifying ----


def test_unchanged_image_is_not_reprogrammed(firmware: tuple[Path, bytes]) -> None:
    elf, _ = firmware
    factory = FakeFactory([PROBE])
    flash(elf, factory)
    erased, programmed = len(factory.chip.erased), len(factory.chip.programmed)
    result = flash(elf, factory)
    assert result.unchanged and result.regions[0].verified
    assert (len(factory.chip.erased), len(factory.chip.programmed)) == (erased, programmed)
    assert "unchanged, not reprogrammed" in "\n".join(result.lines())


def test_only_sectors_that_differ_are_rewritten(firmware: tuple[Path, bytes], tmp_path: Path) -> None:
    elf, data = firmware
    factory = FakeFactory([PROBE])
    flash(elf, factory)
    changed = bytearray(data)
    changed[SECTOR + 5] ^= 0xFF
    factory.chip.erased.clear()
    result = flash(write_elf(tmp_path / "changed.elf", [(INTERNAL_FLASH, bytes(changed))]), factory)
    assert factory.chip.erased == [INTERNAL_FLASH + SECTOR]
    assert result.regions[0].sectors_written == 1 and result.regions[0].written_bytes == SECTOR
    assert internal(factory.chip, len(data)) == bytes(changed)


@pytest.mark.fault(
    area="flash",
    kind="fault",
    what="16 flash bytes stuck at 0 (the read-back after programming differs)",
    sees=r"differs from the image at 0x08020010-0x0802001f",
)
def test_verify_mismatch_reports_the_address_range(firmware: tuple[Path, bytes], sees) -> None:
    elf, data = firmware
    chip = FakeChip()
    bad = range(INTERNAL_FLASH + SECTOR + 0x10, INTERNAL_FLASH + SECTOR + 0x20)
    for address in bad:
        if data[address - INTERNAL_FLASH]:
            chip.stuck_zero[address] = 0xFF  # these bytes stay 0 whatever is programmed
    first, last = min(chip.stuck_zero), max(chip.stuck_zero)
    with pytest.raises(VerifyError, match=f"differs from the image at {first:#010x}-{last:#010x}") as raised:
        flash(elf, FakeFactory([PROBE], chip))
    assert raised.value.ranges == [(first, last)]
    sees(str(raised.value))


def test_unverified_flash_does_not_read_back(firmware: tuple[Path, bytes]) -> None:
    elf, _ = firmware
    chip = FakeChip()
    chip.stuck_zero[INTERNAL_FLASH + 1] = 0xFF
    result = flash(elf, FakeFactory([PROBE], chip), verify=False)
    assert not result.regions[0].verified and "not verified" in result.lines()[1]


def test_progress_bars_for_each_phase(firmware: tuple[Path, bytes], capsys: pytest.CaptureFixture[str]) -> None:
    flash(firmware[0], FakeFactory([PROBE]), progress=True)
    err = capsys.readouterr().err
    for phase in ("check internal flash", "erase internal flash", "program internal flash", "verify internal flash"):
        assert phase in err
    assert "100%" in err


def test_loader_progress_switches_from_erase_to_program() -> None:
    bars = FlashBars(enabled=True)
    progress = bars.loader("QSPI flash")
    for fraction in (0.0, 0.5, 1.0, 0.0, 0.25, 1.0):
        progress(fraction)
    erase, program = bars.open
    assert erase.desc == "erase QSPI flash" and erase.n == 100
    assert program.desc == "program QSPI flash" and program.n == 100


@pytest.mark.fault(
    area="flash",
    kind="fault",
    what="a write-protected sector that cannot be erased",
    sees=r"address 0x08020000.*write-protected \(option bytes WRPSN\)",
)
def test_failed_erase_is_explained(firmware: tuple[Path, bytes], sees) -> None:
    chip = FakeChip(write_protected={INTERNAL_FLASH + SECTOR})
    with pytest.raises(ProgramError) as info:
        flash(firmware[0], FakeFactory([PROBE], chip))
    sees(str(info.value))


# ---- a probe that goes away ----


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        pytest.param(
            exceptions.ProbeDisconnected,
            f"the debug probe {PROBE.uid} stopped answering while erasing and programming",
            marks=pytest.mark.fault(
                area="flash",
                kind="fault",
                what="the probe disappears (USB unplugged) part-way through programming, then a retry",
                sees=r"the debug probe \w+ stopped answering while erasing and programming",
            ),
        ),
        pytest.param(
            exceptions.TransferTimeoutError,
            f"lost contact with the chip through probe {PROBE.uid} while erasing",
            marks=pytest.mark.fault(
                area="flash",
                kind="fault",
                what="SWD transfers time out part-way through programming (chip reset or power lost), then a retry",
                sees=r"lost contact with the chip through probe \w+ while erasing",
            ),
        ),
    ],
)
def test_probe_lost_mid_flash_then_running_again_recovers(
    firmware: tuple[Path, bytes], sees, failure: type[Exception], message: str
) -> None:
    elf, data = firmware
    chip = FakeChip()
    broken = FakeFactory([PROBE], chip, fail_after=150, fail_with=failure)  # part-way through the pages
    with pytest.raises(ProbeLostError, match=message) as info:
        flash(elf, broken)
    sees(str(info.value))
    assert chip.programmed and internal(chip, len(data)) != data  # half-written
    result = flash(elf, FakeFactory([PROBE], chip))
    assert internal(chip, len(data)) == data and result.regions[0].verified


# ---- QSPI flash through llmcu's flash algorithm ----


@pytest.fixture(scope="module")
def qspi_algo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("arm-none-eabi-gcc is not installed")
    from llmcu.builder import flashalgo
    from llmcu.core.paths import TARGETS_DIR
    from llmcu.platform import stm32h7

    board = stm32h7.load_board(TARGETS_DIR / "stm32h743", "h743-sdram-qspi")
    return flashalgo.build_flash_algo(board, tmp_path_factory.mktemp("flashalgo"))


def test_qspi_bytes_are_programmed_with_the_boards_flash_algorithm(tmp_path: Path, qspi_algo: Path) -> None:
    code, weights = image_bytes(5000, 3), image_bytes(9000, 4)
    elf = write_elf(tmp_path / "firmware.elf", [(INTERNAL_FLASH, code), (QSPI_WINDOW + 0x100, weights)])
    chip = FakeChip()
    factory = FakeFactory([PROBE], chip)
    result = flash(elf, factory, qspi_algo=qspi_algo)
    internal_region, qspi_region = result.regions
    assert internal_region.verified and internal(chip, len(code)) == code
    assert qspi_region.name == "QSPI flash" and qspi_region.sectors_written == 3 and qspi_region.verified
    nor = chip.machine.flash
    assert bytes(nor.memory[0x100 : 0x100 + len(weights)]) == weights
    assert bytes(nor.memory[:0x100]) == b"\xff" * 0x100  # erased with its sector, not programmed
    assert [address for address, _ in nor.erased] == [0, 0x1000, 0x2000]
    assert not chip.machine.violations and not nor.violations
    assert nor.status2 & 0x02  # Quad Enable, set by the board layer's qspi_init() inside the algorithm
    region = factory.sessions[0].target.memory_map.get_region_for_address(QSPI_WINDOW)
    assert region.name == "qspi" and region.sector_size == 0x1000 and region.page_size == 256

    again = flash(elf, FakeFactory([PROBE], chip), qspi_algo=qspi_algo)
    assert again.unchanged and len(nor.erased) == 3


def test_qspi_algo_found_beside_the_elf(tmp_path: Path, qspi_algo: Path) -> None:
    elf = write_elf(tmp_path / "firmware.elf", [(QSPI_WINDOW, b"\x55" * 300)])
    with pytest.raises(FlashError, match=r"300 bytes for the QSPI flash but there is no flash algorithm"):
        flash(elf, FakeFactory([PROBE]))
    (tmp_path / "flashalgo").mkdir()
    shutil.copy(qspi_algo, tmp_path / "flashalgo" / "qspi.flm")
    chip = FakeChip()
    flash(elf, FakeFactory([PROBE], chip))
    assert bytes(chip.machine.flash.memory[:300]) == b"\x55" * 300


def test_qspi_flash_that_does_not_answer_is_explained(tmp_path: Path, qspi_algo: Path) -> None:
    elf = write_elf(tmp_path / "firmware.elf", [(QSPI_WINDOW, b"\x55" * 300)])
    from support.flashalgo_emu import Machine

    chip = FakeChip(machine=Machine(NorFlash(jedec_id=(0xFF, 0xFF, 0xFF))))
    with pytest.raises(ProgramError, match=r"result code 0x2\)\): no QSPI flash answered its JEDEC ID"):
        flash(elf, FakeFactory([PROBE], chip), qspi_algo=qspi_algo)


def test_qspi_image_larger_than_the_qspi_flash(tmp_path: Path, qspi_algo: Path) -> None:
    past_window = write_elf(tmp_path / "window.elf", [(QSPI_WINDOW + (256 << 20) - 8, b"\0" * 16)])
    with pytest.raises(ImageTooLargeError, match="run past the end of qspi"):  # the QUADSPI's 256 MB window
        flash(past_window, FakeFactory([PROBE]), qspi_algo=qspi_algo)
    past_flash = write_elf(tmp_path / "flash.elf", [(QSPI_WINDOW + (16 << 20) - 8, b"\0" * 16)])
    with pytest.raises(ImageTooLargeError, match=r"QSPI flash ends at 0x90ffffff \(16M, from qspi.flm\)"):
        flash(past_flash, FakeFactory([PROBE]), qspi_algo=qspi_algo)

    from llmcu.builder import flashalgo
    from llmcu.core.paths import TARGETS_DIR
    from llmcu.platform import stm32h7

    board = stm32h7.load_board(TARGETS_DIR / "stm32h743", "h743-sdram-qspi")
    small = replace(board, qspi=replace(board.qspi, size=8 << 20))  # a board with an 8 MB W25Q64
    small_algo = flashalgo.build_flash_algo(small, tmp_path / "algo8")
    past_chip = write_elf(tmp_path / "chip.elf", [(QSPI_WINDOW + (8 << 20) - 8, b"\0" * 16)])
    with pytest.raises(ImageTooLargeError, match=r"QSPI flash ends at 0x907fffff \(8M, from qspi.flm\)"):
        flash(past_chip, FakeFactory([PROBE]), qspi_algo=small_algo)


# ---- scons flash ----


@pytest.mark.parametrize(("target", "why"), [("host", "it is this machine"), ("qemu-m7", "it is an emulator")])
def test_flash_is_refused_for_targets_without_a_probe(target: str, why: str) -> None:
    from llmcu.core.paths import TARGETS_DIR
    from llmcu.platform.targets import load_target

    with pytest.raises(FlashError, match=f"target {target} has no debug probe to flash through \\({why}"):
        flashing.check_flashable(load_target(target, TARGETS_DIR))
    flashing.check_flashable(load_target("stm32h743", TARGETS_DIR))


def test_scons_flash_on_the_host_target_says_why(stories260k: Path) -> None:
    from support.build import scons

    result = scons(["target=host", "model=260k", "flash"], stories260k.parent, check=False)
    assert result.returncode != 0
    assert "target host has no debug probe to flash through" in result.stderr
    with_probe = scons(["target=host", "model=260k", "flash", "probe=1234"], stories260k.parent, check=False)
    assert with_probe.returncode != 0 and "probe= does not apply to target host" in with_probe.stderr
