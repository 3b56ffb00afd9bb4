"""Align meter samples with a run's token log and compute current, charge and energy per token.

Alignment. The generation runs from the protocol's start line to its end line. It is placed on the meter's
timeline, in order of preference, by:

1. the meter itself, when a board GPIO that is high during generation is wired to its trigger input (PPK2
   logic input, LPM01A D7): marks ``gpio_rise``/``gpio_fall`` (or ``trigger`` at t = 0); uncertainty one
   sample period. With only a start mark, the end is the start plus the host-side interval between the
   start and end lines;
2. the host: summary.json's ``start_marker_time``/``end_marker_time`` (host ``time.time()`` when each line
   arrived) minus the meter's ``host_t0`` (host time of its first sample). A line reaches Python between 0
   and ``link_latency_s`` after the board sent it (UART, USB polling), so half of that is subtracted and half
   is the uncertainty, to which the meter's own start uncertainty (the start command's round trip) and the
   drift between the two clocks (``CLOCK_PPM``) are added;
3. an estimate (llmcu.power.estimate) is its own timeline: the generation is all of it.

Energy. Charge is the integral of the current (trapezoids between samples, the window's edges
interpolated), energy the integral of voltage x current when the meter measures the voltage, otherwise
charge x the supply voltage. Per token means per forward pass (every ``tok`` record, prompt included).
``energy_per_token_uncertainty_mj`` is how much the figure moves when both window edges move by the
alignment uncertainty; it says nothing about the meter's own accuracy.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.fileio import write_text_atomic
from .base import MeterError, Samples, decimate_mean
from .estimate import RunCurrentModel, estimate_samples, model_for_run
from .runrecord import RunRecord, load_run

LINK_LATENCY_S = 0.005  # UART -> USB CDC -> pyserial: a line reaches Python within a few ms of being sent
CLOCK_PPM = 100.0  # meter crystal vs host clock, worst case
DEFAULT_SUPPLY_V = 3.3
MAX_CSV_ROWS = 200_000


@dataclass(frozen=True)
class GenerationSpan:
    """The generation on the meter's timeline (seconds)."""

    start_s: float
    end_s: float
    method: str
    uncertainty_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def generation_window(samples: Samples, run: RunRecord, *, link_latency_s: float = LINK_LATENCY_S) -> GenerationSpan:
    """Where the generation lies on the meter's timeline (see the module docstring for the order)."""
    marks = samples.marks
    period = 1.0 / samples.rate_hz if samples.rate_hz else 0.0
    if samples.estimated and marks.get("generation_start") and marks.get("generation_end"):
        return GenerationSpan(marks["generation_start"][0], marks["generation_end"][0], "estimated (device time)", 0.0)
    host_start, host_end = run.start_marker_time, run.end_marker_time
    starts = marks.get("gpio_rise") or marks.get("trigger") or []
    if starts:
        start = starts[0]
        ends = [t for t in marks.get("gpio_fall", []) if t > start]
        if ends:
            return GenerationSpan(start, ends[0], "meter trigger input (GPIO edges)", period)
        if host_start is not None and host_end is not None:
            return GenerationSpan(
                start,
                start + (host_end - host_start),
                "meter trigger input (start) + host interval between the start and end lines",
                link_latency_s + period,
            )
    if host_start is None or host_end is None:
        raise MeterError(
            f"{run.path}: summary.json has no start_marker_time/end_marker_time (host times of the protocol's "
            "start and end lines) and the meter saw no trigger: the generation cannot be placed on the meter's "
            "timeline"
        )
    if samples.host_t0 is None:
        raise MeterError(f"the {samples.source} samples do not say when the meter started (host_t0)")
    start = host_start - samples.host_t0 - link_latency_s / 2
    end = host_end - samples.host_t0 - link_latency_s / 2
    drift = CLOCK_PPM * 1e-6 * max(abs(end), abs(start))
    uncertainty = samples.host_t0_uncertainty_s + link_latency_s / 2 + drift
    return GenerationSpan(start, end, "host receive times of the start and end lines", uncertainty)


def integrate(t: np.ndarray, y: np.ndarray, a: float, b: float) -> float:
    """The integral of the piecewise-linear y(t) over [a, b] ∩ [t0, tN]."""
    if t.size == 0:
        return 0.0
    a, b = max(a, float(t[0])), min(b, float(t[-1]))
    if b <= a:
        return 0.0
    inside = (t > a) & (t < b)
    ts = np.concatenate([[a], t[inside], [b]])
    ys = np.concatenate([[np.interp(a, t, y)], y[inside], [np.interp(b, t, y)]])
    return float(np.sum((ys[1:] + ys[:-1]) * np.diff(ts)) / 2.0)


