"""Program a board through pyOCD's Python API: internal flash, and the board's QSPI NOR flash.

``flash_firmware(build_dir_or_elf, target)`` picks the debug probe (llmcu.device.probes), connects to the chip as
the target's pyOCD target type, checks that it really is the part the target's [chip] table names and that it is
not read-protected (llmcu.device.chipcheck; for the STM32H743, DBGMCU_IDC DEV_ID 0x450 at 0x5C001000, RM0433),
and programs the firmware's load segments (llmcu.device.flashimage): those in internal flash with pyOCD's own
algorithm for the chip, those in the QSPI window with llmcu's flash algorithm for the board
(llmcu.builder.flashalgo), which this module adds to the pyOCD target as a flash region.

Unchanged images are not reprogrammed. Before programming, the flash is read back and compared with the
image, sector by sector; only sectors that differ are erased and programmed, and then read back again.
Reading back (rather than keeping a hash of the image on the board) was chosen because it is exact (no
collision, no stale hash after a partial write), needs no space reserved in the firmware's memory plan
and no code on the target, and it is the same read the verification needs anyway; its cost is the read
speed of the probe, a few seconds per megabyte. pyOCD itself does not verify what it programmed: every
written sector is read back here, and a difference is an error naming the address ranges.

Errors a user can act on are FlashError subclasses: no probe, several probes and none chosen, the wrong
chip, a read-protected chip, an image larger than the flash, a failed erase or program (with the flash
algorithm's result code explained), a verify mismatch, and a probe or target lost mid-way, after which
the same command can simply be run again (the session is always closed; the next run compares and
rewrites what differs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from elftools.common.exceptions import ELFError
from tqdm import tqdm

from ..builder.flashalgo import algo_path as flash_algo_path
from ..builder.settings import BuildSettings
from ..core.paths import TARGETS_DIR
from ..platform.targets import Target, format_size, load_target
from .chipcheck import ChipInfo, identify_chip
from .flasherrors import FlashError, ImageTooLargeError, ProbeLostError, ProgramError, VerifyError
from .flashimage import Chunk, flash_regions, load_image, merge_chunks
from .flashprogress import FlashBars, FlashStep
from .probes import (
    ProbeInfo,
    PyocdSessionFactory,
    SessionFactory,
    close_session,
    open_session,
    pyocd_exceptions,
    select_probe,
)

# Where pyOCD places the QSPI flash algorithm, its page buffers and its stack: the upper half of DTCM.
# pyOCD's own internal-flash algorithm uses the bottom of DTCM; only one is loaded at a time anyway.
ALGO_RAM_START, ALGO_RAM_SIZE = 0x20010000, 0x10000
READ_BLOCK = 64 << 10  # bytes per debugger read while comparing

# Result codes of targets/stm32h743/flashalgo/qspi_flm.c.
QSPI_RESULTS = {
    1: "the QSPI flash stayed busy longer than its datasheet allows",
    2: "no QSPI flash answered its JEDEC ID: check the board file's [qspi.pins] and that the chip is powered",
    3: "the QSPI flash did not set its write enable latch (not answering, or held in write protection)",
    4: "an address outside the QSPI flash",
    5: "the QUADSPI peripheral flagged a transfer error",
    6: "the flash algorithm was called without a successful Init",
    7: "the QSPI flash's block protection could not be cleared (status register protected, /WP held low?)",
    9: "another QSPI flash than the board file's answered its JEDEC ID: check `chip` and `jedec_id` in [qspi]",
}


@dataclass(frozen=True)
class FlashedRegion:
    name: str  # "internal flash" or "QSPI flash"
    start: int
    end: int  # one past the image's last byte
    image_bytes: int
    written_bytes: int  # bytes of the image in the sectors that were rewritten
    sectors_written: int
    verified: bool  # the flash was read back and equals the image

    @property
    def unchanged(self) -> bool:
        return self.sectors_written == 0


@dataclass(frozen=True)
class FlashResult:
    regions: tuple[FlashedRegion, ...]  # internal flash, then the QSPI flash if the image has bytes for it
    probe: ProbeInfo
    chip: ChipInfo
    seconds: float
    reset: bool  # the board was reset into the new firmware

    @property
    def unchanged(self) -> bool:
        return all(region.unchanged for region in self.regions)

    def lines(self) -> list[str]:
        lines = [f"probe {self.probe.uid} ({self.probe.description}): {self.chip.name}"]
        for region in self.regions:
            span = f"{region.start:#010x}-{region.end - 1:#010x}"
            if region.unchanged:
                what = "unchanged, not reprogrammed"
            else:
                what = f"{region.sectors_written} sector(s) rewritten, {region.written_bytes:,} bytes"
                what += ", verified" if region.verified else ", not verified"
            lines.append(f"{region.name} {span} ({region.image_bytes:,} bytes): {what}")
        lines.append(
            f"done in {self.seconds:.1f} s" + ("; the board was reset and runs the firmware" if self.reset else "")
        )
        return lines


def default_algo_path(image: Path) -> Path:
    """Where a build puts the QSPI flash algorithm: ``<build dir>/flashalgo/qspi.flm``."""
    image = Path(image)
    return flash_algo_path(image if image.is_dir() else image.parent)


@dataclass
class _Piece:
    """The part of a chunk inside one sector."""

    address: int
    data: bytes


def _sector_pieces(chunks: Iterable[Chunk], sector_size: Callable[[int], int]) -> list[_Piece]:
    pieces = []
    for chunk in chunks:
        address = chunk.address
        while address < chunk.end:
            size = sector_size(address)
            sector_end = address - address % size + size
            end = min(sector_end, chunk.end)
            pieces.append(_Piece(address, chunk.data[address - chunk.address : end - chunk.address]))
            address = end
    return pieces


def _read_pieces(target: Any, pieces: Sequence[_Piece], bar: tqdm) -> list[bytes | None]:
    """The flash's current bytes for each piece, read in blocks of up to READ_BLOCK bytes. A piece whose read
    faults (e.g. an ECC error left by an interrupted program) is None: it is rewritten."""
    exceptions = pyocd_exceptions()
    results: list[bytes | None] = []
    index = 0
    while index < len(pieces):
        group = [pieces[index]]
        while (
            index + len(group) < len(pieces)
            and pieces[index + len(group)].address == group[-1].address + len(group[-1].data)
            and sum(len(p.data) for p in group) + len(pieces[index + len(group)].data) <= READ_BLOCK
        ):
            group.append(pieces[index + len(group)])
        total = sum(len(p.data) for p in group)
        try:
            block = bytes(target.read_memory_block8(group[0].address, total))
            offset = 0
            for piece in group:
                results.append(block[offset : offset + len(piece.data)])
                offset += len(piece.data)
        except exceptions.TransferFaultError:
            for piece in group:
                try:
                    results.append(bytes(target.read_memory_block8(piece.address, len(piece.data))))
                except exceptions.TransferFaultError:
                    results.append(None)
        bar.update(total)
        index += len(group)
    return results


def _mismatch_ranges(address: int, expected: bytes, actual: bytes | None) -> list[tuple[int, int]]:
    """(first, last) address of every run of differing bytes."""
    if actual is None:
        return [(address, address + len(expected) - 1)]
    differs = np.frombuffer(expected, np.uint8) != np.frombuffer(actual, np.uint8)
    positions = np.flatnonzero(differs)
    if positions.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(positions) > 1)
    starts = np.concatenate(([positions[0]], positions[breaks + 1]))
    ends = np.concatenate((positions[breaks], [positions[-1]]))
    return [(address + int(s), address + int(e)) for s, e in zip(starts, ends, strict=True)]


class _RegionFlasher:
    """One flash region: how to make it readable, its sectors, what its algorithm's codes mean."""

    def __init__(self, name: str, flash: Any = None, codes: Mapping[int, str] | None = None) -> None:
        self.name = name
        self.flash = flash  # a pyOCD Flash whose algorithm must run before the region can be read (QSPI)
        self.codes = dict(codes or {})

    def readable(self) -> None:
        if self.flash is not None:
            self.flash.init(self.flash.Operation.VERIFY)  # Init + UnInit: the QSPI flash is memory-mapped
            self.flash.uninit()

    def done_reading(self) -> None:
        if self.flash is not None:
            self.flash.cleanup()


