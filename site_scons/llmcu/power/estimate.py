"""No meter: an estimated current for an STM32H743 run, from the datasheet and the run's own cost counter.

The model (every output that uses it says "estimated"):

* Current: the datasheet's typical supply current in Run mode, for "code with data processing running from
  Flash memory, cache ON", all peripherals disabled, Tj = 25 °C, VDD = 3.3 V: ST DS12110 (STM32H742xI/G
  STM32H743xI/G datasheet), section "Supply current characteristics", table "Typical and maximum current
  consumption in Run mode, code with data processing running from Flash memory, cache ON". The typical value
  at the top clock of each voltage scale is the anchor (``ANCHORS``) and the current is taken to scale
  linearly with the CPU clock within a scale (dynamic current ∝ f; the clock-independent share, a few mA at
  25 °C, is neglected, so lower clocks are slightly underestimated). Those anchors were entered by hand from
  the datasheet's typical column; a board whose current is known can pass ``run_current_a`` instead.
* Assumptions: all peripherals off except the console UART (its few hundred µA are neglected), I- and
  D-cache on, code and weights in internal flash, the LDO regulator, no external memory (SDRAM or QSPI
  traffic adds current this model does not have), no other load on the supply rail (a NUCLEO's ST-LINK and
  LEDs are not on the MCU's IDD jumper).
* Idle is the same current: the firmware waits for its next command in a polling loop, in Run mode.
* Time per token: the run's ``cost`` records. A board counts cycles (exact, at ``clock_hz``); the QEMU twin
  counts instructions, converted at ``cycles_per_instruction`` (1.0 by default: the Cortex-M7's dual issue
  and flash wait states are taken to cancel, which is a rough first-order assumption). The estimate covers
  the forward passes only, not the time the board spends printing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import LlmcuError
from ..platform import stm32h7
from .base import MeterBase, MeterError, Samples
from .runrecord import RunRecord

DATASHEET = (
    "ST DS12110 (STM32H742xI/G STM32H743xI/G datasheet), 'Supply current characteristics': typical Run-mode "
    "current, code with data processing running from Flash memory, cache ON, all peripherals disabled, "
    "Tj = 25 °C, VDD = 3.3 V"
)
# VOS -> (CPU clock in Hz, typical IDD in A at that clock): the top clock of each supported voltage scale.
ANCHORS: dict[int, tuple[int, float]] = {0: (480_000_000, 0.140), 1: (400_000_000, 0.100)}
SUPPLY_V = 3.3


@dataclass(frozen=True)
class RunCurrentModel:
    """The STM32H743's Run-mode supply current at a clock and voltage scale (see the module docstring)."""

    vos: int = 0
    cpu_hz: float = 480_000_000
    supply_v: float = SUPPLY_V
    cycles_per_instruction: float = 1.0
    run_current_a: float | None = None  # a known current overrides the datasheet model

    def __post_init__(self) -> None:
        if self.vos not in ANCHORS:
            raise MeterError(f"the estimate knows VOS{', VOS'.join(map(str, ANCHORS))}, not VOS{self.vos}")
        top_hz = ANCHORS[self.vos][0]
        if not 0 < self.cpu_hz <= top_hz:
            raise MeterError(
                f"a {self.cpu_hz / 1e6:g} MHz CPU clock is outside VOS{self.vos} (up to {top_hz / 1e6:g} MHz)"
            )

    @property
    def current_a(self) -> float:
        if self.run_current_a is not None:
            return self.run_current_a
        top_hz, top_a = ANCHORS[self.vos]
        return top_a * self.cpu_hz / top_hz

    def describe(self) -> dict[str, object]:
        source = "given run_current_a" if self.run_current_a is not None else DATASHEET
        return {
            "label": "estimated",
            "device": "STM32H743",
            "vos": self.vos,
            "cpu_hz": self.cpu_hz,
            "supply_v": self.supply_v,
            "run_current_a": round(self.current_a, 6),
            "idle_current_a": round(self.current_a, 6),
            "source": source,
            "scaling": "linear in the CPU clock within a voltage scale, from the typical value at its top clock",
            "cycles_per_instruction": self.cycles_per_instruction,
            "assumptions": [
                "all peripherals off except the console UART; caches on; code and weights in internal flash",
                "no external memory traffic; nothing else on the supply rail",
                "idle (waiting for a command) is the same Run-mode current: the firmware polls",
                "time per token from the run's cost records (cycles at clock_hz; instructions x "
                f"{self.cycles_per_instruction} cycles on the QEMU twin); printing time not included",
            ],
        }


def model_for_run(run: RunRecord, targets_dir: Path | None = None, **overrides: float) -> RunCurrentModel:
    """The model for a run's board: its voltage scale and CPU clock from the board file when it can be found
    (targets/<target>/boards/<board>.toml; the QEMU twin's board is the one it was built for)."""
    vos, cpu_hz = 0, float(ANCHORS[0][0])
    target = str(run.settings.get("built_for") or run.summary.get("target") or "")
    board = str(run.summary.get("board") or "")
    if targets_dir is not None and target and board:
        try:
            clocks = stm32h7.load_board(targets_dir / target, board).clocks
            vos, cpu_hz = clocks.vos, float(clocks.cpu_hz)
        except (LlmcuError, OSError):
            pass
    params: dict[str, float] = {"vos": vos, "cpu_hz": cpu_hz}
    params.update(overrides)
    return RunCurrentModel(**params)  # type: ignore[arg-type]


def token_seconds(run: RunRecord, model: RunCurrentModel) -> np.ndarray:
    """Device time of each forward pass, from the cost records."""
    costs = run.costs
    unit = run.unit
    if unit == "cycles":
        clock = run.clock_hz or model.cpu_hz
        return costs / clock
    if unit == "instructions":
        return costs * model.cycles_per_instruction / model.cpu_hz
    raise MeterError(
        f"power=estimate models an STM32H743 (its cost unit is cycles, or instructions on the QEMU twin); "
        f"this run counts {unit or 'nothing'} ({run.summary.get('target', '?')})"
    )


def estimate_samples(run: RunRecord, model: RunCurrentModel) -> Samples:
    """The estimated current over the generation: one step per forward pass, at the model's current."""
    seconds = token_seconds(run, model)
    if seconds.size == 0:
        raise MeterError(f"{run.path}: the run has no token records to estimate from")
    edges = np.concatenate([[0.0], np.cumsum(seconds)])
    current = np.full(edges.size, model.current_a)
    return Samples(
        source="estimate",
        t_s=edges,
        current_a=current,
        supply_v=model.supply_v,
        marks={"generation_start": [0.0], "generation_end": [float(edges[-1])]},
        estimated=True,
        info={"model": model.describe()},
    )


class EstimateMeter(MeterBase):
    """The no-meter meter: nothing to start; the estimate is computed from the run log afterwards
    (llmcu.power.energy.analyse replaces these empty samples with estimate_samples)."""

    name = "estimate"
    estimated = True

    def __init__(self) -> None:
        self._t0: float | None = None

    def start(self) -> None:
        self._t0 = time.time()

    def stop(self) -> Samples:
        return Samples(source="estimate", t_s=np.zeros(0), current_a=np.zeros(0), host_t0=self._t0, estimated=True)
