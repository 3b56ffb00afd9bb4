"""Power measurement for `scons run`: meters, alignment with the run log, energy per token.

    power=none|ppk2|lpm01a|estimate     which meter (estimate: no meter, the STM32H743 datasheet model)
    power_port=PORT                     the meter's serial port (PPK2: found by USB name when omitted)
    power_voltage=3.3                   the board's supply voltage (V)
    power_supply=board|meter            PPK2: in series with the board's own supply, or powering it

`scons run power=...` goes through llmcu.power.runpower: the meter starts before the board is reset and stops
after the end line (llmcu.device.runs's Measurement hook), and ``power.json``/``power.csv`` are written beside the
run's log (llmcu.power.energy). ``tools/report.py`` turns
a log folder into report.md/report.html, and can import a bench meter's CSV afterwards.
"""

from __future__ import annotations

from ..builder.settings import PowerSettings
from ..core.errors import OptionError
from .base import MeterError, PowerMeter, Samples, measure_during
from .energy import analyse, format_power, write_power
from .estimate import EstimateMeter, RunCurrentModel

__all__ = [
    "CHOICES",
    "EstimateMeter",
    "MeterError",
    "PowerMeter",
    "PowerSettings",
    "RunCurrentModel",
    "Samples",
    "analyse",
    "check_choice",
    "format_power",
    "make_meter",
    "measure_during",
    "write_power",
]

CHOICES = ("none", "ppk2", "lpm01a", "estimate")
SUPPLIES = ("board", "meter")


def check_choice(settings: PowerSettings, *, runner: str) -> None:
    """Refuse a meter that cannot measure this runner (``host``, ``qemu`` or ``board``)."""
    if settings.meter not in CHOICES:
        raise OptionError(f"power={settings.meter!r} is not allowed; choose one of: {', '.join(CHOICES)}")
    if settings.meter == "none":
        return
    if settings.meter == "estimate" and runner != "host":
        return
    if runner == "qemu":
        raise OptionError(
            f"power={settings.meter} measures a real board's supply, and a QEMU run has none: use power=estimate "
            "(the STM32H743 datasheet's Run-mode current over the run's instruction counts) or power=none"
        )
    if runner == "host":
        raise OptionError(
            f"power={settings.meter} is for firmware targets (a board, or power=estimate with its QEMU twin); "
            "target=host runs on this computer"
        )
    if settings.meter == "lpm01a" and settings.supply == "board":
        return  # the shield always supplies its target; power_supply does not apply
    if settings.supply not in SUPPLIES:
        raise OptionError(f"power_supply={settings.supply!r} is not allowed; choose one of: {', '.join(SUPPLIES)}")


def make_meter(settings: PowerSettings, *, runner: str) -> PowerMeter | None:
    """The meter for ``power=`` (None for none), after check_choice. Opening the port happens at start()."""
    check_choice(settings, runner=runner)
    if settings.meter == "none":
        return None
    if settings.meter == "estimate":
        return EstimateMeter()
    if settings.meter == "ppk2":
        from .ppk2 import Ppk2Meter

        mode = "source" if settings.supply == "meter" else "ampere"
        return Ppk2Meter(settings.port or None, mode=mode, voltage_v=settings.voltage_v)
    from .lpm01a import Lpm01aMeter

    return Lpm01aMeter(settings.port, voltage_v=settings.voltage_v)