def _sector_size_of(memory_map: Any, name: str) -> Callable[[int], int]:
    def size(address: int) -> int:
        region = memory_map.get_region_for_address(address)
        if region is None or not region.is_flash:
            raise FlashError(f"pyOCD's target has no flash region at {address:#010x} for the {name}")
        sub = region.submap.get_region_for_address(address) if region.has_subregions else None
        return int((sub or region).sector_size)

    return size


def _flash_region(
    session: Any, flasher: _RegionFlasher, chunks: Sequence[Chunk], bars: FlashBars, step: FlashStep, verify: bool
) -> FlashedRegion:
    from pyocd.flash.loader import MemoryLoader

    target = session.target
    pieces = _sector_pieces(chunks, _sector_size_of(target.memory_map, flasher.name))
    image_bytes = sum(len(piece.data) for piece in pieces)
    step.now(f"reading the {flasher.name} to compare it with the image", flasher.name)
    flasher.readable()
    current = _read_pieces(target, pieces, bars.bytes(f"check {flasher.name}", image_bytes))
    flasher.done_reading()
    changed = [piece for piece, now in zip(pieces, current, strict=True) if now != piece.data]
    start, end = chunks[0].address, chunks[-1].end
    if not changed:
        return FlashedRegion(flasher.name, start, end, image_bytes, 0, 0, True)

    step.now(f"erasing and programming the {flasher.name}", flasher.name)
    loader = MemoryLoader(
        session, progress=bars.loader(flasher.name), chip_erase="sector", smart_flash=False, trust_crc=False,
        keep_unwritten=False,
    )  # fmt: skip
    for chunk in merge_chunks(Chunk(piece.address, piece.data) for piece in changed):
        loader.add_data(chunk.address, chunk.data)
    loader.commit()
    written = sum(len(piece.data) for piece in changed)
    if not verify:
        return FlashedRegion(flasher.name, start, end, image_bytes, written, len(changed), False)

    step.now(f"verifying the {flasher.name}", flasher.name)
    flasher.readable()
    after = _read_pieces(target, changed, bars.bytes(f"verify {flasher.name}", written))
    flasher.done_reading()
    ranges = [
        r for piece, now in zip(changed, after, strict=True) for r in _mismatch_ranges(piece.address, piece.data, now)
    ]
    if ranges:
        shown = ", ".join(f"{a:#010x}-{b:#010x} ({b - a + 1:,} bytes)" for a, b in ranges[:5])
        more = f" and {len(ranges) - 5} more range(s)" if len(ranges) > 5 else ""
        total = sum(b - a + 1 for a, b in ranges)
        advice = (
            "check the QSPI wiring and the board file's [qspi] clock (max_clock_hz, sample_shift)"
            if flasher.flash is not None
            else "run the same command again; if the same range fails again, the sector may be worn out"
        )
        raise VerifyError(
            f"verify failed: the {flasher.name} differs from the image at {shown}{more} ({total:,} bytes in all) "
            f"after programming; {advice}",
            ranges,
        )
    return FlashedRegion(flasher.name, start, end, image_bytes, written, len(changed), True)


