"""A run's report: ``report.md`` and ``report.html`` (self-contained, the plots inlined) in its log folder.

Contents: what ran and how it ended, speed (tok/s, cost per token), the firmware's memory regions (from the
build's memory_report.json when the log's settings point at a firmware build), the cost of every forward pass
over its position (PNG), and, when the run has power.json (llmcu.power), the current over time with the
generation marked (PNG) and the energy per token. Figures from power=estimate say "estimated" wherever they
appear. Plots are drawn with matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import base64
import csv
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.fileio import write_bytes_atomic, write_text_atomic
from ..power.runrecord import RunRecord, load_run

UNIT_LABELS = {
    "cycles": "CPU cycles",
    "instructions": "instructions (QEMU)",
    "ns": "nanoseconds",
}


# ---- a tiny document model, rendered to Markdown and to HTML ----


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    align_right: tuple[int, ...] = ()


@dataclass
class Image:
    file: str  # beside report.md
    alt: str


@dataclass
class Document:
    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, table: Table) -> None:
        self.blocks.append(("table", table))

    def image(self, image: Image) -> None:
        self.blocks.append(("img", image))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, value in self.blocks:
            if kind == "h2":
                out += [f"## {value}", ""]
            elif kind == "p":
                out += [value, ""]
            elif kind == "table":
                out.append("| " + " | ".join(value.header) + " |")
                out.append(
                    "|" + "|".join("---:" if i in value.align_right else "---" for i in range(len(value.header))) + "|"
                )
                out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in value.rows]
                out.append("")
            elif kind == "img":
                out += [f"![{value.alt}]({value.file})", ""]
        return "\n".join(out)

    def html(self, folder: Path) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for kind, value in self.blocks:
            if kind == "h2":
                body.append(f"<h2>{html.escape(value)}</h2>")
            elif kind == "p":
                body.append(f"<p>{html.escape(value)}</p>")
            elif kind == "table":
                head = "".join(f"<th>{html.escape(cell)}</th>" for cell in value.header)
                rows = []
                for row in value.rows:
                    cells = "".join(
                        f'<td class="num">{html.escape(c)}</td>'
                        if i in value.align_right
                        else f"<td>{html.escape(c)}</td>"
                        for i, c in enumerate(row)
                    )
                    rows.append(f"<tr>{cells}</tr>")
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
            elif kind == "img":
                data = base64.b64encode((folder / value.file).read_bytes()).decode("ascii")
                body.append(f'<p><img alt="{html.escape(value.alt)}" src="data:image/png;base64,{data}"></p>')
        style = (
            "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
            "table{border-collapse:collapse;margin:0.5rem 0}th,td{border:1px solid #ccc;padding:0.25rem 0.6rem}"
            "th{background:#f3f3f3;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}"
            "img{max-width:100%}"
        )
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>'
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
        )


# ---- formatting ----


def _num(value: Any, digits: int = 1, unit: str = "") -> str:
    if value is None or value == "":
        return "–"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    text = f"{number:,.0f}" if digits == 0 else f"{number:,.{digits}f}"
    return f"{text} {unit}".rstrip()


def _si_current(amps: float | None) -> str:
    if amps is None:
        return "–"
    if abs(amps) >= 1:
        return f"{amps:.3f} A"
    if abs(amps) >= 1e-3:
        return f"{amps * 1e3:.2f} mA"
    return f"{amps * 1e6:.1f} µA"


# ---- plots ----


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    write_bytes_atomic(path, buffer.getvalue())


def plot_cost(run: RunRecord, path: Path) -> None:
    """Cost of each forward pass over its position; the prompt's passes shaded; ms on the right when known."""
    plt = _pyplot()
    positions, costs = run.positions, run.costs
    fig, ax = plt.subplots(figsize=(8, 3.6))
    try:
        ax.plot(positions, costs, lw=1.2, color="#1f77b4")
        prompt = run.summary.get("prompt_tokens")
        if isinstance(prompt, int) and prompt > 1:
            ax.axvspan(-0.5, prompt - 1.5, color="#999", alpha=0.15, lw=0, label="prompt (teacher-forced)")
            ax.legend(loc="upper left", frameon=False, fontsize=8)
        ax.set_xlabel("position")
        ax.set_ylabel(f"{UNIT_LABELS.get(run.unit, run.unit or 'cost')} per token", fontsize=9)
        ax.grid(alpha=0.3)
        from matplotlib.ticker import EngFormatter

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


