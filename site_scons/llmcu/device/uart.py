"""Capture a run from a board's console UART (or anything pyserial opens: a QEMU serial socket, a loop).

The sequence (runtime_c/README.md, "The output protocol", the firmware's command channel)::

    open the port          before the board is reset, so that no byte of the boot is lost
    drain stale bytes      what an earlier run or session left in the OS buffer (only when there is a reset)
    reset()                the caller's hook: the flashing module's pyOCD reset; tests pass a fake
    wait for READY         \\x05llmcu ready 1 target=... model=... quant=...
    send the command       llmcu.device.console.encode_command
    parse the run          llmcu.device.protocol.ProtocolParser, until the end marker

and it stops with a clear error (a :class:`CaptureError` carrying the partial :class:`Capture`) when no ready
line comes, the overall time runs out, the line goes SILENT (no byte for ``silence`` seconds during the run),
the port closes (a USB cable pulled, a socket peer gone) or the bytes stop following the protocol.

Garbage before the ready line (boot messages, line noise, a half line from before the reset) is skipped.

A board that resets in the middle of a run shows a new ready line (or, with no ready line, a new start
marker). The run so far is kept in :attr:`Capture.attempts`, marked incomplete with reason ``board_reset``
(``restarted`` for a bare start marker), and the capture goes on ONCE: after a ready line it sends the
command again, after a bare start marker it takes the new run as the answer. A second reset is a
:class:`BoardResetError` (``resend_on_reset=0`` makes the first one an error).

Without a reset hook the board may have printed its ready line long before the port was opened; after
``poke_after`` seconds without one, the capture sends one empty line, which a waiting firmware answers with
a fresh ready line (an empty command is ignored). A ready line that arrives after the command, before the
run's start marker, is then taken as the answer to that empty line and not as a reset.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import LlmcuError, ProtocolError
from .console import CommandParams, encode_command
from .protocol import ENQ, ETX, NAK, RS, STX, ByteSink, ProtocolParser, RunOutput, describe_failure, describe_fault

DEFAULT_BAUD = 115200
READY_TIMEOUT = 30.0  # seconds from the reset (or the open) to the ready line
SILENCE = 30.0  # seconds without a byte during a run: the board is stuck
TIMEOUT = 600.0  # seconds for the whole capture
POLL = 0.05  # seconds one read waits
TAIL = 200  # bytes of context in error messages
BROKEN_GRACE = 5.0  # seconds to wait for a ready line or a new run after bytes that break the protocol


class UartError(LlmcuError):
    """Finding, opening or reading a serial port failed."""


class PortNotFoundError(UartError):
    """No serial port with the board's USB VID:PID (or more than one)."""


class PortOpenError(UartError):
    """The port exists but could not be opened."""


class CaptureError(UartError):
    """The capture ended without a whole run; ``capture`` holds what arrived."""

    def __init__(self, message: str, capture: Capture) -> None:
        super().__init__(message)
        self.capture = capture


class ReadyTimeoutError(CaptureError):
    """The firmware printed no ready line in time."""


class SilenceError(CaptureError):
    """The UART went silent in the middle of a run."""


class CaptureTimeoutError(CaptureError):
    """The run did not end within the overall time."""


class PortClosedError(CaptureError):
    """The port closed (USB disconnected, socket peer gone) before the run ended."""


class BoardResetError(CaptureError):
    """The board reset in the middle of the run more often than the capture retries."""


class RunFailedError(CaptureError):
    """The firmware refused the command, faulted, or ended the run with an error."""


# ---- finding the port ----


@dataclass(frozen=True)
class PortInfo:
    device: str
    usb_id: str  # "0483:374b", "" for a port that is not USB
    serial_number: str
    description: str


def list_ports(comports: Callable[[], Iterable[Any]] | None = None) -> list[PortInfo]:
    """The serial ports of this machine (pyserial's ``serial.tools.list_ports.comports``)."""
    if comports is None:
        from serial.tools.list_ports import comports as system_comports

        comports = system_comports
    ports = []
    for port in comports():
        vid, pid = getattr(port, "vid", None), getattr(port, "pid", None)
        usb_id = f"{vid:04x}:{pid:04x}" if vid is not None and pid is not None else ""
        ports.append(PortInfo(port.device, usb_id, getattr(port, "serial_number", None) or "", port.description or ""))
    return ports


