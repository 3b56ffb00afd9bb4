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

from ..build.project import BuildSettings
from ..core.paths import TARGETS_DIR
from ..device import runs
from ..device.protocol import RunOutput
from . import PowerMeter, PowerSettings, Samples, format_power, make_meter, measure_during, write_power

T = TypeVar("T")


class MeterMeasurement:
    """llmcu.device.runs.Measurement for a power meter."""

    def __init__(self, meter: PowerMeter, settings: PowerSettings, *, echo: bool = True) -> None:
        self.meter = meter
        self.settings = settings
        self.echo = echo
        self.samples: Samples | None = None
        self.result: dict | None = None

    def during(self, capture: Callable[[], T]) -> T:
        output, self.samples = measure_during(capture, self.meter)
        return output

    def finished(self, log_dir: Path) -> None:
        assert self.samples is not None, "finished() before during()"
        self.result = write_power(log_dir, self.samples, supply_v=self.settings.voltage_v, targets_dir=TARGETS_DIR)
        if self.echo:
            print(f"[llmcu] power: {format_power(self.result)} (power.json, power.csv in the log)", flush=True)


def runner_of(settings: BuildSettings) -> str:
    """``host``, ``linux``, ``qemu`` or ``board``: where `run` would go (a probe is looked for with hil=auto)."""
    if settings.linux is not None:
        return "linux"
    if not settings.images:
        return "host"
    return runs.choose_runner(settings)[0]


def run(settings: BuildSettings, options: runs.RunOptions, power: PowerSettings, *, echo: bool = True) -> RunOutput:
    """`run` with ``power=``: the meter refused before anything runs when it cannot measure this runner."""
    meter = make_meter(power, runner=runner_of(settings))
    if meter is None:
        return runs.run(settings, options, echo=echo)
    return runs.run(settings, options, echo=echo, measurement=MeterMeasurement(meter, power, echo=echo))
