"""Flash an STM32H743 board through pyOCD's Python API: internal flash, and the board's QSPI NOR flash.

``flash_firmware(build_dir_or_elf)`` picks the debug probe, connects to the chip as pyOCD target
``stm32h743xx``, checks that it really is an STM32H742/743/750/753 (DBGMCU_IDC DEV_ID 0x450 at
0x5C001000, RM0433 "DBGMCU identity code register") that is not read-protected, and programs the
firmware's load segments: those in internal flash (0x08000000) with pyOCD's own STM32H743 algorithm,
those in the QSPI window (0x90000000) with llmcu's flash algorithm for the board (``flashalgo.py``),
which this module adds to the pyOCD target as a flash region.

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

import contextlib
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from tqdm import tqdm

from ..core.errors import LlmcuError
from ..platform.targets import MemoryRegion, Target, format_size, load_target

if TYPE_CHECKING:
    from ..builder.settings import BuildSettings

LLMCU_TARGET = "stm32h743"  # the llmcu target whose memory map describes the chip's flash regions
PYOCD_TARGET = "stm32h743xx"

# STM32H743 facts (RM0433). DBGMCU is reachable through the AHB-AP the core uses.
DBGMCU_IDC = 0x5C001000
DEV_ID = 0x450
FLASH_SIZE_REGISTER = 0x1FF1E880  # 16 bits: internal flash size in KB
FLASH_OPTSR_CUR = 0x5200201C  # RDP in bits 15:8: 0xAA level 0, 0xCC level 2, anything else level 1
RDP_LEVEL_0, RDP_LEVEL_2 = 0xAA, 0xCC
KNOWN_DEV_IDS = {
    0x450: "STM32H742/743/750/753",
    0x480: "STM32H7A3/7B3/7B0",
    0x483: "STM32H723/725/730/733/735",
    0x449: "STM32F74x/75x",
    0x451: "STM32F76x/77x",
    0x413: "STM32F405/407/415/417",
}
REVISIONS = {0x1001: "Z", 0x1003: "Y", 0x2001: "X", 0x2003: "V"}

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
    8: "the QSPI flash that answered is smaller than the board file's [qspi] size",
}


class FlashError(LlmcuError):
    """Flashing a board failed; the message says why and what to do."""


class NoProbeError(FlashError):
    """No debug probe is attached."""


class ProbeSelectionError(FlashError):
    """Several probes are attached and none was chosen, or the chosen one is not attached."""


class ConnectError(FlashError):
    """The probe is there but the chip does not answer."""


class WrongTargetError(FlashError):
    """The chip behind the probe is not an STM32H743."""


class LockedChipError(FlashError):
    """The chip's flash is read-protected (RDP level 1 or 2)."""


class ImageError(FlashError):
    """The firmware file cannot be flashed as it is."""


class ImageTooLargeError(ImageError):
    """The firmware has more bytes than a flash region holds."""


class ProgramError(FlashError):
    """Erasing or programming failed."""


class VerifyError(FlashError):
    """The flash does not hold what was programmed."""

    def __init__(self, message: str, ranges: Sequence[tuple[int, int]]) -> None:
        super().__init__(message)
        self.ranges = list(ranges)  # (first address, last address) of each differing run


class ProbeLostError(FlashError):
    """The probe or the chip stopped answering part-way; running the same command again recovers."""


# ---- Probes ----


@dataclass(frozen=True)
class ProbeInfo:
    uid: str
    description: str


class SessionFactory(Protocol):
    """Where probes and sessions come from: pyOCD (``PyocdSessionFactory``), or a test double."""

    def probes(self) -> list[ProbeInfo]: ...

    def open(self, probe: ProbeInfo, options: Mapping[str, object]) -> Any:
        """An opened pyOCD ``Session`` (or an object with the same ``target``, ``board``, ``options``,
        ``close``) connected through ``probe``."""
        ...


class PyocdSessionFactory:
    """Probes and sessions through pyOCD's ``ConnectHelper`` and ``Session``."""

    def probes(self) -> list[ProbeInfo]:
        from pyocd.core.helpers import ConnectHelper

        found = ConnectHelper.get_all_connected_probes(blocking=False, print_wait_message=False)
        return [ProbeInfo(probe.unique_id, probe.description) for probe in found]

    def open(self, probe: ProbeInfo, options: Mapping[str, object]) -> Any:
        from pyocd.core.helpers import ConnectHelper
        from pyocd.core.session import Session

        found = ConnectHelper.get_all_connected_probes(blocking=False, unique_id=probe.uid, print_wait_message=False)
        match = next((candidate for candidate in found if candidate.unique_id == probe.uid), None)
        if match is None:
            raise ProbeLostError(f"debug probe {probe.uid} disappeared before it was opened: reconnect it, run again")
        session = Session(match, options=dict(options))
        try:
            session.open()
        except BaseException:
            _close(session)
            raise
        return session