def find_port(
    usb_ids: Iterable[str], *, serial_number: str = "", comports: Callable[[], Iterable[Any]] | None = None
) -> str:
    """The device of the one port whose USB VID:PID is in ``usb_ids`` (and serial number, if given)."""
    wanted = {usb_id.lower() for usb_id in usb_ids}
    ports = list_ports(comports)
    matches = [p for p in ports if p.usb_id in wanted and (not serial_number or p.serial_number == serial_number)]
    if len(matches) == 1:
        return matches[0].device
    seen = ", ".join(f"{p.device} ({p.usb_id or 'not USB'}: {p.description})" for p in ports) or "none"
    if not matches:
        raise PortNotFoundError(
            f"no serial port with USB id {' or '.join(sorted(wanted))} (the board's console): is the board "
            f"plugged in? Ports seen: {seen}. Name one with port=/dev/ttyACM0 (or any pyserial URL)"
        )
    listing = ", ".join(f"{p.device} (serial {p.serial_number or '?'})" for p in matches)
    raise PortNotFoundError(f"more than one board's console is attached: {listing}; choose one with port=DEVICE")


def open_port(url: str, *, baud: int = DEFAULT_BAUD, open_timeout: float = 0.0, poll: float = POLL) -> Any:
    """Opens ``url`` (a device path or a pyserial URL: loop://, socket://HOST:PORT, rfc2217://HOST:PORT),
    retrying for ``open_timeout`` seconds (a USB port that re-enumerates after flashing, a QEMU that is
    still starting its serial socket)."""
    import serial

    deadline = time.monotonic() + open_timeout
    while True:
        try:
            return serial.serial_for_url(url, baudrate=baud, timeout=poll, write_timeout=5.0)
        except (serial.SerialException, OSError, ValueError) as error:
            if time.monotonic() >= deadline:
                raise PortOpenError(f"cannot open serial port {url}: {error}") from None
            time.sleep(0.05)


# ---- the capture ----


@dataclass
class Capture:
    """What a capture received: the run (``output``) and the runs a reset cut short (``attempts``)."""

    port: str
    output: RunOutput = field(default_factory=RunOutput)
    attempts: list[RunOutput] = field(default_factory=list)
    ready: dict[str, str] = field(default_factory=dict)
    reason: str = ""  # why the capture is incomplete: ready_timeout, silence, timeout, disconnected, ...
    received: int = 0  # bytes received after the drain
    drained: int = 0  # stale bytes dropped before the reset
    resent: int = 0  # commands sent again after a reset
    poked: bool = False
    tail: bytes = b""  # the last bytes received, for messages

    @property
    def complete(self) -> bool:
        return self.output.complete


def _ready_fields(line: bytes) -> dict[str, str] | None:
    """The fields of a ready line (it may start after noise), or None."""
    at = line.rfind(ENQ)
    if at < 0:
        return None
    words = line[at + 1 :].decode("utf-8", errors="replace").split()
    if words[:2] != ["llmcu", "ready"]:
        return None
    fields = {"version": words[2] if len(words) > 2 else ""}
    fields.update(word.split("=", 1) for word in words[3:] if "=" in word)
    return fields


