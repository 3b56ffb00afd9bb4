"""Which device the HIL tests run on: a board of the hardware map, or the target's QEMU twin.

``--hil board`` insists on a board, ``--hil qemu`` on the twin, and ``--hil auto`` (the default) takes the
first board of the hardware map for the target whose probe is connected (or whose labgrid place is free),
and falls back to the twin otherwise, saying why. The choice is a pure function of the map, the probes seen
and the places' state, so it is tested with made-up probe lists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..core.errors import LlmcuError
from ..device.probes import PyocdSessionFactory
from .hwmap import BoardEntry, HardwareMap, LabgridSpec

MODES = ("auto", "board", "qemu")


class HilSelectionError(LlmcuError):
    """The requested mode cannot be had: --hil board without a usable board, or a target without a twin."""


@dataclass(frozen=True)
class ProbeScan:
    """The debug probes connected to this machine (unique IDs), or why none could be listed."""

    uids: frozenset[str] = frozenset()
    error: str = ""

    def has(self, uid: str) -> bool:
        return uid.lower() in {u.lower() for u in self.uids}


@dataclass(frozen=True)
class Selection:
    mode: str  # "board" or "qemu"
    target: str  # the target under test
    twin: str = ""  # the QEMU twin's target (qemu mode)
    entry: BoardEntry | None = None  # the board (board mode)
    reason: str = ""  # why this mode

    def line(self) -> str:
        """The report line, e.g. ``HIL: stm32h743 on QEMU twin qemu-m7 (no board in hardware map)``."""
        if self.mode == "qemu":
            return f"HIL: {self.target} on QEMU twin {self.twin} ({self.reason})"
        assert self.entry is not None
        return f"HIL: {self.target} on board {self.entry.name} ({self.reason})"

    def properties(self) -> dict[str, str]:
        """For JUnit XML: ``hil`` (board|qemu) and what it ran on."""
        values = {"hil": self.mode, "hil_target": self.target, "hil_reason": self.reason}
        if self.mode == "qemu":
            values["hil_device"] = self.twin
        elif self.entry is not None:
            values["hil_device"] = self.entry.name
            if self.entry.id:
                values["hil_probe"] = self.entry.id
            if self.entry.labgrid is not None:
                values["hil_labgrid_place"] = self.entry.labgrid.place
        return values


def board_reason(entry: BoardEntry) -> str:
    if entry.labgrid is not None:
        return f"labgrid place {entry.labgrid.place} at {entry.labgrid.address}"
    serial = entry.serial or "serial port found by USB id"
    return f"probe {entry.id}, {serial}"


def unavailable_reason(entry: BoardEntry, probes: ProbeScan, place_state: Callable[[LabgridSpec], str]) -> str:
    """ "" when the entry's board can be used now, else why not."""
    if not entry.connected:
        return f"{entry.name} is marked connected: false"
    if entry.labgrid is not None:
        return place_state(entry.labgrid)
    if probes.error:
        return f"no probe could be listed: {probes.error}"
    if not probes.has(entry.id):
        return f"probe {entry.id} of {entry.name} is not connected"
    return ""


def select(
    mode: str,
    target: str,
    twin: str,
    hardware_map: HardwareMap | None,
    probes: Callable[[], ProbeScan],
    place_state: Callable[[LabgridSpec], str],
) -> Selection:
    """The device for ``mode``. ``probes`` is called only when a local board entry needs checking, and
    ``place_state`` (returns "" for a usable place, else why not) only for labgrid entries."""
    if mode not in MODES:
        raise HilSelectionError(f"--hil {mode}: choose one of {', '.join(MODES)}")
    if mode == "qemu":
        if not twin:
            raise HilSelectionError(f"--hil qemu: target {target} has no QEMU twin (`twin =` in its target.toml)")
        return Selection("qemu", target, twin, reason="--hil qemu")
    entries = hardware_map.for_platform(target) if hardware_map is not None else []
    if hardware_map is None:
        why = "no hardware map given; pass --hardware-map PATH"
    elif not entries:
        why = "no board in hardware map"
        if hardware_map.platforms:
            why += f"; it has {', '.join(hardware_map.platforms)} only"
    else:
        reasons = []
        scan: ProbeScan | None = None
        for entry in entries:
            if entry.labgrid is None and entry.connected and scan is None:
                scan = probes()
            reason = unavailable_reason(entry, scan or ProbeScan(), place_state)
            if not reason:
                return Selection("board", target, twin, entry, board_reason(entry))
            reasons.append(reason)
        why = "; ".join(reasons)
    if mode == "board":
        raise HilSelectionError(f"--hil board: no usable {target} board: {why}")
    if not twin:
        raise HilSelectionError(f"--hil auto: no usable {target} board ({why}), and {target} has no QEMU twin")
    return Selection("qemu", target, twin, reason=why)


def scan_probes() -> ProbeScan:
    """The probes pyOCD sees (llmcu.device.probes), or why it could not look."""
    try:
        found = PyocdSessionFactory().probes()
    except ImportError:
        return ProbeScan(error="pyOCD is not installed (pip install pyocd)")
    except Exception as error:  # a USB or driver problem: report it, fall back to the twin
        return ProbeScan(error=f"pyOCD could not list the probes: {error}")
    return ProbeScan(frozenset(probe.uid for probe in found))
