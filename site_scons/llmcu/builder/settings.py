"""One build's settings, worked out once from the command-line options: which target and board, which model
files, where the outputs go, and how to run, measure and debug the result. The build folder's name and the SCons
identity of the generated files are derived from it and the option table (llmcu.builder.options), never listed by
hand. Pure Python; the SCons glue only turns this into nodes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import OptionError
from ..core.paths import MODELS_DIR, ROOT, TARGETS_DIR
from ..model import models, presets
from ..model.quantize import QuantPlan
from ..model.sources import read_config
from ..platform import watchdog
from ..platform.stm32h7 import Board, board_regions, load_board
from ..platform.targets import MemoryRegion, Target, load_target, targets_by_kind
from . import linux
from .memplan import available_regions, twin_regions
from .options import RUN, RUN_ONLY, Option, OptionValues, build_options, check_applicable, list_targets, parse_options
from .window import SlidingWindow, check_window

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
LIBRARY_DIR = Path(__file__).resolve().parents[1]  # site_scons/llmcu, every layer


def options_table() -> list[Option]:
    return build_options(list_targets(TARGETS_DIR), presets.list_presets(MODELS_DIR))


def option_values(arguments: Mapping[str, str]) -> OptionValues:
    """The command line's options, checked against this checkout's table (its targets and presets)."""
    return parse_options(arguments, options_table())


@dataclass(frozen=True)
class RunParams:
    prompt: str
    steps: int
    temperature: float
    topp: float
    seed: int

    def program_args(self) -> list[str]:
        return [
            "-p", self.prompt,
            "-n", str(self.steps),
            "-t", repr(self.temperature),
            "-P", repr(self.topp),
            "-s", str(self.seed),
        ]  # fmt: skip


@dataclass(frozen=True)
class RunOptions:
    """The options of `run`, `console`, `monitor` and `debug` that are about running, not building."""

    log_dir: Path  # log_dir=, absolute
    port: str  # serial device or pyserial URL; "" = the board's console found by USB VID:PID
    probe: str  # the debug probe's unique ID (or a unique part of it); "" = the only one attached
    prompts: str  # `console`: a file of lines to send instead of the terminal's
    raw: bool  # `monitor`: the bytes, not the decoded protocol
    debug: str  # `debug`: gdb | server
    gdb_port: int  # `debug`: the gdb server's port


def run_options(values: Mapping[str, Any]) -> RunOptions:
    """RunOptions from checked option values (OptionValues)."""
    log_dir = Path(values["log_dir"]).expanduser()
    return RunOptions(
        log_dir if log_dir.is_absolute() else ROOT / log_dir, values["port"], values["probe"], values["prompts"],
        values["raw"], values["debug"], values["gdb_port"],
    )  # fmt: skip


@dataclass(frozen=True)
class PowerSettings:
    """power=, power_port=, power_voltage=, power_supply= (llmcu.power measures with them)."""

    meter: str  # none | ppk2 | lpm01a | estimate
    port: str  # the meter's serial port; "" = found by USB name
    voltage_v: float  # the board's supply voltage
    supply: str  # board | meter (PPK2: in series with the board's supply, or powering it)


def power_settings(values: Mapping[str, Any]) -> PowerSettings:
    """PowerSettings from checked option values (OptionValues)."""
    return PowerSettings(values["power"], values["power_port"], values["power_voltage"], values["power_supply"])


@dataclass(frozen=True)
class FirmwareOptions:
    """How the memory planner places things on a firmware target."""

    weights: str
    kv: str
    stack_bytes: int
    hil: str
    watchdog_s: float  # watchdog=: seconds, 0 = off (llmcu.platform.watchdog)


@dataclass(frozen=True)
class FirmwareImage:
    """One firmware to link: for a target's own regions, or for its QEMU twin with the board's budget."""

    name: str  # "firmware" or "twin"
    target: Target
    regions: tuple[MemoryRegion, ...]
    out_dir: Path
    board: str

    @property
    def elf(self) -> Path:
        return self.out_dir / "firmware.elf"

    @property
    def linker_script(self) -> Path:
        return self.out_dir / "gen" / "firmware.ld"


@dataclass(frozen=True)
class BuildSettings:
    """Everything a build, and a run of it, needs; made once by ``configure``. ``options`` holds every option's
    checked value, for code that reads an option no field below stands for."""

    options: OptionValues
    target: Target
    model_name: str
    checkpoint: Path
    tokenizer: Path
    preset: Any
    plan: QuantPlan
    seq_len: int
    out_dir: Path
    run: RunParams = field(metadata=RUN_ONLY)
    run_options: RunOptions = field(metadata=RUN_ONLY)
    power: PowerSettings = field(metadata=RUN_ONLY)
    verbose: bool = field(metadata=RUN_ONLY)
    phases: bool  # per-phase cost accounting for the benchmark harness (runtime_c/phases.h)
    selftest: bool  # a bring-up firmware (targets/cortex-m/selftest.c, llmcu.device.selftest)
    kernel_set: str  # "" (reference kernels) or the target's optimised set, e.g. "cortex_m7"
    numerics: str  # numerics=: "fast" lets kernels trade bit-exactness for speed (LLMCU_NUMERICS_FAST)
    # firmware targets: the board's name; Linux targets: where `run` deploys (user@host), or "". What a firmware
    # build takes from its board is in board_file (and the images), so the name itself is left out of the identity.
    board: str = field(metadata=RUN_ONLY)
    board_file: Board | None  # the board file, read once (targets/<target>/boards/<board>.toml); None without one
    firmware: FirmwareOptions | None
    images: tuple[FirmwareImage, ...]  # firmware targets: what to link (the board's, and its twin's)
    kv_type: str  # the KV cache's element type (runtime_c/README.md, "KV cache types")
    rope_table: bool  # RoPE's angles from a build-time table (codegen.rope_table)
    # hosted and Linux programs: matmul threads for `run` (the program's -j)
    threads: int = field(metadata=RUN_ONLY)
    default_threads: int  # ... and when it is run without -j (LLMCU_THREADS)
    weights_file: bool  # weights in model.bin beside the program, mapped at start (llmcu.builder.weightsfile)
    linux: linux.LinuxSettings | None  # Linux targets: toolchain, destination, QEMU (llmcu.builder.linux)
    sanitize: tuple[str, ...]  # target=host: gcc sanitizers (options.SANITIZERS), e.g. ("address", "undefined")
    auto_quant: bool  # quant=auto: `plan` is the starting point (all q4), llmcu.builder.autoquant chooses the mix
    budget: int  # quant=auto: the most bytes the weights may take (0: the target's memory decides)
    quality: str  # quality=: measure the quantized model against fp32 at build time (llmcu.model.quality)
    window: SlidingWindow | None  # overflow=slide: sinks and max_steps (llmcu.builder.window); None: overflow=stop

    @property
    def gen_dir(self) -> Path:
        return self.out_dir / "gen"

    @property
    def quant_label(self) -> str:
        """What the quantization is called before the build chose it: ``auto`` (quant_report.md says the
        mix), or the plan's name."""
        return "auto" if self.auto_quant else self.plan.name

    @property
    def obj_dir(self) -> Path:
        return self.out_dir / "obj"

    def identity(self) -> str:
        """What the generated files depend on besides the files they are made from: every build-stage option's
        value and everything configured from them, leaving out what only concerns running (RUN_ONLY fields and
        RUN options). A new option or field is in it without being listed."""
        return repr(_identity(self))


