"""The peer benchmark: llama.cpp beside llmcu on the same models, counted and timed the same way.

Each model (stories260K, and random checkpoints of stories15M's and stories110M's shapes) is written as GGUF files
in F32, Q8_0 and Q4_0 (llmcu.model.gguf_writer); llama.cpp runs each file, and llmcu builds from the same file (a
Q8_0 / Q4_0 file keeps its codes and scales bit for bit in a quant=q8 / q4 build, F32 in fp32). Then:

- **A55 (qemu-aarch64)**: instructions per generated token, whole process, counted by llmcu's TCG plugin, from two
  run lengths: (count at n2 steps - count at n1 steps) / (n2 - n1), which leaves out loading, the prompt and
  anything else done once. Both programs run single-threaded and greedy from the same prompt over the same
  positions.
- **host**: tok/s of single-token passes, one thread, the two programs in interleaved rounds; median, min and max.

The rows carry llmcu's advantage (llama.cpp's cost over llmcu's; for the host, llmcu's tok/s over llama.cpp's)
and the goal it is held to (bench/goals.toml, [peer_goals]). ``tools/bench.py --peer`` runs it.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core.config import ModelConfig
from ..core.errors import LlmcuError
from ..core.fileio import read_toml, write_text_atomic
from ..core.paths import MODELS_DIR, ROOT, TARGETS_DIR
from ..device.protocol import parse
from ..device.qemu_user import QemuUser, plugin_library
from ..device.qemu_user import version as qemu_version
from ..model.checkpoint import Checkpoint, random_checkpoint, read_checkpoint
from ..model.gguf_writer import write_gguf
from ..model.models import resolve_file, resolve_model
from ..model.presets import load_preset
from ..model.tokenizer import Tokenizer, read_tokenizer
from ..platform.targets import load_target
from .bench import GOALS_FILE, PROMPT, build, honours_fast_numerics
from .peer_build import CACHE_DIR, LLAMA_CPP, peer_program

Progress = Callable[[str], None]

PEER_MODELS = ("260k", "15m-shaped", "110m-shaped")
PEER_MACHINES = ("a55", "host")
# llmcu's quant -> the GGUF type both programs run
GGUF_TYPES = {"fp32": "F32", "q8": "Q8_0", "q4": "Q4_0"}
# The two run lengths (steps, prompt included) whose difference gives the cost per token under QEMU; fewer for the
# bigger models, whose tokens take QEMU seconds each.
RUN_LENGTHS = {"260k": (64, 256), "15m-shaped": (32, 96), "110m-shaped": (16, 40)}
HOST_STEPS = {"260k": 256, "15m-shaped": 128, "110m-shaped": 64}
# The shaped models: a preset's shape with deterministic random weights (seeded as bench.bench_model's), and
# llama2.c's 32000-token tokenizer.
SHAPED = {"15m-shaped": ("15m", 15), "110m-shaped": ("110m", 110)}
QEMU_TARGET = "rzv2l"


class PeerError(LlmcuError):
    """A peer run failed or did not do what the benchmark asked of it."""


@dataclass
class PeerRow:
    machine: str  # "A55 (qemu-aarch64)" or "host"
    model: str
    quant: str  # llmcu's name: fp32, q8, q4
    numerics: str  # llmcu's numerics= (llama.cpp has one)
    gguf_type: str
    llmcu: float  # instructions per token (A55) or median tok/s (host)
    peer: float
    advantage: float  # llmcu's: peer / llmcu instructions, or llmcu / peer tok/s
    unit: str  # "instructions/token" or "tok/s"
    run_lengths: tuple[int, int] | None = None  # A55: the two step counts
    steps: int | None = None  # host: steps per run
    llmcu_tok_per_s: dict[str, float] | None = None  # host: min, median, max
    peer_tok_per_s: dict[str, float] | None = None
    same_text: bool | None = None  # the two programs' generated text agrees (the longer run)
    goal: float | None = None  # the advantage the performance issue asks for
    details: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def key(self) -> tuple[str, str, str, str]:
        return (self.machine, self.model, self.quant, self.numerics)


# ---------------------------------------------------------------------------------------------------- the models


def _model(name: str) -> tuple[Checkpoint, Tokenizer]:
    if name in SHAPED:
        preset_name, seed = SHAPED[name]
        preset = load_preset(preset_name, MODELS_DIR)
        shape: ModelConfig = preset.shape
        checkpoint = random_checkpoint(shape, seed=seed)
        assert preset.tokenizer is not None  # the stories presets name llama2.c's tokenizer.bin
        return checkpoint, read_tokenizer(resolve_file(preset.tokenizer, progress=False), shape.vocab_size)
    resolved = resolve_model(name, None, MODELS_DIR, progress=False)
    checkpoint = read_checkpoint(resolved.checkpoint)
    return checkpoint, read_tokenizer(resolved.tokenizer, checkpoint.config.vocab_size)


def gguf_files(name: str, cache: Path = CACHE_DIR, progress: Progress = print) -> dict[str, Path]:
    """``name``'s GGUF files by llmcu quant, written into ``cache``/models once (the checkpoint is made or read
    only when one is missing)."""
    if name not in PEER_MODELS:
        raise PeerError(f"peer model {name!r}: known are {', '.join(PEER_MODELS)}")
    folder = cache / "models"
    files = {quant: folder / f"{name}-{qtype}.gguf" for quant, qtype in GGUF_TYPES.items()}
    missing = [quant for quant, path in files.items() if not path.is_file()]
    if missing:
        folder.mkdir(parents=True, exist_ok=True)
        checkpoint, tokenizer = _model(name)
        for quant in missing:
            progress(f"peer: writing {files[quant].name}")
            write_gguf(files[quant], checkpoint, tokenizer, qtype=GGUF_TYPES[quant])
    return files


# ------------------------------------------------------------------------------------------- counting under QEMU


def _counted(
    emulator: QemuUser, plugin: Path, program: Path, args: list[str]
) -> tuple[int, subprocess.CompletedProcess]:
    """Runs ``program`` under qemu-user with the plugin counting the whole process; its count and its result."""
    with tempfile.TemporaryDirectory() as scratch:
        count_file = Path(scratch) / "count"
        command = emulator.command(program, args, plugin=plugin, plugin_args=[f"out={count_file}"])
        result = subprocess.run(command, capture_output=True, timeout=3600)
        if result.returncode != 0 or not count_file.is_file():
            raise PeerError(f"{program.name} {' '.join(args)} under {emulator.qemu} failed (status "
                            f"{result.returncode}):\n{result.stderr.decode(errors='replace')[-1500:]}")  # fmt: skip
        words = count_file.read_text().split()
    return int(words[1]), result


def _peer_summary(stderr: bytes) -> dict[str, str]:
    """peer_generate's last line: "peer prompt_tokens=P generated=G seconds=S tok_per_s=R"."""
    for line in reversed(stderr.decode(errors="replace").splitlines()):
        if line.startswith("peer "):
            return dict(part.split("=", 1) for part in line.split()[1:])
    raise PeerError(f"peer_generate printed no summary:\n{stderr.decode(errors='replace')[-800:]}")


