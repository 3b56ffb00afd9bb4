"""What every power meter backend returns, and the small interface they share.

A meter samples the board's supply current on its own clock. ``Samples`` keeps that timeline as it is
(seconds since the meter's first sample) together with what is known about how it maps onto the host's
clock: ``host_t0``, the host time (``time.time()``) of the meter's t = 0, and ``host_t0_uncertainty_s``,
how far off that may be (the round trip of the start command, for a meter started over a serial port).
energy.py uses it to find the generation on the meter's timeline from the host-side times of the protocol's
start and end lines, unless the meter saw the board's optional GPIO marker itself (``marks``).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np

from ..core.errors import LlmcuError


class MeterError(LlmcuError):
    """A power meter is missing, refused a command, or sent something that cannot be decoded."""


@dataclass
class Samples:
    """One acquisition: current (and optionally voltage) over the meter's own time.

    ``marks`` maps an event name to the meter-side times (s) at which the meter saw it on a trigger input,
    e.g. ``{"gpio_rise": [1.25], "gpio_fall": [3.5]}``; empty when the meter has no trigger input or it was
    not wired. ``estimated`` is True for a series computed from a model rather than measured.
    """

    source: str  # "ppk2", "lpm01a", "csv", "estimate"
    t_s: np.ndarray
    current_a: np.ndarray
    voltage_v: np.ndarray | None = None
    supply_v: float | None = None  # the supply voltage the meter set or was told (when it does not measure it)
    host_t0: float | None = None  # host time.time() of the meter's t = 0
    host_t0_uncertainty_s: float = 0.0
    marks: dict[str, list[float]] = field(default_factory=dict)
    estimated: bool = False
    warnings: list[str] = field(default_factory=list)
    info: dict[str, object] = field(default_factory=dict)  # meter settings, firmware version, dropped samples ...

    def __post_init__(self) -> None:
        self.t_s = np.asarray(self.t_s, dtype=np.float64)
        self.current_a = np.asarray(self.current_a, dtype=np.float64)
        if self.voltage_v is not None:
            self.voltage_v = np.asarray(self.voltage_v, dtype=np.float64)
            if self.voltage_v.shape != self.t_s.shape:
                raise ValueError("voltage_v must have one value per sample")
        if self.t_s.shape != self.current_a.shape or self.t_s.ndim != 1:
            raise ValueError("t_s and current_a must be 1-D arrays of the same length")
        if self.t_s.size > 1 and np.any(np.diff(self.t_s) < 0):
            raise ValueError("sample times must not go backwards")

    def __len__(self) -> int:
        return int(self.t_s.size)

    @property
    def duration_s(self) -> float:
        return float(self.t_s[-1] - self.t_s[0]) if self.t_s.size > 1 else 0.0

    @property
    def rate_hz(self) -> float:
        """Mean sample rate (0 for fewer than two samples)."""
        return (self.t_s.size - 1) / self.duration_s if self.duration_s > 0 else 0.0

    def add_mark(self, name: str, t: float) -> None:
        self.marks.setdefault(name, []).append(float(t))


@runtime_checkable
class PowerMeter(Protocol):
    """A meter that records while a run happens: ``start()`` before the board is reset, ``stop()`` after the
    end line arrived. ``close()`` releases the port; meters are also context managers."""

    name: str
    estimated: bool

    def start(self) -> None: ...

    def stop(self) -> Samples: ...

    def close(self) -> None: ...


class MeterBase:
    """Shared plumbing: context manager, and the host-time bracket of a start command."""

    name = "meter"
    estimated = False

    def __enter__(self) -> MeterBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - overridden where there is something to release
        pass

    @staticmethod
    @contextlib.contextmanager
    def bracket() -> Iterator[list[float]]:
        """Host times just before and just after a command: the meter's t = 0 lies in between."""
        times = [time.time()]
        yield times
        times.append(time.time())


class ReaderThread:
    """A meter's reading thread: ``step()`` is called until ``finished()`` says so once ``stop()`` was asked
    (``finished`` is checked only then, so a meter can drain what follows its stop command). An exception in it
    ends the thread and comes back from ``stop()`` as a MeterError naming the meter."""

    def __init__(self, meter: str, step: Callable[[], None], finished: Callable[[], bool] = lambda: True) -> None:
        self.meter = meter
        self._step, self._finished = step, finished
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=f"{meter}-reader", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
            while not (self._stopping.is_set() and self._finished()):
                self._step()
        except BaseException as error:  # handed to stop()
            self._error = error

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        if self._error is not None:
            raise MeterError(f"{self.meter} read failed: {self._error}")


def host_t0_from(bracket: list[float]) -> tuple[float, float]:
    """The midpoint of a before/after bracket and its half width (the uncertainty)."""
    before, after = bracket[0], bracket[-1]
    return (before + after) / 2.0, (after - before) / 2.0


T = TypeVar("T")


def measure_during(run_callable: Callable[[], T], meter: PowerMeter) -> tuple[T, Samples]:
    """Run ``run_callable`` (which resets the board, sends the command and reads until the end line) while
    ``meter`` records: the meter starts first, so the board's boot is on the record, and stops after the
    callable returned. The meter is stopped and closed even when the run fails; the run's exception wins."""
    meter.start()
    try:
        result = run_callable()
    except BaseException:
        with contextlib.suppress(Exception):
            meter.stop()
        with contextlib.suppress(Exception):
            meter.close()
        raise
    try:
        samples = meter.stop()
    finally:
        meter.close()
    return result, samples


def decimate_mean(t_s: np.ndarray, values: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Average consecutive blocks of ``factor`` samples (the charge is kept); each block is stamped with its
    first sample's time plus half a block, i.e. its centre. A short last block is averaged on its own."""
    if factor <= 1 or values.size == 0:
        return t_s, values
    n = values.size
    full = n // factor * factor
    parts_t, parts_v = [], []
    if full:
        parts_v.append(values[:full].reshape(-1, factor).mean(axis=1))
        parts_t.append(t_s[:full].reshape(-1, factor).mean(axis=1))
    if full < n:
        parts_v.append(np.array([values[full:].mean()]))
        parts_t.append(np.array([t_s[full:].mean()]))
    return np.concatenate(parts_t), np.concatenate(parts_v)
