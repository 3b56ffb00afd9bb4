"""The build options a user sets on the scons command line: one table, and everything about an option is in its
row: its default and allowed values, which kinds of target it applies to, whether it changes what is built or only
how a build is run, and what it adds to the build folder's name.

The table serves ``scons -h``, docs/options.md, validation, the build folder's name and the SCons identity of the
generated files (llmcu.builder.settings). Adding an option is a row here plus the code that reads it
(``settings.options["name"]``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..core.errors import OptionError
from ..model.kvcache import KV_TYPES
from ..model.quantize import DEFAULT_CALIBRATION, DEFAULT_FIT, FITS, QTYPES
from ..platform.targets import parse_size
from ..platform.watchdog import parse_timeout
from .window import DEFAULT_MAX_STEPS, DEFAULT_SINKS

GROUP_SIZES = (2, 4, 8, 16, 32, 64, 128, 256)

# The kinds of target (llmcu.platform.targets.KINDS) an option means something for; () = every kind.
FIRMWARE = ("baremetal",)
LINUX = ("linux",)
HOSTED = ("hosted",)
HOSTED_LINUX = ("hosted", "linux")
FIRMWARE_LINUX = ("baremetal", "linux")

# What an option is about: BUILD, the generated files and programs (its value is part of their SCons identity, so a
# new value rebuilds them); RUN, how a finished build is run, measured or debugged: its value is not part of the
# identity (what configure makes of it for the build, as board='s board file or hil='s twin image, is).
BUILD = "build"
RUN = "run"
RUN_ONLY = {"stage": RUN}  # dataclass field metadata of settings that are about running (BuildSettings.identity)

# Build directory suffixes of sanitized builds (their objects must never mix with the plain build's).
SANITIZER_SUFFIX = {"address": "asan", "undefined": "ubsan", "thread": "tsan"}


@dataclass(frozen=True)
class Option:
    name: str
    help: str
    default: str
    allowed: tuple[str, ...] | None = None  # None: free-form, checked by `parse`
    parse: Callable[[str], Any] = str
    allowed_text: str = ""  # how to describe free-form values in help and errors
    kinds: tuple[str, ...] = ()  # the target kinds (llmcu.platform.targets.KINDS) it applies to; () = every kind
    stage: str = BUILD  # BUILD or RUN (above)
    # What it adds to the build folder's name, from the build's settings (llmcu.builder.settings.BuildSettings);
    # the parts follow the table's order. None: nothing (a RUN option, or one that builds in the same folder).
    in_name: Callable[[Any], str] | None = None

    def describe_allowed(self) -> str:
        if self.allowed is not None:
            return "|".join(self.allowed)
        return self.allowed_text

    @property
    def full_help(self) -> str:
        """The help with the kinds of target it is for (``scons -h``)."""
        return self.help + (f" [{'/'.join(self.kinds)} targets]" if self.kinds else "")


class OptionValues(Mapping[str, Any]):
    """Every option's checked value (its default when it was not given), what was given on the command line, and
    the option table they were checked against."""

    def __init__(self, values: Mapping[str, Any], given: Mapping[str, str], table: Iterable[Option]) -> None:
        self._values = MappingProxyType(dict(values))
        self.given: Mapping[str, str] = MappingProxyType(dict(given))  # name -> the text as typed
        self.table: tuple[Option, ...] = tuple(table)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"OptionValues({dict(self._values)!r})"

    def build_stage(self) -> dict[str, Any]:
        """The values of the options that change what is built (stage BUILD)."""
        run_stage = {option.name for option in self.table if option.stage == RUN}
        return {name: value for name, value in self._values.items() if name not in run_stage}


def parse_options(arguments: Mapping[str, str], options: list[Option]) -> OptionValues:
    """The command line's options checked once: unknown names and bad values are errors naming what is allowed."""
    check_unknown(arguments, options)
    values = validate(arguments, options)
    return OptionValues(values, {name: str(text) for name, text in arguments.items()}, options)


def _flag(text: str) -> bool:
    return text == "1"


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text, 0)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return parse


