"""A run's report: ``report.md`` and ``report.html`` (self-contained, the plots inlined) in its log folder.

Contents: what ran and how it ended, speed (tok/s, cost per token; for the QEMU twin, which counts instructions,
an estimate on the chip at the board's clock), the build's options and the quantized model's quality against fp32
(quant_report.json), the prompt and the text, the memory map of the board the build is for with the free bytes
and the stack (configured against the peak measured), the cost of every forward pass over its position (with a
rolling median on long runs and the point where a sliding window fills), and, when the run has power.json
(llmcu.power), the energy per token and the current over time where it is not one constant. Where it came from:
the git commit, the compiler, QEMU, Python and numpy. Figures from power=estimate say "estimated" wherever they
appear.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.fileio import write_text_atomic
from ..core.paths import TARGETS_DIR
from ..power.estimate import model_for_run
from ..power.runrecord import RunRecord, load_run
from .document import Document, Image, ReportTable
from .plots import plot_cost, plot_current, window_fill_position

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
        chip = _chip_estimate(run)
        if chip is not None:
            name, hz, per_token = chip
            rows.append([f"on the {name} (estimated)", f"{hz / per_token:,.1f} tok/s, {per_token / hz * 1e3:,.3f} ms "
                         f"per token at {hz / 1e6:g} MHz"])  # fmt: skip
    if power is not None:
        g = power["generation"]
        tag = " (estimated)" if power.get("estimated") else ""
        rows.append([f"energy per token{tag}", _num(g["energy_per_token_mj"], 3, "mJ")])
        rows.append([f"average current during generation{tag}", _si_current(g["avg_current_a"])])
    doc.heading("Summary")
    doc.table(ReportTable(["", "value"], rows, align_right=(1,)))


def _chip_estimate(run: RunRecord) -> tuple[str, float, float] | None:
    """For a twin run: (chip, its clock, cycles per token), one cycle an instruction (a first-order estimate: the
    Cortex-M7's dual issue and its flash wait states taken to cancel; external memory is slower)."""
    per_token = run.summary.get("cost_per_token")
    if not isinstance(per_token, int | float) or per_token <= 0:
        return None
    hz = run.settings.get("clock_hz") or model_for_run(run, TARGETS_DIR).cpu_hz
    chip = str(run.settings.get("built_for") or "stm32h743")
    return chip, float(hz), float(per_token)


def _build_section(doc: Document, run: RunRecord) -> None:
    """The options the build and the run were made with, and the quantized model's quality against fp32."""
    s, settings = run.summary, run.settings
    doc.heading("Build")
    shown = {
        "target": s.get("target"), "board": s.get("board"), "built for": settings.get("built_for"),
        "model": s.get("model"), "checkpoint": settings.get("checkpoint"), "tokenizer": settings.get("tokenizer"),
        "quant": s.get("quant"), "group_size": settings.get("group_size"), "fit": settings.get("fit"),
        "calibration": settings.get("calibration"), "quant_overrides": settings.get("quant_overrides") or None,
        "kv_type": s.get("kv_type"), "seq_len": settings.get("seq_len") or "the model's",
        "overflow": settings.get("overflow"), "sinks": settings.get("sinks"), "max_steps": settings.get("max_steps"),
        "kernels": settings.get("kernels"), "numerics": settings.get("numerics"), "weights": settings.get("weights"),
        "kv": settings.get("kv"), "stack": settings.get("stack"), "watchdog (s)": settings.get("watchdog_s") or None,
        "steps": settings.get("steps"), "temperature": settings.get("temperature"), "topp": settings.get("topp"),
        "seed": settings.get("seed"), "build folder": settings.get("build"),
    }  # fmt: skip
    rows = [[name, str(value)] for name, value in shown.items() if value not in (None, "")]
    doc.table(ReportTable(["option", "value"], rows))
    quant_report = _quant_report(run)
    quality = quant_report.get("quality")
    if isinstance(quality, dict) and quality:
        doc.para(
            f"Quality against fp32 (quant_report.json; teacher-forced over {quality.get('positions', '?')} "
            f"positions of fp32's greedy run from {quality.get('prompt', '?')!r}): top-1 agreement "
            f"{_num(100 * float(quality.get('top1', 0)), 1)} %, mean KL {float(quality.get('mean_kl', 0)):.2e}, "
            f"max KL {float(quality.get('max_kl', 0)):.2e}."
        )
    elif run.build_dir is not None:
        note = quant_report.get("quality_note") or "not measured for this build"
        doc.para(f"Quality against fp32: {note}.")


def _quant_report(run: RunRecord) -> dict[str, Any]:
    build = run.build_dir
    path = build / "quant_report.json" if build is not None else None
    if path is None or not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _text_section(doc: Document, run: RunRecord) -> None:
    s = run.summary
    doc.heading("Prompt and text")
    prompt = s.get("prompt")
    doc.para(f"Prompt: {prompt!r}." if prompt else "No prompt (the model starts from BOS).")
    text = s.get("text")
    if text:
        doc.pre(str(text))
    else:
        doc.para("No text came back.")


def _provenance_section(doc: Document, run: RunRecord) -> None:
    host = run.summary.get("host") if isinstance(run.summary.get("host"), dict) else {}
    labels = {
        "llmcu": "llmcu", "git_commit": "git commit", "compiler": "compiler", "qemu": "QEMU", "probe": "probe",
        "python": "Python", "numpy": "numpy", "pyserial": "pyserial", "platform": "host",
    }  # fmt: skip
    rows = [[label, str(host[key])] for key, label in labels.items() if host.get(key)]
    doc.heading("Where it came from")
    if rows:
        doc.table(ReportTable(["", "version"], rows))
    else:
        doc.para("The log records no versions (an older log).")


def _memory_section(doc: Document, run: RunRecord) -> None:
    doc.heading("Memory")
    board_map = run.build_dir / "memory_report.json" if run.build_dir is not None else None
    twin_ran = bool(run.settings.get("built_for"))
    # The twin ran the board's plan in its own map: the board's map is the one to read.
    path = board_map if twin_ran and board_map is not None and board_map.is_file() else run.memory_report_path()
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
        [r["name"], f"{r['origin']:#010x}", _num(r["used"], 0), _num(r["size"] - r["used"], 0), _num(r["size"], 0),
         _num(r.get("percent"), 1)]
        for r in report.get("regions", [])
        if r.get("used")
    ]  # fmt: skip
    whose = f"the {run.settings['built_for']} board's map (the QEMU twin ran the same plan in its own)" if (
        twin_ran and path == board_map) else "the map of the image that ran"  # fmt: skip
    doc.para(f"From {path}: {whose}.")
    header = ["region", "origin", "used (bytes)", "free (bytes)", "size (bytes)", "%"]
    doc.table(ReportTable(header, rows, align_right=(2, 3, 4, 5)))
    doc.para(
        f"Code {_num(report.get('code_bytes'), 0)} bytes, weights and tokenizer {_num(report.get('weight_bytes'), 0)}"
        f" bytes, RAM in use {_num(report.get('ram_bytes'), 0)} bytes."
    )
    stack, peak = run.settings.get("stack"), run.summary.get("peak_stack")
    if isinstance(stack, int) and stack > 0 and isinstance(peak, int | float):
        doc.para(f"Stack: {int(peak):,} bytes at its peak of the {stack:,} configured ({100 * peak / stack:.1f} %, "
                 f"{stack - int(peak):,} bytes to spare).")  # fmt: skip


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
    doc.table(ReportTable(["", "value"], rows, align_right=(1,)))
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
    csv_path, image = run.path / "power.csv", run.path / "current.png"
    if csv_path.is_file() and plot_current(power, csv_path, image, run.title):
        images.append(image)
        doc.image(Image(image.name, "estimated current over time" if estimated else "current over time"))
    elif csv_path.is_file():
        doc.para("No current plot: the current is one constant over the run (the estimate's Run-mode current), a "
                 "flat line; the energy follows the time of each pass (see the cost per token).")  # fmt: skip


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
    doc.table(ReportTable(["region", "bytes read", unit or "cost", "MB/s", "tests"], rows, align_right=(1, 2, 3)))


