"""What a firmware ELF asks to be programmed: its load segments' bytes at their load addresses, by flash region
(the target's internal flash and its QSPI window), merged into contiguous chunks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ..platform.targets import MemoryRegion, Target, format_size
from .flasherrors import ImageError, ImageTooLargeError


@dataclass(frozen=True)
class Chunk:
    """Contiguous bytes to program."""

    address: int
    data: bytes

    @property
    def end(self) -> int:
        return self.address + len(self.data)


@dataclass(frozen=True)
class LoadImage:
    elf: Path
    internal: tuple[Chunk, ...]  # bytes for internal flash
    qspi: tuple[Chunk, ...]  # bytes for the QSPI flash


def flash_regions(target: Target) -> tuple[MemoryRegion, MemoryRegion]:
    """The target's internal flash and QSPI window, from its target.toml."""
    return target.region("flash"), target.region("qspi")


def merge_chunks(chunks: Iterable[Chunk]) -> tuple[Chunk, ...]:
    merged: list[Chunk] = []
    for chunk in sorted(chunks, key=lambda c: c.address):
        if merged and merged[-1].end == chunk.address:
            merged[-1] = Chunk(merged[-1].address, merged[-1].data + chunk.data)
        elif merged and merged[-1].end > chunk.address:
            raise ImageError(f"load segments overlap at {chunk.address:#010x}")
        else:
            merged.append(chunk)
    return tuple(merged)


def elf_path(image: Path, target: Target) -> Path:
    """``image`` itself, or ``firmware.elf`` in a build directory."""
    image = Path(image)
    path = image / "firmware.elf" if image.is_dir() else image
    if not path.is_file():
        raise ImageError(f"{path} does not exist: build the firmware first (scons target={target.name} ...)")
    return path


def load_image(image: Path, target: Target) -> LoadImage:
    """The bytes of a firmware ELF's load segments (at their load addresses), by ``target``'s flash regions."""
    path = elf_path(image, target)
    internal, qspi = flash_regions(target)
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
    firmware = LoadImage(path, merge_chunks(chunks[internal.name]), merge_chunks(chunks[qspi.name]))
    if not firmware.internal and not firmware.qspi:
        raise ImageError(f"{path} has no bytes to program (no loadable segment in flash)")
    return firmware