def _probe_table(probes: Iterable[ProbeInfo]) -> str:
    return "\n".join(f"  {probe.uid}  {probe.description}" for probe in probes)


def select_probe(probes: Sequence[ProbeInfo], uid: str | None) -> ProbeInfo:
    """The probe to use: the one whose unique ID is ``uid`` (or uniquely contains it), else the only one."""
    if not probes:
        raise NoProbeError("no debug probe found (is the board connected? `pyocd list`)")
    if uid:
        wanted = uid.strip().lower()
        exact = [probe for probe in probes if probe.uid.lower() == wanted]
        if exact:
            return exact[0]
        partial = [probe for probe in probes if wanted in probe.uid.lower()]
        if len(partial) == 1:
            return partial[0]
        if not partial:
            raise ProbeSelectionError(
                f"no attached debug probe has unique ID {uid!r}; attached:\n{_probe_table(probes)}"
            )
        raise ProbeSelectionError(
            f"probe={uid} matches {len(partial)} debug probes; give more of the unique ID:\n{_probe_table(partial)}"
        )
    if len(probes) > 1:
        raise ProbeSelectionError(
            f"{len(probes)} debug probes are attached; choose one with probe=UID (unique ID, or a unique part of "
            f"it):\n{_probe_table(probes)}"
        )
    return probes[0]


# ---- The firmware image ----


@dataclass(frozen=True)
class Chunk:
    """Contiguous bytes to program."""

    address: int
    data: bytes

    @property
    def end(self) -> int:
        return self.address + len(self.data)


@dataclass(frozen=True)
class FirmwareImage:
    elf: Path
    internal: tuple[Chunk, ...]  # bytes for internal flash
    qspi: tuple[Chunk, ...]  # bytes for the QSPI flash


def flash_regions() -> tuple[MemoryRegion, MemoryRegion]:
    """The STM32H743's internal flash and QSPI window, from its target.toml."""
    from ..core.paths import TARGETS_DIR

    target = load_target(LLMCU_TARGET, TARGETS_DIR)
    return target.region("flash"), target.region("qspi")


def _merge(chunks: Iterable[Chunk]) -> tuple[Chunk, ...]:
    merged: list[Chunk] = []
    for chunk in sorted(chunks, key=lambda c: c.address):
        if merged and merged[-1].end == chunk.address:
            merged[-1] = Chunk(merged[-1].address, merged[-1].data + chunk.data)
        elif merged and merged[-1].end > chunk.address:
            raise ImageError(f"load segments overlap at {chunk.address:#010x}")
        else:
            merged.append(chunk)
    return tuple(merged)


def elf_path(image: Path) -> Path:
    """``image`` itself, or ``firmware.elf`` in a build directory."""
    image = Path(image)
    path = image / "firmware.elf" if image.is_dir() else image
    if not path.is_file():
        raise ImageError(f"{path} does not exist: build the firmware first (scons target={LLMCU_TARGET} ...)")
    return path


def load_image(image: Path) -> FirmwareImage:
    """The bytes of a firmware ELF's load segments (at their load addresses), by flash region."""
    path = elf_path(image)
    internal, qspi = flash_regions()
    chunks: dict[str, list[Chunk]] = {internal.name: [], qspi.name: []}
    try:
        with path.open("rb") as stream:
            elf = ELFFile(stream)
            segments = [
                (segment["p_paddr"], segment.data()[: segment["p_filesz"]])
                for segment in elf.iter_segments()
                if segment["p_type"] == "PT_LOAD" and segment["p_filesz"]
            ]
    except (ELFError, OSError) as error:
        raise ImageError(f"{path}: not a readable ELF file ({error})") from None
    for address, data in segments:
        region = next((r for r in (internal, qspi) if r.contains(address)), None)
        if region is None:
            raise ImageError(
                f"{path}: {len(data):,} bytes load at {address:#010x}, outside internal flash "
                f"({internal.origin:#010x}, {format_size(internal.size)}) and the QSPI flash "
                f"({qspi.origin:#010x}): they cannot be programmed"
            )
        if address + len(data) > region.end:
            raise ImageTooLargeError(
                f"{path}: the bytes at {address:#010x}-{address + len(data) - 1:#010x} run past the end of "
                f"{region.name} ({format_size(region.size)} at {region.origin:#010x})"
            )
        chunks[region.name].append(Chunk(address, bytes(data)))
    firmware = FirmwareImage(path, _merge(chunks[internal.name]), _merge(chunks[qspi.name]))
    if not firmware.internal and not firmware.qspi:
        raise ImageError(f"{path} has no bytes to program (no loadable segment in flash)")
    return firmware


