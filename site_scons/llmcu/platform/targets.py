"""Targets are data: ``targets/<name>/target.toml`` plus the smallest board layer in C.

The build logic is generic; everything that differs between targets (compiler, flags, memory map, board
sources, how to run the result) is read from the target's file here and checked, so that a typo is an error
that says where it is rather than a compiler failure later. The schema is documented in targets/README.md.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import OptionError
from ..core.fileio import read_toml

KINDS = ("hosted", "baremetal", "linux")
# The longest prompt text (bytes) the runtime's encoder takes, by kind (runtime_c/llmcu.h, LLMCU_PROMPT_MAX_BYTES): its
# working buffer holds a token per byte before merging, 4 bytes each. Firmware gets prompts only as a console line
# (CONSOLE_LINE_MAX); hosted and Linux programs also from the command line, where RAM is no concern.
PROMPT_MAX_BYTES = {"baremetal": 1024, "hosted": 16384, "linux": 16384}
RUN_METHODS = ("exec", "qemu-system", "qemu-user", "pyocd", "ssh")
REGION_KINDS = ("ram", "flash", "xip")
WATCHDOG_KINDS = ("stm32-iwdg", "cmsdk")

# Flags every target gets: the numeric contract (runtime_c/README.md) needs plain IEEE float32 arithmetic
# in source order, so no FMA contraction and no fast-math.
CONTRACT_CFLAGS = ("-std=c99", "-ffp-contract=off", "-fno-fast-math")
WARNING_CFLAGS = ("-Wall", "-Wextra", "-Wshadow", "-Wdouble-promotion")


def parse_size(value: int | str, where: str) -> int:
    """``65536``, ``"64K"``, ``"2M"`` or ``"0x10000"`` as a byte count."""
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(0x[0-9a-fA-F]+|\d+)\s*([KMG]?)i?B?\s*", str(value))
    if not match:
        raise OptionError(f"{where}: {value!r} is not a size (e.g. 65536, 64K, 2M)")
    digits = match.group(1)
    number = int(digits, 16) if digits.startswith("0x") else int(digits)  # int("010", 0) would refuse "010"
    return number * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[match.group(2)]


def format_size(size: int) -> str:
    for unit, scale in (("M", 1 << 20), ("K", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return str(size)


@dataclass(frozen=True)
class MemoryRegion:
    """One region of a target's memory map."""

    name: str
    origin: int
    size: int
    kind: str  # ram | flash (internal, execute in place) | xip (external flash, memory-mapped)
    speed: int  # 1 = fastest
    retained: bool  # survives reset
    external: bool  # exists only on boards that declare it

    @property
    def end(self) -> int:
        return self.origin + self.size

    @property
    def volatile(self) -> bool:
        return self.kind == "ram"

    def contains(self, address: int) -> bool:
        return self.origin <= address < self.end


@dataclass(frozen=True)
class RunSpec:
    """[run]: how `run` runs a build of the target."""

    method: str  # RUN_METHODS
    counter_unit: str  # what the end line's counters count: ns, cycles, instructions
    machine: str  # qemu-system: the machine (-M), e.g. mps2-an500; "" otherwise
    qemu: str  # Linux targets, hil=qemu: the qemu-user program; "" otherwise
    qemu_cpu: str  # ... and its -cpu


@dataclass(frozen=True)
class ChipIdentity:
    """[chip]: what flashing reads through the probe to be sure of the part before it writes (a reference
    manual's facts: the ID code register and the readout protection level in the option bytes)."""

    name: str  # the part family, e.g. STM32H743
    idcode_address: int  # the register holding DEV_ID (STM32: DBGMCU_IDC), bits 11:0; the revision in 31:16
    dev_ids: tuple[int, ...]  # the DEV_IDs of parts this target's firmware runs on
    revisions: tuple[tuple[int, str], ...]  # revision ID -> the name the datasheets use (Y, V, ...)
    flash_size_address: int  # 16 bits: the internal flash in KB
    rdp_address: int  # the option byte register holding the readout protection level, bits 15:8
    rdp_level0: int  # its value for level 0 (no protection); the level 2 value below, anything else is level 1
    rdp_level2: int