def plot_current(power: dict[str, Any], csv_path: Path, path: Path, title: str) -> None:
    """Current over the meter's time with the generation window shaded."""
    plt = _pyplot()
    t, current, estimated = read_power_csv(csv_path)
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


# ---- the report ----


@dataclass
class ReportFiles:
    markdown: Path
    html: Path
    images: list[Path]


def _summary_section(doc: Document, run: RunRecord, power: dict[str, Any] | None) -> None:
    s = run.summary
    unit = run.unit or "cost"
    prompt = f" ({s['prompt_tokens']} prompt)" if s.get("prompt_tokens") else ""
    rows = [
        ["status", f"{s.get('status', '?')}" + (f" ({s['reason']})" if s.get("reason") else "")],
        ["runner", str(s.get("runner") or "–")],
        ["tokens (forward passes)", f"{run.n_tokens}{prompt}"],
        ["tok/s", _num(s.get("tok_per_s"), 1)],
        [f"{unit} per token", _num(s.get("cost_per_token"), 0)],
        ["ms per token", _num(s.get("ms_per_token"), 3)],
        ["peak stack", _num(s.get("peak_stack"), 0, "bytes")],
        ["started", str(s.get("start_time") or "–")],
    ]
    if unit == "instructions":
        rows.append(["note", "the QEMU twin counts instructions; its tok/s is not the board's speed"])
    if power is not None:
        g = power["generation"]
        tag = " (estimated)" if power.get("estimated") else ""
        rows.append([f"energy per token{tag}", _num(g["energy_per_token_mj"], 3, "mJ")])
        rows.append([f"average current during generation{tag}", _si_current(g["avg_current_a"])])
    doc.heading("Summary")
    doc.table(Table(["", "value"], rows, align_right=(1,)))


def _memory_section(doc: Document, run: RunRecord) -> None:
    doc.heading("Memory")
    path = run.memory_report_path()
    if path is None:
        build = run.build_dir
        why = (
            f"no memory_report.json in {build} (host builds have none)"
            if build is not None
            else "the log's summary.json does not name the build folder (settings.build)"
        )
        doc.para(f"Skipped: {why}.")
        return
    report = json.loads(path.read_text())
    rows = [
        [r["name"], f"{r['origin']:#010x}", _num(r["used"], 0), _num(r["size"], 0), _num(r.get("percent"), 1)]
        for r in report.get("regions", [])
        if r.get("used")
    ]
    doc.para(f"From {path}.")
    doc.table(Table(["region", "origin", "used (bytes)", "size (bytes)", "%"], rows, align_right=(2, 3, 4)))
    doc.para(
        f"Code {_num(report.get('code_bytes'), 0)} bytes, weights and tokenizer {_num(report.get('weight_bytes'), 0)}"
        f" bytes, RAM in use {_num(report.get('ram_bytes'), 0)} bytes."
    )


