"""`scons run power=...`: the run (llmcu.device.runs) with a meter recording it.

The meter starts before the board is reset (so its boot is on the record) and stops after the end line; the
samples are then aligned with the run's log and ``power.json``/``power.csv`` written beside it (llmcu.power.energy),
where ``tools/report.py`` finds them. Which meter suits which runner: a board takes any (``ppk2``, ``lpm01a``,
``estimate``); the QEMU twin only ``estimate`` (the STM32H743 datasheet's current over the run's instruction
counts at the board's clock); the host program and Linux targets none (:func:`llmcu.power.check_choice` says why).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..builder.settings import BuildSettings
from ..core.paths import TARGETS_DIR
from ..device import runs
from ..device.protocol import RunOutput
from . import PowerMeter, PowerSettings, Samples, format_power, make_meter, measure_during, write_power

T = TypeVar("T")


class MeterMeasurement:
    """llmcu.device.runs.Measurement for a power meter: made for the runner when the run knows it (``begin``: a
    meter that cannot measure it is refused there, before anything runs)."""

    def __init__(self, settings: PowerSettings, *, echo: bool = True) -> None:
        self.settings = settings
        self.echo = echo
        self.meter: PowerMeter | None = None
        self.samples: Samples | None = None
        self.result: dict | None = None

    def begin(self, runner: str) -> None:
        self.meter = make_meter(self.settings, runner=runner)

    def during(self, capture: Callable[[], T]) -> T:
        if self.meter is None:  # power=none
            return capture()
        output, self.samples = measure_during(capture, self.meter)
        return output

    def finished(self, log_dir: Path) -> None:
        if self.samples is None:  # power=none
            return
        self.result = write_power(log_dir, self.samples, supply_v=self.settings.voltage_v, targets_dir=TARGETS_DIR)
        if self.echo:
            print(f"[llmcu] power: {format_power(self.result)} (power.json, power.csv in the log)", flush=True)


def run(settings: BuildSettings, options: runs.RunOptions, power: PowerSettings, *, echo: bool = True) -> RunOutput:
    """`run` with ``power=``: the meter refused before anything runs when it cannot measure this runner."""
    if power.meter == "none":
        return runs.run(settings, options, echo=echo)
    return runs.run(settings, options, echo=echo, measurement=MeterMeasurement(power, echo=echo))