def attach_qspi_algo(target: Any, algo_path: Path) -> Any:
    """Add the QSPI flash as a flash region of the pyOCD target, programmed by the FLM at ``algo_path``;
    returns its pyOCD ``Flash``."""
    from pyocd.core.memory_map import FlashRegion, RamRegion
    from pyocd.flash.flash import Flash
    from pyocd.target.pack.flash_algo import FlashAlgoException, PackFlashAlgo

    try:
        pack = PackFlashAlgo(str(algo_path))
        algo = pack.get_pyocd_flash_algo(pack.page_size, RamRegion(start=ALGO_RAM_START, length=ALGO_RAM_SIZE))
    except (FlashAlgoException, OSError, ELFError) as error:
        raise FlashError(
            f"{algo_path}: pyOCD cannot use this flash algorithm ({error}); rebuild it with scons"
        ) from None
    memory_map = target.memory_map
    existing = memory_map.get_region_for_address(pack.flash_start)
    if existing is not None:
        memory_map.remove_region(existing)  # ours describes this board's chip
    memory_map.add_region(
        FlashRegion(
            start=pack.flash_start, length=pack.flash_size, sector_size=pack.sector_sizes[0][1],
            page_size=pack.page_size, erased_byte_value=pack.flash_info.value_empty, algo=algo, name="qspi",
            is_external=True, is_boot_memory=False,
        )
    )  # fmt: skip
    region = memory_map.get_region_for_address(pack.flash_start)
    flash = Flash(target, algo)
    flash.region = region
    region.flash = flash
    return flash


