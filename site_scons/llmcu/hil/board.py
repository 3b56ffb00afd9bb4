"""Bringing up a board of the hardware map: (acquire its labgrid place,) flash it through its probe, find and
open its console, and hand back a ``BoardDevice`` whose first command resets the board.

Flashing and resetting are llmcu.device.flashing's (pyOCD), the console capture llmcu.device.uart's. ``Programmer`` and
``LinkOpener`` are the seams where they plug in, and where tests put fakes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..core.errors import LlmcuError
from ..device import flashing
from ..device.probes import ProbeInfo, PyocdSessionFactory, SessionFactory, select_probe
from ..device.protocol import ByteSink, RunOutput
from ..platform import stm32h7
from ..platform.targets import Target
from .device import BoardDevice, ConsoleLink, DeviceError, DeviceInfo
from .firmware import FirmwareBuild
from .hwmap import BoardEntry
from .labgrid_backend import LabgridClient, LabgridPlace, connect

OPEN_TIMEOUT = 10.0  # seconds for the console to appear (a USB port re-enumerating after the flash)


@dataclass(frozen=True)
class FlashRequest:
    elf: Path  # the board's firmware
    probe: str  # pyOCD probe unique ID, or remote:HOST[:PORT] for a probe behind `pyocd server`
    target: Target  # its [pyocd] target type and [chip] identity
    board: str


class Programmer(Protocol):
    """Writes the firmware through the probe, and resets the board (the console is open by then)."""

    def flash(self, request: FlashRequest) -> None: ...
    def reset(self, request: FlashRequest) -> None: ...


class RemoteProbeFactory:
    """A llmcu.device.probes SessionFactory for a probe served by ``pyocd server`` on another machine (a labgrid
    exporter): pyOCD does not list remote probes, so the one named ``remote:HOST[:PORT]`` is the only one."""

    def __init__(self, spec: str) -> None:
        self.spec = spec

    def probes(self) -> list[ProbeInfo]:
        return [ProbeInfo(self.spec, "pyOCD probe server")]

    def open(self, probe: ProbeInfo, options: Mapping[str, object]) -> Any:
        from pyocd.core.session import Session  # type: ignore[import-not-found]
        from pyocd.probe.tcp_client_probe import TCPClientProbe  # type: ignore[import-not-found]

        session = Session(TCPClientProbe(self.spec.removeprefix("remote:")), options=dict(options))
        try:
            session.open()
        except BaseException:
            session.close()
            raise
        return session


class PyocdProgrammer:
    """Flashing through llmcu.device.flashing (pyOCD, read-back verified), resetting through a pyOCD session.
    ``flash_firmware`` and ``local_probes`` (the SessionFactory of this machine's probes) are the seams tests fake."""

    def __init__(
        self,
        flash_firmware: Callable[..., Any] = flashing.flash_firmware,
        local_probes: Callable[[], SessionFactory] = PyocdSessionFactory,
    ) -> None:
        self._flash_firmware = flash_firmware
        self._local_probes = local_probes

    def _factory(self, probe: str) -> SessionFactory | None:
        if probe.startswith("remote:"):
            return RemoteProbeFactory(probe)
        return None  # flash_firmware's own (the probes on this machine)

    def flash(self, request: FlashRequest) -> None:
        self._flash_firmware(
            request.elf,
            request.target,
            probe_uid=request.probe,
            reset=False,
            progress=False,
            session_factory=self._factory(request.probe),
        )

    def reset(self, request: FlashRequest) -> None:
        factory = self._factory(request.probe) or self._local_probes()
        try:
            probe = select_probe(factory.probes(), request.probe)
            session = factory.open(probe, {"target_override": request.target.pyocd_target})
        except LlmcuError:
            raise
        except Exception as error:
            raise DeviceError(f"could not connect to probe {request.probe} to reset the board: {error}") from None
        try:
            session.target.reset()
        except Exception as error:
            raise DeviceError(f"resetting the board through probe {request.probe} failed: {error}") from None
        finally:
            session.close()


class UartLink:
    """The board's console through llmcu.device.uart: each command is one ``capture_run`` on the port, which stays
    open between commands. The first one resets the board (``reset``) after draining stale bytes."""

    def __init__(self, url: str, baud: int, name: str, reset: Callable[[], None] | None) -> None:
        from ..device import uart

        self._uart = uart
        self.name = name
        self.handle = uart.open_port(url, baud=baud, open_timeout=OPEN_TIMEOUT)
        self._reset = reset

    def command(self, line: bytes, *, timeout: float,
                on_text: ByteSink | None = None, on_bytes: ByteSink | None = None) -> RunOutput:  # fmt: skip
        reset, self._reset = self._reset, None
        try:
            capture = self._uart.capture_run(
                self.handle, line, reset=reset, on_text=on_text, on_bytes=on_bytes, timeout=timeout
            )
        except LlmcuError as error:  # llmcu.device.uart's errors, or the reset's
            raise DeviceError(f"{self.name}: {error}") from None
        return capture.output

    def close(self) -> None:
        self.handle.close()


LinkOpener = Callable[[str, int, str, Callable[[], None] | None], ConsoleLink]  # url, baud, name, reset


def find_console(usb_ids: tuple[str, ...], probe: str, comports: Callable[[], Any] | None = None) -> str:
    """The board's console port: the one with the board's USB VID:PID and the probe's serial number (an
    ST-LINK's virtual COM port carries the probe's ID), or the only one with the board's VID:PID."""
    from ..device import uart

    if not usb_ids:
        raise DeviceError("the board file lists no console usb_ids: give `serial:` in the hardware map")
    try:
        return uart.find_port(usb_ids, serial_number=probe, comports=comports)
    except uart.PortNotFoundError:
        pass
    try:
        return uart.find_port(usb_ids, comports=comports)
    except LlmcuError as error:
        raise DeviceError(f"{error} (or give `serial:` in the hardware map)") from None


def open_board(
    entry: BoardEntry,
    build: FirmwareBuild,
    *,
    programmer: Programmer | None = None,
    open_link: LinkOpener = UartLink,
    find_port: Callable[[tuple[str, ...], str], str] = find_console,
    labgrid_connect: Callable[[str], LabgridClient] = connect,
) -> BoardDevice:
    """Flashes ``build`` onto the board of ``entry`` and returns it; a labgrid place is held until the device
    is closed. The board is reset when the first command is sent, with its console already open."""
    programmer = programmer or PyocdProgrammer()
    board_name = entry.board or build.board
    console = stm32h7.load_board(build.target.folder, board_name).console if board_name else None
    probe, url, baud = entry.id, entry.serial, entry.baud
    properties: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        if entry.labgrid is not None:
            place = LabgridPlace(entry.labgrid, labgrid_connect)
            resources = place.acquire()
            stack.callback(place.release)
            probe = probe or resources.probe
            url, baud = url or resources.serial_url, baud or resources.baud
            properties["labgrid_place"] = f"{resources.place}@{resources.coordinator}"
            if not probe:
                raise DeviceError(
                    f"labgrid place {resources.place} names no probe: tag it (labgrid-client -p {resources.place} "
                    f"set-tags pyocd_probe=remote:{resources.probe_host or 'HOST'}:5555, with `pyocd server "
                    "--allow-remote` running there) or give labgrid.probe in the hardware map"
                )
        if not url:
            url = find_port(console.usb_ids if console else (), probe)
        baud = baud or (console.baud if console else 115200)
        request = FlashRequest(build.elf, probe, build.target, board_name)
        programmer.flash(request)
        properties.update(probe=probe, serial=url, baud=str(baud))
        runs_on = board_name or entry.name
        detail = f"probe {probe}, console {url} at {baud} baud"
        info = DeviceInfo("board", build.target.name, runs_on, "cycles", detail, properties)
        name = f"{build.target.name} board {runs_on} ({url})"

        def link() -> ConsoleLink:
            return open_link(url, baud, name, lambda: programmer.reset(request))

        return BoardDevice(info, link, on_close=stack.pop_all().close)
    raise AssertionError("unreachable")  # pragma: no cover
