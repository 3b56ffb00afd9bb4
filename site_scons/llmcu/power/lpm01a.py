"""ST X-NUCLEO-LPM01A (STM32 Power shield) over its USB virtual COM port, with pyserial.

The shield is a programmable supply (1.8-3.3 V) that measures the current its target draws. Its firmware
speaks a line protocol (ST UM2269, "Getting started with PowerShield firmware"): commands are ASCII lines,
answered with ``PowerShield > ack <command> ...`` or ``PowerShield > error <command> ...`` followed by an
``Error detail: ...`` line. The commands used here:

    htc / hrc                  host takes / releases control (the LCD menu is locked meanwhile)
    version                    firmware version (informational)
    volt 3300m                 supply voltage, 1800m..3300m
    acqmode dyn|stat           dynamic (current may vary) or static (constant current, wider range)
    output current             instantaneous current rather than integrated energy
    format ascii_dec|bin_hexa  data format: ASCII (at most 5 kHz for unlimited time) or binary (to 100 kHz)
    freq 1k                    sampling frequency: 100k 50k 20k 10k 5k 2k 1k 500 200 100 50 20 10 5 2 1
    acqtime 0                  acquisition time; 0 is unlimited (until ``stop``)
    trigdelay 0                no delay between power-up and the first sample
    trigsrc sw|d7              start on ``start`` (sw) or on an edge of Arduino connector D7
    start / stop               start; stop (answered by "Acquisition completed")

Data stream, ASCII: one sample per line, ``DDDDsEE`` = DDDD x 10^(sEE) A (``6409-07`` is 640.9 uA), and
metadata lines: ``TimeStamp: 12s 345ms, buff 0%`` (the shield's clock and how full its send buffer is),
``error ...`` / ``Error detail: ...``, overcurrent messages and the end ("Acquisition completed"; some
firmware prints ``end`` and a summary). Binary: two bytes per sample, the high nibble of the first being a
negative power of 16 and the other 12 bits the value (``52A0`` is 0x2A0 x 16^-5 A); metadata frames start
with 0xF0, a type byte (F1 error text, F2 info text, F3 timestamp: 4-byte ms + buffer %, F4 end, F5
overcurrent, F6 target powered down, F7 voltage) and end with 0xFF 0xFF.

Ranges: the dynamic mode measures up to 50 mA (ST's data brief; the firmware 1.0.x help text says 10 mA),
the static mode up to 200 mA but only for a constant current. An STM32H743 at 480 MHz draws well over
100 mA, so measure it in static mode, at a lower clock, or with a PPK2. An overcurrent shows up as a warning
in the samples (and in power.json).

Optional trigger: with ``trigger="d7"`` the acquisition starts on an edge of a board GPIO wired to D7
(raised by the firmware at generation start), which becomes the meter-side mark ``trigger`` at t = 0. With
``event_input=True`` the shield is also asked to report D7 events in the stream (``eventsrc d7``; firmware
dependent, seen with PowerShield firmware 1.0.7), which become marks ``event_<edge>``.
"""

from __future__ import annotations

import re
import time
from array import array
from collections.abc import Callable
from typing import Any

import numpy as np

from .base import MeterBase, MeterError, ReaderThread, Samples, host_t0_from

BAUDRATE = 3_686_400
PROMPT = "PowerShield >"
FREQUENCIES_HZ = (100_000, 50_000, 20_000, 10_000, 5_000, 2_000, 1_000, 500, 200, 100, 50, 20, 10, 5, 2, 1)
ASCII_MAX_HZ = 5_000  # above this, ascii_dec is limited to 1 s (10 kHz) or 0.5 s (20 kHz) of acquisition
VOLTAGE_RANGE = (1.8, 3.3)
FORMATS = ("ascii_dec", "bin_hexa")
ACQ_MODES = ("dyn", "stat")
TRIGGERS = ("sw", "d7")

SAMPLE_TOKEN = re.compile(r"(\d{4})([+-])(\d{2})")
SAMPLE_LINE = re.compile(r"^(?:\s*\d{4}[+-]\d{2})+\s*$")
TIMESTAMP = re.compile(r"TimeStamp:\s*(\d+)\s*s\s*(\d+)\s*ms(?:\s*,\s*buff\s*(\d+)\s*%)?", re.IGNORECASE)
EVENT = re.compile(r"event\s+(\d+)\s+(\w+)", re.IGNORECASE)
OVERCURRENT = re.compile(r"over[\s-]?current", re.IGNORECASE)