def _explain(error: BaseException, step: FlashStep, probe: ProbeInfo) -> FlashError | None:
    """A pyOCD (or USB) exception as an error a user can act on; None for anything else."""
    exceptions = pyocd_exceptions()
    again = "then run the same command again (it compares the flash and rewrites what differs)"
    if isinstance(error, exceptions.FlashFailure):
        code = error.result_code
        meaning = ""
        if step.region == "QSPI flash" and code in QSPI_RESULTS:
            meaning = f": {QSPI_RESULTS[code]}"
        elif step.region == "internal flash":
            meaning = (
                ": the sector may be write-protected (option bytes WRPSN) or the flash controller reported an "
                "error; STM32CubeProgrammer shows the option bytes"
            )
        return ProgramError(f"{step.text} failed ({error}){meaning}")
    if isinstance(error, exceptions.ProbeError) or type(error).__module__.split(".")[0] == "usb":
        return ProbeLostError(
            f"the debug probe {probe.uid} stopped answering while {step.text} ({error}): check its USB cable, {again}"
        )
    if isinstance(error, exceptions.TransferFaultError):
        return FlashError(f"a bus fault while {step.text} ({error})")
    if isinstance(error, exceptions.TransferError):
        return ProbeLostError(
            f"lost contact with the chip through probe {probe.uid} while {step.text} ({error}): check the board's "
            f"power and the SWD wiring (SWDIO, SWCLK, GND, NRST), {again}"
        )
    if isinstance(error, exceptions.Error):
        return FlashError(f"pyOCD failed while {step.text}: {error}")
    return None


