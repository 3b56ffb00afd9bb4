"""Debug probes and pyOCD sessions: which probes are attached, choosing one (probe=UID), and opening a session on
the chip behind it. The session factory is the seam tests replace (tests/support/flash_fakes.py); everything else is
pyOCD's own API."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .flasherrors import ConnectError, FlashError, NoProbeError, ProbeLostError, ProbeSelectionError, WrongTargetError


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
            close_session(session)
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


def pyocd_exceptions() -> Any:
    try:
        from pyocd.core import exceptions
    except ImportError:
        raise FlashError(
            "pyOCD is not installed: `python3 -m pip install -r requirements.txt` (or run tools/setup.sh)"
        ) from None
    return exceptions


def close_session(session: Any) -> None:
    """Close a session whatever state its probe is in (a probe that vanished fails to close)."""
    if session is None:
        return
    with contextlib.suppress(Exception):  # the probe may be gone; nothing else can be done with it
        session.close()


def open_session(
    factory: SessionFactory, probe: ProbeInfo, target_type: str, part: str, options: Mapping[str, object] | None
) -> Any:
    """A session on the chip behind ``probe`` as pyOCD target ``target_type`` (``part``: the chip's name, for
    errors), with the settings flashing needs: no automatic unlock, no cached reads, sector erase."""
    exceptions = pyocd_exceptions()
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
    except AssertionError as error:  # pyOCD's STM32H7 connect sequence asserts the DEV_ID it expects
        if "DEV_ID" in str(error):
            raise WrongTargetError(
                f"the chip behind probe {probe.uid} is not an {part} ({error}); connect the probe to the "
                f"{part} board, or choose its probe with probe=UID"
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