# ---- Results ----


@dataclass(frozen=True)
class ChipInfo:
    dev_id: int
    revision: int
    flash_bytes: int  # internal flash, from the flash size register

    @property
    def name(self) -> str:
        revision = REVISIONS.get(self.revision, f"{self.revision:#06x}")
        return (
            f"{KNOWN_DEV_IDS.get(self.dev_id, hex(self.dev_id))} rev {revision}, {format_size(self.flash_bytes)} flash"
        )


@dataclass(frozen=True)
class RegionResult:
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
    probe: ProbeInfo
    chip: ChipInfo
    regions: tuple[RegionResult, ...]
    seconds: float
    reset: bool

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


# ---- Progress ----


class _Bars:
    """tqdm bars on stderr: reading (bytes), erasing and programming (percent, from pyOCD's callback)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.open: list[tqdm] = []

    def bytes(self, description: str, total: int) -> tqdm:
        bar = tqdm(
            total=total, desc=description, unit="B", unit_scale=True, unit_divisor=1024,
            disable=not self.enabled, file=sys.stderr, leave=True,
        )  # fmt: skip
        self.open.append(bar)
        return bar

    def loader(self, region: str) -> Callable[[float], None]:
        return _LoaderProgress(self, region)

    def close(self) -> None:
        for bar in self.open:
            bar.close()
        self.open.clear()


class _LoaderProgress:
    """pyOCD's MemoryLoader reports 0..1 while erasing, then 0..1 again while programming."""

    PHASES = ("erase", "program")

    def __init__(self, bars: _Bars, region: str) -> None:
        self.bars = bars
        self.region = region
        self.phase = 0
        self.last = 0.0
        self.bar: tqdm | None = None

    def __call__(self, fraction: float) -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        if self.bar is not None and fraction < self.last and self.phase + 1 < len(self.PHASES):
            self._finish()
            self.phase += 1
        if self.bar is None:
            self.bar = tqdm(
                total=100, desc=f"{self.PHASES[self.phase]} {self.region}", unit="%",
                disable=not self.bars.enabled, file=sys.stderr, leave=True,
            )  # fmt: skip
            self.bars.open.append(self.bar)
        self.last = fraction
        self.bar.update(round(fraction * 100) - self.bar.n)

    def _finish(self) -> None:
        assert self.bar is not None
        self.bar.update(100 - self.bar.n)
        self.bar = None


# ---- Flashing ----


class _Step:
    """What is being done, for error messages."""

    def __init__(self) -> None:
        self.text = "connecting"
        self.region = ""

    def now(self, text: str, region: str = "") -> None:
        self.text = text
        self.region = region


def _pyocd_exceptions() -> Any:
    try:
        from pyocd.core import exceptions
    except ImportError:
        raise FlashError(
            "pyOCD is not installed: `python3 -m pip install -r requirements.txt` (or run tools/setup.sh)"
        ) from None
    return exceptions


def _close(session: Any) -> None:
    """Close a session whatever state its probe is in (a probe that vanished fails to close)."""
    if session is None:
        return
    with contextlib.suppress(Exception):  # the probe may be gone; nothing else can be done with it
        session.close()


def default_algo_path(image: Path) -> Path:
    """Where a build puts the QSPI flash algorithm: ``<build dir>/flashalgo/qspi.flm``."""
    from ..builder.flashalgo import algo_path

    image = Path(image)
    return algo_path(image if image.is_dir() else image.parent)