def frequency_argument(hz: int) -> str:
    return f"{hz // 1000}k" if hz >= 1000 else str(hz)


def decode_ascii_sample(token: str) -> float:
    """``6409-07`` -> 6.409e-4 (amperes)."""
    match = SAMPLE_TOKEN.fullmatch(token.strip())
    if match is None:
        raise ValueError(f"not an LPM01A sample: {token!r}")
    mantissa, sign, exponent = match.groups()
    return int(mantissa) * 10.0 ** (int(exponent) if sign == "+" else -int(exponent))


def decode_binary_sample(high: int, low: int) -> float:
    """Two stream bytes -> amperes: value (12 bits) x 16^-(high nibble)."""
    return (((high & 0x0F) << 8) | low) / 16.0 ** (high >> 4)


def _strip_prompt(line: str) -> str:
    line = line.replace("\x00", "").strip()
    while line.startswith(PROMPT):
        line = line[len(PROMPT) :].strip()
    return line


class StreamParser:
    """Incremental parser of an acquisition's data stream (ASCII or binary), fed raw bytes."""

    def __init__(self, binary: bool) -> None:
        self.binary = binary
        self.values = array("d")
        self.timestamps: list[tuple[int, float, int]] = []  # (samples so far, shield time s, buffer %)
        self.events: list[tuple[int, str]] = []  # (samples so far, edge)
        self.errors: list[str] = []
        self.messages: list[str] = []
        self.ended = False
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data
        if self.binary and not self.ended:
            self._feed_binary()
        if not self.binary or self.ended:
            self._feed_lines()

    # ---- ASCII ----

    def _feed_lines(self) -> None:
        while (end := self._buffer.find(b"\n")) >= 0:
            raw = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            self._line(raw.decode("ascii", errors="replace"))

    def _line(self, text: str) -> None:
        line = _strip_prompt(text)
        if not line:
            return
        if not self.ended and SAMPLE_LINE.match(line):
            for mantissa, sign, exponent in SAMPLE_TOKEN.findall(line):
                self.values.append(int(mantissa) * 10.0 ** (int(exponent) if sign == "+" else -int(exponent)))
            return
        if match := TIMESTAMP.search(line):
            seconds = int(match.group(1)) + int(match.group(2)) / 1000.0
            self.timestamps.append((len(self.values), seconds, int(match.group(3) or 0)))
        elif match := EVENT.search(line):
            self.events.append((len(self.values), match.group(2).lower()))
        elif line.lower().startswith(("error", "err ")) or OVERCURRENT.search(line):
            self.errors.append(line)
        elif "acquisition completed" in line.lower() or line.lower() == "end":
            self.ended = True
            self.messages.append(line)
        else:
            self.messages.append(line)

    # ---- binary ----

    def _feed_binary(self) -> None:
        buf = self._buffer
        pos = 0
        while pos + 1 < len(buf) and not self.ended:
            high, low = buf[pos], buf[pos + 1]
            if high == 0xF0 and low >> 4 == 0xF:
                used = self._metadata(pos, low)
                if used == 0:
                    break  # incomplete frame: wait for more bytes
                pos += used
            elif high >> 4 == 0xF:
                pos += 1  # a stray byte: resynchronise
            else:
                self.values.append(decode_binary_sample(high, low))
                pos += 2
        del buf[:pos]

    def _metadata(self, pos: int, kind: int) -> int:
        """Consume one metadata frame at ``pos``; returns its length, or 0 when it is not complete yet."""
        buf = self._buffer
        body = pos + 2
        terminator = buf.find(b"\xff\xff", body)
        if terminator < 0:
            return 0
        payload = bytes(buf[body:terminator])
        if kind in (0xF1, 0xF2):
            text = payload.decode("ascii", errors="replace").strip()
            (self.errors if kind == 0xF1 else self.messages).append(text)
        elif kind == 0xF3 and len(payload) >= 5:
            millis = int.from_bytes(payload[:4], "big")
            if millis & 0x80000000:
                self.errors.append("the shield flagged a buffer overflow (samples were lost)")
            self.timestamps.append((len(self.values), (millis & 0x7FFFFFFF) / 1000.0, payload[4]))
        elif kind == 0xF4:
            self.ended = True
        elif kind == 0xF5:
            self.errors.append("overcurrent: the target drew more than the selected range")
        elif kind == 0xF6:
            self.errors.append("the shield powered the target down")
        elif kind == 0xF7 and len(payload) >= 2:
            self.messages.append(f"voltage {int.from_bytes(payload[:2], 'big')} mV")
        return terminator + 2 - pos