def _identity(value: object) -> object:
    if isinstance(value, OptionValues):
        return tuple(sorted((name, repr(item)) for name, item in value.build_stage().items()))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, *(
            (item.name, _identity(getattr(value, item.name)))
            for item in dataclasses.fields(value) if item.metadata.get("stage") != RUN
        ))  # fmt: skip
    if isinstance(value, tuple | list):
        return tuple(_identity(item) for item in value)
    if isinstance(value, set | frozenset):  # in a fixed order: a set's iteration order varies between processes
        return tuple(sorted(repr(_identity(item)) for item in value))
    if isinstance(value, Mapping):
        return tuple((str(key), _identity(item)) for key, item in sorted(value.items(), key=lambda pair: str(pair[0])))
    return value if isinstance(value, str | int | float | bool | None) else str(value)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]", "_", text)


def variant_name(settings: BuildSettings) -> str:
    """The build folder's name: ``<model>-<quant>``, then what each option adds (Option.in_name), in the option
    table's order, when it is not the default."""
    table = settings.options.table
    return _safe("".join(option.in_name(settings) for option in table if option.in_name is not None))


def read_board(target: Target, board: str) -> tuple[str, Board | None]:
    """The board's name (the target's default when none is given) and its board file, for targets with boards."""
    if (target.folder / "boards").is_dir():
        board = board or target.default_board
        return board, load_board(target.folder, board)
    if board and target.kind == "baremetal":
        raise OptionError(f"target {target.name} has no boards; drop board={board}")
    return board, None


