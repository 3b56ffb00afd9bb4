"""The QSPI flash algorithm: a CMSIS flash algorithm ("FLM") for a board's external NOR flash, built per board.

pyOCD programs internal flash with the algorithm it ships for the STM32H743; the QSPI NOR flash of a board is
programmed with ``targets/stm32h743/flashalgo/qspi_flm.c``, compiled against the board's rendered
``board_config.h`` (pins, QUADSPI prescaler, flash commands) together with the board layer's own ``qspi.c``
and ``gpio.c``, and linked by ``flm.ld`` into an ELF laid out as FLM files are (PrgCode at 0, PrgData,
DevDscr). The result is checked here: its sections, its entry points, its FlashDevice description, and that
it holds no absolute address (the debugger runs it wherever it copies it).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from elftools.common.exceptions import ELFError
from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_RELOC_TYPE_ARM
from elftools.elf.relocation import RelocationSection

from ..core.errors import LlmcuError
from ..core.fileio import write_text_atomic
from ..platform.stm32h7 import Board
from .boardconfig import render_board_config

if TYPE_CHECKING:
    from .settings import BuildSettings

ALGO_NAME = "qspi.flm"
FLM_SECTIONS = ("PrgCode", "PrgData", "DevDscr")
ENTRY_POINTS = ("Init", "UnInit", "EraseSector", "ProgramPage")
OPTIONAL_ENTRY_POINTS = ("EraseChip", "BlankCheck", "Verify")
FLASH_DRV_VERS = 0x0101
FLASH_TYPE_EXTSPI = 5
FLASH_DEVICE = struct.Struct("<H128sHIIIIBxxxII")  # struct FlashDevice up to its sector list
FLASH_SECTOR = struct.Struct("<II")  # {size, offset}; {0xFFFFFFFF, 0xFFFFFFFF} ends the list
SECTOR_END = (0xFFFFFFFF, 0xFFFFFFFF)

# Erase instruction per erase unit (JEDEC SPI NOR; W25Q128JV: 4 KB sector, 32 KB and 64 KB block erase).
# Erase instruction per sector size (one chip's), with 3-byte and with 4-byte addresses (JEDEC SPI NOR: W25Q, MT25Q,
# IS25LP datasheets, "Instructions").
ERASE_INSTRUCTIONS = {4 << 10: 0x20, 32 << 10: 0x52, 64 << 10: 0xD8}
ERASE_INSTRUCTIONS_4BYTE = {4 << 10: 0x21, 32 << 10: 0x5C, 64 << 10: 0xDC}

# Compiled for the Cortex-M7 without the FPU (a debugger may call in with it disabled), position independent.
CFLAGS = (
    "-mcpu=cortex-m7",
    "-mthumb",
    "-mfloat-abi=soft",
    "-Os",
    "-g",
    "-std=c11",
    "-ffreestanding",
    "-fno-common",
    "-fPIC",
    "-ffixed-r9",  # the static base the debugger sets stays untouched
    "-fno-tree-loop-distribute-patterns",  # no memcpy/memset calls: there is no C library
    "-Wall",
    "-Wextra",
    "-Werror",
)
LDFLAGS = ("-nostdlib", "-nostartfiles", "-Wl,--emit-relocs", "-Wl,--no-warn-rwx-segments")

# Relocations that stay correct wherever the algorithm is copied (PC-relative ones and branches). Anything
# else in PrgCode or PrgData (absolute addresses, GOT entries) would point into the link-time image at 0.
_RELATIVE_RELOCATIONS = {
    "R_ARM_NONE",
    "R_ARM_REL32",
    "R_ARM_REL32_NOI",
    "R_ARM_PREL31",
    "R_ARM_THM_CALL",
    "R_ARM_THM_JUMP24",
    "R_ARM_THM_JUMP19",
    "R_ARM_THM_JUMP11",
    "R_ARM_THM_JUMP8",
    "R_ARM_THM_JUMP6",
    "R_ARM_THM_PC8",
    "R_ARM_THM_PC12",
    "R_ARM_THM_ALU_PREL_11_0",
    "R_ARM_THM_MOVW_PREL_NC",
    "R_ARM_THM_MOVT_PREL",
    "R_ARM_V4BX",
}
_RELOCATION_NAMES = {value: name for name, value in ENUM_RELOC_TYPE_ARM.items() if isinstance(value, int)}


class FlashAlgoError(LlmcuError):
    """The QSPI flash algorithm cannot be built for this board, or a built one is not a usable FLM."""


@dataclass(frozen=True)
class FlmInfo:
    """What a debugger reads from an FLM file."""

    path: Path
    name: str
    version: int
    device_type: int
    start: int
    size: int
    page_size: int
    erased_value: int
    program_timeout_ms: int
    erase_timeout_ms: int
    sectors: tuple[tuple[int, int], ...]  # (offset, sector size) runs
    entry_points: dict[str, int]  # name -> address in the image (bit 0 set: Thumb)
    code_bytes: int  # PrgCode + PrgData, what is copied to the target

    @property
    def end(self) -> int:
        return self.start + self.size

    def sector_size_at(self, address: int) -> int:
        offset = address - self.start
        size = self.sectors[0][1]
        for start, run_size in self.sectors:
            if start <= offset:
                size = run_size
        return size


def algo_dir(board: Board) -> Path:
    """``targets/<target>/flashalgo/``: the algorithm's sources, beside the board's target."""
    return board.path.parent.parent / "flashalgo"


def source_files(board: Board) -> list[Path]:
    """Every file the algorithm is built from (SCons rebuilds it when one changes)."""
    folder = board.path.parent.parent  # targets/<target>/
    own = sorted(p for p in algo_dir(board).iterdir() if p.suffix in (".c", ".h", ".ld"))
    board_layer = [folder / name for name in ("qspi.c", "gpio.c", "timing.c", "plan.c", "h7board.h", "stm32h7.h")]
    return [*own, *board_layer, folder.parent / "cortex-m" / "armv7m.h", board.path, Path(__file__)]


def device_name(board: Board) -> str:
    """The FlashDevice name debuggers show: chip, size and board (ASCII, at most 127 characters)."""
    assert board.qspi is not None
    chips = " x 2" if board.qspi.dual_flash else ""
    text = f"{board.qspi.chip}{chips} {board.qspi.size >> 20} MB QSPI ({board.name})"
    text = "".join(c if c.isascii() and (c.isalnum() or c in " ._+-()") else "_" for c in text)
    return text[:127]


def _config_header(board: Board) -> str:
    """What the algorithm needs beyond board_config.h: page and sector geometry, erase instruction, name."""
    assert board.qspi is not None
    qspi = board.qspi
    erase = (ERASE_INSTRUCTIONS_4BYTE if qspi.address_bits == 32 else ERASE_INSTRUCTIONS)[
        qspi.sector_size // qspi.chips
    ]
    return (
        "/* Generated by llmcu.builder.flashalgo from the board file: do not edit. */\n"
        "#ifndef LLMCU_FLASHALGO_CONFIG_H\n#define LLMCU_FLASHALGO_CONFIG_H\n"
        f"#define FLASHALGO_PAGE_SIZE {qspi.page_size}u\n"
        f"#define FLASHALGO_SECTOR_SIZE {qspi.sector_size}u\n"
        f"#define FLASHALGO_ERASE_CMD 0x{erase:02X}u\n"
        f'#define FLASHALGO_DEVICE_NAME "{device_name(board)}"\n'
        "#endif\n"
    )


def check_board(board: Board) -> None:
    """Refuse boards the algorithm cannot serve, saying what would be needed."""
    where = board.path
    if board.qspi is None:
        raise FlashAlgoError(f'board {board.name} has no QSPI flash ({where}: `memories` has no "qspi")')
    qspi = board.qspi
    sector, page = qspi.sector_size // qspi.chips, qspi.page_size // qspi.chips  # one chip's
    if sector not in ERASE_INSTRUCTIONS:
        sizes = ", ".join(f"{size >> 10}K" for size in ERASE_INSTRUCTIONS)
        raise FlashAlgoError(f"{where} [qspi]: sector_size {sector} has no erase instruction; use {sizes}")
    if page & (page - 1) or not 16 <= page <= 4096:
        raise FlashAlgoError(f"{where} [qspi]: page_size {page} must be a power of two, 16..4096")


def build_flash_algo(board: Board, out_dir: Path, *, cc: str = "arm-none-eabi-gcc") -> Path:
    """Build and check ``out_dir/qspi.flm`` for ``board``; returns its path.

    ``out_dir`` also receives the ``board_config.h`` and ``flashalgo_config.h`` it was compiled with.
    """
    check_board(board)
    out_dir = Path(out_dir)
    write_text_atomic(out_dir / "board_config.h", render_board_config(board))
    write_text_atomic(out_dir / "flashalgo_config.h", _config_header(board))
    folder, algo = board.path.parent.parent, algo_dir(board)
    sources = [algo / "qspi_flm.c", *(folder / name for name in ("qspi.c", "gpio.c", "timing.c", "plan.c"))]
    includes = [out_dir, algo, folder, folder.parent / "cortex-m"]
    path = out_dir / ALGO_NAME
    partial = out_dir / f".{ALGO_NAME}.part"
    try:
        link_flm(sources, includes, algo / "flm.ld", partial, cc=cc)
        info = check_flm(partial)
        expected = (0x90000000, board.qspi.size, board.qspi.page_size, ((0, board.qspi.sector_size),))
        if (info.start, info.size, info.page_size, info.sectors) != expected:
            raise FlashAlgoError(f"{partial}: FlashDevice {info} does not describe board {board.name}'s flash")
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def algo_path(out_dir: Path) -> Path:
    """Where a build puts its QSPI flash algorithm: ``<build dir>/flashalgo/qspi.flm``."""
    return Path(out_dir) / "flashalgo" / ALGO_NAME


def for_settings(settings: BuildSettings) -> tuple[Path, list[Path]] | None:
    """(the FLM to build, the files it is built from) for a firmware build whose board has QSPI flash and
    whose target has a flash algorithm; None for every other build."""
    if not settings.images or not settings.board or not (settings.target.folder / "flashalgo").is_dir():
        return None
    board = settings.board_file
    if board is None or board.qspi is None:
        return None
    return algo_path(settings.images[0].out_dir), source_files(board)


def build_for_settings(settings: BuildSettings) -> Path:
    """Build the FLM of ``for_settings`` (the SCons action)."""
    assert settings.board_file is not None  # for_settings gave this build a flash algorithm
    return build_flash_algo(settings.board_file, algo_path(settings.images[0].out_dir).parent)


def link_flm(sources: Sequence[Path], includes: Sequence[Path], script: Path, out: Path, *, cc: str) -> None:
    """Compile and link ``sources`` into the FLM ELF ``out`` with ``script``."""
    if shutil.which(cc) is None:
        raise FlashAlgoError(f"{cc} not found: the QSPI flash algorithm needs the ARM toolchain (tools/setup.sh)")
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [cc, *CFLAGS, *(f"-I{path}" for path in includes), *LDFLAGS, f"-Wl,-T,{script}"]
    command += ["-o", str(out), *(str(source) for source in sources), "-lgcc"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise FlashAlgoError(f"building the QSPI flash algorithm failed:\n{result.stderr.strip()}")


def check_flm(path: Path) -> FlmInfo:
    """Read an FLM as a debugger does and check it is usable: FLM sections, entry points, FlashDevice, and
    only position-independent relocations in what is copied to the target. Raises FlashAlgoError."""
    path = Path(path)
    try:
        with path.open("rb") as stream:
            return _check_elf(path, ELFFile(stream))
    except (ELFError, OSError, struct.error) as error:
        raise FlashAlgoError(f"{path}: not a readable FLM ({error})") from None


def _check_elf(path: Path, elf: ELFFile) -> FlmInfo:
    if elf["e_machine"] != "EM_ARM":
        raise FlashAlgoError(f"{path}: not an ARM ELF ({elf['e_machine']})")
    sections = {section.name: section for section in elf.iter_sections()}
    for name in FLM_SECTIONS:
        if name not in sections or sections[name]["sh_type"] != "SHT_PROGBITS":
            raise FlashAlgoError(f"{path}: no {name} section of type PROGBITS (FLM layout)")
    code, data = sections["PrgCode"], sections["PrgData"]
    if code["sh_addr"] != 0:
        raise FlashAlgoError(f"{path}: PrgCode starts at {code['sh_addr']:#x}, not 0")
    if data["sh_addr"] < code["sh_size"]:
        raise FlashAlgoError(f"{path}: PrgData overlaps PrgCode")
    for section in elf.iter_sections():
        if section.name in (".got", ".got.plt") and section["sh_size"]:
            raise FlashAlgoError(f"{path}: has a GOT ({section.name}): its absolute addresses would be wrong in RAM")
        if section["sh_flags"] & SH_FLAGS.SHF_ALLOC and section["sh_size"] and section.name not in FLM_SECTIONS:
            raise FlashAlgoError(
                f"{path}: section {section.name} is outside PrgCode, PrgData and DevDscr, so a debugger would not "
                "load it (add it to flm.ld)"
            )
    for section in elf.iter_sections():
        if not isinstance(section, RelocationSection):
            continue
        target = elf.get_section(section["sh_info"])
        if target.name not in ("PrgCode", "PrgData"):
            continue
        symbols = elf.get_section(section["sh_link"])
        for relocation in section.iter_relocations():
            kind = _RELOCATION_NAMES.get(relocation["r_info_type"], str(relocation["r_info_type"]))
            if kind not in _RELOCATION_NAMES.values() or kind not in _RELATIVE_RELOCATIONS:
                symbol = symbols.get_symbol(relocation["r_info_sym"]).name or "?"
                got = "GOT" in kind or symbol == "_GLOBAL_OFFSET_TABLE_"
                what = "goes through the GOT, whose entries are absolute addresses" if got else "is an absolute address"
                raise FlashAlgoError(
                    f"{path}: not position independent: {kind} at {target.name}+{relocation['r_offset']:#x} "
                    f"(symbol {symbol}) {what}; the algorithm runs wherever the debugger copies it (no function "
                    "pointers, pointers in data, or non-static variables)"
                )
    symtab = sections.get(".symtab")
    if symtab is None:
        raise FlashAlgoError(f"{path}: no symbol table (the entry points are found by name)")
    symbols = {symbol.name: symbol for symbol in symtab.iter_symbols() if symbol.name}
    entry_points = {}
    for name in (*ENTRY_POINTS, *OPTIONAL_ENTRY_POINTS):
        symbol = symbols.get(name)
        if symbol is None or symbol["st_info"]["type"] != "STT_FUNC":
            if name in ENTRY_POINTS:
                raise FlashAlgoError(f"{path}: no function {name} (CMSIS flash algorithm entry point)")
            continue
        address = symbol["st_value"]
        if not address & 1 or address >= code["sh_size"]:
            raise FlashAlgoError(f"{path}: {name} at {address:#x} is not a Thumb function in PrgCode")
        entry_points[name] = address
    device = symbols.get("FlashDevice")
    if device is None or device["st_info"]["type"] != "STT_OBJECT":
        raise FlashAlgoError(f"{path}: no FlashDevice object (the device description)")
    descriptor = sections["DevDscr"]
    offset = device["st_value"] - descriptor["sh_addr"]
    blob = descriptor.data()
    if not 0 <= offset <= len(blob) - FLASH_DEVICE.size:
        raise FlashAlgoError(f"{path}: FlashDevice is not inside DevDscr")
    fields = FLASH_DEVICE.unpack_from(blob, offset)
    sectors = []
    position = offset + FLASH_DEVICE.size
    while True:
        size, start = FLASH_SECTOR.unpack_from(blob, position)
        position += FLASH_SECTOR.size
        if (size, start) == SECTOR_END:
            break
        sectors.append((start, size))
    info = FlmInfo(
        path=path,
        name=fields[1].split(b"\0", 1)[0].decode("ascii", "replace"),
        version=fields[0],
        device_type=fields[2],
        start=fields[3],
        size=fields[4],
        page_size=fields[5],
        erased_value=fields[7],
        program_timeout_ms=fields[8],
        erase_timeout_ms=fields[9],
        sectors=tuple(sectors),
        entry_points=entry_points,
        code_bytes=data["sh_addr"] + data["sh_size"],
    )
    if info.version != FLASH_DRV_VERS:
        raise FlashAlgoError(f"{path}: FlashDevice version {info.version:#06x}, debuggers expect {FLASH_DRV_VERS:#06x}")
    if not info.sectors or info.sectors[0][0] != 0 or not info.size or not info.page_size:
        raise FlashAlgoError(f"{path}: FlashDevice has no sector list starting at offset 0, or no size")
    return info