class _Capturer:
    """The byte-level state machine: waiting for ready, then one run (with at most ``resets`` restarts)."""

    def __init__(
        self,
        capture: Capture,
        command: bytes,
        send: ByteSink,
        on_text: ByteSink | None,
        resets: int,
    ) -> None:
        self.capture = capture
        self.command = command
        self.send = send
        self.on_text = on_text
        self.resets = resets
        self.phase = "ready"  # ready -> run -> done
        self.rest = b""  # bytes received after the end of the run (a board's next ready line)
        self.line = bytearray()  # the ready phase's current line
        self.held = bytearray()  # a possible ready line in the middle of a run
        self.parser = ProtocolParser(on_text)
        self.starts = 0  # start markers seen by the current run's parser
        self.tolerate_ready = 0  # ready lines expected in answer to a poke
        self.broken = ""  # why the run's bytes stopped following the protocol
        self.broken_at = 0.0
        self.recovery = ProtocolParser()  # watches for an end line once the run's bytes are broken
        self.command_sent_at = 0.0

    @property
    def done(self) -> bool:
        return self.phase == "done"

    def feed(self, data: bytes) -> None:
        for at, value in enumerate(data):
            if self.phase == "ready":
                self._ready_byte(bytes((value,)))
            elif self.phase == "run":
                self._run_byte(bytes((value,)))
            if self.phase == "done":
                self.capture.tail = (self.capture.tail + data[: at + 1])[-TAIL:]
                self.rest = data[at + 1 :]
                return
        self.capture.tail = (self.capture.tail + data)[-TAIL:]

    # -- before the command --

    def _ready_byte(self, byte: bytes) -> None:
        if byte != b"\n":
            if len(self.line) < 4096:
                self.line += byte
            return
        line, self.line = bytes(self.line), bytearray()
        ready = _ready_fields(line)
        if ready is not None:
            self.capture.ready = ready
            self._send_command()
            return
        at = line.rfind(ETX)
        if at >= 0:
            try:
                end = ProtocolParser().feed(line[at:] + b"\n")
            except ProtocolError:  # noise that merely contains the end marker's byte: skipped like other noise
                return
            if end.status == "fault":  # a firmware that faults while booting never gets ready
                self.capture.output = end
                self.capture.reason = "fault"
                raise RunFailedError(
                    f"the firmware faulted before it was ready: {describe_fault(end.end)}", self.capture
                )

    def _send_command(self) -> None:
        self.phase = "run"
        self.parser = ProtocolParser(self.on_text)
        self.starts = 0
        self.command_sent_at = time.monotonic()
        self.send(self.command)

    # -- the run --

    def _run_byte(self, byte: bytes) -> None:
        if self.held:
            if byte in (STX, ETX, RS, NAK, ENQ) or len(self.held) > 256:
                released, self.held = bytes(self.held), bytearray()
                self._parse(released)  # not a ready line: noise, for the parser to judge
                if self.phase != "run":
                    return
            else:
                self.held += byte
                if byte == b"\n":
                    line, self.held = bytes(self.held), bytearray()
                    ready = _ready_fields(line)
                    if ready is None:
                        self._parse(line)
                    else:
                        self._ready_in_run(ready)
                return
        if byte == ENQ:  # the firmware never prints ENQ inside a run: a ready line, or noise
            self.held += byte
            return
        if byte == STX:
            if self.starts or self.broken:
                self._cut_short("restarted", "a new start marker without a ready line")
                self.parser = ProtocolParser(self.on_text)
                self.starts = 0
            self.starts += 1
        self._parse(byte)

    def _parse(self, data: bytes) -> None:
        if self.broken:  # after bytes that broke the protocol, only a ready line, a start or an end line count
            with contextlib.suppress(ProtocolError):
                self.recovery.feed(data)
            end = self.recovery.output
            if end.complete:  # e.g. a fault report after the noise: it ends the run that was cut
                output = self.parser.output
                output.status, output.reason, output.end, output.complete = end.status, end.reason, end.end, True
                self.capture.output = output
                self.phase = "done"
            return
        try:
            self.parser.feed(data)
        except ProtocolError as error:
            # Noise in the middle of the records: most likely a board resetting (its boot messages come before
            # the ready line). Wait a moment for the ready line or a new start marker before giving up.
            self.broken = str(error)
            self.broken_at = time.monotonic()
            self.recovery = ProtocolParser()
            return
        if self.parser.output.complete:
            self.capture.output = self.parser.output
            self.phase = "done"

    def _ready_in_run(self, ready: dict[str, str]) -> None:
        if not self.starts and self.tolerate_ready:
            self.tolerate_ready -= 1  # the answer to our empty line; the command is next in the firmware's queue
            return
        self.capture.ready = ready
        if ready.get("reset") == "watchdog":  # the firmware says why it booted (targets/cortex-m/firmware_main.c)
            self._cut_short("watchdog", "the board's watchdog reset it (its new ready line says reset=watchdog)")
        else:
            self._cut_short("board_reset", "the board reset (a new ready line)")
        self.capture.resent += 1
        self._send_command()

    def _cut_short(self, reason: str, what: str) -> None:
        self.broken = ""
        partial = self.parser.output
        partial.complete = False
        partial.reason = reason
        self.capture.attempts.append(partial)
        self.capture.output = partial
        if self.resets <= 0:
            self.capture.reason = reason
            again = f" (the command had been sent again {self.capture.resent} time(s))" if self.capture.resent else ""
            raise BoardResetError(
                f"{what} in the middle of the run, after {len(partial.tokens)} token records and "
                f"{len(partial.text)} bytes of text{again}",
                self.capture,
            )
        self.resets -= 1