@dataclass(frozen=True)
class LinuxSpec:
    """[linux]: a Linux board's memory and where `run` puts its files."""

    weights_file_above: int  # weights_file=auto: weights + tokenizer above this many bytes go to model.bin
    remote_dir: str  # where `run board=user@host` puts its files
    ram: int  # the board's RAM in bytes (0: not checked)
    os_reserve: int  # what the kernel and the BSP's services keep of it


@dataclass(frozen=True)
class WatchdogSpec:
    """[watchdog]: the target's watchdog timer."""

    kind: str  # stm32-iwdg | cmsdk
    clock_hz: float  # the clock it counts


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    kind: str
    folder: Path
    cc: str
    cflags: tuple[str, ...]
    ldflags: tuple[str, ...]
    libs: tuple[str, ...]
    board_sources: tuple[Path, ...]
    run: RunSpec
    cpu_flags: tuple[str, ...]
    clock_hz: int  # [cpu] clock_hz, 0 when unknown
    threads: int  # [cpu] threads: the threads= option's default on hosted and Linux targets
    toolchain_arch: str  # [toolchain] arch: what `cc -dumpmachine` must start with ("": the cc's prefix)
    memory: tuple[MemoryRegion, ...]
    default_board: str
    twin: str  # the target that stands in for this one with hil=qemu
    twin_of: str  # the target this one is the twin of
    kernel_set: str  # optimised kernels in runtime_c/kernels/<kernel_set>/, replacing reference files
    # Appended for code off the per-token path (board layer, console, tokenizer, sampler, output): -Os where
    # flash is what runs out, while the kernels and the forward pass keep cflags' -O2.
    cold_cflags: tuple[str, ...]
    # A twin's RAM that stands in for a board's external memories: (origin, size), (0, 0) when it has none.
    external_window: tuple[int, int]
    pyocd_target: str  # [pyocd] target_type: pyOCD's name for the chip; "" when pyOCD does not flash it
    chip: ChipIdentity | None  # [chip]
    linux: LinuxSpec | None  # [linux], Linux targets only
    watchdog: WatchdogSpec | None  # [watchdog]

    @property
    def all_cflags(self) -> tuple[str, ...]:
        return (*CONTRACT_CFLAGS, *WARNING_CFLAGS, *self.cpu_flags, *self.cflags)

    @property
    def qemu_target(self) -> str:
        """The target that runs this one's firmware in QEMU: its twin, or itself when it is a QEMU target ("" when
        there is none)."""
        return self.name if self.run.method == "qemu-system" else self.twin

    @property
    def prompt_max_bytes(self) -> int:
        return PROMPT_MAX_BYTES[self.kind]

    @property
    def tool_prefix(self) -> str:
        """``arm-none-eabi-`` for ``arm-none-eabi-gcc``: where objcopy and size come from."""
        return self.cc[: -len("gcc")] if self.cc.endswith("gcc") else ""

    def region(self, name: str) -> MemoryRegion:
        for region in self.memory:
            if region.name == name:
                return region
        known = ", ".join(region.name for region in self.memory) or "none"
        raise OptionError(f"target {self.name} has no memory region {name!r}; its regions: {known}")