def _llmcu_args(steps: int) -> list[str]:
    return ["-p", PROMPT, "-n", str(steps), "-t", "0", "-j", "1"]


def _peer_args(model: Path, steps: int) -> list[str]:
    return ["-m", str(model), "-p", PROMPT, "-n", str(steps), "-t", "1"]


def _generated_text(llmcu_stdout: bytes) -> str:
    return parse(llmcu_stdout).text.decode(errors="replace")


def _same_text(llmcu_text: str, peer_text: str) -> bool:
    """llmcu's text holds the prompt; llama.cpp's starts after it. Whitespace at the ends aside, they agree (up to
    where llmcu stopped, if the model emitted BOS: llama.cpp's driver does not stop there)."""
    mine, theirs = llmcu_text.removeprefix(PROMPT).strip(), peer_text.strip()
    return theirs.startswith(mine) if len(mine) < len(theirs) else mine == theirs


def a55_row(name: str, quant: str, numerics: str, progress: Progress = print) -> PeerRow:
    """Instructions per generated token of llmcu (target rzv2l, kernels=opt) and llama.cpp (aarch64) under
    qemu-aarch64, from two run lengths."""
    gguf = gguf_files(name, progress=progress)[quant]
    options = {"target": QEMU_TARGET, "model": str(gguf), "quant": quant, "kernels": "opt", "hil": "qemu",
               "build_dir": str(ROOT / "build" / "bench")}  # fmt: skip
    if numerics != "exact":
        options["numerics"] = numerics
    settings = build(options)
    llmcu_program = settings.out_dir / "llmcu"
    llmcu_qemu = QemuUser.of(settings)
    run = load_target(QEMU_TARGET, TARGETS_DIR).run
    peer_qemu = QemuUser(run.qemu, run.qemu_cpu)
    peer = peer_program("aarch64", progress=progress)
    plugin = plugin_library(CACHE_DIR / "qemu-plugin")
    short, long = RUN_LENGTHS[name]
    counts: dict[str, list[int]] = {"llmcu": [], "peer": []}
    texts = {}
    # The long run first: llmcu stops where the model emits BOS (as run.c does), and llama.cpp then runs to the
    # same length, so that both cover the same positions.
    for steps in (long, short):
        progress(f"peer: A55 {name} {quant} {numerics}: {steps} steps, llmcu and llama.cpp under qemu-aarch64")
        count, result = _counted(llmcu_qemu, plugin, llmcu_program, _llmcu_args(steps))
        output = parse(result.stdout)
        ran = int(output.summary_number("tokens")) if output.ok else 0
        if steps == long and short < ran < steps:
            long = steps = ran
        elif ran != steps:
            raise PeerError(f"llmcu ran {ran} of {steps} steps ({output.reason or 'stopped early'})")
        counts["llmcu"].insert(0, count)
        texts.setdefault("llmcu", output.text.decode(errors="replace"))
        count, result = _counted(peer_qemu, plugin, peer, _peer_args(gguf, steps))
        summary = _peer_summary(result.stderr)
        if int(summary["prompt_tokens"]) + int(summary["generated"]) != steps:
            raise PeerError(f"llama.cpp ran {summary} for {steps} steps")
        counts["peer"].insert(0, count)
        texts.setdefault("peer", result.stdout.decode(errors="replace"))
    per_token = {who: (values[1] - values[0]) / (long - short) for who, values in counts.items()}
    row = PeerRow("A55 (qemu-aarch64)", name, quant, numerics, GGUF_TYPES[quant], round(per_token["llmcu"]),
                  round(per_token["peer"]), round(per_token["peer"] / per_token["llmcu"], 3), "instructions/token",
                  run_lengths=(short, long), same_text=_same_text(texts["llmcu"], texts["peer"]))  # fmt: skip
    row.details = {"whole_process_counts": counts}
    return row