def capture_run(
    port: Any,
    params: CommandParams | bytes,
    *,
    baud: int = DEFAULT_BAUD,
    reset: Callable[[], None] | None = None,
    on_text: ByteSink | None = None,
    on_bytes: ByteSink | None = None,
    ready_timeout: float = READY_TIMEOUT,
    silence: float = SILENCE,
    timeout: float = TIMEOUT,
    resend_on_reset: int = 1,
    drain: float = 0.2,
    poke_after: float | None = 2.0,
    open_timeout: float = 0.0,
) -> Capture:
    """Runs one generation on a firmware behind a serial port and returns what it printed.

    ``port`` is a device or pyserial URL (opened and closed here) or an open pyserial port (left open, its
    ``timeout`` set to the poll interval; bytes read past the run's end are kept for the next capture on it).
    ``params`` are the run's parameters (or an already encoded command line). ``reset`` is called once
    after the port is open and drained. ``on_bytes`` gets every byte received after the drain, as it
    arrives; ``on_text`` the generated text. Returns once the end marker (or a refusal) arrived, whatever the
    run's status: :func:`check_capture` turns a failed run into an error. Raises a :class:`CaptureError`
    (with the partial capture) when the run cannot be completed, see the module's documentation.
    """
    command = params if isinstance(params, bytes) else encode_command(params)
    owned = isinstance(port, str)
    handle = open_port(port, baud=baud, open_timeout=open_timeout) if owned else port
    name = port if owned else str(getattr(handle, "port", None) or getattr(handle, "name", "") or "port")
    capture = Capture(port=name)
    try:
        handle.timeout = POLL
        return _capture(handle, capture, command, reset, on_text, on_bytes, ready_timeout, silence, timeout,
                        resend_on_reset, drain, poke_after)  # fmt: skip
    finally:
        if owned:
            handle.close()


def _drain(handle: Any, seconds: float) -> int:
    """Drops what is waiting, then whatever keeps coming until the line is quiet for a moment."""
    import serial

    dropped = 0
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            chunk = handle.read(4096)
            if not chunk:
                break
            dropped += len(chunk)
        handle.reset_input_buffer()
    except serial.SerialException:
        pass  # a peer that is gone shows up at the first real read, with a proper message
    return dropped


# Bytes a capture read past the end of its run, by open port: the next capture on the same port starts with them
# (a board prints its next ready line right after the end line, often in the same read).
_LEFTOVER: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()