def flash_firmware(
    image: Path,
    target: Target,
    *,
    probe_uid: str | None = None,
    verify: bool = True,
    progress: bool = True,
    session_factory: SessionFactory | None = None,
    qspi_algo: Path | None = None,
    reset: bool = True,
    options: Mapping[str, object] | None = None,
) -> FlashResult:
    """Program a firmware (its build directory or ELF) into a board of ``target`` (its [pyocd] target type, [chip]
    identity and flash regions); see the module docstring.

        ``qspi_algo`` defaults to ``flashalgo/qspi.flm`` beside the ELF; it is needed only when the firmware has
        bytes for the QSPI flash. With ``verify`` false the written sectors are not read back afterwards (the
        comparison that decides what to write still is). ``progress`` shows tqdm bars on stderr. ``options`` are
        extra pyOCD session options (e.g. ``frequency``). Afterwards the board is reset into the new firmware
        unless ``reset`` is false.
    """
    started = time.monotonic()
    check_flashable(target)
    assert target.chip is not None  # check_flashable
    firmware = load_image(image, target)
    algo_path = None
    if firmware.qspi:
        algo_path = Path(qspi_algo) if qspi_algo else default_algo_path(firmware.elf)
        if not algo_path.is_file():
            qspi_bytes = sum(len(chunk.data) for chunk in firmware.qspi)
            raise FlashError(
                f"{firmware.elf.name} has {qspi_bytes:,} bytes for the QSPI flash but there is no flash algorithm "
                f"for it at {algo_path}: build with scons for a board with QSPI flash, which builds it"
            )
    pyocd_exceptions()
    factory = session_factory or PyocdSessionFactory()
    step = FlashStep()
    try:
        probes = factory.probes()
    except Exception as error:
        explained = _explain(error, step, ProbeInfo("?", ""))
        if explained is None:
            raise
        raise FlashError(f"listing debug probes failed: {error} (`pyocd list`)") from error
    probe = select_probe(probes, probe_uid)
    bars = FlashBars(progress)
    session = None
    try:
        session = open_session(factory, probe, target.pyocd_target, target.chip.name, options)
        chip_target = session.target
        step.now("identifying the chip")
        chip = identify_chip(chip_target, probe, target.chip)
        internal_end = max((chunk.end for chunk in firmware.internal), default=0)
        flash_base = flash_regions(target)[0].origin
        if internal_end > flash_base + chip.flash_bytes:
            raise ImageTooLargeError(
                f"the firmware needs internal flash up to {internal_end - 1:#010x} ({internal_end - flash_base:,} "
                f"bytes) but this chip has {format_size(chip.flash_bytes)} (flash size register): build for a "
                "smaller footprint (quant=q4 or q8, weights=qspi on a board with QSPI flash)"
            )
        step.now("halting the chip")
        chip_target.reset_and_halt()
        results = []
        if firmware.internal:
            results.append(
                _flash_region(session, _RegionFlasher("internal flash"), firmware.internal, bars, step, verify)
            )
        if firmware.qspi:
            assert algo_path is not None
            step.now("loading the QSPI flash algorithm", "QSPI flash")
            qspi_flash = attach_qspi_algo(chip_target, algo_path)
            region = qspi_flash.region
            qspi_end = firmware.qspi[-1].end
            if qspi_end - 1 > region.end:
                raise ImageTooLargeError(
                    f"the firmware has QSPI bytes up to {qspi_end - 1:#010x} but the QSPI flash ends at "
                    f"{region.end:#010x} ({format_size(region.length)}, from {algo_path.name}): try quant=q4"
                )
            flasher = _RegionFlasher("QSPI flash", qspi_flash, QSPI_RESULTS)
            results.append(_flash_region(session, flasher, firmware.qspi, bars, step, verify))
        if reset:
            step.now("resetting the chip into the new firmware")
            chip_target.reset()
    except FlashError:
        raise
    except Exception as error:
        explained = _explain(error, step, probe)
        if explained is None:
            raise
        raise explained from error
    finally:
        bars.close()
        close_session(session)
    return FlashResult(tuple(results), probe, chip, time.monotonic() - started, reset)


# ---- For the SCons glue ----


def check_flashable(target: Target) -> None:
    """`scons flash` needs a board programmed through a debug probe."""
    if target.run.method != "pyocd":
        how = {
            "exec": "it is this machine: `scons run` runs the program",
            "qemu-system": "it is an emulator: `scons run` starts QEMU with the firmware",
        }.get(target.run.method, f"its run method is {target.run.method!r}")
        raise FlashError(
            f"target {target.name} has no debug probe to flash through ({how}); `flash` programs boards through "
            f"pyOCD, e.g. target={', '.join(pyocd_targets()) or 'stm32h743'}"
        )
    if not target.pyocd_target or target.chip is None:
        raise FlashError(f"{target.folder / 'target.toml'}: flashing needs [pyocd] target_type and a [chip] table")


def flash_build(settings: BuildSettings, probe_uid: str = "", *, progress: bool = True) -> FlashResult:
    """`scons flash`: program the build's firmware (and its QSPI bytes with the board's flash algorithm)."""
    return flash_firmware(settings.images[0].out_dir, settings.target, probe_uid=probe_uid or None, progress=progress)


def pyocd_targets() -> list[str]:
    """The targets `flash` can program: those with a [pyocd] target type and a [chip] table."""
    names = sorted(path.parent.name for path in TARGETS_DIR.glob("*/target.toml"))
    return [name for name in names if (target := load_target(name, TARGETS_DIR)).pyocd_target and target.chip]