def _power_section(doc: Document, run: RunRecord, power: dict[str, Any] | None, images: list[Path]) -> None:
    doc.heading("Power")
    if power is None:
        doc.para("No power data for this run (power=none). `scons ... run power=ppk2|lpm01a|estimate` records it.")
        return
    estimated = bool(power.get("estimated"))
    g, w = power["generation"], power["window"]
    tag = " (estimated)" if estimated else ""
    if estimated:
        model = power.get("meter", {}).get("model", {})
        doc.para(
            "These figures are estimated, not measured: "
            f"{_si_current(model.get('run_current_a'))} at {model.get('supply_v', '?')} V "
            f"(VOS{model.get('vos', '?')}, {_num((model.get('cpu_hz') or 0) / 1e6, 0)} MHz), "
            f"from {model.get('source')}."
        )
    rows = [[f"energy per token{tag}", _num(g["energy_per_token_mj"], 3, "mJ")]]
    if not estimated:
        rows.append(["± from alignment", _num(g.get("energy_per_token_uncertainty_mj"), 3, "mJ")])
    rows += [
        [f"average current, generation{tag}", _si_current(g["avg_current_a"])],
        [f"average power, generation{tag}", _num(g["avg_power_w"] * 1e3, 1, "mW")],
        [f"charge{tag}", _num(g["charge_c"] * 1e3, 3, "mC")],
        [f"energy{tag}", _num(g["energy_j"] * 1e3, 2, "mJ")],
        [f"generation time{tag}", _num(g["duration_s"] * 1e3, 1, "ms")],
        ["supply voltage", f"{power['supply_v']:g} V ({power.get('voltage', '')})"],
    ]
    if power.get("idle") and power["idle"].get("avg_current_a") is not None:
        rows.append([f"average current, idle{tag}", _si_current(power["idle"]["avg_current_a"])])
    if g.get("energy_per_token_above_idle_mj") is not None:
        rows.append(["energy per token above idle", _num(g["energy_per_token_above_idle_mj"], 3, "mJ")])
    if g.get("compute_energy_per_token_mj") is not None:
        rows.append([f"energy per token, forward pass only{tag}", _num(g["compute_energy_per_token_mj"], 3, "mJ")])
    doc.table(Table(["", "value"], rows, align_right=(1,)))
    if estimated:
        doc.para("Estimated series: one step per forward pass, its length from the run's cost records.")
    else:
        doc.para(
            f"Meter: {power.get('source')}; generation placed by {w['method']}, "
            f"±{_num(w['alignment_uncertainty_s'] * 1e3, 2)} ms; {power['samples']['count']:,} samples at "
            f"{_num(power['samples']['rate_hz'], 0)} Hz."
        )
    for warning in power.get("warnings", []):
        doc.para(f"Warning: {warning}")
    csv_path = run.path / "power.csv"
    if csv_path.is_file():
        image = run.path / "current.png"
        plot_current(power, csv_path, image, run.title)
        images.append(image)
        doc.image(Image(image.name, "estimated current over time" if estimated else "current over time"))


def _selftest_section(doc: Document, run: RunRecord) -> None:
    """A bring-up self-test's results (selftest=1: llmcu.device.selftest wrote selftest.json into the log)."""
    path = run.path / "selftest.json"
    if not path.is_file():
        return
    data = json.loads(path.read_text())
    doc.heading("Self-test")
    unit = data.get("unit", "")
    speeds = f"at {_num(data.get('clock_hz'), 0)} Hz." if unit == "cycles" else f"in {unit}: not time, no MB/s."
    doc.para(f"{'Passed' if data.get('passed') else 'FAILED'}; read speeds {speeds}")
    rows = []
    for r in data.get("regions", []):
        tests = "; ".join(f"{name}: {verdict}" for name, verdict in r["tests"].items()) or "-"
        rows.append([r["region"], _num(r["read_bytes"], 0), _num(r["read_cost"], 0), _num(r.get("mb_per_s"), 1), tests])
    doc.table(Table(["region", "bytes read", unit or "cost", "MB/s", "tests"], rows, align_right=(1, 2, 3)))


def write_report(run_dir: str | Path) -> ReportFiles:
    """Write report.md, report.html and the PNGs they show into the run's log folder."""
    run = load_run(run_dir)
    power_path = run.path / "power.json"
    power = json.loads(power_path.read_text()) if power_path.is_file() else None
    doc = Document(f"Run report: {run.title}")
    doc.para(f"Log {run.path.name}.")
    _summary_section(doc, run, power)
    _memory_section(doc, run)
    _selftest_section(doc, run)
    images: list[Path] = []
    doc.heading("Cost per token")
    if run.tokens:
        image = run.path / "cost_per_token.png"
        plot_cost(run, image)
        images.append(image)
        doc.image(Image(image.name, "cost per forward pass over position"))
    else:
        doc.para("No token records: the run produced none.")
    _power_section(doc, run, power, images)
    markdown, page = run.path / "report.md", run.path / "report.html"
    write_text_atomic(markdown, doc.markdown())
    write_text_atomic(page, doc.html(run.path))
    return ReportFiles(markdown, page, images)
