"""`scons monitor`: listen to a firmware that is already running, without flashing or resetting it.

The port is opened and only read (nothing is sent, so a board in the middle of a run goes on undisturbed).
The protocol is decoded into lines a person reads::

    [ready] target=stm32h743 model=260k quant=q8 reset=power_on clock_hz=480000000 rev=V
    [run] target=stm32h743 model=260k quant=q8 unit=cycles clock_hz=480000000
    Once upon a time, ...                         the text, as it arrives
    [timing] 64 tokens: 2.81 ms/token (min 2.10, max 3.05), 356.0 tok/s
    [end] ok

With ``raw=1`` the bytes are shown as they arrive instead (control bytes escaped). When the port goes away
(a board unplugged, a socket peer gone) the monitor says so and opens it again as soon as it is back; the
log folder ``<log_dir>/<UTC time>-monitor-<name>/`` (``raw.bin``: every byte; ``monitor.txt``: what was shown)
keeps going across reconnections.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from ..core import interrupts
from ..core.errors import LlmcuError, ProtocolError
from . import uart
from .protocol import ProtocolParser, RunOutput, describe_fault
from .runlog import new_log_folder, safe_name
from .runs import board_port

RECONNECT_WAIT = 0.5  # seconds between attempts to open a port that is gone


def escape(data: bytes) -> str:
    """Bytes for a terminal: printable ASCII and newlines as they are, anything else as \\xNN."""
    return "".join(chr(byte) if 0x20 <= byte < 0x7F or byte == 0x0A else f"\\x{byte:02x}" for byte in data)


class Decoder:
    """Turns a stream of protocol bytes into readable output, run after run; ``write`` gets the text."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write
        self.parser = self._new_parser()
        self.runs = 0
        self.at_line_start = True

    def _new_parser(self) -> ProtocolParser:
        return ProtocolParser(self._text)

    def _text(self, piece: bytes) -> None:
        text = piece.decode("utf-8", errors="replace")
        self.write(text)
        self.at_line_start = text.endswith("\n")

    def _line(self, text: str) -> None:
        if not self.at_line_start:
            self.write("\n")
        self.write(text + "\n")
        self.at_line_start = True

    def feed(self, data: bytes) -> None:
        for value in data:
            output = self.parser.output
            seen_ready, had_header, had_summary = output.ready, bool(output.header), bool(output.summary)
            try:
                self.parser.feed(bytes((value,)))
            except ProtocolError as error:
                self._line(f"[noise] {error}")
                self.parser = self._new_parser()
                continue
            output = self.parser.output
            if output.ready and output.ready is not seen_ready:
                self._line("[ready] " + " ".join(f"{k}={v}" for k, v in output.ready.items() if k != "version"))
            if output.header and not had_header:
                self._line("[run] " + " ".join(f"{k}={v}" for k, v in output.header.items()))
            if output.summary and not had_summary:
                self._line(timing_line(output))
            if output.complete:
                self._line(end_line(output))
                self.runs += 1
                self.parser = self._new_parser()


def timing_line(output: RunOutput) -> str:
    """The per-token timing of a run from its records: ms per token where the clock is known, else the counter."""
    unit = output.header.get("unit", "")
    try:
        hz = float(output.header.get("clock_hz", "0") or 0)
    except ValueError:
        hz = 0.0
    costs = [record.cost for record in output.tokens]
    if not costs:
        return "[timing] no token records"
    scale, shown = (1.0, unit)
    if unit == "ns":
        scale, shown = 1e-6, "ms"
    elif hz > 0:
        scale, shown = 1e3 / hz, "ms"
    mean = statistics.fmean(costs) * scale
    number = "{:,.3f}" if shown == "ms" else "{:,.0f}"  # ms to the microsecond; counts as whole numbers
    low, middle, high = (number.format(value * scale) for value in (min(costs), statistics.median(costs), max(costs)))
    rate = f", {1e3 / mean:,.1f} tok/s" if shown == "ms" and mean > 0 else ""
    spread = f"min {low}, median {middle}, max {high}"
    return f"[timing] {len(costs)} tokens: {number.format(mean)} {shown}/token ({spread}){rate}"


def end_line(output: RunOutput) -> str:
    if output.status == "fault":
        return f"[fault] {describe_fault(output.end)}"
    if output.status == "rejected":
        detail = output.end.get("detail")
        return f"[refused] {output.reason}" + (f" (at {detail!r})" if detail else "")
    return f"[end] {output.status}" + (f" ({output.reason})" if output.reason else "")