def _require(table: dict, key: str, where: str, kind: type | tuple[type, ...]) -> object:
    if key not in table:
        raise OptionError(f"{where}: missing `{key}`")
    value = table[key]
    if not isinstance(value, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        raise OptionError(f"{where}: `{key}` must be a {' or '.join(k.__name__ for k in kinds)}, got {value!r}")
    return value


def _table(table: dict, key: str, where: str) -> dict:
    """An optional [table]: absent is empty, anything but a table is an error (not an AttributeError later)."""
    value = table.get(key, {})
    if not isinstance(value, dict):
        raise OptionError(f"{where}: `{key}` must be a [{key}] table, got {value!r}")
    return value


def _optional(table: dict, key: str, where: str, kind: type | tuple[type, ...], default: Any) -> Any:
    """An optional value of one type (bool is not accepted for int, although Python says it is one)."""
    value = table.get(key, default)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (int in kinds and isinstance(value, bool)):
        raise OptionError(f"{where}: `{key}` must be a {' or '.join(k.__name__ for k in kinds)}, got {value!r}")
    return value


def _strings(table: dict, key: str, where: str) -> tuple[str, ...]:
    values = table.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise OptionError(f"{where}: `{key}` must be a list of strings")
    return tuple(values)


def _memory(entries: object, where: str) -> tuple[MemoryRegion, ...]:
    if not isinstance(entries, list):
        raise OptionError(f"{where}: `memory` must be a list of [[memory]] tables")
    regions: list[MemoryRegion] = []
    for index, entry in enumerate(entries):
        here = f"{where} [[memory]] #{index + 1}"
        if not isinstance(entry, dict):
            raise OptionError(f"{here}: must be a [[memory]] table, got {entry!r}")
        name = _require(entry, "name", here, str)
        kind = entry.get("kind", "ram")
        if kind not in REGION_KINDS:
            raise OptionError(f"{here} ({name}): kind {kind!r} is not one of {', '.join(REGION_KINDS)}")
        origin = int(_require(entry, "origin", here, int))
        size = parse_size(_require(entry, "size", here, (int, str)), here)
        if not 0 <= origin < 1 << 64 or not 0 < size <= 1 << 64:
            raise OptionError(f"{here} ({name}): origin {origin:#x} and size {size} are not a memory region")
        region = MemoryRegion(
            name=name,
            origin=origin,
            size=size,
            kind=kind,
            speed=_optional(entry, "speed", here, int, 3),
            retained=_optional(entry, "retained", here, bool, kind != "ram"),
            external=_optional(entry, "external", here, bool, False),
        )
        for other in regions:
            if other.name == region.name:
                raise OptionError(f"{here}: region {name!r} is declared twice")
            if region.origin < other.end and other.origin < region.end:
                raise OptionError(f"{here}: region {name!r} overlaps {other.name!r}")
        regions.append(region)
    return tuple(regions)


def _run_spec(run: dict, where: str) -> RunSpec:
    method = _optional(run, "method", where, str, "exec")
    if method not in RUN_METHODS:
        raise OptionError(f"{where}: method {method!r} is not one of {', '.join(RUN_METHODS)}")
    machine = _optional(run, "machine", where, str, "")
    if method == "qemu-system" and not machine:
        raise OptionError(f"{where}: method qemu-system needs `machine` (QEMU's -M, e.g. mps2-an500)")
    return RunSpec(
        method=method,
        counter_unit=_optional(run, "counter_unit", where, str, "ns"),
        machine=machine,
        qemu=_optional(run, "qemu", where, str, ""),
        qemu_cpu=_optional(run, "qemu_cpu", where, str, "max"),
    )


def _address(table: dict, key: str, where: str) -> int:
    value = _require(table, key, where, int)
    if not 0 <= value < 1 << 32:
        raise OptionError(f"{where}: `{key}` = {value:#x} is not a 32-bit address")
    return value


def _chip(table: dict, where: str) -> ChipIdentity | None:
    if not table:
        return None
    dev_ids = table.get("dev_ids")
    if not isinstance(dev_ids, list) or not dev_ids or not all(isinstance(v, int) for v in dev_ids):
        raise OptionError(f"{where}: `dev_ids` must be a list of DEV_ID numbers, e.g. [0x450]")
    revisions = _table(table, "revisions", where)
    try:
        revision_names = tuple(sorted((int(key, 0), str(name)) for key, name in revisions.items()))
    except ValueError:
        raise OptionError(f'{where}: `revisions` keys must be revision IDs, e.g. "0x1003" = "Y"') from None
    return ChipIdentity(
        name=_require(table, "name", where, str),
        idcode_address=_address(table, "idcode_address", where),
        dev_ids=tuple(dev_ids),
        revisions=revision_names,
        flash_size_address=_address(table, "flash_size_address", where),
        rdp_address=_address(table, "rdp_address", where),
        rdp_level0=_require(table, "rdp_level0", where, int),
        rdp_level2=_require(table, "rdp_level2", where, int),
    )


def _optional_size(table: dict, key: str, where: str, default: int | str) -> int:
    return parse_size(_optional(table, key, where, (int, str), default), f"{where} {key}")


def _linux(table: dict, where: str) -> LinuxSpec:
    return LinuxSpec(
        weights_file_above=_optional_size(table, "weights_file_above", where, "8M"),
        remote_dir=_optional(table, "remote_dir", where, str, "/tmp"),
        ram=_optional_size(table, "ram", where, 0),
        os_reserve=_optional_size(table, "os_reserve", where, 0),
    )


def _watchdog(table: dict, where: str) -> WatchdogSpec | None:
    if not table:
        return None
    kind = _require(table, "kind", where, str)
    if kind not in WATCHDOG_KINDS:
        raise OptionError(f"{where}: kind {kind!r} is not one of {', '.join(WATCHDOG_KINDS)}")
    clock_hz = _require(table, "clock_hz", where, (int, float))
    if isinstance(clock_hz, bool) or clock_hz <= 0:
        raise OptionError(f"{where}: clock_hz must be a positive number")
    return WatchdogSpec(kind, float(clock_hz))


def load_target(name: str, targets_dir: Path) -> Target:
    """Read and check ``targets/<name>/target.toml``."""
    path = targets_dir / name / "target.toml"
    if not path.is_file():
        known = sorted(p.parent.name for p in targets_dir.glob("*/target.toml"))
        raise OptionError(f"unknown target {name!r}; known targets: {', '.join(known)}")
    raw = read_toml(path)
    where = str(path)
    kind = _require(raw, "kind", where, str)
    if kind not in KINDS:
        raise OptionError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    toolchain = _require(raw, "toolchain", where, dict)
    flags = _table(raw, "flags", where)
    board = _table(raw, "board", where)
    run = _table(raw, "run", where)
    cpu = _table(raw, "cpu", where)
    for key in ("name", "description", "default_board", "twin", "twin_of", "kernels"):
        _optional(raw, key, where, str, "")
    _optional(toolchain, "cc", f"{where} [toolchain]", str, "gcc")
    clock_hz = _optional(cpu, "clock_hz", f"{where} [cpu]", int, 0)
    run_spec = _run_spec(run, f"{where} [run]")
    sources = tuple(path.parent / source for source in _strings(board, "sources", f"{where} [board]"))
    for source in sources:
        if not source.is_file():
            raise OptionError(f"{where}: board source {source} does not exist")
    memory = _memory(raw.get("memory", []), where)
    window = _table(raw, "external_window", where)
    external_window = (0, 0)
    if window:
        here = f"{where} [external_window]"
        external_window = (
            int(_require(window, "origin", here, int)),
            parse_size(_require(window, "size", here, (int, str)), here),
        )
    if kind == "linux" and not run_spec.qemu:
        raise OptionError(f"{where} [run]: a Linux target needs `qemu` (the qemu-user program hil=qemu runs it under)")
    if kind == "baremetal" and not any(region.kind == "flash" for region in memory):
        raise OptionError(f"{where}: a baremetal target needs a [[memory]] region of kind 'flash' to boot from")
    cc = os.environ.get("CC") if kind == "hosted" and os.environ.get("CC") else toolchain.get("cc", "gcc")
    return Target(
        name=_require(raw, "name", where, str),
        description=raw.get("description", ""),
        kind=kind,
        folder=path.parent,
        cc=cc,
        cflags=_strings(flags, "cflags", f"{where} [flags]"),
        ldflags=_strings(flags, "ldflags", f"{where} [flags]"),
        libs=_strings(flags, "libs", f"{where} [flags]"),
        cold_cflags=_strings(flags, "cold_cflags", f"{where} [flags]"),
        board_sources=sources,
        run=run_spec,
        cpu_flags=_strings(cpu, "flags", f"{where} [cpu]"),
        clock_hz=clock_hz,
        threads=_optional(cpu, "threads", f"{where} [cpu]", int, 1),
        toolchain_arch=_optional(toolchain, "arch", f"{where} [toolchain]", str, ""),
        memory=memory,
        default_board=raw.get("default_board", ""),
        twin=raw.get("twin", ""),
        twin_of=raw.get("twin_of", ""),
        kernel_set=raw.get("kernels", ""),
        external_window=external_window,
        pyocd_target=_optional(_table(raw, "pyocd", where), "target_type", f"{where} [pyocd]", str, ""),
        chip=_chip(_table(raw, "chip", where), f"{where} [chip]"),
        linux=_linux(_table(raw, "linux", where), f"{where} [linux]") if kind == "linux" else None,
        watchdog=_watchdog(_table(raw, "watchdog", where), f"{where} [watchdog]"),
    )


def targets_by_kind(targets_dir: Path) -> dict[str, list[str]]:
    """Every target's name under its kind (what an option that applies to some kinds names in its error)."""
    out: dict[str, list[str]] = {}
    for path in sorted(targets_dir.glob("*/target.toml")):
        kind = read_toml(path).get("kind", "")
        out.setdefault(str(kind), []).append(path.parent.name)
    return out