class ChunkReader:
    """Reads what has arrived without losing it to an error: pyserial's ``read(n)`` raises when the line
    closes before ``n`` bytes came and drops those it had (a socket peer that sends its last bytes and
    exits). This reads what is waiting, keeps it, and raises the error at the next call."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.error: Exception | None = None

    def read(self) -> bytes:
        import serial

        if self.error is not None:
            raise self.error
        data = bytearray(self.handle.read(1))  # waits up to the port's timeout
        try:
            while data and len(data) < 65536 and (waiting := self.handle.in_waiting):
                data += self.handle.read(min(waiting, 65536 - len(data)))
        except serial.SerialException as error:
            self.error = error
        return bytes(data)


def _capture(
    handle: Any,
    capture: Capture,
    command: bytes,
    reset: Callable[[], None] | None,
    on_text: ByteSink | None,
    on_bytes: ByteSink | None,
    ready_timeout: float,
    silence: float,
    timeout: float,
    resend_on_reset: int,
    drain: float,
    poke_after: float | None,
) -> Capture:
    import serial

    def send(data: bytes) -> None:
        try:
            handle.write(data)
            handle.flush()
        except serial.SerialException as error:
            capture.reason = "disconnected"
            raise PortClosedError(f"cannot write to {capture.port}: {error}", capture) from None

    pending = _LEFTOVER.pop(handle, b"")
    if reset is not None:
        pending = b""  # stale: the reset makes a new start
        if drain > 0:
            capture.drained = _drain(handle, drain)
        reset()
    machine = _Capturer(capture, command, send, on_text, resend_on_reset)
    reader = ChunkReader(handle)
    start = time.monotonic()
    last_byte = start
    if pending:  # what the previous capture on this port read past its run's end: the next ready line
        capture.received += len(pending)
        if on_bytes is not None:
            on_bytes(pending)
        machine.feed(pending)
    while not machine.done:
        now = time.monotonic()
        if now - start > timeout:
            capture.reason = "timeout"
            raise CaptureTimeoutError(
                f"the run on {capture.port} did not end within {timeout:g} s "
                f"({len(machine.parser.output.tokens)} token records so far; last bytes: {capture.tail!r})",
                _partial(machine),
            )
        if machine.phase == "ready":
            if now - start > ready_timeout:
                capture.reason = "ready_timeout"
                raise ReadyTimeoutError(
                    f"no ready line from the firmware on {capture.port} within {ready_timeout:g} s "
                    f"({capture.received} bytes received; last bytes: {capture.tail!r}); is it flashed with an "
                    "llmcu firmware, at the right baud rate, and is this its console?",
                    _partial(machine),
                )
            if reset is None and poke_after is not None and not capture.poked and now - start > poke_after:
                capture.poked = True  # the ready line may have gone out before the port was open
                machine.tolerate_ready = 1
                send(b"\n")
        elif machine.broken and now - machine.broken_at > min(silence, BROKEN_GRACE):
            capture.reason = "protocol_error"
            raise CaptureError(
                f"the output on {capture.port} stopped following the protocol ({machine.broken}) and no new run "
                f"started within {min(silence, BROKEN_GRACE):g} s (last bytes: {capture.tail!r})",
                _partial(machine),
            )
        elif now - max(last_byte, machine.command_sent_at) > silence:
            capture.reason = "silence"
            partial = _partial(machine)
            raise SilenceError(
                f"the UART on {capture.port} went silent: no byte for {silence:g} s in the middle of the run "
                f"({len(partial.output.tokens)} token records, {len(partial.output.text)} bytes of text so far; "
                f"last bytes: {capture.tail!r}); the board may have hung or faulted without a report",
                partial,
            )
        try:
            chunk = reader.read()
        except serial.SerialException as error:
            capture.reason = "disconnected"
            partial = _partial(machine)
            raise PortClosedError(
                f"{capture.port} closed in the middle of the "
                f"{'run' if machine.phase == 'run' else 'wait for the ready line'}: {error} "
                f"({len(partial.output.tokens)} token records received; last bytes: {capture.tail!r})",
                partial,
            ) from None
        if not chunk:
            continue
        last_byte = time.monotonic()
        capture.received += len(chunk)
        if on_bytes is not None:
            on_bytes(chunk)
        machine.feed(chunk)
    if machine.rest:
        with contextlib.suppress(TypeError):  # a port object that takes no weak reference keeps nothing
            _LEFTOVER[handle] = machine.rest
    return capture


def _partial(machine: _Capturer) -> Capture:
    """The capture as it stands, its current run marked incomplete."""
    capture = machine.capture
    if machine.phase == "run":
        capture.output = machine.parser.output
        capture.output.reason = capture.output.reason or capture.reason
    return capture


def check_capture(capture: Capture, elf: str = "") -> RunOutput:
    """The run's output if it ended well; otherwise a RunFailedError that says what the firmware reported."""
    output = capture.output
    where = f" (source line: arm-none-eabi-addr2line -e {elf} {output.end.get('pc', '')})" if elf else ""
    if output.status == "fault":
        raise RunFailedError(f"the firmware faulted: {describe_fault(output.end)}{where}", capture)
    if output.status == "rejected":
        detail = output.end.get("detail")
        raise RunFailedError(
            f"the firmware refused the command: {output.reason}" + (f" (at {detail!r})" if detail else ""), capture
        )
    if not output.complete:
        raise CaptureError(f"the run did not end ({capture.reason or 'no end marker'})", capture)
    if output.status != "ok":
        raise RunFailedError(f"the run failed: {describe_failure(output)}", capture)
    return output
