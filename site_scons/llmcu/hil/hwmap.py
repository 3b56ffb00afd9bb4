"""The hardware map: which boards are attached to this machine (or reachable in a labgrid farm).

A YAML list in the spirit of Zephyr twister's ``--hardware-map``; one entry per board::

    - platform: stm32h743                  # the llmcu target (``target:`` works too)
      board: nucleo-h743zi                 # targets/<platform>/boards/<board>.toml (default: the target's)
      id: "066DFF485550755187121723"       # the debug probe's unique ID (`pyocd list`): quote it
      serial: /dev/ttyACM0                 # device or pyserial URL (rfc2217://, socket://); default: found by
                                           # the board's USB VID:PID (usb_ids in the board file)
      baud: 115200                         # default: the board file's console baud
      connected: true                      # false keeps the entry out of the automatic choice
      runner: pyocd                        # how it is flashed (pyocd is the only runner)
      product: ST-LINK/V2-1                # free text, shown in reports
      power_meter: {type: ppk2, port: /dev/ttyACM1}   # for the hil_power fixture: ppk2, lpm01a or estimate
      labgrid: {coordinator: "lab.example:20408", place: nucleo-1}   # a remote board instead of id/serial

Every mistake is a HardwareMapError that names the file, the entry and the key.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import LlmcuError

RUNNERS = ("pyocd",)
LABGRID_DEFAULT_COORDINATOR = "127.0.0.1:20408"  # labgrid's own default (LG_COORDINATOR overrides it)
_KEYS = ("platform", "target", "board", "id", "serial", "baud", "connected", "runner", "product", "power_meter",
         "labgrid", "notes")  # fmt: skip
_LABGRID_KEYS = ("coordinator", "place", "serial", "probe")
_POWER_KEYS = ("type", "port", "channel")


class HardwareMapError(LlmcuError):
    """The hardware map file is missing, is not YAML, or an entry is wrong."""


@dataclass(frozen=True)
class LabgridSpec:
    """A board in a labgrid farm: the coordinator, the place, and optionally which of the place's resources
    to use (by name) when it has more than one serial port or debugger."""

    place: str
    coordinator: str = ""
    serial: str = ""  # resource name of the NetworkSerialPort (default: the only one, or one named "console")
    probe: str = ""  # pyOCD probe spec for the place (default: from the place's tags, see labgrid_backend)

    @property
    def address(self) -> str:
        return self.coordinator or os.environ.get("LG_COORDINATOR", "") or LABGRID_DEFAULT_COORDINATOR


@dataclass(frozen=True)
class MeterEntry:
    type: str
    port: str = ""
    channel: str = ""


@dataclass(frozen=True)
class BoardEntry:
    """One board of the hardware map."""

    platform: str  # llmcu target name
    board: str = ""  # board file name; "" = the target's default board
    id: str = ""  # probe unique ID
    serial: str = ""  # device path or pyserial URL; "" = find it by USB VID:PID
    baud: int = 0  # 0 = the board file's console baud
    connected: bool = True
    runner: str = "pyocd"
    product: str = ""
    power_meter: MeterEntry | None = None
    labgrid: LabgridSpec | None = None
    notes: str = ""
    index: int = 0  # position in the file, from 1, for messages
    source: str = ""  # the file it came from

    @property
    def name(self) -> str:
        """How reports name it: the board, or the platform when the entry leaves the board to the default."""
        return self.board or self.platform

    def where(self) -> str:
        return f"{self.source}: entry {self.index} ({self.platform})" if self.source else f"entry {self.index}"


@dataclass(frozen=True)
class HardwareMap:
    entries: tuple[BoardEntry, ...] = ()
    path: Path | None = None

    def for_platform(self, platform: str) -> list[BoardEntry]:
        return [entry for entry in self.entries if entry.platform == platform]

    @property
    def platforms(self) -> list[str]:
        return sorted({entry.platform for entry in self.entries})


def _string(value: object, where: str, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise HardwareMapError(f"{where}: `{key}` must be a string, got {value!r}")
    if not isinstance(value, str):
        raise HardwareMapError(
            f"{where}: `{key}` must be a string, got the number {value!r}: quote it (YAML reads unquoted digits as a "
            'number and drops leading zeros), e.g. id: "066DFF485550755187121723"'
        )
    if not value.strip():
        raise HardwareMapError(f"{where}: `{key}` is empty")
    return value.strip()


def _unknown(table: dict[str, Any], allowed: Iterable[str], where: str) -> None:
    unknown = sorted(set(map(str, table)) - set(allowed))
    if unknown:
        raise HardwareMapError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                               f"known keys: {', '.join(allowed)}")  # fmt: skip


def _labgrid(value: object, where: str) -> LabgridSpec:
    if isinstance(value, str):  # shorthand: the place name
        return LabgridSpec(place=_string(value, where, "labgrid"))
    if not isinstance(value, dict):
        raise HardwareMapError(f"{where}: `labgrid` must be a mapping with place (and coordinator), got {value!r}")
    _unknown(value, _LABGRID_KEYS, f"{where}: labgrid")
    if "place" not in value:
        raise HardwareMapError(f"{where}: labgrid needs `place` (the labgrid place that holds the board)")
    spec = {key: _string(value[key], where, f"labgrid.{key}") for key in _LABGRID_KEYS if key in value}
    return LabgridSpec(**spec)


def _power_meter(value: object, where: str) -> MeterEntry:
    if not isinstance(value, dict):
        raise HardwareMapError(f"{where}: `power_meter` must be a mapping with type (and port), got {value!r}")
    _unknown(value, _POWER_KEYS, f"{where}: power_meter")
    if "type" not in value:
        raise HardwareMapError(f"{where}: power_meter needs `type`")
    return MeterEntry(**{key: _string(value[key], where, f"power_meter.{key}") for key in _POWER_KEYS if key in value})


def parse_entry(raw: object, index: int, source: str, targets: Iterable[str] | None = None,
                boards: dict[str, list[str]] | None = None) -> BoardEntry:  # fmt: skip
    """One entry, checked. ``targets`` (the known target names) and ``boards`` (target -> board names) make
    unknown names an error; without them names are taken as they are."""
    where = f"{source}: entry {index}" if source else f"entry {index}"
    if not isinstance(raw, dict):
        raise HardwareMapError(f"{where}: must be a mapping (platform: ..., id: ..., serial: ...), got {raw!r}")
    if "platform" in raw and "target" in raw:
        raise HardwareMapError(f"{where}: give `platform` or `target`, not both")
    if "platform" not in raw and "target" not in raw:
        raise HardwareMapError(f"{where}: missing `platform` (the llmcu target, e.g. stm32h743)")
    platform = _string(raw.get("platform", raw.get("target")), where, "platform")
    where = f"{where} ({platform})"
    _unknown(raw, _KEYS, where)
    known_targets = sorted(targets) if targets is not None else None
    if known_targets is not None and platform not in known_targets:
        raise HardwareMapError(f"{where}: unknown platform {platform!r}; llmcu targets: {', '.join(known_targets)}")
    values: dict[str, Any] = {"platform": platform, "index": index, "source": source}
    for key in ("board", "id", "serial", "product", "notes"):
        if key in raw:
            values[key] = _string(raw[key], where, key)
    if boards is not None and "board" in values:
        known = boards.get(platform, [])
        if values["board"] not in known:
            listing = ", ".join(known) if known else "none"
            raise HardwareMapError(f"{where}: unknown board {values['board']!r} for {platform}; its boards: {listing}")
    if "baud" in raw:
        baud = raw["baud"]
        if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
            raise HardwareMapError(f"{where}: `baud` must be a positive whole number, got {baud!r}")
        values["baud"] = baud
    if "connected" in raw:
        if not isinstance(raw["connected"], bool):
            raise HardwareMapError(f"{where}: `connected` must be true or false, got {raw['connected']!r}")
        values["connected"] = raw["connected"]
    if "runner" in raw:
        runner = _string(raw["runner"], where, "runner")
        if runner not in RUNNERS:
            raise HardwareMapError(f"{where}: runner {runner!r} is not supported; llmcu flashes with: "
                                   f"{', '.join(RUNNERS)}")  # fmt: skip
        values["runner"] = runner
    if "power_meter" in raw:
        values["power_meter"] = _power_meter(raw["power_meter"], where)
    if "labgrid" in raw:
        values["labgrid"] = _labgrid(raw["labgrid"], where)
    if "id" not in values and "labgrid" not in values:
        raise HardwareMapError(
            f"{where}: needs `id` (the debug probe's unique ID, as `pyocd list` shows it) or `labgrid` "
            "(a place in a board farm)"
        )
    return BoardEntry(**values)


def parse_hardware_map(data: object, source: str = "", targets: Iterable[str] | None = None,
                       boards: dict[str, list[str]] | None = None) -> HardwareMap:  # fmt: skip
    """The entries of an already loaded YAML document (a list; an empty document is an empty map)."""
    if data is None:
        return HardwareMap((), Path(source) if source else None)
    if not isinstance(data, list):
        raise HardwareMapError(
            f"{source or 'hardware map'}: must be a YAML list of boards (- platform: ...), got a {type(data).__name__}"
        )
    target_list = list(targets) if targets is not None else None
    entries = tuple(parse_entry(raw, i, source, target_list, boards) for i, raw in enumerate(data, start=1))
    seen: dict[str, BoardEntry] = {}
    for entry in entries:
        if entry.id:
            other = seen.get(entry.id.lower())
            if other is not None:
                raise HardwareMapError(f"{entry.where()}: probe id {entry.id} is already used by entry {other.index}")
            seen[entry.id.lower()] = entry
    return HardwareMap(entries, Path(source) if source else None)


def load_hardware_map(path: Path, targets_dir: Path | None = None) -> HardwareMap:
    """Read and check a hardware map file. With ``targets_dir`` platforms and boards must exist there."""
    try:
        import yaml
    except ImportError:  # pragma: no cover - pyyaml is in requirements.txt
        raise HardwareMapError("reading a hardware map needs PyYAML: pip install pyyaml") from None
    path = Path(path)
    if not path.is_file():
        raise HardwareMapError(f"hardware map {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise HardwareMapError(f"{path}: not valid YAML: {error}") from None
    targets = boards = None
    if targets_dir is not None:
        folders = sorted(p.parent for p in Path(targets_dir).glob("*/target.toml"))
        targets = [folder.name for folder in folders]
        boards = {folder.name: sorted(b.stem for b in (folder / "boards").glob("*.toml")) for folder in folders}
    return parse_hardware_map(data, str(path), targets, boards)