def _energy(samples: Samples, supply_v: float, a: float, b: float) -> tuple[float, float]:
    """(charge in C, energy in J) over [a, b]."""
    charge = integrate(samples.t_s, samples.current_a, a, b)
    if samples.voltage_v is not None:
        return charge, integrate(samples.t_s, samples.voltage_v * samples.current_a, a, b)
    return charge, charge * supply_v


def analyse(
    run: RunRecord,
    samples: Samples,
    *,
    supply_v: float | None = None,
    model: RunCurrentModel | None = None,
    targets_dir: Path | None = None,
    link_latency_s: float = LINK_LATENCY_S,
) -> tuple[dict[str, Any], Samples, GenerationSpan]:
    """The power figures of one run (power.json's content), the samples they came from (the estimate's, when
    ``samples`` is the empty series of power=estimate) and the generation window."""
    warnings = list(samples.warnings)
    if samples.estimated and len(samples) == 0:
        samples = estimate_samples(run, model or model_for_run(run, targets_dir))
    if len(samples) < 2:
        raise MeterError(f"the {samples.source} meter returned {len(samples)} samples: nothing to integrate")
    if supply_v is None:
        supply_v = samples.supply_v
    if supply_v is None and samples.voltage_v is None:
        supply_v = DEFAULT_SUPPLY_V
        warnings.append(f"supply voltage not known: {DEFAULT_SUPPLY_V} V assumed")
    supply = float(supply_v if supply_v is not None else np.mean(samples.voltage_v))
    tokens = run.n_tokens
    if tokens <= 0:
        raise MeterError(f"{run.path}: the run has no token records; energy per token is undefined")

    window = generation_window(samples, run, link_latency_s=link_latency_s)
    t0, t_end = float(samples.t_s[0]), float(samples.t_s[-1])
    if window.start_s < t0 - 1e-9 or window.end_s > t_end + 1e-9:
        warnings.append(
            f"the generation ({window.start_s:.3f}-{window.end_s:.3f} s) is not all inside the samples "
            f"({t0:.3f}-{t_end:.3f} s): the figures cover only the overlap"
        )
    a, b = max(window.start_s, t0), min(window.end_s, t_end)
    if b <= a:
        raise MeterError(
            f"the generation ({window.start_s:.3f}-{window.end_s:.3f} s on the meter's clock) lies outside the "
            f"samples ({t0:.3f}-{t_end:.3f} s): was the meter running during the run?"
        )
    in_window = int(np.count_nonzero((samples.t_s >= a) & (samples.t_s <= b)))
    if in_window < 10 and not samples.estimated:
        warnings.append(f"only {in_window} samples during the generation: raise the meter's sample rate")
    charge, energy = _energy(samples, supply, a, b)
    duration = b - a
    avg_current = charge / duration

    def per_token_mj(start: float, end: float) -> float:
        return _energy(samples, supply, max(start, t0), min(end, t_end))[1] / tokens * 1e3

    nominal = energy / tokens * 1e3
    u = window.uncertainty_s
    spread = max(
        (abs(per_token_mj(a + da, b + db) - nominal) for da in (-u, u) for db in (-u, u)),
        default=0.0,
    )

    idle_duration = (a - t0) + (t_end - b)
    idle: dict[str, Any] | None = None
    if idle_duration > 0 and not samples.estimated:
        idle_charge = integrate(samples.t_s, samples.current_a, t0, a)
        idle_charge += integrate(samples.t_s, samples.current_a, b, t_end)
        idle = {"avg_current_a": idle_charge / idle_duration, "duration_s": idle_duration}
    elif samples.estimated:
        idle_current = samples.info.get("model", {}).get("idle_current_a")  # type: ignore[union-attr]
        idle = {"avg_current_a": idle_current, "duration_s": None, "label": "estimated"}

    label = "estimated" if samples.estimated else "measured"
    generation: dict[str, Any] = {
        "label": label,
        "tokens": tokens,
        "duration_s": duration,
        "avg_current_a": avg_current,
        "avg_power_w": energy / duration,
        "charge_c": charge,
        "energy_j": energy,
        "charge_per_token_c": charge / tokens,
        "energy_per_token_mj": nominal,
        "energy_per_token_uncertainty_mj": spread,
    }
    if idle is not None and idle.get("avg_current_a") is not None and not samples.estimated:
        above = (avg_current - float(idle["avg_current_a"])) * supply * duration / tokens * 1e3
        generation["energy_per_token_above_idle_mj"] = above
    compute_s = _compute_seconds(run)
    if compute_s is not None:
        generation["compute_s"] = compute_s
        generation["compute_energy_per_token_mj"] = avg_current * supply * compute_s / tokens * 1e3

    result: dict[str, Any] = {
        "power_version": 1,
        "run": run.path.name,
        "source": samples.source,
        "estimated": samples.estimated,
        "label": label,
        "supply_v": supply,
        "voltage": "measured"
        if samples.voltage_v is not None
        else ("the estimate model's supply" if samples.estimated else "supply setting"),
        "window": {
            "start_s": window.start_s,
            "end_s": window.end_s,
            "method": window.method,
            "alignment_uncertainty_s": window.uncertainty_s,
            "link_latency_s": link_latency_s if "host" in window.method else None,
        },
        "generation": generation,
        "idle": idle,
        "samples": {"count": len(samples), "rate_hz": samples.rate_hz, "duration_s": samples.duration_s},
        "marks": samples.marks,
        "meter": samples.info,
        "warnings": warnings,
    }
    return _jsonable(result), samples, window