def _float_in(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        if not low <= value <= high:  # also rejects NaN
            raise ValueError(f"must be between {low} and {high}")
        return value

    return parse


def _size_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = parse_size(text, "size")
        except OptionError as error:
            raise ValueError(str(error)) from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high} bytes")
        return value

    return parse


def _calibration_source(text: str) -> str:
    """``sampled``, ``none``, or an existing file's path (made absolute: SCons may run elsewhere)."""
    if text in ("sampled", "none"):
        return text
    path = Path(text).expanduser()
    if not path.is_file():
        raise ValueError(f"is neither sampled, none, nor a text file ({path} does not exist)")
    return str(path.resolve())


def _utf8_text(text: str) -> str:
    """A prompt must be UTF-8, as the model's text is (the firmware refuses anything else with bad_utf8). Bytes
    that are not reach Python from the command line as lone surrogates (surrogateescape), which would otherwise
    end the build in a UnicodeEncodeError wherever the text is first encoded."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as error:
            raise ValueError(f"character {error.start} is not valid Unicode text") from None
        try:
            return raw.decode("utf-8")  # escaped bytes that do make UTF-8 together
        except UnicodeDecodeError as error:
            at = error.start
            raise ValueError(f"not UTF-8: byte 0x{raw[at]:02x} at byte {at}; write the prompt in UTF-8") from None
    return text


SANITIZERS = ("address", "thread", "undefined")


def parse_sanitize(text: str) -> tuple[str, ...]:
    """``sanitize=``: none (or 0, or nothing), 1 (address,undefined), or a comma-separated list of SANITIZERS, in
    a fixed order so that the same set always names the same build directory."""
    if text in ("", "0", "none"):
        return ()
    names = {"address", "undefined"} if text == "1" else {name.strip() for name in text.split(",")}
    unknown = sorted(names - set(SANITIZERS))
    if unknown:
        raise ValueError(f"unknown sanitizer {', '.join(unknown)}")
    if "thread" in names and "address" in names:
        raise ValueError("thread and address sanitizers cannot be combined (gcc refuses it)")
    return tuple(name for name in SANITIZERS if name in names)


def check_applicable(
    values: Mapping[str, str], options: Iterable[Option], target: str, kind: str, targets_by_kind: Mapping[str, list]
) -> None:
    """An option given a value other than its default for a target it means nothing to is an error naming the
    targets it applies to (nothing is silently ignored)."""
    for option in options:
        if not option.kinds or kind in option.kinds or option.name not in values:
            continue
        if str(values[option.name]) == option.default:
            continue
        names = sorted(name for k in option.kinds for name in targets_by_kind.get(k, []))
        raise OptionError(
            f"{option.name}= does not apply to target {target} (a {kind} target); it applies to "
            f"{', '.join(names) or 'no target here'}"
        )


def build_options(targets: Iterable[str], presets: Iterable[str]) -> list[Option]:
    """The option table; the allowed targets and model presets come from the folders that define them."""
    return _options_table(targets, presets)


# ---- what an option adds to the build folder's name (Option.in_name), where a lambda would not read ----


def _calibration_in_name(settings: Any) -> str:
    plan = settings.plan
    if not plan.quantized or plan.fit == "absmax" or plan.calibration == DEFAULT_CALIBRATION:
        return ""
    return "-calibnone" if plan.calibration == "none" else f"-calib-{Path(plan.calibration).stem}"


def _kv_type_in_name(settings: Any) -> str:
    """auto's choice has no suffix: f32 for fp32 weights; for quantized ones auto is q16 or q8, so an explicit f32
    is a build of its own (it used to share auto's folder, and each overwrote the other)."""
    kv_type = settings.kv_type
    if kv_type == "auto" or (kv_type == "f32" and not (settings.plan.quantized or settings.auto_quant)):
        return ""
    return f"-kv{kv_type}"


def _max_steps_in_name(settings: Any) -> str:
    window = settings.window
    return f"-max{window.max_steps}" if window and window.max_steps != DEFAULT_MAX_STEPS else ""


def _threads_in_name(settings: Any) -> str:
    """An explicit thread count on a hosted or Linux target (auto's depends on the machine it runs on)."""
    if settings.options["threads"] == "auto" or settings.target.kind == "baremetal":
        return ""
    return f"-j{settings.threads}"


def _rope_table_in_name(settings: Any) -> str:
    if settings.options["rope_table"] == "auto":
        return ""
    return "-ropetable" if settings.rope_table else "-noropetable"


def _board_in_name(settings: Any) -> str:
    """A firmware target's board other than its default; a Linux target's board= is where to run, not what to
    build."""
    board = settings.options["board"]
    if board and settings.target.kind == "baremetal" and board != settings.target.default_board:
        return f"-{board}"
    return ""


def _weights_file_in_name(settings: Any) -> str:
    if settings.options["weights_file"] == "auto" or settings.target.kind == "baremetal":
        return ""
    return "-wfile" if settings.weights_file else "-linked"


def _options_table(targets: Iterable[str], presets: Iterable[str]) -> list[Option]:
    preset_names = "|".join(sorted(presets))
    # fmt: off
    return [
        Option("target", "what to build for", "host", tuple(sorted(targets))),
        Option("model", "model preset, a GGUF file, a Hugging Face folder, or a llama2.c checkpoint (.bin) with "
               "tokenizer=",
               "260k", allowed_text=f"{preset_names}|PATH", in_name=lambda s: f"{s.model_name}-{s.quant_label}"),
        Option("tokenizer", "tokenizer.bin or tokenizer.model path (default: the preset's, or the model's own)", "",
               allowed_text="PATH"),
        Option("quant", "weight quantization; auto: per tensor the mix of q4/q8/fp32 that fits the target (and "
               "budget=) and loses the least (quant_report.md says what it chose and why)",
               "fp32", (*QTYPES, "auto")),
        Option("budget", "quant=auto: the most bytes the weights may take (0: what the target's memory allows)", "0",
               parse=_size_in(0, 1 << 40), allowed_text="0|SIZE (e.g. 180K, 12M)",
               in_name=lambda s: f"-b{s.budget}" if s.budget else ""),
        Option("group_size", "quantization group size (groups never cross a row)", "32",
               tuple(str(size) for size in GROUP_SIZES), parse=int,
               in_name=lambda s: f"-g{s.plan.group_size}" if s.plan.quantized and s.plan.group_size != 32 else ""),
        Option("fit", "how weights are fitted to their codes: gptq (calibrated error feedback), search (a scale "
               "searched per group), absmax (llama2.c's max|w| scale)",
               DEFAULT_FIT, FITS,
               in_name=lambda s: f"-{s.plan.fit}" if s.plan.quantized and s.plan.fit != DEFAULT_FIT else ""),
        Option("calib", "calibration text for the fit: sampled (the fp32 model's own stories, fixed seed), none, "
               "or a UTF-8 text file",
               DEFAULT_CALIBRATION, parse=_calibration_source, allowed_text="sampled|none|PATH",
               in_name=_calibration_in_name),
        Option("quality", "measure the quantized model against fp32 at build time (top-1 agreement, mean KL in "
               "quant_report.md); auto: for models of up to 5M parameters",
               "auto", ("auto", "yes", "no")),
        Option("quant_overrides", "per-tensor quantization, e.g. tok_embeddings=q8 (kinds: tok_embeddings wq wk wv "
               "wo w1 w2 w3 wcls)",
               "", allowed_text="KIND=QTYPE[,...]"),
        Option("seq_len", "context length to build for (0: the model's)", "0", parse=_int_in(0, 1 << 20),
               allowed_text="0..model seq_len", in_name=lambda s: f"-ctx{s.seq_len}" if s.seq_len else ""),
        Option("kv_type", "KV cache element type: f32; f16 (IEEE half) halves it; q8, a byte per value and a float "
               "scale per position and head; q16, int16 with build-time scales per channel and integer attention. "
               "auto: the first whose plan fits, q16 then q8 for quantized weights, f32 then f16 then q8 for fp32 "
               "ones; an explicit type other than auto's choice builds in its own folder (-kvf16, ...)",
               "auto", ("auto", *KV_TYPES), in_name=_kv_type_in_name),
        Option("overflow", "what a run does when the context is full: stop there, or slide (the KV cache keeps "
               "sinks= first positions and a ring of the most recent ones, and the run goes on up to max_steps=)",
               "stop", ("stop", "slide"), in_name=lambda s: "-slide" if s.window else ""),
        Option("sinks", "overflow=slide: the first positions the cache always keeps (attention sinks)", "4",
               parse=_int_in(0, 1 << 20), allowed_text="0..seq_len-2",
               in_name=lambda s: f"-sinks{s.window.sinks}" if s.window and s.window.sinks != DEFAULT_SINKS else ""),
        Option("max_steps", "overflow=slide: the most forward passes one run makes (each keeps a 12-byte record; "
               "steps=0 means this)",
               "1024", parse=_int_in(2, 1 << 24), allowed_text="seq_len..16M",
               in_name=_max_steps_in_name),
        Option("phases", "count each phase of a forward pass (benchmark builds)", "0", ("0", "1"),
               parse=_flag, in_name=lambda s: "-phases" if s.phases else ""),
        Option("selftest", "firmware: a bring-up build that answers `run` with memory tests and read speeds "
               "instead of a model (SDRAM data/address bus and pattern over a refresh interval, QSPI CRC, every "
               "region's MB/s)",
               "0", ("0", "1"), parse=_flag, kinds=FIRMWARE,
               in_name=lambda s: "-selftest" if s.selftest else ""),
        Option("kernels", "compute kernels: the target's optimised set, or the portable reference ones", "opt",
               ("opt", "ref"),
               in_name=lambda s: "-refkernels" if s.options["kernels"] == "ref" and s.target.kernel_set else ""),
        Option("numerics", "exact: every kernel set gives the reference's results to the bit; fast: an optimised "
               "set may use FMA, reordered sums and a fast exp (within the quantization quality bounds, not "
               "bit-identical; -DLLMCU_NUMERICS_FAST=1); the build goes to its own directory",
               "exact", ("exact", "fast"), in_name=lambda s: "-fast" if s.numerics == "fast" else ""),
        Option("rope_table", "RoPE's cosines and sines from a table computed at build time (seq_len x head_size "
               "floats in flash, the same values the runtime computes, so the output does not change) instead of "
               "powf/cosf/sinf at every position; auto: yes on firmware targets",
               "auto", ("auto", "yes", "no"), in_name=_rope_table_in_name),
        Option("optimize", "how the compiler optimizes the runtime: speed = the target's own flags (-O2), fast = -O3, "
               "size = -Os (less flash, more cycles a token); on firmware only the per-token code, the rest keeps "
               "the target's cold_cflags; the output is the same whichever (no fast-math)",
               "speed", ("speed", "fast", "size"),
               in_name=lambda s: {"speed": "", "fast": "-O3", "size": "-Os"}[s.options["optimize"]]),
        Option("board", "board of a firmware target (default: the target's default board); Linux targets: "
               "user@host[:port] that `run` deploys to over SSH",
               "", allowed_text="NAME|USER@HOST[:PORT]", kinds=FIRMWARE_LINUX, stage=RUN, in_name=_board_in_name),
        Option("threads", "threads for the matrix products on hosted and Linux targets (auto: the target's [cpu] "
               "threads, 1 under hil=qemu so instruction counts repeat); the output is the same for any count",
               "auto", ("auto", "1", "2", "3", "4", "5", "6", "7", "8"), kinds=HOSTED_LINUX,
               in_name=_threads_in_name),
        Option("weights_file", "Linux targets: weights in a separate model.bin the program maps at start (yes), "
               "linked into the program (no), or a file when they exceed the target's weights_file_above (auto)",
               "auto", ("auto", "yes", "no"), kinds=HOSTED_LINUX, in_name=_weights_file_in_name),
        Option("sdk", "Linux targets: a Yocto SDK's environment-setup-* script; its CC, CFLAGS and LDFLAGS "
               "(sysroot) build the program (else CC=, CROSS_COMPILE= or the target's compiler)",
               "", allowed_text="PATH", kinds=LINUX),
        Option("weights", "where firmware weights go: auto spills from internal flash to QSPI", "auto",
               ("auto", "flash", "qspi", "sdram"), kinds=FIRMWARE),
        Option("kv", "RAM region for the KV cache on firmware targets (auto: the fastest that holds it)", "auto",
               allowed_text="auto|dtcm|axi|sram|sdram|REGION", kinds=FIRMWARE),
        Option("stack", "firmware stack size in bytes", "8K", parse=_size_in(256, 1 << 20), allowed_text="256..1M",
               kinds=FIRMWARE),
        Option("board_ram", "Linux targets: the board's RAM, which the weights, the KV cache and the run state "
               "must fit in beside the OS (default: the target's, e.g. 2G for the RZ/V2L SMARC EVK)",
               "", parse=lambda text: _size_in(1 << 20, 1 << 40)(text) if text else 0, allowed_text="SIZE (1M..1T)",
               kinds=LINUX),
        Option("watchdog", "firmware watchdog: reset (board) or fault report (QEMU twin) when a forward pass or "
               "the console loop stops for this long",
               "off", parse=parse_timeout, allowed_text="off|TIME (e.g. 2s, 500ms)", kinds=FIRMWARE),
        Option("hil", "how `run` runs a firmware target: none = on the board, qemu = its QEMU twin with the "
               "board's memory budget, auto = the board if a debug probe is attached, else the twin",
               "none", ("none", "qemu", "auto"), kinds=FIRMWARE_LINUX, stage=RUN),
        Option("sanitize", "target=host: build with gcc's sanitizers; any report ends the run with a non-zero "
               "status (-fno-sanitize-recover=all); 1 means address,undefined; the build goes to its own directory",
               "none", parse=parse_sanitize,
               allowed_text="none|1|address,undefined|address|undefined|thread|thread,undefined", kinds=HOSTED,
               in_name=lambda s: "".join(f"-{SANITIZER_SUFFIX[name]}" for name in s.sanitize)),
        Option("prompt", "prompt for `run` (UTF-8)", "", parse=_utf8_text, allowed_text="TEXT", stage=RUN),
        Option("steps", "forward passes for `run` (0: the context length)", "256", parse=_int_in(0, 1 << 20),
               allowed_text="0..seq_len", stage=RUN),
        Option("temperature", "sampling temperature for `run` (0: greedy)", "1.0", parse=_float_in(0.0, 100.0),
               allowed_text="0.0..100", stage=RUN),
        Option("topp", "top-p (nucleus) sampling for `run`; 0 or 1 disables it", "0.9", parse=_float_in(0.0, 1.0),
               allowed_text="0.0..1.0", stage=RUN),
        Option("seed", "sampler seed for `run` (0 would stall the xorshift generator)", "1",
               parse=_int_in(1, (1 << 64) - 1), allowed_text="1..2^64-1", stage=RUN),
        Option("verbose", "print full compiler command lines", "0", ("0", "1"), parse=_flag,
               stage=RUN),
        Option("build_dir", "where builds go: BUILD_DIR/<target>/<model>-<quant>/", "build", allowed_text="PATH",
               stage=RUN),
        Option("log_dir", "where `run` logs go: LOG_DIR/<time>-<target>-<model>-<quant>/", "logs", allowed_text="PATH",
               stage=RUN),
        Option("export_dir", "where `export` writes the model and runtime as a library (default: the build folder's "
               "export/); a folder that exists must be an earlier export", "", allowed_text="PATH", stage=RUN),
        Option("port", "board console for `run`: device or pyserial URL (default: by USB id)", "", allowed_text="URL",
               stage=RUN),
        Option("probe", "debug probe for `flash` (its unique ID or part; default: the only one)", "",
               allowed_text="UID", kinds=FIRMWARE, stage=RUN),
        Option("prompts", "`console`: read the prompts (and /commands) from this file, one per line, instead of "
               "the terminal",
               "", allowed_text="PATH", stage=RUN),
        Option("raw", "`monitor`: show the bytes as they arrive instead of the decoded protocol", "0", ("0", "1"),
               parse=_flag, stage=RUN),
        Option("debug", "`debug`: gdb = the gdb server (pyOCD's for a board, QEMU's stub for the twin) and gdb on "
               "the ELF; server = only the server, for an IDE to attach to",
               "gdb", ("gdb", "server"), stage=RUN),
        Option("gdb_port", "`debug`: the gdb server's TCP port", "3333", parse=_int_in(1, 65535),
               allowed_text="1..65535", stage=RUN),
        Option("power", "power measurement during `run` (llmcu.power): a Nordic PPK2, an ST X-NUCLEO-LPM01A, or "
               "estimate (no meter: the STM32H743 datasheet's Run-mode current; the only choice for the QEMU twin)",
               "none", ("none", "ppk2", "lpm01a", "estimate"), kinds=FIRMWARE, stage=RUN),
        Option("power_port", "the meter's serial port (PPK2: found by USB name if empty)", "", allowed_text="URL",
               kinds=FIRMWARE, stage=RUN),
        Option("power_voltage", "the board's supply voltage in V", "3.3", parse=_float_in(0.8, 5.0),
               allowed_text="0.8..5.0", kinds=FIRMWARE, stage=RUN),
        Option("power_supply", "power=ppk2: board = the board keeps its supply, the PPK2 in series (ampere meter); "
               "meter = the PPK2 powers the board at power_voltage (source meter)",
               "board", ("board", "meter"), kinds=FIRMWARE, stage=RUN),
    ]
    # fmt: on


def nearest(word: str, choices: Iterable[str]) -> str:
    """'; did you mean X?' for the closest of ``choices`` to a misspelt ``word`` (difflib), or ''."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {match[0]}?" if match else ""


def check_unknown(given: Iterable[str], options: list[Option]) -> None:
    """Reject option names the build does not know, naming the ones it does (and the nearest to a misspelling)."""
    known = [option.name for option in options]
    unknown = sorted(set(given) - set(known))
    if unknown:
        hint = nearest(unknown[0], known) if len(unknown) == 1 else ""
        raise OptionError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}{hint}; "
            f"known options: {', '.join(known)} (see `scons -h`)"
        )


def validate(values: Mapping[str, str], options: list[Option]) -> dict[str, Any]:
    """Check and convert every option's text value; a bad one is an error naming the allowed values."""
    result: dict[str, Any] = {}
    for option in options:
        text = str(values.get(option.name, option.default))
        if option.allowed is not None and text not in option.allowed:
            raise OptionError(
                f"{option.name}={text!r} is not allowed; choose one of: {', '.join(option.allowed)}"
                + nearest(text, option.allowed).replace("; did you mean", " (did you mean").replace("?", "?)")
            )
        try:
            result[option.name] = option.parse(text)
        except ValueError as error:
            raise OptionError(
                f"{option.name}={text!r} is not valid ({error}); allowed: {option.describe_allowed()}"
            ) from None
    return result


def help_text(options: list[Option]) -> str:
    lines = ["llmcu build options (NAME=VALUE on the scons command line):", ""]
    for option in options:
        lines.append(f"  {option.name}")
        lines.append(f"      {option.full_help}")
        lines.append(f"      default: {option.default!r}   allowed: {option.describe_allowed()}")
    return "\n".join(lines) + "\n"


def markdown_table(options: list[Option]) -> str:
    """docs/options.md: every option, its default, what it allows, which targets it is for and what it does (the
    table the docs show is this, generated: tools/options_doc.py writes it and a test keeps it equal)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        "# Build options",
        "",
        "Generated from the option table (`site_scons/llmcu/builder/options.py`) by `tools/options_doc.py`; "
        "do not edit.",
        "Options are `NAME=VALUE` words on the scons command line; `scons -h` prints the same.",
        "",
        "| option | default | allowed | targets | what it does |",
        "|---|---|---|---|---|",
    ]
    for option in options:
        default = f"`{option.default}`" if option.default else ""
        kinds = ", ".join(option.kinds) if option.kinds else "all"
        lines.append(f"| `{option.name}` | {cell(default)} | {cell(option.describe_allowed())} | {kinds} | "
                     f"{cell(option.help)} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def list_targets(targets_dir: Path) -> list[str]:
    return sorted(path.parent.name for path in targets_dir.glob("*/target.toml"))