def firmware_images(target: Target, board: str, board_file: Board | None, out_dir: Path, hil: str
                    ) -> tuple[FirmwareImage, ...]:  # fmt: skip
    """The firmware(s) a baremetal build links: the board's, and its QEMU twin's with the board's budget."""
    regions = board_regions(target.memory, board_file) if board_file else available_regions(target, None)
    images = [FirmwareImage("firmware", target, tuple(regions), out_dir, board)]
    if (hil == "qemu" or (hil == "auto" and target.twin)) and target.run.method != "qemu-system":
        if not target.twin:
            raise OptionError(f"target {target.name} has no QEMU twin, so hil=qemu cannot run it")
        twin = load_target(target.twin, TARGETS_DIR)
        regions = twin_regions(twin, images[0].regions)  # the board's external memories, as far as they fit
        images.append(FirmwareImage("twin", twin, tuple(regions), out_dir / "twin", board))
    return tuple(images)


def configure(arguments: Mapping[str, str] | OptionValues, *, download: bool = True) -> BuildSettings:
    """Check the options (once: pass OptionValues that are checked already) and resolve everything a build and
    its runs need; raises an LlmcuError on bad input."""
    values = arguments if isinstance(arguments, OptionValues) else option_values(arguments)
    given = values.given
    target = load_target(values["target"], TARGETS_DIR)
    resolved = models.resolve_model(values["model"], values["tokenizer"] or None, MODELS_DIR, download=download)
    auto_quant = values["quant"] == "auto"
    if auto_quant and values["quant_overrides"]:
        raise OptionError("quant=auto chooses every tensor's type itself; drop quant_overrides= (or name a quant)")
    if values["budget"] and not auto_quant:
        raise OptionError(f"budget= steers quant=auto; with quant={values['quant']} drop it (or use quant=auto)")
    plan = QuantPlan.parse(
        "q4z" if auto_quant else values["quant"],
        values["group_size"],
        values["quant_overrides"],
        values["fit"],
        values["calib"],
    )
    build_dir = Path(values["build_dir"])
    if not build_dir.is_absolute():
        build_dir = ROOT / build_dir
    window = None
    if values["overflow"] == "slide":
        window = SlidingWindow(values["sinks"], values["max_steps"])
        # the header only: the context the window slides in
        check_window(window, values["seq_len"] or read_config(resolved.checkpoint).seq_len)
    elif "sinks" in given or "max_steps" in given:
        raise OptionError("sinks= and max_steps= go with overflow=slide; with overflow=stop a run ends at the context")
    rope_table = values["rope_table"] == "yes" or (values["rope_table"] == "auto" and target.kind == "baremetal")
    in_qemu = linux.runs_in_qemu(target, values["hil"], values["board"])
    if values["board_ram"] and target.kind != "linux":
        raise OptionError(
            f"board_ram= is the RAM of a Linux board; target {target.name} "
            + ("plans its memory regions from its board file" if target.kind == "baremetal" else "is this machine")
        )
    linux_settings = None
    weights_file = values["weights_file"] == "yes"
    if target.kind == "linux":
        linux_settings = linux.configure(target, values, resolved.checkpoint, resolved.tokenizer, plan)
        weights_file = linux_settings.weights_file
    elif weights_file and target.kind == "baremetal":
        raise OptionError(f"weights_file=yes: target {target.name} is firmware, whose weights are linked in")
    if values["sanitize"] and target.kind != "hosted":
        raise OptionError(
            f"sanitize={','.join(values['sanitize'])}: sanitizers run on target=host only; target {target.name} "
            f"is {'firmware' if target.kind == 'baremetal' else 'cross-compiled for ' + target.kind}, which has "
            "no sanitizer runtime"
        )
    firmware = None
    if target.kind == "baremetal":
        firmware = FirmwareOptions(values["weights"], values["kv"], values["stack"], values["hil"], values["watchdog"])
    elif values["watchdog"]:
        watchdog.plan(target, values["watchdog"])  # says that this target has no watchdog
    board, board_file = read_board(target, values["board"])
    settings = BuildSettings(
        options=values,
        target=target,
        model_name=resolved.name,
        checkpoint=resolved.checkpoint,
        tokenizer=resolved.tokenizer,
        preset=resolved.preset,
        plan=plan,
        seq_len=values["seq_len"],
        out_dir=build_dir / target.name,  # the variant's folder below, once its name is known
        run=RunParams(values["prompt"], values["steps"], values["temperature"], values["topp"], values["seed"]),
        run_options=run_options(values),
        power=power_settings(values),
        verbose=values["verbose"],
        phases=values["phases"],
        selftest=values["selftest"],
        kernel_set=target.kernel_set if values["kernels"] == "opt" else "",
        numerics=values["numerics"],
        board=board,
        board_file=board_file,
        firmware=firmware,
        images=(),
        kv_type=values["kv_type"],
        rope_table=rope_table,
        threads=linux.resolve_threads(values["threads"], target, in_qemu),
        default_threads=linux.resolve_threads(values["threads"], target),
        weights_file=weights_file,
        linux=linux_settings,
        sanitize=values["sanitize"],
        auto_quant=auto_quant,
        budget=values["budget"],
        quality=values["quality"],
        window=window,
    )
    out_dir = build_dir / target.name / variant_name(settings)
    images: tuple[FirmwareImage, ...] = ()
    if firmware is not None:
        images = firmware_images(target, board, board_file, out_dir, values["hil"])
        for image in images:  # a time the board's (or the twin's) watchdog cannot count stops the build here
            watchdog.plan(image.target, firmware.watchdog_s)
    # Last: the checks above say more about the options they know (sanitize=, threads=, ...); what none of them
    # looked at and does not apply to this kind of target is an error here, never silently ignored.
    check_applicable(given, values.table, target.name, target.kind, targets_by_kind(TARGETS_DIR))
    return dataclasses.replace(settings, out_dir=out_dir, images=images)


def help_intro() -> str:
    return """llmcu: build a llama2.c model for a target.

  scons [options]            build build/<target>/<model>-<quant>/ (also: scons [options] build)
  scons [options] run        build, run, print the text and a summary line (power= measures it)
  scons [options] console    one running image, many prompts (Ctrl-C stops a generation, twice leaves)
  scons [options] monitor    watch a board's console without sending anything (Ctrl-C to stop)
  scons [options] debug      gdb on the firmware or program (debug=server: only the gdb server)
  scons [options] flash      program the board through its debug probe (firmware targets)
  scons [options] compiledb  compile_commands.json of this build, for clangd and IDEs
  scons -c [options]         remove that build's outputs

Models are looked up in $LLMCU_MODELS (directories), then ~/.cache/llmcu, then downloaded.

"""
