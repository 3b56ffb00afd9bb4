"""Nordic Power Profiler Kit II through the ``ppk2-api`` package (IRNAS, on PyPI; needs pyserial).

The PPK2 is a USB CDC device that takes one-byte opcodes and, once started, streams samples at a fixed
100 kS/s, four bytes each, little endian::

    bits  0-13  ADC value          bits 14-16  measurement range (0-4, auto-ranged by the PPK2)
    bits 18-23  sample counter     bits 24-31  the eight digital inputs D0-D7 (logic port)

ppk2-api sends the commands and turns (ADC value, range) into current with the calibration the PPK2 reports
in its metadata (and Nordic's spike filter after a range switch); this module frames the stream into whole
samples, uses the 6-bit counter to find samples the USB link dropped (their time is kept as a gap), reads
the logic port for the optional trigger input, and averages down to the requested sample rate.

Two ways to connect (Nordic's PPK2 user guide):

* ``mode="source"``: source-meter mode; the PPK2 powers the board from VOUT at ``voltage_v`` (0.8-5 V, up to
  1 A) and measures what it draws. Turning its output on is the board's power-on reset.
* ``mode="ampere"``: ampere-meter mode; the board keeps its own supply and the PPK2 sits in series (VIN ->
  VOUT), e.g. across a NUCLEO's IDD jumper. ``voltage_v`` is then the supply voltage the board runs at, used
  for the energy and by the PPK2's voltage-dependent calibration term.

Optional trigger: wire a board GPIO that is high while the model generates to one logic input (D0-D7) and
give its number as ``trigger_channel``; its edges become meter-side marks (``gpio_rise``/``gpio_fall``), which
energy.py prefers over host-side timing. The GPIO is board-dependent and not part of the llmcu protocol.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .base import MeterBase, MeterError, ReaderThread, Samples, decimate_mean, host_t0_from

SAMPLE_RATE_HZ = 100_000  # fixed by the PPK2; lower rates are host-side averages
SAMPLE_BYTES = 4
COUNTER_SHIFT, COUNTER_MASK = 18, 0x3F
LOGIC_SHIFT = 24
DECODE_BATCH = 100_000  # samples per call into ppk2-api's decoder (one second of data)
MODES = ("source", "ampere")
VOLTAGE_RANGE = (0.8, 5.0)  # PPK2 regulator limits, volts


def load_api() -> Any:
    """The ppk2_api.ppk2_api module, imported on first use so that llmcu works without it."""
    try:
        from ppk2_api import ppk2_api
    except ImportError:
        raise MeterError(
            "power=ppk2 needs the ppk2-api package (Nordic PPK2 support): pip install 'ppk2-api>=0.9.2' "
            "(tools/setup.sh installs it)"
        ) from None
    return ppk2_api


def default_api_factory(port: str) -> Any:
    return load_api().PPK2_API(port, timeout=1, write_timeout=1)


def find_port() -> str:
    """The PPK2's serial port when exactly one is connected."""
    found = load_api().PPK2_API.list_devices()
    ports = [entry[0] if isinstance(entry, (tuple, list)) else entry for entry in found]
    if len(ports) != 1:
        what = "no PPK2 found" if not ports else f"{len(ports)} PPK2s found ({', '.join(ports)})"
        raise MeterError(f"{what}; give the PPK2's serial port with power_port=/dev/ttyACMn")
    return str(ports[0])


def decode_stream(
    raw: bytes, api: Any, *, trigger_channel: int | None = None, sample_rate_hz: float = SAMPLE_RATE_HZ
) -> Samples:
    """Turn the bytes of one acquisition into Samples; ``api`` is a PPK2_API whose modifiers (calibration)
    and ``current_vdd`` are set. Only whole samples are decoded; a cut-off last one is dropped."""
    count = len(raw) // SAMPLE_BYTES
    words = np.frombuffer(raw, dtype="<u4", count=count)
    warnings: list[str] = []
    currents = np.empty(count, dtype=np.float64)
    for first in range(0, count, DECODE_BATCH):
        last = min(first + DECODE_BATCH, count)
        microamps, _bits = api.get_samples(raw[first * SAMPLE_BYTES : last * SAMPLE_BYTES])
        if len(microamps) != last - first:
            raise MeterError(f"PPK2 decoder returned {len(microamps)} values for {last - first} samples")
        currents[first:last] = np.asarray(microamps, dtype=np.float64) * 1e-6
    counter = (words >> COUNTER_SHIFT) & COUNTER_MASK
    missing = np.zeros(count, dtype=np.int64)
    if count > 1:
        missing[1:] = (np.diff(counter.astype(np.int64)) - 1) % (COUNTER_MASK + 1)
    dropped = int(missing.sum())
    if dropped:
        warnings.append(f"the USB link dropped {dropped} PPK2 samples ({dropped / SAMPLE_RATE_HZ * 1e3:g} ms)")
    index = np.arange(count, dtype=np.int64) + np.cumsum(missing)
    t_full = index / SAMPLE_RATE_HZ
    marks: dict[str, list[float]] = {}
    if trigger_channel is not None and count:
        level = ((words >> (LOGIC_SHIFT + trigger_channel)) & 1).astype(np.int8)
        edges = np.diff(level)
        marks["gpio_rise"] = [float(t_full[i + 1]) for i in np.flatnonzero(edges > 0)]
        marks["gpio_fall"] = [float(t_full[i + 1]) for i in np.flatnonzero(edges < 0)]
    factor = max(1, round(SAMPLE_RATE_HZ / sample_rate_hz))
    t_s, current = decimate_mean(t_full, currents, factor)
    vdd = getattr(api, "current_vdd", None)
    return Samples(
        source="ppk2",
        t_s=t_s,
        current_a=current,
        supply_v=float(vdd) / 1000.0 if vdd else None,
        marks=marks,
        warnings=warnings,
        info={"raw_samples": count, "dropped_samples": dropped, "averaged": factor, "raw_rate_hz": SAMPLE_RATE_HZ},
    )


