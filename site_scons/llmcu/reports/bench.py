"""The benchmark harness: build and run a matrix of target x model x quant x kernel set, and record exact
instructions per token (QEMU twins), host tok/s, code size and estimated speed on the real chips.

Figures are measured, never asserted: ``tools/bench.py`` writes ``bench/results.json`` (schema in bench/README.md),
a Markdown table and a PNG plot, and compares with a saved baseline to flag regressions.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from elftools.elf.elffile import ELFFile

from ..builder.settings import BuildSettings, RunParams, configure
from ..core.errors import LlmcuError
from ..core.fileio import read_toml, write_bytes_atomic, write_text_atomic
from ..core.paths import ROOT, TARGETS_DIR
from ..device.protocol import RunOutput, parse
from ..platform.stm32h7 import Board
from ..platform.targets import load_target

PROMPT = "Once upon a time"
STEPS = 256
POSITIONS = (1, 64, 128, 255)
# Combinations left out of the matrix: the twin's 8 MB of QSPI cannot hold a 15M-shaped model.
SKIP = {("qemu-m7", "15m-shaped")}
REGRESSION_TOLERANCE = 0.02  # instruction counts are exact; 2% absorbs deliberate small changes only

# The cycle model for estimates on the real chips, stated: instructions at an assumed CPI (caches warm,
# code and hot data in TCM/cache), capped by the bandwidth of the region the weights stream from.
CHIPS = {
    "qemu-m7": {"chip": "STM32H743", "clock_hz": 480e6, "cpi": 1.0},
    "stm32h743": {"chip": "STM32H743", "clock_hz": 480e6, "cpi": 1.0},
    "rzv2l": {"chip": "RZ/V2L Cortex-A55", "clock_hz": 1.2e9, "cpi": 1.0},
}
# Sustained read bandwidth (bytes/s) by region, conservative: internal flash through the AXI bus with
# 4 wait states at 240 MHz and a 64-bit line, quad-SPI NOR at 133 MHz SDR (4 bits per clock), 16-bit SDRAM
# at 120 MHz with ~70% efficiency.
REGION_BANDWIDTH = {"flash": 240e6 * 8 / 5, "qspi": 133e6 * 4 / 8, "sdram": 120e6 * 2 * 0.7}

# The bar, the goals and the growth goals (bench/goals.toml): instructions per token by (target, model, quant).
GOALS_FILE = ROOT / "bench" / "goals.toml"


def goals(kind: str) -> dict[tuple[str, str, str], float]:
    """``bar``, ``goals`` or ``growth_goals`` of bench/goals.toml."""
    table = read_toml(GOALS_FILE).get(kind, {})
    return {tuple(key.split("/")): value for key, value in table.items()}  # type: ignore[misc]


@dataclass
class BenchRow:
    target: str
    model: str
    quant: str
    kernels: str
    numerics: str = "exact"  # numerics=fast: the kernel set's quality-bound route (not bit-exact)
    config: str = ""  # board and placement options of a board study row, e.g. "board=h743-sdram-qspi weights=qspi"
    instructions_per_token: float | None = None  # average over the run (twins)
    instructions_at: dict[str, int] = field(default_factory=dict)  # position -> count
    phases: dict[str, int] = field(default_factory=dict)  # phase -> instructions at position 128
    code_bytes: int = 0
    weight_bytes: int = 0
    tok_per_s: dict[str, float] | None = None  # host: min, median, max
    estimate: dict[str, object] | None = None  # real chip: tok/s from the cycle model, memory bound
    costs: list[int] = field(default_factory=list, repr=False)  # per position, for the plot (not in the JSON)

    def as_dict(self) -> dict[str, object]:
        record = asdict(self)
        del record["costs"]
        return record

    def growth_per_position(self) -> float | None:
        """What one more cached position costs: (count at position 255 - count at position 1) / 254."""
        if "255" not in self.instructions_at or "1" not in self.instructions_at:
            return None
        return (self.instructions_at["255"] - self.instructions_at["1"]) / 254

    def key(self) -> tuple[str, str, str, str, str, str]:
        return (self.target, self.model, self.quant, self.kernels, self.numerics, self.config)


def build(options: dict[str, str]) -> BuildSettings:
    """Build with scons for these options (a clear error with scons's output if it fails), then their settings."""
    args = [f"{key}={value}" for key, value in options.items()]
    result = subprocess.run([sys.executable, "-m", "SCons", "-Q", *args], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise LlmcuError(f"building {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return configure(options)


def _text_bytes(objects: Iterable[Path]) -> int:
    """Code bytes of the runtime's object files (the .text sections), for targets without a memory report."""
    total = 0
    for path in objects:
        with open(path, "rb") as stream:
            for section in ELFFile(stream).iter_sections():
                if section.name.startswith(".text"):
                    total += section["sh_size"]
    return total


def _fill_counts(row: BenchRow, output: RunOutput) -> None:
    costs = row.costs = [record.cost for record in output.tokens]
    row.instructions_per_token = statistics.fmean(costs)
    row.instructions_at = {str(pos): costs[pos] for pos in POSITIONS if pos < len(costs)}


# Measured read bandwidths (bytes/s by region) from a board's self-test (tools/bench.py --selftest-log), which
# replace REGION_BANDWIDTH's assumed ones in the on-chip estimates.
MEASURED_BANDWIDTH: dict[str, float] = {}
# The STM32H743's clock per silicon revision (targets/stm32h743/limits.toml): revision Y runs at most 400 MHz.
REVISION_Y_CLOCK_HZ = 400e6


def _bandwidth_source(measured: list[str], board: Board | None) -> str:
    if measured:
        return f" (measured by a self-test: {', '.join(measured)})"
    return f" (from board {board.name}'s clocks and bus widths)" if board else " (assumed)"


def _estimate(row: BenchRow, report: dict, board: Board | None = None) -> dict[str, object]:
    """tok/s on the chip: compute (instructions x CPI at its clock) or memory (the weights read once a token at the
    bandwidth of the region each lives in: ``board``'s own buses when the row is a board's, else REGION_BANDWIDTH's
    assumed figures; a self-test's measured ones over either), whichever is slower."""
    chip = CHIPS[row.target]
    compute = chip["clock_hz"] / (row.instructions_per_token * chip["cpi"])
    bandwidth = {**REGION_BANDWIDTH, **(board.read_bandwidth() if board else {}), **MEASURED_BANDWIDTH}
    not_weights = {".llmcu_kv", ".llmcu_state", ".llmcu_tables"}
    streamed = {
        region["name"]: sum(
            size for name, size in region["sections"].items() if name.startswith(".llmcu_") and name not in not_weights
        )
        for region in report["regions"]
        if region["name"] in bandwidth
    }
    seconds = {name: size / bandwidth[name] for name, size in streamed.items() if size}
    seconds_reading = sum(seconds.values())
    memory_bound = 1 / seconds_reading if seconds_reading else None
    limit = min(compute, memory_bound) if memory_bound else compute
    bound = "compute" if limit == compute else f"memory ({max(seconds, key=seconds.__getitem__)} bandwidth)"
    measured = sorted(name for name in seconds if name in MEASURED_BANDWIDTH)
    revision_y = REVISION_Y_CLOCK_HZ / (row.instructions_per_token * chip["cpi"])
    return {
        "chip": chip["chip"],
        "model": f"instructions x CPI {chip['cpi']} at {chip['clock_hz'] / 1e6:.0f} MHz; weights read once per "
        "token at the region's bandwidth" + _bandwidth_source(measured, board),
        "revision_y_tok_per_s": round(min(revision_y, memory_bound) if memory_bound else revision_y, 1),
        "compute_tok_per_s": round(compute, 1),
        "memory_bound_tok_per_s": round(memory_bound, 1) if memory_bound else None,
        "tok_per_s": round(limit, 1),
        "bound": bound,
        "weights_by_region": {name: size for name, size in streamed.items() if size},
    }


def bench_twin(target: str, model: str, quant: str, kernels: str, extra: dict[str, str]) -> BenchRow:
    from ..device import qemu

    settings = build({"target": target, "model": model, "quant": quant, "kernels": kernels, **extra})
    image = settings.images[0]
    output = qemu.run_firmware(image.elf, RunParams(PROMPT, STEPS, 0.0, 0.9, 1), progress=True)
    report = json.loads((image.out_dir / "memory_report.json").read_text())
    row = BenchRow(target, model, quant, kernels, code_bytes=report["code_bytes"], weight_bytes=report["weight_bytes"])
    _fill_counts(row, output)
    if target in CHIPS:
        row.estimate = _estimate(row, report)
    # The per-phase split comes from a second build that reads the counter around each phase (phases=1),
    # so that the counter reads do not inflate the totals above.
    timed = build({"target": target, "model": model, "quant": quant, "kernels": kernels, "phases": "1", **extra})
    split = qemu.run_firmware(timed.images[0].elf, RunParams(PROMPT, STEPS, 0.0, 0.9, 1), progress=True)
    row.phases = {key: int(value) for key, value in split.phases.items() if key != "pos"}
    return row


# overflow=slide: stories260K q8 with a 64-position window on the M7 twin, 256 tokens, against the same build that
# holds the whole context: past the window the count per token stops growing.
SLIDE_STUDY = ("qemu-m7", "260k", "q8", {"seq_len": "64", "overflow": "slide"})


def bench_slide() -> BenchRow:
    target, model, quant, options = SLIDE_STUDY
    row = bench_twin(target, model, quant, "opt", {"build_dir": str(ROOT / "build" / "bench"), **options})
    row.config = " ".join(f"{key}={value}" for key, value in options.items())
    return row


# The performance issue's board study: stories15M's shape in q4 on the board with external memory, counted on its
# twin and estimated for each placement the build can make (the KV cache needs SDRAM at this size; the weights,
# 10 MB, do not fit SDRAM beside it, so weights=sdram is not among them).
BOARD_STUDY = ("stm32h743", "h743-sdram-qspi", "15m-shaped", "q4", ({"weights": "auto"},))


def placement_alternatives(report: dict, compute_tok_per_s: float, board: Board | None = None
                           ) -> dict[str, dict[str, object]]:  # fmt: skip
    """Every weights= placement of one region for the weights of a memory report: whether the region has room
    for all of them beside what else it holds, and the tok/s it would allow (bandwidth-bound, capped by compute).
    The twin's smaller QSPI cannot link some of these, so they are estimated from the board's plan."""
    regions = {region["name"]: region for region in report["regions"]}
    streamed = {
        name: sum(size for section, size in region["sections"].items() if section.startswith((".llmcu_weights",
                  ".llmcu_flash", ".llmcu_qspi", ".llmcu_sdram", ".llmcu_tokenizer")))
        for name, region in regions.items()
    }  # fmt: skip
    total = sum(streamed.values())
    alternatives = {}
    for name, bandwidth in {**REGION_BANDWIDTH, **(board.read_bandwidth() if board else {})}.items():
        if name not in regions:
            continue
        room = regions[name]["size"] - regions[name]["used"] + streamed.get(name, 0)
        rate = min(bandwidth / total, compute_tok_per_s) if total else compute_tok_per_s
        alternatives[f"weights={name}"] = {"fits": total <= room, "needs": total, "room": room,
                                           "tok_per_s": round(rate, 1)}  # fmt: skip
    return alternatives


def bench_board(target: str, board: str, model_name: str, quant: str, placement: dict[str, str]) -> BenchRow:
    """One placement of a board build: instructions per token from its twin, the estimate from the board's plan."""
    from ..device import qemu

    model, model_options, steps = bench_model(model_name)
    options = {"build_dir": str(ROOT / "build" / "bench"), **model_options, "target": target, "board": board,
               "model": model, "quant": quant, "kernels": "opt", "hil": "qemu", **placement}  # fmt: skip
    settings = build(options)
    images = {image.name: image for image in settings.images}
    output = qemu.run_firmware(images["twin"].elf, RunParams(PROMPT, steps, 0.0, 0.9, 1), progress=True)
    report = json.loads((images["firmware"].out_dir / "memory_report.json").read_text())
    config = " ".join(f"{key}={value}" for key, value in {"board": board, **placement}.items())
    row = BenchRow(target, model_name, quant, "opt", config=config, code_bytes=report["code_bytes"])
    row.weight_bytes = report["weight_bytes"]
    _fill_counts(row, output)
    row.estimate = _estimate(row, report, settings.board_file)
    row.estimate["placements"] = placement_alternatives(report, row.estimate["compute_tok_per_s"], settings.board_file)
    return row


def bench_linux_qemu(target: str, model: str, quant: str, kernels: str, extra: dict[str, str], steps: int) -> BenchRow:
    """A Linux target's static binary under qemu-user, counting instructions with llmcu's TCG plugin."""
    from ..device import qemu_user

    options = {"target": target, "model": model, "quant": quant, "kernels": kernels, "hil": "qemu", **extra}
    settings = build(options)
    assert settings.linux is not None
    output = qemu_user.run_program(
        settings.out_dir / "llmcu",
        ["-p", PROMPT, "-n", str(steps), "-t", "0", "-j", "1"],
        qemu_user.QemuUser.of(settings),
        plugin_dir=settings.out_dir.parent.parent / "qemu-plugin",
    )
    row = BenchRow(target, model, quant, kernels)
    _fill_counts(row, output)
    row.code_bytes = _text_bytes(p for p in (settings.obj_dir / "runtime_c").rglob("*.o"))
    row.weight_bytes = json.loads((settings.out_dir / "quant_report.json").read_text())["weight_bytes"]
    if target in CHIPS:
        chip = CHIPS[target]
        rate = chip["clock_hz"] / (row.instructions_per_token * chip["cpi"])
        row.estimate = {"chip": chip["chip"], "model": f"instructions x CPI {chip['cpi']} at "
                        f"{chip['clock_hz'] / 1e9:.1f} GHz, one thread", "tok_per_s": round(rate, 1)}  # fmt: skip
    return row


def bench_model(name: str) -> tuple[str, dict[str, str], int]:
    """A model of the matrix: a preset, or ``15m-shaped`` (stories15M's shape, deterministic random weights,
    made once under build/bench, since the real checkpoint needs a download); and its step count."""
    if name != "15m-shaped":
        return name, {}, STEPS
    from ..core.config import ModelConfig
    from ..model.checkpoint import random_checkpoint, write_checkpoint

    path = ROOT / "build" / "bench" / "15m-shaped.bin"
    if not path.is_file():
        write_checkpoint(path, random_checkpoint(ModelConfig(288, 768, 6, 6, 6, 32000, 256, True), seed=15))
    return str(path), {"tokenizer": "tokenizer.bin"}, 64


def bench_host(model: str, quant: str, kernels: str, extra: dict[str, str], runs: int) -> BenchRow:
    settings = build({"target": "host", "model": model, "quant": quant, "kernels": kernels, **extra})
    program = settings.out_dir / "llmcu"
    rates = []
    for _ in range(runs):
        args = [str(program), "-p", PROMPT, "-n", str(STEPS), "-t", "0"]
        output = parse(subprocess.run(args, capture_output=True, check=True).stdout)
        rates.append(output.summary_number("tok_per_s"))
    row = BenchRow("host", model, quant, kernels)
    row.tok_per_s = {"min": min(rates), "median": statistics.median(rates), "max": max(rates)}
    row.code_bytes = _text_bytes(p for p in (settings.obj_dir / "runtime_c").rglob("*.o"))
    row.weight_bytes = json.loads((settings.out_dir / "quant_report.json").read_text())["weight_bytes"]
    return row


def honours_fast_numerics(target: str) -> bool:
    """Whether the target's optimised kernel set has a numerics=fast route (it reads LLMCU_NUMERICS_FAST);
    a fast row of a set that does not would only repeat the exact row."""
    kernel_set = load_target(target, TARGETS_DIR).kernel_set
    folder = ROOT / "runtime_c" / "kernels" / kernel_set
    return bool(kernel_set) and any("LLMCU_NUMERICS_FAST" in f.read_text() for f in folder.glob("*.[ch]"))


def run_matrix(
    targets: Iterable[str],
    models: Iterable[str],
    quants: Iterable[str],
    kernel_sets: Iterable[str],
    *,
    numerics: Iterable[str] = ("exact",),
    runs: int = 5,
    extra: dict[str, str] | None = None,
    progress: Callable[[str], None] = print,
) -> list[BenchRow]:
    rows = []
    for target in targets:
        kind = load_target(target, TARGETS_DIR).kind
        for name in models:
            if (target, name) in SKIP:
                continue
            model, model_options, steps = bench_model(name)
            combos = [(k, n) for k in kernel_sets for n in numerics]
            # the fast route belongs to the optimised kernels: reference kernels are always exact
            combos = [(k, n) for k, n in combos if n == "exact" or (k == "opt" and honours_fast_numerics(target))]
            for quant in quants:
                for kernels, numeric in combos:
                    progress(f"bench {target} {name} {quant} kernels={kernels} numerics={numeric}")
                    options = {"build_dir": str(ROOT / "build" / "bench"), **model_options, **(extra or {})}
                    if numeric != "exact":
                        options["numerics"] = numeric
                    if kind == "hosted":
                        row = bench_host(model, quant, kernels, options, runs)
                    elif kind == "linux":
                        row = bench_linux_qemu(target, model, quant, kernels, options, steps)
                    else:
                        row = bench_twin(target, model, quant, kernels, options)
                    row.model = name
                    row.numerics = numeric
                    rows.append(row)
    return rows


def compare(rows: list[BenchRow], baseline: list[dict]) -> list[str]:
    """Regressions against a baseline: more instructions per token, or lower host tok/s (median, 10%)."""
    old = {
        (r["target"], r["model"], r["quant"], r["kernels"], r.get("numerics", "exact"), r.get("config", "")): r
        for r in baseline
    }
    findings = []
    for row in rows:
        before = old.get(row.key())
        if not before:
            continue
        if row.instructions_per_token and before.get("instructions_per_token"):
            ratio = row.instructions_per_token / before["instructions_per_token"]
            if ratio > 1 + REGRESSION_TOLERANCE:
                findings.append(f"{' '.join(part for part in row.key() if part)}: {ratio - 1:+.1%} instructions/token")
        if row.tok_per_s and before.get("tok_per_s"):
            ratio = row.tok_per_s["median"] / before["tok_per_s"]["median"]
            if ratio < 0.9:
                findings.append(f"{' '.join(part for part in row.key() if part)}: {ratio - 1:+.1%} host tok/s (median)")
    return findings


def markdown(rows: list[BenchRow]) -> list[str]:
    lines = [
        "| target | model | quant | kernels | numerics | instr/token (avg) | at pos 1 / 128 / 255 "
        "| host tok/s (median) | code bytes | est. tok/s on chip | vs bar | goal |",
        "|---|---|---|---|---|---:|---|---:|---:|---:|---:|---|",
    ]
    bars, targets, growth_targets = goals("bar"), goals("goals"), goals("growth_goals")  # bench/goals.toml, read once
    for row in rows:
        at = ""
        if row.instructions_at:
            at = " / ".join(
                f"{row.instructions_at[str(p)]:,}" if str(p) in row.instructions_at else "-" for p in (1, 128, 255)
            )
        avg = f"{row.instructions_per_token:,.0f}" if row.instructions_per_token else ""
        rate = f"{row.tok_per_s['median']:,.0f}" if row.tok_per_s else ""
        est = f"{row.estimate['tok_per_s']:,.1f}" if row.estimate else ""
        bar = bars.get((row.target, row.model, row.quant))
        versus = f"{bar / row.instructions_per_token:.2f}x" if bar and row.instructions_per_token else ""
        goal = targets.get((row.target, row.model, row.quant))
        target_text = ""
        if goal and row.instructions_per_token and row.kernels == "opt" and row.numerics == "exact":
            verdict = "met" if row.instructions_per_token <= goal else "missed"
            target_text = f"<= {goal / 1e3:,.0f} K: {verdict}"
            growth_goal = growth_targets.get((row.target, row.model, row.quant))
            growth = row.growth_per_position()
            if growth_goal and growth is not None:
                verdict = "met" if growth <= growth_goal else "missed"
                target_text += f"; growth {growth:,.0f}/pos <= {growth_goal:,}: {verdict}"
        lines.append(
            f"| {row.target}{' ' + row.config if row.config else ''} | {row.model} | {row.quant} | {row.kernels} "
            f"| {row.numerics} | {avg} | {at} | {rate} "
            f"| {row.code_bytes:,} | {est} | {versus} | {target_text} |"
        )
    return lines


def phase_table(rows: list[BenchRow]) -> list[str]:
    """Where one forward pass (at position 128) spends its instructions, per twin row, as percentages."""
    names = ["matmul", "attention", "rope", "norm", "swiglu", "quantize", "sampling", "other"]
    lines = [
        "| target | model | quant | kernels | numerics | " + " | ".join(names) + " |",
        "|---|---|---|---|---|" + "---:|" * len(names),
    ]
    for row in rows:
        total = sum(row.phases.values())
        if not total:
            continue
        shares = " | ".join(f"{100 * row.phases.get(name, 0) / total:.0f}%" for name in names)
        lines.append(f"| {row.target} | {row.model} | {row.quant} | {row.kernels} | {row.numerics} | {shares} |")
    return lines


def plot(rows: list[BenchRow], path: Path) -> bool:
    """Instructions per token over position, one line per twin row. Rows read back from a results.json keep their
    figures, not their curves: with no curve among the rows nothing is written (False), so that a merged run that
    measured none leaves the plot of the run that did."""
    if not any(row.costs and row.instructions_per_token for row in rows):
        return False
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5), dpi=110)
    for row in rows:
        if row.costs and row.instructions_per_token:
            axis.plot(range(len(row.costs)), [c / 1e6 for c in row.costs], label=" ".join(row.key()))
    axis.set_xlabel("position")
    axis.set_ylabel("million instructions per token")
    axis.set_title(f"Instructions per token, greedy {STEPS} tokens from {PROMPT!r}")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    write_bytes_atomic(path, buffer.getvalue())
    return True


def load_rows(path: Path) -> list[BenchRow]:
    return [BenchRow(**record) for record in json.loads(path.read_text())]


class KeyedRow(Protocol):
    def key(self) -> tuple[str, ...]: ...


Row = TypeVar("Row", bound=KeyedRow)


def merge(old: list[Row], new: list[Row]) -> list[Row]:
    """``old`` with the rows of ``new`` replacing those of the same key (and new keys appended): results and peer
    rows alike."""
    fresh = {row.key(): row for row in new}
    merged = [fresh.pop(row.key(), row) for row in old]
    return merged + list(fresh.values())


def write_results(rows: list[BenchRow], out_dir: Path) -> None:
    write_text_atomic(out_dir / "results.json", json.dumps([row.as_dict() for row in rows], indent=2) + "\n")
    tables = [*markdown(rows), "", "Per-phase split of one forward pass at position 128:", "", *phase_table(rows)]
    write_text_atomic(out_dir / "results.md", "\n".join(tables) + "\n")