# ------------------------------------------------------------------------------------------------ timing on host


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def host_row(name: str, quant: str, numerics: str, runs: int, progress: Progress = print) -> PeerRow:
    """tok/s of llmcu (target host, kernels=opt) and llama.cpp on this machine, one thread each, in interleaved
    rounds (the order alternates, so neither always runs on a warmer or cooler machine)."""
    gguf = gguf_files(name, progress=progress)[quant]
    options = {"target": "host", "model": str(gguf), "quant": quant, "kernels": "opt",
               "build_dir": str(ROOT / "build" / "bench")}  # fmt: skip
    if numerics != "exact":
        options["numerics"] = numerics
    settings = build(options)
    peer = peer_program("host", progress=progress)
    steps = HOST_STEPS[name]
    commands = {"llmcu": [str(settings.out_dir / "llmcu"), *_llmcu_args(steps)],
                "peer": [str(peer), *_peer_args(gguf, steps)]}  # fmt: skip
    rates: dict[str, list[float]] = {"llmcu": [], "peer": []}
    texts = {}
    progress(f"peer: host {name} {quant} {numerics}: {runs} interleaved rounds of {steps} steps")
    for round_number in range(runs):
        order = ("llmcu", "peer") if round_number % 2 == 0 else ("peer", "llmcu")
        for who in order:
            result = subprocess.run(commands[who], capture_output=True, timeout=3600)
            if result.returncode != 0:
                raise PeerError(f"{' '.join(commands[who])} failed:\n{result.stderr.decode(errors='replace')[-800:]}")
            if who == "llmcu":
                output = parse(result.stdout)
                rates[who].append(output.summary_number("tok_per_s"))
                texts[who] = output.text.decode(errors="replace")
            else:
                rates[who].append(float(_peer_summary(result.stderr)["tok_per_s"]))
                texts[who] = result.stdout.decode(errors="replace")
    mine, theirs = _spread(rates["llmcu"]), _spread(rates["peer"])
    return PeerRow("host", name, quant, numerics, GGUF_TYPES[quant], mine["median"], theirs["median"],
                   round(mine["median"] / theirs["median"], 3), "tok/s", steps=steps, llmcu_tok_per_s=mine,
                   peer_tok_per_s=theirs, same_text=_same_text(texts["llmcu"], texts["peer"]))  # fmt: skip


