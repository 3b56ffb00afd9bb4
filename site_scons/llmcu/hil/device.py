"""A device under test: one interface for a firmware on a board and on its QEMU twin.

A test gets a ``Device`` and calls ``run(params)`` (one generation, checked) or ``send(line)`` (any command
line, the answer unchecked). ``QemuDevice`` boots the twin once per call (the twin ends the emulation after a
run); ``BoardDevice`` is flashed and reset once and then serves every command over its console, as a board
does. Both give back the protocol's ``RunOutput`` (llmcu.device.protocol), so a test cannot tell them apart except
by ``info`` and the counter unit (instructions on the twin, cycles on the board).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..core.errors import LlmcuError
from ..device.console import CommandParams, encode_command
from ..device.protocol import ByteSink, RunOutput, describe_fault

RUN_TIMEOUT = 600.0  # seconds for one generation: stories260K's 256 tokens take ~4 s on the twin, <1 s on the H7


class DeviceError(LlmcuError):
    """The device did not answer, refused the command, faulted or failed the run."""


@dataclass(frozen=True)
class DeviceInfo:
    """What the tests run on, for reports: mode "board" or "qemu", the target under test and what stands in."""

    mode: str
    target: str
    runs_on: str  # the board's name, or the twin target (qemu-m7)
    unit: str  # the cost counter's unit: "cycles" (board), "instructions" (twin)
    detail: str = ""  # probe and serial port, or the ELF file
    properties: dict[str, str] = field(default_factory=dict)  # extra report properties (probe, serial, place)


class Device(Protocol):
    """What a HIL test uses."""

    info: DeviceInfo

    def run(self, params: CommandParams, *, timeout: float = RUN_TIMEOUT,
            on_text: ByteSink | None = None, on_bytes: ByteSink | None = None) -> RunOutput:  # fmt: skip
        """One generation; raises DeviceError (or llmcu.device.qemu's errors on the twin) unless it ended well.
        ``on_bytes`` gets every byte a board's console delivers, as it arrives (a run log's raw.bin)."""
        ...

    def send(self, line: bytes, *, timeout: float = 60.0) -> RunOutput:
        """Sends a raw command line and returns the parsed answer (a run, a refusal or a fault) unchecked."""
        ...

    def close(self) -> None: ...


def check_output(output: RunOutput, what: str) -> RunOutput:
    """The output of a good run, or the DeviceError that says what went wrong."""
    if output.status == "fault":
        raise DeviceError(f"{what} faulted: {describe_fault(output.end)}")
    if output.status == "rejected":
        detail = output.end.get("detail")
        raise DeviceError(f"{what} refused the command: {output.reason}" + (f" (at {detail!r})" if detail else ""))
    if not output.complete:
        raise DeviceError(f"{what} stopped before the end of the run ({len(output.tokens)} token records received)")
    if output.status != "ok":
        raise DeviceError(f"the run on {what} failed: {output.reason or output.status}")
    return output


# ---- the QEMU twin ----


class QemuDevice:
    """The twin of the target under test, in QEMU: a fresh emulation for every command."""

    def __init__(self, elf: Path, target: str, twin: str, *, machine: str = "") -> None:
        self.elf = Path(elf)
        self.machine = machine
        self.info = DeviceInfo("qemu", target, twin, "instructions", str(self.elf), {"elf": str(self.elf)})

    def run(self, params: CommandParams, *, timeout: float = RUN_TIMEOUT,
            on_text: ByteSink | None = None, on_bytes: ByteSink | None = None) -> RunOutput:  # fmt: skip
        """(``on_bytes`` is not called: the twin's run comes back parsed, and its log is written from that.)"""
        from ..device.qemu import run_firmware

        return run_firmware(self.elf, params, machine=self.machine, timeout=timeout, on_text=on_text)

    def send(self, line: bytes, *, timeout: float = 60.0) -> RunOutput:
        from ..device.qemu import QemuSession

        with QemuSession(self.elf, machine=self.machine) as session:
            session.wait_ready()
            return session.exchange(line, timeout=timeout)

    def close(self) -> None:
        pass


# ---- a board ----


class ConsoleLink(Protocol):
    """An open console to a firmware that serves commands (board.UartLink, over llmcu.device.uart)."""

    def command(self, line: bytes, *, timeout: float,
                on_text: ByteSink | None = None, on_bytes: ByteSink | None = None) -> RunOutput:  # fmt: skip
        """Waits for the ready line, sends ``line`` and returns the answer: a run, a refusal or a fault."""
        ...

    def close(self) -> None: ...


class BoardDevice:
    """A flashed board: ``open_link`` is called on the first command (the link resets the board then, so that
    no byte of the boot is lost), and the link stays open for every later command."""

    def __init__(
        self, info: DeviceInfo, open_link: Callable[[], ConsoleLink], *, on_close: Callable[[], None] | None = None
    ) -> None:
        self.info = info
        self._open_link = open_link
        self._link: ConsoleLink | None = None
        self._on_close = on_close

    def _console(self) -> ConsoleLink:
        if self._link is None:
            self._link = self._open_link()
        return self._link

    def send(self, line: bytes, *, timeout: float = 60.0) -> RunOutput:
        return self._console().command(line, timeout=timeout)

    def run(self, params: CommandParams, *, timeout: float = RUN_TIMEOUT,
            on_text: ByteSink | None = None, on_bytes: ByteSink | None = None) -> RunOutput:  # fmt: skip
        output = self._console().command(encode_command(params), timeout=timeout, on_text=on_text, on_bytes=on_bytes)
        return check_output(output, f"{self.info.target} board {self.info.runs_on}")

    def close(self) -> None:
        try:
            if self._link is not None:
                self._link.close()
                self._link = None
        finally:
            if self._on_close is not None:
                on_close, self._on_close = self._on_close, None
                on_close()