def _compute_seconds(run: RunRecord) -> float | None:
    """Device time spent in forward passes, when the run's counter has a known clock (a board's cycles)."""
    if run.unit == "cycles" and run.clock_hz:
        return float(run.costs.sum() / run.clock_hz)
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def power_csv(samples: Samples, window: GenerationSpan, *, max_rows: int = MAX_CSV_ROWS) -> tuple[str, int]:
    """The samples as CSV (averaged in blocks when there are more than ``max_rows``) and the block size.
    An estimated series names its column ``estimated_current_a``."""
    factor = max(1, math.ceil(len(samples) / max_rows))
    t, current = decimate_mean(samples.t_s, samples.current_a, factor)
    voltage = decimate_mean(samples.t_s, samples.voltage_v, factor)[1] if samples.voltage_v is not None else None
    current_name = "estimated_current_a" if samples.estimated else "current_a"
    columns = ["t_s", *(["host_time_s"] if samples.host_t0 is not None else []), current_name]
    columns += ["voltage_v"] if voltage is not None else []
    columns.append("phase")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for i in range(t.size):
        row: list[object] = [f"{t[i]:.7f}"]
        if samples.host_t0 is not None:
            row.append(f"{samples.host_t0 + t[i]:.6f}")
        row.append(f"{current[i]:.9g}")
        if voltage is not None:
            row.append(f"{voltage[i]:.6g}")
        row.append("generation" if window.start_s <= t[i] <= window.end_s else "idle")
        writer.writerow(row)
    return buffer.getvalue(), factor


def write_power(
    run_dir: str | Path,
    samples: Samples,
    *,
    supply_v: float | None = None,
    model: RunCurrentModel | None = None,
    targets_dir: Path | None = None,
    link_latency_s: float = LINK_LATENCY_S,
) -> dict[str, Any]:
    """Analyse a run's samples and write ``power.json`` and ``power.csv`` into its log folder."""
    run = load_run(run_dir)
    result, used, window = analyse(
        run, samples, supply_v=supply_v, model=model, targets_dir=targets_dir, link_latency_s=link_latency_s
    )
    text, factor = power_csv(used, window)
    result["samples"]["csv_block"] = factor
    write_text_atomic(run.path / "power.csv", text)
    write_text_atomic(run.path / "power.json", json.dumps(result, indent=2) + "\n")
    return result


def format_power(result: dict[str, Any]) -> str:
    """One line for the console: energy per token and average current, labelled when estimated."""
    g = result["generation"]
    tag = " (estimated)" if result.get("estimated") else ""
    text = f"{g['energy_per_token_mj']:.3f} mJ/token{tag}, {g['avg_current_a'] * 1e3:.1f} mA"
    text += f" at {result['supply_v']:g} V"
    if g.get("energy_per_token_uncertainty_mj"):
        text += f" (±{g['energy_per_token_uncertainty_mj']:.3f} mJ/token from alignment)"
    return text