def identify_chip(target: Any, probe: ProbeInfo) -> ChipInfo:
    """Check the chip behind the probe is an STM32H74x/75x whose flash the debugger may read and write."""
    exceptions = _pyocd_exceptions()
    try:
        idc = target.read32(DBGMCU_IDC)
    except exceptions.TransferFaultError:
        raise WrongTargetError(
            f"the chip behind probe {probe.uid} is not an STM32H7: reading DBGMCU_IDC at {DBGMCU_IDC:#010x} "
            "faulted; connect the probe to the STM32H743 board, or choose its probe with probe=UID"
        ) from None
    dev_id, revision = idc & 0xFFF, idc >> 16
    if dev_id != DEV_ID:
        name = KNOWN_DEV_IDS.get(dev_id, "unknown to llmcu")
        raise WrongTargetError(
            f"the chip behind probe {probe.uid} is not an STM32H743: DBGMCU_IDC DEV_ID is {dev_id:#05x} ({name}), "
            f"expected {DEV_ID:#05x} ({KNOWN_DEV_IDS[DEV_ID]}); connect the probe to the STM32H743 board, or "
            "choose its probe with probe=UID"
        )
    size_kb = target.read16(FLASH_SIZE_REGISTER)
    flash_bytes = size_kb * 1024 if 0 < size_kb < 0xFFFF else 2 << 20
    rdp = target.read32(FLASH_OPTSR_CUR) >> 8 & 0xFF
    if rdp != RDP_LEVEL_0:
        level = 2 if rdp == RDP_LEVEL_2 else 1
        advice = (
            "level 2 is permanent: this chip cannot be reprogrammed through the debug port"
            if level == 2
            else "going back to level 0 erases the whole flash; do it deliberately, e.g. "
            "`STM32_Programmer_CLI -c port=SWD -ob RDP=0xAA`, then flash again"
        )
        raise LockedChipError(
            f"the STM32H743 behind probe {probe.uid} has readout protection level {level} (FLASH_OPTSR_CUR RDP = "
            f"{rdp:#04x}): its flash can be neither read nor programmed through the debugger; {advice}"
        )
    return ChipInfo(dev_id, revision, flash_bytes)


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
    exceptions = _pyocd_exceptions()
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
    session: Any, flasher: _RegionFlasher, chunks: Sequence[Chunk], bars: _Bars, step: _Step, verify: bool
) -> RegionResult:
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
        return RegionResult(flasher.name, start, end, image_bytes, 0, 0, True)

    step.now(f"erasing and programming the {flasher.name}", flasher.name)
    loader = MemoryLoader(
        session, progress=bars.loader(flasher.name), chip_erase="sector", smart_flash=False, trust_crc=False,
        keep_unwritten=False,
    )  # fmt: skip
    for chunk in _merge(Chunk(piece.address, piece.data) for piece in changed):
        loader.add_data(chunk.address, chunk.data)
    loader.commit()
    written = sum(len(piece.data) for piece in changed)
    if not verify:
        return RegionResult(flasher.name, start, end, image_bytes, written, len(changed), False)

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
    return RegionResult(flasher.name, start, end, image_bytes, written, len(changed), True)


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


def _explain(error: BaseException, step: _Step, probe: ProbeInfo) -> FlashError | None:
    """A pyOCD (or USB) exception as an error a user can act on; None for anything else."""
    exceptions = _pyocd_exceptions()
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


def _open(factory: SessionFactory, probe: ProbeInfo, target_type: str, options: Mapping[str, object] | None) -> Any:
    exceptions = _pyocd_exceptions()
    settings: dict[str, object] = {
        "target_override": target_type,
        "auto_unlock": False,  # never mass-erase a locked chip behind the user's back
        "cache.enable_memory": False,  # every read for comparing and verifying goes to the chip
        "hide_programming_progress": True,
        "chip_erase": "sector",
        "smart_flash": False,
        "keep_unwritten": False,
    }
    settings.update(options or {})
    try:
        return factory.open(probe, settings)
    except FlashError:
        raise
    except AssertionError as error:  # pyOCD's STM32H743 connect sequence asserts DEV_ID 0x450
        if "DEV_ID" in str(error):
            raise WrongTargetError(
                f"the chip behind probe {probe.uid} is not an STM32H743 ({error}); connect the probe to the "
                "STM32H743 board, or choose its probe with probe=UID"
            ) from None
        raise
    except exceptions.TargetSupportError as error:
        raise FlashError(f"pyOCD cannot use target type {target_type!r}: {error} (`pyocd list --targets`)") from None
    except exceptions.ProbeDisconnected as error:
        raise ProbeLostError(f"debug probe {probe.uid} disappeared while connecting ({error}); reconnect it") from None
    except (exceptions.Error, OSError) as error:
        raise ConnectError(
            f"could not connect to the chip through probe {probe.uid} ({probe.description}): {error}. Check that the "
            "board is powered and SWDIO, SWCLK, GND (and NRST) are connected, and that no other debugger uses the "
            "probe; a chip at readout protection level 2 refuses every debugger"
        ) from None