def open_serial(port: str, baudrate: int = BAUDRATE) -> Any:
    try:
        import serial
    except ImportError:
        raise MeterError("power=lpm01a needs pyserial: pip install 'pyserial>=3.5'") from None
    try:
        return serial.serial_for_url(port, baudrate=baudrate, timeout=0.05, write_timeout=2)
    except (OSError, ValueError) as error:  # serial.SerialException is an OSError
        raise MeterError(f"cannot open the LPM01A at {port}: {error}") from None


class Lpm01aMeter(MeterBase):
    """An X-NUCLEO-LPM01A recording while a run happens. ``port`` is a device or any pyserial URL."""

    name = "lpm01a"

    def __init__(
        self,
        port: str,
        *,
        voltage_v: float = 3.3,
        freq_hz: int = 1_000,
        acq_mode: str = "dyn",
        data_format: str = "ascii_dec",
        trigger: str = "sw",
        event_input: bool = False,
        serial_factory: Callable[[str], Any] | None = None,
        command_timeout_s: float = 5.0,
    ) -> None:
        if not port:
            raise MeterError("power=lpm01a needs the shield's serial port: power_port=/dev/ttyACMn")
        if not VOLTAGE_RANGE[0] <= voltage_v <= VOLTAGE_RANGE[1]:
            raise MeterError(f"the LPM01A supplies {VOLTAGE_RANGE[0]}-{VOLTAGE_RANGE[1]} V, not {voltage_v} V")
        if freq_hz not in FREQUENCIES_HZ:
            raise MeterError(f"LPM01A frequency {freq_hz} Hz is not one of {FREQUENCIES_HZ}")
        if data_format not in FORMATS:
            raise MeterError(f"LPM01A format {data_format!r} is not one of {', '.join(FORMATS)}")
        if data_format == "ascii_dec" and freq_hz > ASCII_MAX_HZ:
            raise MeterError(f"the LPM01A streams ascii_dec for long at {ASCII_MAX_HZ} Hz at most; use bin_hexa")
        if acq_mode not in ACQ_MODES:
            raise MeterError(f"LPM01A acquisition mode {acq_mode!r} is not one of {', '.join(ACQ_MODES)}")
        if trigger not in TRIGGERS:
            raise MeterError(f"LPM01A trigger {trigger!r} is not one of {', '.join(TRIGGERS)}")
        self.port = port
        self.voltage_v = voltage_v
        self.freq_hz = freq_hz
        self.acq_mode = acq_mode
        self.data_format = data_format
        self.trigger = trigger
        self.event_input = event_input
        self.command_timeout_s = command_timeout_s
        self._factory = serial_factory or open_serial
        self._serial: Any = None
        self._pending = bytearray()
        self._parser: StreamParser | None = None
        self._reader: ReaderThread | None = None
        self._t0: tuple[float, float] | None = None
        self._stop_deadline = 0.0
        self.messages: list[str] = []
        self.version = ""

    # ---- command channel ----

    def _read_line(self, deadline: float) -> str:
        while (end := self._pending.find(b"\n")) < 0:
            if time.monotonic() > deadline:
                raise TimeoutError
            self._pending += self._serial.read(max(1, getattr(self._serial, "in_waiting", 0) or 1))
        line = bytes(self._pending[:end]).decode("ascii", errors="replace")
        del self._pending[: end + 1]
        return _strip_prompt(line)

    def command(self, text: str) -> str:
        """Send one command and wait for its ack; returns what follows ``ack <command>``. A refusal raises a
        MeterError with the shield's error detail."""
        name = text.split()[0]
        self._serial.write((text + "\n").encode("ascii"))
        deadline = time.monotonic() + self.command_timeout_s
        while True:
            try:
                line = self._read_line(deadline)
            except TimeoutError:
                raise MeterError(
                    f"no answer from the LPM01A at {self.port} to {text!r} within {self.command_timeout_s:g} s: "
                    f"is it an X-NUCLEO-LPM01A (USB virtual COM port, {BAUDRATE} baud)?"
                ) from None
            words = line.split()
            if words[:1] == ["ack"] and (len(words) == 1 or words[1] == name):
                return " ".join(words[2:])
            if words[:1] in (["error"], ["err"]):
                detail = " ".join(words[1:])
                try:
                    follow = self._read_line(time.monotonic() + 0.5)
                except TimeoutError:
                    follow = ""
                if follow.lower().startswith("error detail"):
                    detail = follow.split(":", 1)[-1].strip()
                raise MeterError(f"the LPM01A refused {text!r}: {detail}")
            if line:
                self.messages.append(line)

    def _open(self) -> None:
        if self._serial is not None:
            return
        self._serial = self._factory(self.port)
        # A session that ended without stopping leaves the shield streaming: stop it and drop what it sent.
        self._serial.write(b"stop\n")
        time.sleep(0.1)
        self._serial.reset_input_buffer()
        self.command("htc")
        try:
            self.version = self.command("version")
        except MeterError:
            self.version = ""

    def _configure(self) -> None:
        self.command(f"volt {round(self.voltage_v * 1000)}m")
        self.command(f"acqmode {self.acq_mode}")
        self.command("output current")
        self.command(f"format {self.data_format}")
        self.command(f"freq {frequency_argument(self.freq_hz)}")
        self.command("acqtime 0")
        self.command("trigdelay 0")
        self.command(f"trigsrc {self.trigger}")
        if self.event_input:
            self.command("eventsrc d7 ris")

    # ---- acquisition ----

    def start(self) -> None:
        self._open()
        self._configure()
        self._parser = StreamParser(binary=self.data_format == "bin_hexa")
        with self.bracket() as times:
            self.command("start")
        self._t0 = host_t0_from(times)
        leftover = bytes(self._pending)  # stream bytes that came with the ack
        self._pending.clear()
        self._parser.feed(leftover)
        self._reader = ReaderThread("LPM01A", self._read_some, self._ended)

    def _read_some(self) -> None:
        assert self._parser is not None
        data = self._serial.read(max(1, getattr(self._serial, "in_waiting", 0) or 1))
        if data:
            self._parser.feed(data)

    def _ended(self) -> bool:
        """After stop: the end-of-acquisition message came, or the shield had its time to send it."""
        assert self._parser is not None
        return self._parser.ended or time.monotonic() > self._stop_deadline

    def stop(self) -> Samples:
        if self._reader is None or self._parser is None:
            raise MeterError("LPM01A: stop() without start()")
        self._stop_deadline = time.monotonic() + self.command_timeout_s
        self._serial.write(b"stop\n")
        reader, self._reader = self._reader, None
        reader.stop()
        return self._samples(self._parser)

    def _samples(self, parser: StreamParser) -> Samples:
        values = np.frombuffer(parser.values, dtype=np.float64).copy() if len(parser.values) else np.zeros(0)
        t = np.arange(values.size, dtype=np.float64) / self.freq_hz
        warnings = [f"LPM01A: {text}" for text in parser.errors]
        if not parser.ended:
            warnings.append("LPM01A: no end-of-acquisition message after stop; the data may be cut short")
        if parser.timestamps:
            count, shield_s, _ = parser.timestamps[-1]
            expected = shield_s * self.freq_hz
            if expected and count < 0.99 * expected - 1:
                warnings.append(
                    f"LPM01A: {count} samples by the shield's {shield_s:.3f} s mark, expected {expected:.0f}: "
                    "samples were lost (lower freq=, or use bin_hexa)"
                )
            worst = max(percent for _, _, percent in parser.timestamps)
            if worst >= 50:
                warnings.append(f"LPM01A: its send buffer reached {worst}% (the host read too slowly)")
        marks: dict[str, list[float]] = {}
        if self.trigger == "d7":
            marks["trigger"] = [0.0]
        for index, edge in parser.events:
            marks.setdefault(f"event_{edge}", []).append(index / self.freq_hz)
        samples = Samples(
            source="lpm01a",
            t_s=t,
            current_a=values,
            supply_v=self.voltage_v,
            marks=marks,
            warnings=warnings,
            info={
                "port": self.port,
                "firmware": self.version,
                "freq_hz": self.freq_hz,
                "format": self.data_format,
                "acq_mode": self.acq_mode,
                "trigger": self.trigger,
                "shield_timestamps": len(parser.timestamps),
                "messages": parser.messages[-20:],
            },
        )
        if self._t0 is not None:
            samples.host_t0, samples.host_t0_uncertainty_s = self._t0
        return samples

    def close(self) -> None:
        if self._serial is None:
            return
        try:
            if self._reader is None:
                self.command("hrc")
        except MeterError:
            pass
        finally:
            self._serial.close()
            self._serial = None
