"""The run report's plots (matplotlib's Agg backend: no display needed): the cost of every forward pass over
its position, and the supply current over time. A plot is drawn only where it shows something a table does not."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from ..core.fileio import write_bytes_atomic
from ..power.runrecord import RunRecord

UNIT_LABELS = {
    "cycles": "CPU cycles",
    "instructions": "instructions (QEMU)",
    "ns": "nanoseconds",
}
# Runs longer than this get a rolling median over the raw costs, which are then a noise band.
ROLLING_ABOVE = 200
ROLLING_WINDOW = 31


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    write_bytes_atomic(path, buffer.getvalue())


def rolling_median(values: np.ndarray, window: int = ROLLING_WINDOW) -> np.ndarray:
    """The median of each value's centred window (shorter at the ends)."""
    half = window // 2
    return np.array([np.median(values[max(0, i - half) : i + half + 1]) for i in range(values.size)])


def window_fill_position(run: RunRecord) -> int | None:
    """overflow=slide: the first position past the cache's slots (the header's ``window=``), where it starts to
    slide; None for a run that stops at the context or never got there."""
    try:
        slots = int(run.header.get("window") or 0)
    except (TypeError, ValueError):
        return None
    return slots if 0 < slots < run.n_tokens else None


def plot_cost(run: RunRecord, path: Path) -> None:
    """Cost of each forward pass over its position; the prompt's passes shaded; a rolling median on long runs; where
    a sliding window fills; ms on the right when known."""
    plt = _pyplot()
    from matplotlib.ticker import EngFormatter

    positions, costs = run.positions, run.costs
    fig, ax = plt.subplots(figsize=(8, 3.6))
    try:
        long_run = costs.size > ROLLING_ABOVE
        ax.plot(positions, costs, lw=0.6 if long_run else 1.2, color="#9ecae1" if long_run else "#1f77b4",
                label="each pass" if long_run else None)  # fmt: skip
        if long_run:
            ax.plot(positions, rolling_median(costs), lw=1.6, color="#1f77b4", label=f"median of {ROLLING_WINDOW}")
        prompt = run.summary.get("prompt_tokens")
        if isinstance(prompt, int) and prompt > 1:
            ax.axvspan(-0.5, prompt - 1.5, color="#999", alpha=0.15, lw=0, label="prompt (teacher-forced)")
        fill = window_fill_position(run)
        if fill is not None:
            ax.axvline(fill, color="#d62728", lw=1.0, ls="--", label=f"window full at {fill}: the cache slides")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", frameon=False, fontsize=8)
        ax.set_xlabel("position")
        ax.set_ylabel(f"{UNIT_LABELS.get(run.unit, run.unit or 'cost')} per token", fontsize=9)
        ax.grid(alpha=0.3)
        ax.yaxis.set_major_formatter(EngFormatter(sep=""))
        ms = run.ms
        if ms is not None and costs.size and costs.max() > 0:
            scale = float(np.median(ms[costs > 0] / costs[costs > 0]))
            right = ax.secondary_yaxis("right", functions=(lambda c: c * scale, lambda m: m / scale))
            right.set_ylabel("ms per token")
        ax.set_title(f"Cost per forward pass — {run.title}", fontsize=10)
        _save(fig, path)
    finally:
        plt.close(fig)


def read_power_csv(path: Path) -> tuple[np.ndarray, np.ndarray, bool]:
    """(t_s, current_a, estimated) from a power.csv."""
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        estimated = "estimated_current_a" in header
        column = header.index("estimated_current_a" if estimated else "current_a")
        t, current = [], []
        for row in reader:
            t.append(float(row[0]))
            current.append(float(row[column]))
    return np.array(t), np.array(current), estimated


def plot_current(power: dict[str, Any], csv_path: Path, path: Path, title: str) -> bool:
    """Current over the meter's time with the generation window shaded; nothing drawn (False) for a series that
    would show nothing: one constant, as the datasheet estimate is, is a flat line."""
    t, current, estimated = read_power_csv(csv_path)
    if current.size < 2 or float(np.ptp(current)) == 0:
        return False
    plt = _pyplot()
    window = power["window"]
    scale, unit = (1e3, "ms") if (t[-1] - t[0] if t.size else 0) < 2 else (1.0, "s")
    fig, ax = plt.subplots(figsize=(8, 3.6))
    try:
        label = "estimated current" if estimated else "measured current"
        if estimated:
            ax.step(t * scale, current * 1e3, where="post", lw=1.2, color="#d62728", label=label)
        else:
            ax.plot(t * scale, current * 1e3, lw=0.8, color="#2ca02c", label=label)
        ax.axvspan(window["start_s"] * scale, window["end_s"] * scale, color="#ff7f0e", alpha=0.15, lw=0,
                   label="generation")  # fmt: skip
        u = window.get("alignment_uncertainty_s") or 0
        if u * scale > 0:
            for edge in (window["start_s"], window["end_s"]):
                ax.axvspan((edge - u) * scale, (edge + u) * scale, color="#ff7f0e", alpha=0.3, lw=0)
        ax.set_xlabel(f"estimated device time ({unit})" if estimated else f"time on the meter's clock ({unit})")
        ax.set_ylabel("current (mA)" + (" — estimated" if estimated else ""))
        ax.set_ylim(bottom=0, top=max(1e-6, float(current.max()) * 1e3 * 1.15) if current.size else 1)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", frameon=False, fontsize=8)
        ax.set_title(("Estimated current — " if estimated else "Supply current — ") + title, fontsize=10)
        _save(fig, path)
    finally:
        plt.close(fig)
    return True
