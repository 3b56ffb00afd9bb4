"""One build's settings, worked out from the command-line options: which target, which model files, where
the outputs go, and how to run the result. Pure Python; the SCons glue only turns this into nodes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import OptionError
from ..core.paths import MODELS_DIR, ROOT, RUNTIME_DIR, TARGETS_DIR
from ..model import models
from ..model.quantize import DEFAULT_CALIBRATION, DEFAULT_FIT, QuantPlan
from ..model.sources import read_config
from ..platform import stm32h7, watchdog
from ..platform.targets import MemoryRegion, Target, load_target, targets_by_kind
from . import linux
from .memplan import available_regions, twin_regions
from .options import Option, build_options, check_applicable, check_unknown, list_targets, validate
from .window import DEFAULT_MAX_STEPS, DEFAULT_SINKS, Window, check_window

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
LIBRARY_DIR = Path(__file__).resolve().parents[1]  # site_scons/llmcu, every layer


# Build directory suffixes of sanitized builds (their objects must never mix with the plain build's).
SANITIZER_SUFFIX = {"address": "asan", "undefined": "ubsan", "thread": "tsan"}


def sanitizer_flags(sanitize: tuple[str, ...]) -> list[str]:
    """Compiler and linker flags for a sanitized build: every report is fatal (no recovering and carrying on,
    so a test sees a non-zero exit status) and frames keep their pointer for readable stack traces."""
    if not sanitize:
        return []
    # GCC's "undefined" leaves out float-to-integer conversions that overflow (UB in C: the quantizers and
    # the tokenizer's casts must clamp first); checked too.
    checks = [*sanitize, "float-cast-overflow"] if "undefined" in sanitize else list(sanitize)
    return [f"-fsanitize={','.join(checks)}", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]


def options_table() -> list[Option]:
    return build_options(list_targets(TARGETS_DIR), models.list_presets(MODELS_DIR))


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
class FirmwareOptions:
    """How the memory planner places things on a firmware target."""

    weights: str
    kv: str
    stack_bytes: int
    hil: str
    watchdog_s: float = 0.0  # watchdog=: seconds, 0 = off (llmcu.platform.watchdog)


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
    target: Target
    model_name: str
    checkpoint: Path
    tokenizer: Path
    preset: Any
    plan: QuantPlan
    seq_len: int
    out_dir: Path
    run: RunParams
    verbose: bool = False
    phases: bool = False  # per-phase cost accounting for the benchmark harness (runtime_c/phases.h)
    selftest: bool = False  # a bring-up firmware (targets/cortex-m/selftest.c, llmcu.device.selftest)
    kernel_set: str = ""  # "" (reference kernels) or the target's optimised set, e.g. "cortex_m7"
    numerics: str = "exact"  # numerics=: "fast" lets kernels trade bit-exactness for speed (LLMCU_NUMERICS_FAST)
    board: str = ""  # firmware targets: the board's name
    firmware: FirmwareOptions | None = None
    images: tuple[FirmwareImage, ...] = ()  # firmware targets: what to link (the board's, and its twin's)
    kv_type: str = "auto"  # the KV cache's element type (runtime_c/README.md, "KV cache types")
    rope_table: bool = False  # RoPE's angles from a build-time table (codegen.rope_table)
    threads: int = 1  # hosted and Linux programs: matmul threads for `run` (the program's -j)
    default_threads: int = 1  # ... and when it is run without -j (LLMCU_THREADS)
    weights_file: bool = False  # weights in model.bin beside the program, mapped at start (llmcu.builder.weightsfile)
    linux: linux.LinuxSettings | None = None  # Linux targets: toolchain, destination, QEMU (llmcu.builder.linux)
    sanitize: tuple[str, ...] = ()  # target=host: gcc sanitizers (options.SANITIZERS), e.g. ("address", "undefined")
    auto_quant: bool = (
        False  # quant=auto: `plan` is the starting point (all q4), llmcu.builder.autoquant chooses the mix
    )
    budget: int = 0  # quant=auto: the most bytes the weights may take (0: the target's memory decides)
    quality: str = "auto"  # quality=: measure the quantized model against fp32 at build time (llmcu.model.quality)
    window: Window | None = None  # overflow=slide: sinks and max_steps (llmcu.builder.window); None: overflow=stop

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


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]", "_", text)


def variant_name(
    model_name: str, plan: QuantPlan, seq_len: int, kv_type: str = "auto", auto_quant: bool = False, budget: int = 0
) -> str:
    """``<model>-<quant>``, with the group size, fit, calibration, context and KV type only when they are not
    the defaults."""
    name = f"{model_name}-{'auto' if auto_quant else plan.name}"
    if budget:
        name += f"-b{budget}"
    if plan.quantized:
        name += "" if plan.group_size == 32 else f"-g{plan.group_size}"
        name += "" if plan.fit == DEFAULT_FIT else f"-{plan.fit}"
        if plan.fit != "absmax" and plan.calibration != DEFAULT_CALIBRATION:
            source = plan.calibration
            name += "-calibnone" if source == "none" else f"-calib-{Path(source).stem}"
    if seq_len:
        name += f"-ctx{seq_len}"
    # auto's choice has no suffix: f32 for fp32 weights; for quantized ones auto is q16 or q8, so an explicit f32
    # is a build of its own (it used to share auto's folder, and each overwrote the other)
    if kv_type != "auto" and (kv_type != "f32" or plan.quantized or auto_quant):
        name += f"-kv{kv_type}"
    return _safe(name)


def firmware_images(target: Target, board: str, out_dir: Path, hil: str) -> tuple[str, tuple[FirmwareImage, ...]]:
    """The firmware(s) a baremetal build links, and the board they are for."""
    memories = None
    if (target.folder / "boards").is_dir():
        board = board or target.default_board
        memories = stm32h7.load_board(target.folder, board).memories
    elif board:
        raise OptionError(f"target {target.name} has no boards; drop board={board}")
    images = [FirmwareImage("firmware", target, tuple(available_regions(target, memories)), out_dir, board)]
    if (hil == "qemu" or (hil == "auto" and target.twin)) and target.run_method != "qemu-system":
        if not target.twin:
            raise OptionError(f"target {target.name} has no QEMU twin, so hil=qemu cannot run it")
        twin = load_target(target.twin, TARGETS_DIR)
        regions = twin_regions(twin, images[0].regions)  # the board's external memories, as far as they fit
        images.append(FirmwareImage("twin", twin, tuple(regions), out_dir / "twin", board))
    return board, tuple(images)


def configure(arguments: dict[str, str], *, download: bool = True) -> BuildSettings:
    """Validate the options and resolve everything a build needs; raises an LlmcuError on bad input."""
    table = options_table()
    check_unknown(arguments, table)
    values = validate(arguments, table)
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
    variant = variant_name(resolved.name, plan, values["seq_len"], values["kv_type"], auto_quant, values["budget"])
    window = None
    if values["overflow"] == "slide":
        window = Window(values["sinks"], values["max_steps"])
        variant += "-slide" + (f"-sinks{window.sinks}" if window.sinks != DEFAULT_SINKS else "")
        variant += f"-max{window.max_steps}" if window.max_steps != DEFAULT_MAX_STEPS else ""
        # the header only: the context the window slides in
        check_window(window, values["seq_len"] or read_config(resolved.checkpoint).seq_len)
    elif "sinks" in arguments or "max_steps" in arguments:
        raise OptionError("sinks= and max_steps= go with overflow=slide; with overflow=stop a run ends at the context")
    if values["phases"]:
        variant += "-phases"
    if values["selftest"]:  # firmware only (check_applicable)
        variant += "-selftest"
    if values["kernels"] == "ref" and target.kernel_set:
        variant += "-refkernels"
    if values["numerics"] == "fast":
        variant += "-fast"
    rope_table = values["rope_table"] == "yes" or (values["rope_table"] == "auto" and target.kind == "baremetal")
    if values["rope_table"] != "auto":
        variant += "-ropetable" if rope_table else "-noropetable"
    if values["board"] and target.kind == "baremetal" and values["board"] != target.default_board:
        variant += f"-{_safe(values['board'])}"  # a Linux target's board= is where to run, not what to build
    in_qemu = linux.runs_in_qemu(target, values["hil"], values["board"])
    threads = linux.resolve_threads(values["threads"], target, in_qemu)
    default_threads = linux.resolve_threads(values["threads"], target)
    if values["threads"] != "auto" and target.kind != "baremetal":
        variant += f"-j{threads}"
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
    if values["weights_file"] != "auto" and target.kind != "baremetal":
        variant += "-wfile" if weights_file else "-linked"
    if values["sanitize"]:
        if target.kind != "hosted":
            raise OptionError(
                f"sanitize={','.join(values['sanitize'])}: sanitizers run on target=host only; target {target.name} "
                f"is {'firmware' if target.kind == 'baremetal' else 'cross-compiled for ' + target.kind}, which has "
                "no sanitizer runtime"
            )
        variant += "-" + "-".join(SANITIZER_SUFFIX[name] for name in values["sanitize"])
    out_dir = build_dir / target.name / variant
    run = RunParams(values["prompt"], values["steps"], values["temperature"], values["topp"], values["seed"])
    board, images, firmware = values["board"], (), None
    if target.kind == "baremetal":
        firmware = FirmwareOptions(values["weights"], values["kv"], values["stack"], values["hil"], values["watchdog"])
        board, images = firmware_images(target, values["board"], out_dir, values["hil"])
        for image in images:  # a time the board's (or the twin's) watchdog cannot count stops the build here
            watchdog.plan(image.target, firmware.watchdog_s)
    elif values["watchdog"]:
        watchdog.plan(target, values["watchdog"])  # says that this target has no watchdog
    # Last: the checks above say more about the options they know (sanitize=, threads=, ...); what none of them
    # looked at and does not apply to this kind of target is an error here, never silently ignored.
    check_applicable(arguments, table, target.name, target.kind, targets_by_kind(TARGETS_DIR))
    return BuildSettings(
        target=target,
        model_name=resolved.name,
        checkpoint=resolved.checkpoint,
        tokenizer=resolved.tokenizer,
        preset=resolved.preset,
        plan=plan,
        seq_len=values["seq_len"],
        out_dir=out_dir,
        run=run,
        verbose=values["verbose"],
        phases=values["phases"],
        selftest=values["selftest"],
        kernel_set=target.kernel_set if values["kernels"] == "opt" else "",
        numerics=values["numerics"],
        board=board,
        firmware=firmware,
        images=images,
        kv_type=values["kv_type"],
        rope_table=rope_table,
        threads=threads,
        default_threads=default_threads,
        weights_file=weights_file,
        linux=linux_settings,
        sanitize=values["sanitize"],
        auto_quant=auto_quant,
        budget=values["budget"],
        quality=values["quality"],
        window=window,
    )


def prefix_map_flags(settings: BuildSettings) -> list[str]:
    """Compiler flags that keep the checkout's and the build directory's absolute paths out of the objects
    (debug info, __FILE__), so that the same sources give bit-identical programs and firmware wherever they
    are built. The source tree becomes ``.`` and the build directory ``/llmcu-build`` (GCC applies the last
    matching map, so the build directory's wins when it lies inside the tree). A build directory inside the
    tree reaches the compiler as a relative path, so it is mapped by that name too. The build directory is
    always renamed, even the default ``build``: GCC describes a source whose name a map changed slightly
    differently in the line table (one more file entry), so an unmapped build would differ from a mapped one.
    A debugger finds the generated sources with ``set substitute-path /llmcu-build <build_dir>``. GCC
    matches plain string prefixes, so the build directory's maps end in ``/`` (``runtime/`` must not match
    ``runtime_c/``); the tree's cannot, since the compiler's working directory is the tree itself."""
    build_dir = settings.out_dir.parents[1]
    flags = [f"-ffile-prefix-map={ROOT}=.", f"-ffile-prefix-map={build_dir}/=/llmcu-build/"]
    if build_dir.is_relative_to(ROOT):
        flags.append(f"-ffile-prefix-map={build_dir.relative_to(ROOT)}/=/llmcu-build/")
    return flags


def runtime_sources(kernel_set: str = "") -> list[Path]:
    """The portable runtime plus its kernels: ``kernels/ref/X.c`` for every X, unless the optimised set
    ``kernels/<kernel_set>/`` has its own ``X.c`` with the same functions (as TFLM's kernels/cmsis_nn/ does)."""
    kernels = {path.name: path for path in (RUNTIME_DIR / "kernels" / "ref").glob("*.c")}
    if kernel_set:
        folder = RUNTIME_DIR / "kernels" / kernel_set
        if not folder.is_dir():
            raise OptionError(f"kernel set {kernel_set!r} does not exist ({folder})")
        kernels.update({path.name: path for path in folder.glob("*.c")})
    return sorted(RUNTIME_DIR.glob("*.c")) + [kernels[name] for name in sorted(kernels)]


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