class Ppk2Meter(MeterBase):
    """A PPK2 recording while a run happens (see the module docstring for wiring)."""

    name = "ppk2"

    def __init__(
        self,
        port: str | None = None,
        *,
        mode: str = "ampere",
        voltage_v: float = 3.3,
        sample_rate_hz: float = 10_000,
        trigger_channel: int | None = None,
        api_factory: Callable[[str], Any] | None = None,
    ) -> None:
        if mode not in MODES:
            raise MeterError(f"PPK2 mode {mode!r} is not one of {', '.join(MODES)}")
        if not VOLTAGE_RANGE[0] <= voltage_v <= VOLTAGE_RANGE[1]:
            raise MeterError(f"PPK2 voltage {voltage_v} V is outside {VOLTAGE_RANGE[0]}-{VOLTAGE_RANGE[1]} V")
        if not 0 < sample_rate_hz <= SAMPLE_RATE_HZ or SAMPLE_RATE_HZ % round(SAMPLE_RATE_HZ / sample_rate_hz):
            raise MeterError(f"PPK2 sample rate {sample_rate_hz} Hz must divide {SAMPLE_RATE_HZ} Hz")
        if trigger_channel is not None and not 0 <= trigger_channel <= 7:
            raise MeterError(f"PPK2 trigger channel {trigger_channel} is not a logic input (0-7)")
        self._factory = api_factory or default_api_factory
        self.port = port
        self.mode = mode
        self.voltage_v = voltage_v
        self.sample_rate_hz = sample_rate_hz
        self.trigger_channel = trigger_channel
        self._api: Any = None
        self._buffer = bytearray()
        self._reader: ReaderThread | None = None
        self._t0: tuple[float, float] | None = None

    def _open(self) -> Any:
        if self._api is None:
            port = self.port or find_port()
            try:
                self._api = self._factory(port)
            except (OSError, ValueError) as error:  # serial.SerialException is an OSError
                raise MeterError(f"cannot open the PPK2 at {port}: {error}") from None
            # A session that ended without stopping leaves the PPK2 streaming: stop it and drop what it sent.
            self._api.stop_measuring()
            time.sleep(0.05)
            reset = getattr(self._api.ser, "reset_input_buffer", None)
            if reset is not None:
                reset()
            try:
                calibrated = self._api.get_modifiers()
            except UnicodeDecodeError:
                calibrated = None
            if not calibrated:
                raise MeterError(f"{port} did not send PPK2 calibration metadata: is it a PPK2?")
        return self._api

    def start(self) -> None:
        api = self._open()
        millivolts = round(self.voltage_v * 1000)
        if self.mode == "source":
            api.set_source_voltage(millivolts)
            api.use_source_meter()
        else:
            api.use_ampere_meter()
            api.set_source_voltage(millivolts)  # ampere mode: the supply voltage the calibration assumes
        api.toggle_DUT_power("ON")
        self._buffer.clear()
        with self.bracket() as times:
            api.start_measuring()
        self._t0 = host_t0_from(times)
        self._reader = ReaderThread("PPK2", self._read_some)

    def _read_some(self) -> None:
        chunk = self._api.get_data()
        if chunk:
            self._buffer += chunk
        else:
            time.sleep(0.001)

    def stop(self) -> Samples:
        if self._reader is None or self._api is None:
            raise MeterError("PPK2: stop() without start()")
        self._api.stop_measuring()
        time.sleep(0.05)  # samples already in flight
        reader, self._reader = self._reader, None
        reader.stop()
        tail = self._api.get_data()
        if tail:
            self._buffer += tail
        samples = decode_stream(
            bytes(self._buffer), self._api, trigger_channel=self.trigger_channel, sample_rate_hz=self.sample_rate_hz
        )
        samples.supply_v = self.voltage_v
        if self._t0 is not None:
            samples.host_t0, samples.host_t0_uncertainty_s = self._t0
        samples.info.update({"mode": self.mode, "port": self.port, "trigger_channel": self.trigger_channel})
        return samples

    def close(self) -> None:
        if self._api is not None:
            serial_port = getattr(self._api, "ser", None)
            if serial_port is not None:
                serial_port.close()
            self._api = None