def write_report(run_dir: str | Path) -> ReportFiles:
    """Write report.md, report.html and the PNGs they show into the run's log folder."""
    run = load_run(run_dir)
    power_path = run.path / "power.json"
    power = json.loads(power_path.read_text()) if power_path.is_file() else None
    doc = Document(f"Run report: {run.title}")
    doc.para(f"Log {run.path.name}.")
    _summary_section(doc, run, power)
    _build_section(doc, run)
    _text_section(doc, run)
    _memory_section(doc, run)
    _selftest_section(doc, run)
    images: list[Path] = []
    doc.heading("Cost per token")
    if run.tokens:
        image = run.path / "cost_per_token.png"
        plot_cost(run, image)
        images.append(image)
        doc.image(Image(image.name, "cost per forward pass over position"))
        fill = window_fill_position(run)
        if fill is not None:
            doc.para(f"The sliding window filled at position {fill}: from there each pass attends over the same "
                     "number of cached positions, so the cost stops growing.")  # fmt: skip
    else:
        doc.para("No token records: the run produced none.")
    _power_section(doc, run, power, images)
    _provenance_section(doc, run)
    markdown, page = run.path / "report.md", run.path / "report.html"
    write_text_atomic(markdown, doc.markdown())
    write_text_atomic(page, doc.html(run.path))
    return ReportFiles(markdown, page, images)
