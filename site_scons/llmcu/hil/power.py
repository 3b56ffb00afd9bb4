"""Power in hardware-in-the-loop tests: the settings of `scons run power=...` for the HIL device.

``pytest --hil-power=ppk2 --hil-power-port=... --hil-power-voltage=3.3 --hil-power-supply=board`` (or a hardware
map entry's ``power_meter: {type: ppk2, port: ...}``) gives the ``hil_power`` fixture, whose ``measure(device,
params)`` runs one generation while the meter records (started before the command, stopped after the end line),
logs it as `scons run` does (llmcu.device.runlog) and writes power.json and power.csv beside it
(llmcu.power.energy). On the QEMU twin only ``estimate`` applies, as for `run`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import OptionError
from ..device.console import CommandParams
from ..device.protocol import RunOutput
from ..device.runlog import RunInfo, RunLog
from ..power import CHOICES, PowerSettings
from ..power.runpower import MeterMeasurement
from .device import Device
from .hwmap import MeterEntry


@dataclass
class MeasuredRun:
    """One generation under a meter: what the device printed, its log folder and power.json's figures (None for
    power=none)."""

    output: RunOutput
    log_dir: Path
    power: dict[str, Any] | None


def settings_for(meter: str, port: str, voltage_v: float, supply: str, mapped: MeterEntry | None) -> PowerSettings:
    """The command line's settings; without ``--hil-power``, the hardware map entry's meter (its type and port)."""
    if meter == "none" and mapped is not None:
        if mapped.type not in CHOICES:
            raise OptionError(f"the hardware map's power_meter type {mapped.type!r} is not one of {', '.join(CHOICES)}")
        meter, port = mapped.type, port or mapped.port
    return PowerSettings(meter, port, voltage_v, supply)


class HilPower:
    """Measures the HIL device's runs with one meter setting; each run gets a log folder under ``log_dir``."""

    def __init__(self, settings: PowerSettings, log_dir: Path, *, model: str, quant: str, board: str) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.model, self.quant, self.board = model, quant, board

    def measure(self, device: Device, params: CommandParams, **run_options: Any) -> MeasuredRun:
        info = device.info
        measurement = MeterMeasurement(self.settings, echo=False)
        measurement.begin(info.mode)  # refused here, before anything runs
        settings = {"built_for": info.target} if info.mode == "qemu" else {}
        run_info = RunInfo(target=info.runs_on if info.mode == "qemu" else info.target, model=self.model,
                           quant=self.quant, runner=info.mode, board=self.board, prompt=str(params.prompt),
                           settings=settings)  # fmt: skip
        with RunLog(self.log_dir, run_info) as log:
            output = measurement.during(lambda: device.run(params, on_bytes=log.write_raw, **run_options))
            log.finish(output)
        measurement.finished(log.path)
        return MeasuredRun(output, log.path, measurement.result)