# ----------------------------------------------------------------------------------------------------- the matrix


def peer_goals() -> dict[tuple[str, str, str], float]:
    """[peer_goals] of bench/goals.toml: "machine/quant/numerics" -> the advantage asked for (a key's model part
    is left out: the goals hold for the 15M and 110M shapes; stories260K rows are shown without one)."""
    table = read_toml(GOALS_FILE).get("peer_goals", {})
    return {tuple(key.split("/")): value for key, value in table.items()}  # type: ignore[misc]


def run_peer(models: Iterable[str], quants: Iterable[str], machines: Iterable[str], *, runs: int = 5,
             progress: Progress = print) -> list[PeerRow]:  # fmt: skip
    """Every machine x model x quant as peer rows (fp32 twice, exact and fast numerics, where the kernel set has a
    fast route)."""
    models, quants, machines = list(models), list(quants), list(machines)
    for kind, asked, known in (("model", models, PEER_MODELS), ("quant", quants, tuple(GGUF_TYPES)),
                               ("machine", machines, PEER_MACHINES)):  # fmt: skip
        unknown = [value for value in asked if value not in known]
        if unknown:  # before anything is built: a typo should not cost the rows before it
            raise PeerError(f"peer {kind} {unknown[0]!r} is not one of {', '.join(known)}")
    goals = peer_goals()
    rows = []
    for machine in machines:
        for name in models:
            for quant in quants:
                # fp32 also with numerics=fast where the machine's kernel set has that route (NEON; not x86)
                fast = quant == "fp32" and honours_fast_numerics(QEMU_TARGET if machine == "a55" else "host")
                for numerics in ("exact", "fast") if fast else ("exact",):
                    if machine == "a55":
                        row = a55_row(name, quant, numerics, progress)
                    else:
                        row = host_row(name, quant, numerics, runs, progress)
                    if name != "260k":
                        row.goal = goals.get((machine, quant, numerics))
                    rows.append(row)
    return rows


def markdown(rows: list[PeerRow]) -> list[str]:
    """The README's table: each row's figures, llmcu's advantage and its goal."""
    lines = [f"llama.cpp: {LLAMA_CPP.package} {LLAMA_CPP.version}'s vendored tree, commit "
             f"{LLAMA_CPP.llama_cpp_commit[:9]} ({LLAMA_CPP.llama_cpp_date}).", "",
             "| machine | model | quant | numerics | llama.cpp | llmcu | llmcu's advantage | goal | same text |",
             "|---|---|---|---|---:|---:|---:|---|---|"]  # fmt: skip
    for row in rows:
        if row.unit == "tok/s":
            figures = f"{row.peer:,.0f} tok/s | {row.llmcu:,.0f} tok/s"
        else:
            figures = f"{row.peer / 1e6:,.2f} M | {row.llmcu / 1e6:,.2f} M"
        goal = ""
        advantage = f"{row.advantage:.2f}x"
        if row.goal is not None:
            met = row.advantage >= row.goal
            goal = f">= {row.goal:.2f}x: {'met' if met else 'missed'}"
            if (round(row.advantage, 2) >= row.goal) != met:  # 1.199 would read as 1.20x beside "missed"
                advantage = f"{row.advantage:.3f}x"
        same = {True: "yes", False: "no", None: ""}[row.same_text]
        lines.append(f"| {row.machine} | {row.model} | {row.gguf_type} | {row.numerics} | {figures} "
                     f"| {advantage} | {goal} | {same} |")  # fmt: skip
    return lines


def load_rows(path: Path) -> list[PeerRow]:
    rows = []
    for record in json.loads(path.read_text())["rows"]:
        if record.get("run_lengths") is not None:
            record["run_lengths"] = tuple(record["run_lengths"])
        rows.append(PeerRow(**record))
    return rows


def write_results(rows: list[PeerRow], out_dir: Path) -> None:
    """OUT/peer.json (the rows, and what llama.cpp was) and OUT/peer.md (the table)."""
    record = {"llama_cpp": LLAMA_CPP.record(), "qemu": qemu_version(), "rows": [row.as_dict() for row in rows]}
    write_text_atomic(out_dir / "peer.json", json.dumps(record, indent=2) + "\n")
    write_text_atomic(out_dir / "peer.md", "\n".join(markdown(rows)) + "\n")