class MonitorLog:
    """The monitor's log folder: raw.bin (every byte) and monitor.txt (what was shown), both written through."""

    def __init__(self, root: Path, name: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        try:
            path = self.path = new_log_folder(Path(root), f"{stamp}-monitor-{safe_name(name)}")
            self.raw = (path / "raw.bin").open("wb", buffering=0)
            self.shown = (path / "monitor.txt").open("w", encoding="utf-8", buffering=1)
        except OSError as error:
            raise LlmcuError(f"cannot create the monitor log under {root}: {error}; choose another log_dir=") from None

    def close(self) -> None:
        self.raw.close()
        self.shown.close()


def monitor(
    port: str,
    log_dir: Path,
    *,
    name: str = "",
    baud: int = uart.DEFAULT_BAUD,
    raw: bool = False,
    out: TextIO | None = None,
    duration: float | None = None,
    reconnect_wait: float = RECONNECT_WAIT,
    opener: Callable[[str], Any] | None = None,
) -> MonitorLog:
    """Reads ``port`` until Ctrl-C (or ``duration`` seconds), showing and logging what arrives, reopening the
    port whenever it goes away. Returns the log."""
    import serial

    stream = out or sys.stdout
    log = MonitorLog(log_dir, name or port)

    def show(text: str) -> None:
        stream.write(text)
        stream.flush()
        log.shown.write(text)

    def say(text: str) -> None:
        show(f"\n[llmcu] {text}\n" if not decoder.at_line_start else f"[llmcu] {text}\n")
        decoder.at_line_start = True

    decoder = Decoder(show)
    open_port = opener or (lambda url: uart.open_port(url, baud=baud))
    deadline = None if duration is None else time.monotonic() + duration
    handle = None
    reader: uart.ChunkReader | None = None  # keeps what arrived before a disconnection (pyserial drops it)
    waiting_since: float | None = None
    say(f"monitoring {port}{' (raw bytes)' if raw else ''}; Ctrl-C to stop; log: {log.path}")
    try:
        while deadline is None or time.monotonic() < deadline:
            if handle is None:
                try:
                    handle = open_port(port)
                    handle.timeout = uart.POLL
                    reader = uart.ChunkReader(handle)
                except LlmcuError as error:
                    if waiting_since is None:
                        waiting_since = time.monotonic()
                        say(f"cannot open {port} ({error}); waiting for it to come back")
                    time.sleep(reconnect_wait)
                    continue
                if waiting_since is not None:
                    say(f"{port} is back after {time.monotonic() - waiting_since:.1f} s")
                    waiting_since = None
            assert reader is not None
            try:
                chunk = reader.read()
            except (serial.SerialException, OSError) as error:
                with contextlib.suppress(Exception):
                    handle.close()
                handle = None
                waiting_since = time.monotonic()
                say(f"{port} went away ({error}); waiting for it to come back")
                decoder.parser = decoder._new_parser()  # a run cut by the disconnection is not continued
                continue
            if not chunk:
                continue
            log.raw.write(chunk)
            if raw:
                show(escape(chunk))
            else:
                decoder.feed(chunk)
    except KeyboardInterrupt as stop:
        say(f"monitor stopped ({interrupts.describe(stop)})")
    finally:
        if handle is not None:
            with contextlib.suppress(Exception):
                handle.close()
        log.close()
    return log


def monitor_build(settings: Any, options: Any) -> MonitorLog:
    """`scons monitor`: the board's console (``port=``, or found by the board's USB VID:PID), never flashed or
    reset; any port or pyserial URL with ``port=``."""
    port = options.port
    baud = uart.DEFAULT_BAUD
    if settings.images and settings.board_file:
        baud = settings.board_file.console.baud
        if not port:
            port = board_port(settings.board_file.console.usb_ids, options.probe)
    if not port:
        raise LlmcuError(
            f"`monitor` listens to a console that is running already, and {settings.target.name} has none outside "
            "`scons run` and `scons console`: give port=DEVICE or a pyserial URL (socket://HOST:PORT, rfc2217://...), "
            "or use `scons console` to talk to it"
        )
    return monitor(
        port, options.log_dir, name=f"{settings.target.name}-{settings.model_name}", baud=baud, raw=options.raw
    )
