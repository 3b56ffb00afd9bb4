"""The ``watchdog=`` option: a time, turned at build time into the register values of the target's watchdog.

A firmware target names its watchdog in target.toml::

    [watchdog]
    kind = "stm32-iwdg"     # STM32 independent watchdog: LSI / 4..256, 12-bit reload (RM0433, IWDG)
    clock_hz = 32000

    [watchdog]
    kind = "cmsdk"          # Arm CMSDK APB watchdog: 32-bit down-counter on its clock (Arm DDI 0479)
    clock_hz = 25000000

The firmware gets ``LLMCU_WATCHDOG=1``, ``LLMCU_WATCHDOG_PRESCALER``, ``LLMCU_WATCHDOG_RELOAD`` and
``LLMCU_WATCHDOG_MS`` (targets/cortex-m/board.h). A time the watchdog cannot count is an error that says
the range, rather than a watchdog that silently fires sooner or later than asked.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..core.errors import OptionError
from .targets import Target

IWDG_PRESCALERS = (4, 8, 16, 32, 64, 128, 256)  # PR = 0..6 (7 is also /256)
IWDG_RELOAD_MAX = 0xFFF  # 12-bit RLR; the counter runs from RLR down to 0: RLR + 1 ticks
CMSDK_LOAD_MAX = 0xFFFFFFFF

_TIME = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?\s*$")


def parse_timeout(text: str) -> float:
    """``off`` -> 0.0; ``2s``, ``2``, ``1.5s``, ``500ms`` -> seconds. A ValueError names what is allowed."""
    if text.strip().lower() in ("off", "0", ""):
        return 0.0
    match = _TIME.match(text.lower())
    if match is None:
        raise ValueError("expected off or a time such as 2s or 500ms")
    seconds = float(match.group(1)) / (1000.0 if match.group(2) == "ms" else 1.0)
    if seconds <= 0 or not math.isfinite(seconds):
        raise ValueError("the time must be above 0 (or off)")
    return seconds


@dataclass(frozen=True)
class WatchdogSetting:
    """What the firmware is built with: the register values and the timeout they give."""

    kind: str
    prescaler: int  # the register code (IWDG PR), 0 where there is no prescaler
    reload: int
    timeout_s: float  # the timeout these values give at the nominal clock

    def defines(self) -> list[tuple[str, int]]:
        return [
            ("LLMCU_WATCHDOG", 1),
            ("LLMCU_WATCHDOG_PRESCALER", self.prescaler),
            ("LLMCU_WATCHDOG_RELOAD", self.reload),
            ("LLMCU_WATCHDOG_MS", max(1, round(self.timeout_s * 1000))),
        ]


def _iwdg(seconds: float, clock_hz: float, target: str) -> WatchdogSetting:
    """The smallest prescaler whose reload fits 12 bits: the finest step, so the closest timeout."""
    longest = (IWDG_RELOAD_MAX + 1) * IWDG_PRESCALERS[-1] / clock_hz
    shortest = IWDG_PRESCALERS[0] / clock_hz
    for code, divider in enumerate(IWDG_PRESCALERS):
        ticks = round(seconds * clock_hz / divider)  # the counter runs from RLR to 0: RLR + 1 ticks
        if ticks <= IWDG_RELOAD_MAX + 1:
            if ticks < 1:
                break
            return WatchdogSetting("stm32-iwdg", code, ticks - 1, ticks * divider / clock_hz)
    raise OptionError(
        f"watchdog={_shown(seconds)} is outside what {target}'s IWDG can count: "
        f"{shortest * 1000:g} ms to {longest:g} s (LSI {clock_hz / 1000:g} kHz, prescaler 4..256, 12-bit reload)"
    )


def _cmsdk(seconds: float, clock_hz: float, target: str) -> WatchdogSetting:
    load = round(seconds * clock_hz)
    if not 1 <= load <= CMSDK_LOAD_MAX:
        raise OptionError(
            f"watchdog={_shown(seconds)} is outside what {target}'s CMSDK watchdog can count: "
            f"{1e9 / clock_hz:g} ns to {CMSDK_LOAD_MAX / clock_hz:.1f} s (32-bit counter at {clock_hz / 1e6:g} MHz)"
        )
    return WatchdogSetting("cmsdk", 0, load, load / clock_hz)


def _shown(seconds: float) -> str:
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


def plan(target: Target, seconds: float) -> WatchdogSetting | None:
    """The register values for ``seconds`` on ``target`` (None for watchdog=off); OptionError if it cannot."""
    if seconds <= 0:
        return None
    spec = target.watchdog
    if target.kind != "baremetal" or spec is None:
        raise OptionError(f"watchdog={_shown(seconds)}: target {target.name} has no watchdog (firmware targets only)")
    if spec.kind == "stm32-iwdg":
        return _iwdg(seconds, spec.clock_hz, target.name)
    return _cmsdk(seconds, spec.clock_hz, target.name)  # load_target allows only these two


# Cycles per multiply-accumulate of a forward pass on the Cortex-M7, from the twin's exact counts (stories260K:
# fp32 1.13M instructions a token for 259K MACs, q8 with the q16 cache 545K) at one cycle an instruction (flash
# wait states, external memory and cache misses add to it on a board).
CYCLES_PER_MAC = {"fp32": 4.0, "quantized": 2.0}
# The watchdog must allow this many estimated forward passes: the estimate is rough, and a pass at a long context
# costs more than at a short one.
PASS_MARGIN = 2.0


def check_pass_time(seconds: float, macs_per_pass: int, quantized: bool, clock_hz: float, where: str) -> None:
    """Refuse a watchdog period shorter than PASS_MARGIN estimated forward passes at the chip's clock: it would
    reset the board in the middle of every token. Checked for the twin too (whose watchdog counts instructions
    at QEMU's 1 GHz and would let it pass)."""
    if seconds <= 0 or clock_hz <= 0:
        return
    per_mac = CYCLES_PER_MAC["quantized" if quantized else "fp32"]
    pass_s = macs_per_pass * per_mac / clock_hz
    if seconds < PASS_MARGIN * pass_s:
        least = PASS_MARGIN * pass_s
        raise OptionError(
            f"watchdog={_shown(seconds)} is shorter than {PASS_MARGIN:g} forward passes on {where} at "
            f"{clock_hz / 1e6:g} MHz: a pass is about {pass_s * 1000:.3g} ms ({macs_per_pass:,} multiply-adds at "
            f"~{per_mac:g} cycles each, the twin's instructions per multiply-add), so the watchdog would reset it in "
            f"the middle of a token; choose watchdog={_shown(_round_up(least))} or more"
        )


def _round_up(seconds: float) -> float:
    """A readable time at least ``seconds``: whole ms below 1 s, tenths of a second above."""
    return math.ceil(seconds * 1000) / 1000 if seconds < 1 else math.ceil(seconds * 10) / 10


def defines(target: Target, seconds: float) -> list[tuple[str, int]]:
    """The C defines for one firmware image: ``LLMCU_WATCHDOG=0`` when the watchdog is off."""
    setting = plan(target, seconds)
    return setting.defines() if setting is not None else [("LLMCU_WATCHDOG", 0)]