def flash_firmware(
    image: Path,
    *,
    probe_uid: str | None = None,
    target_type: str = PYOCD_TARGET,
    verify: bool = True,
    progress: bool = True,
    session_factory: SessionFactory | None = None,
    qspi_algo: Path | None = None,
    reset: bool = True,
    options: Mapping[str, object] | None = None,
) -> FlashResult:
    """Program a firmware (its build directory or ELF) into an STM32H743 board; see the module docstring.

    ``qspi_algo`` defaults to ``flashalgo/qspi.flm`` beside the ELF; it is needed only when the firmware has
    bytes for the QSPI flash. With ``verify`` false the written sectors are not read back afterwards (the
    comparison that decides what to write still is). ``progress`` shows tqdm bars on stderr. ``options`` are
    extra pyOCD session options (e.g. ``frequency``). Afterwards the board is reset into the new firmware
    unless ``reset`` is false.
    """
    started = time.monotonic()
    firmware = load_image(image)
    algo_path = None
    if firmware.qspi:
        algo_path = Path(qspi_algo) if qspi_algo else default_algo_path(firmware.elf)
        if not algo_path.is_file():
            qspi_bytes = sum(len(chunk.data) for chunk in firmware.qspi)
            raise FlashError(
                f"{firmware.elf.name} has {qspi_bytes:,} bytes for the QSPI flash but there is no flash algorithm "
                f"for it at {algo_path}: build with scons for a board with QSPI flash, which builds it"
            )
    _pyocd_exceptions()
    factory = session_factory or PyocdSessionFactory()
    step = _Step()
    try:
        probes = factory.probes()
    except Exception as error:
        explained = _explain(error, step, ProbeInfo("?", ""))
        if explained is None:
            raise
        raise FlashError(f"listing debug probes failed: {error} (`pyocd list`)") from error
    probe = select_probe(probes, probe_uid)
    bars = _Bars(progress)
    session = None
    try:
        session = _open(factory, probe, target_type, options)
        target = session.target
        step.now("identifying the chip")
        chip = identify_chip(target, probe)
        internal_end = max((chunk.end for chunk in firmware.internal), default=0)
        flash_base = flash_regions()[0].origin
        if internal_end > flash_base + chip.flash_bytes:
            raise ImageTooLargeError(
                f"the firmware needs internal flash up to {internal_end - 1:#010x} ({internal_end - flash_base:,} "
                f"bytes) but this chip has {format_size(chip.flash_bytes)} (flash size register): build for a "
                "smaller footprint (quant=q4 or q8, weights=qspi on a board with QSPI flash)"
            )
        step.now("halting the chip")
        target.reset_and_halt()
        results = []
        if firmware.internal:
            results.append(
                _flash_region(session, _RegionFlasher("internal flash"), firmware.internal, bars, step, verify)
            )
        if firmware.qspi:
            assert algo_path is not None
            step.now("loading the QSPI flash algorithm", "QSPI flash")
            qspi_flash = attach_qspi_algo(target, algo_path)
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
            target.reset()
    except FlashError:
        raise
    except Exception as error:
        explained = _explain(error, step, probe)
        if explained is None:
            raise
        raise explained from error
    finally:
        bars.close()
        _close(session)
    return FlashResult(probe, chip, tuple(results), time.monotonic() - started, reset)


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
            f"pyOCD, e.g. target={LLMCU_TARGET}"
        )


def flash_build(settings: BuildSettings, probe_uid: str = "", *, progress: bool = True) -> FlashResult:
    """`scons flash`: program the build's firmware (and its QSPI bytes with the board's flash algorithm)."""
    check_flashable(settings.target)
    image = settings.images[0]
    target_type = settings.target.pyocd_target
    return flash_firmware(
        image.out_dir,
        probe_uid=probe_uid or None,
        target_type=target_type,
        qspi_algo=default_algo_path(image.out_dir),
        progress=progress,
    )
