"""The build's actions, callable from SCons or from a test: generate the model's C, run a program."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..core.errors import LlmcuError
from ..core.fileio import write_text_atomic
from ..core.paths import TARGETS_DIR
from ..model import calibration, quality
from ..model.kvcache import kv_type_candidates
from ..model.quantize import QuantizedMatrix, QuantPlan, kept_from_source, quantize_checkpoint
from ..model.sources import read_config, read_model, read_vocab
from ..platform import selftest_regions, watchdog
from ..platform.targets import load_target
from . import autoquant, boardconfig, codegen, elfreport, layouts, linuxmem, memplan, outputs, weightsfile
from .advice import advice, linux_fits
from .codegen import GeneratedModel
from .imageplan import plan_image
from .quantreport import write_quant_report
from .settings import BuildSettings, FirmwareImage
from .templating import environment


def generate_sources(settings: BuildSettings) -> GeneratedModel:
    """Quantize (quant=auto: choose the mix), plan the memory of every firmware image, measure the quality, and
    only then write the generated files, so a model that does not fit leaves nothing behind."""
    ckpt = read_model(settings.checkpoint)
    if settings.preset is not None:  # a wrong or corrupt download is caught here, before any C is generated
        settings.preset.check_shape(ckpt.config, settings.checkpoint)
    tok = read_vocab(settings.tokenizer, ckpt.config.vocab_size)
    kv_type = kv_type_candidates(settings.kv_type, settings.plan.quantized)[0]  # until the plan decides
    show = sys.stderr.isatty()

    def prepared(plan: QuantPlan, quantized: dict[str, QuantizedMatrix], reports: bool = True) -> GeneratedModel:
        return codegen.prepare(
            ckpt,
            tok,
            plan,
            seq_len=settings.seq_len,
            kv_type=kv_type,
            progress=show,
            rope_table=settings.rope_table,
            weight_layout=layouts.for_kernel_set(settings.kernel_set),
            quantized=quantized,
            reports=reports,
            window=settings.window,
        )

    auto_steps: tuple[str, ...] = ()
    if settings.auto_quant:
        plan, quantized, auto_steps = _choose_quant(settings, ckpt, tok, prepared)
    else:
        plan, quantized = settings.plan, quantize_checkpoint(ckpt, settings.plan, tok, show_progress=show)
    model = prepared(plan, quantized)
    model.auto_steps = auto_steps
    model.source_notes = (*ckpt.extra.get("notes", ()), *_kept_notes(ckpt, plan, quantized))
    try:
        plans = _plan_images(settings, model)
        if settings.linux is not None:
            _fit_linux_board(settings, model)
    except memplan.TwinFitError:
        raise  # the board's plan fits: no board to advise
    except memplan.FitError as error:  # say only what was planned again and fits (llmcu.builder.advice)
        raise memplan.FitError(error.problem, advice(settings, ckpt, tok, model, quantized)) from None
    _check_watchdog(settings, model)
    _measure_quality(settings, ckpt, tok, model, quantized)
    codegen.write_sources(
        model,
        settings.gen_dir,
        model_name=settings.model_name,
        checkpoint_name=settings.checkpoint.name,
        tokenizer_name=settings.tokenizer.name,
        weights_file=settings.out_dir / weightsfile.FILE_NAME if settings.weights_file else None,
    )
    write_quant_report(model, settings.out_dir / "quant_report.json", settings.out_dir / "quant_report.md")
    for image, plan in zip(settings.images, plans, strict=True):
        write_linker_script(image, plan)
        if settings.selftest:
            write_text_atomic(selftest_regions_path(image), selftest_regions.regions_source(plan.regions))
    if settings.images and settings.board_file:
        board_config = boardconfig.render_board_config(settings.board_file)
        write_text_atomic(settings.gen_dir / "board_config.h", board_config)
    outputs.write_manifest(settings)  # last: a later build checks the files against it (llmcu.builder.outputs)
    return model


def _check_watchdog(settings: BuildSettings, model: GeneratedModel) -> None:
    """watchdog= against the forward pass at the chip's clock (the board's; for the twin, the board it stands
    for), at the last position of the context."""
    if settings.firmware is None or not settings.firmware.watchdog_s:
        return
    chip = settings.target
    if chip.twin_of:  # target=qemu-m7: the chip it is the twin of
        chip = load_target(chip.twin_of, TARGETS_DIR)
    clock_hz = float(chip.clock_hz)
    if settings.board_file:
        clock_hz = float(settings.board_file.clocks.cpu_hz)
    last = model.seq_len - 1
    macs = elfreport.macs_per_token(model.config, (last,)).get(f"total_at_pos_{last}", 0)
    where = f"the {chip.name}" + (f" ({settings.board})" if settings.board else "")
    watchdog.check_pass_time(settings.firmware.watchdog_s, macs, model.plan.quantized, clock_hz, where)


def _fit_linux_board(settings: BuildSettings, model: GeneratedModel) -> None:
    """A Linux program must fit its board's RAM beside the OS (llmcu.builder.linuxmem); kv_type=auto takes the first
    automatic type that does."""
    assert settings.linux is not None
    kind = linux_fits(settings, model, settings.kv_type)
    if kind:
        model.kv_type = kind
        return
    first = settings.kv_type if settings.kv_type != "auto" else model.kv_type
    need = linuxmem.needs(model, first, settings.default_threads)
    linuxmem.check(settings.target.name, settings.linux.ram_bytes, settings.linux.os_reserve_bytes, need)


def _plan_images(
    settings: BuildSettings, model: GeneratedModel, kv_type: str | None = None
) -> list[memplan.MemoryPlan]:
    """Every firmware image's memory plan (none for hosted and Linux targets); decides an automatic KV type."""
    if not settings.images:
        return []
    # The first image (the target's own) decides an automatic KV type; its twin must fit with the same one.
    own = settings.images[0]
    candidates = kv_type_candidates(kv_type or settings.kv_type, model.plan.quantized)
    first = memplan.choose_kv_type(candidates, lambda kind: plan_image(settings, own, model, kind))
    model.kv_type = first.kv_type
    return [first] + [_plan_twin(settings, image, model) for image in settings.images[1:]]


def _plan_twin(settings: BuildSettings, image: FirmwareImage, model: GeneratedModel) -> memplan.MemoryPlan:
    """The twin's plan for what fits the board: where the twin's memory is smaller (mps2-an500 has 16 MB for a
    board's SDRAM and QSPI together), the error names the twin and its limit, not the board."""
    try:
        return plan_image(settings, image, model, model.kv_type)
    except memplan.FitError as error:
        external = ", ".join(f"{r.name} {r.size / 2**20:g} MB" for r in image.regions if r.external)
        window = image.target.external_window[1]
        limit = f"; its external memory is {window / 2**20:g} MB in all ({external})" if window else ""
        raise memplan.TwinFitError(
            f"this build fits the {settings.target.name} board ({settings.board}) but not its QEMU twin "
            f"{image.target.name}{limit}: {error.problem}",
            "Run it on the board (hil=none), or make the model smaller for the twin (a smaller quant=, seq_len=)",
        ) from None


def _kept_notes(ckpt: Any, plan: QuantPlan, quantized: dict[str, QuantizedMatrix]) -> list[str]:
    """What this build did with a source file's quantized matrices: kept bit for bit, or fitted again."""
    stored = ckpt.extra.get("stored", {})
    if not stored:
        return []
    kept = kept_from_source(ckpt, plan, quantized)
    notes = []
    if kept:
        notes.append(f"kept bit for bit from the file: {', '.join(kept)} ({', '.join(sorted(set(kept.values())))})")
    again = [f"{kind} ({source})" for kind, source in stored.items() if kind not in kept]
    if again:
        notes.append(f"fitted again ({plan.fit}): {', '.join(again)}")
    return notes


def _choose_quant(
    settings: BuildSettings, ckpt: Any, tok: Any, prepared: Callable[..., GeneratedModel]
) -> tuple[QuantPlan, dict[str, QuantizedMatrix], tuple[str, ...]]:
    """quant=auto (llmcu.builder.autoquant): the mix that fits the budget and every image's memory plan."""
    from tqdm import tqdm

    base = settings.plan
    stats = calibration.calibrate(ckpt, base.calibration, tok, sys.stderr.isatty()) if base.calibrated else None
    decided: list[str] = []  # the KV type the smallest mix gets; every larger mix must keep it

    def fits(plan: QuantPlan, mix: dict[str, QuantizedMatrix]) -> str | None:
        model = prepared(plan, mix, reports=False)
        try:
            _plan_images(settings, model, decided[0] if decided else None)
        except memplan.FitError as error:
            return str(error)
        decided[:1] = [model.kv_type]
        return None

    def weight_bytes(mix: dict[str, QuantizedMatrix]) -> int:
        return sum(blob.size for blob in codegen.weight_blobs(ckpt, mix, layouts.for_kernel_set(settings.kernel_set)))

    kinds = sum(1 for name in ckpt.weights if np.ndim(ckpt.weights[name]) >= 2 and not name.startswith("rms"))
    with tqdm(total=kinds * 2, desc="quant=auto", unit="matrix", leave=False, disable=not sys.stderr.isatty()) as bar:
        choice = autoquant.choose(ckpt, base, stats, weight_bytes, fits, settings.budget, bar.update)
    return choice.plan, choice.quantized, tuple(choice.steps)


def _measure_quality(
    settings: BuildSettings, ckpt: Any, tok: Any, model: GeneratedModel, quantized: dict[str, QuantizedMatrix]
) -> None:
    """quality=: top-1 agreement and mean KL against fp32 into the report (auto: models of up to 5M parameters)."""
    if not model.plan.quantized or settings.quality == "no":
        model.quality_note = "not measured (quality=no)" if model.plan.quantized else ""
        return
    parameters = ckpt.config.parameter_count()
    if settings.quality == "auto" and parameters > quality.BUILD_MAX_PARAMETERS:
        model.quality_note = (
            f"not measured: {parameters:,} parameters is above quality=auto's {quality.BUILD_MAX_PARAMETERS:,} "
            "(the Python reference would take minutes); quality=yes measures it, or tools/quant_quality.py"
        )
        return
    model.quality = quality.build_quality(ckpt, tok, quantized, "f32" if model.kv_type == "auto" else model.kv_type)


def selftest_regions_path(image: FirmwareImage) -> Path:
    """Where a selftest=1 image's region table goes: beside its linker script."""
    return image.linker_script.parent / "selftest_regions.c"


def write_linker_script(image: FirmwareImage, plan: memplan.MemoryPlan) -> None:
    template = environment().get_template("cortex_m.ld.j2")
    text = template.render(
        version=__version__,
        target=image.target.name,
        board=image.board or image.target.name,
        plan_lines=memplan.describe(plan),
        regions=plan.regions,
        boot=plan.boot_region,
        data=plan.data_region,
        stack_bytes=plan.stack_bytes,
        stack_guard_bytes=memplan.STACK_GUARD_BYTES,
        groups=plan.groups,
        kv_region=plan.kv_region,
        state_region=plan.state_region,
        hot_code_region=plan.hot_code_region,
        hot_code_patterns=memplan.HOT_CODE_PATTERNS,
    )
    write_text_atomic(image.linker_script, text)
    # The same placement as a fragment for a product's own linker script (`scons export`, llmcu.builder.export).
    used = sorted({g.region for g in plan.groups} | {g.load_region for g in plan.groups if g.load_region}
                  | {plan.kv_region, plan.state_region, plan.boot_region})  # fmt: skip
    fragment = (
        environment()
        .get_template("llmcu_sections.ld.j2")
        .render(
            version=__version__,
            target=image.target.name,
            board=image.board or image.target.name,
            plan_lines=memplan.describe(plan),
            used_regions=used,
            groups=plan.groups,
            copies=[group for group in plan.groups if group.load_region],
            kv_region=plan.kv_region,
            kv_bytes=plan.kv_bytes,
            state_region=plan.state_region,
            boot=plan.boot_region,
        )
    )
    write_text_atomic(image.linker_script.parent / "llmcu_sections.ld", fragment)


def firmware_outputs(settings: BuildSettings, image: FirmwareImage) -> elfreport.FirmwareReport:
    """After linking: raw images per flash region and the memory report."""
    config = read_config(settings.checkpoint)
    elfreport.write_region_images(image.elf, list(image.regions), image.out_dir)
    write_hex(image)
    report = elfreport.analyse(image.elf, list(image.regions), config)
    title = f"{image.target.name} ({image.board or 'default'}), {settings.model_name} {settings.quant_label}"
    elfreport.write_report(report, image.out_dir / "memory_report.json", image.out_dir / "memory_report.md", title)
    return report


def write_hex(image: FirmwareImage) -> None:
    """Intel HEX of every loadable byte (all flash regions, with their addresses), for any programmer."""
    objcopy = f"{image.target.tool_prefix}objcopy"
    hex_path = image.out_dir / "firmware.hex"
    partial = hex_path.with_suffix(".hex.part")
    result = subprocess.run([objcopy, "-O", "ihex", str(image.elf), str(partial)], capture_output=True, text=True)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise LlmcuError(f"{objcopy} could not write {hex_path.name}: {result.stderr.strip()}")
    partial.replace(hex_path)


_OVERFLOW = re.compile(r"region `(\w+)' overflowed by (\d+) bytes")


def explain_link_errors(stderr: str, image: FirmwareImage) -> list[str]:
    """The linker's region overflows as llmcu errors: which region, its size, how much more was needed."""
    messages = []
    for region_name, excess in _OVERFLOW.findall(stderr):
        region = next((r for r in image.regions if r.name.upper() == region_name), None)
        if region is None:
            continue
        advice = {
            "flash": "the code and the weights planned into internal flash are larger than planned: try "
            "weights=qspi (every weight in QSPI flash, the code alone in internal flash), optimize=size (the "
            "runtime's code at -Os), quant=q4 or quant=q8, or a smaller model",
            "ram": "try a smaller stack=, kv_type=f16 or q8, a shorter seq_len=, or kv=sdram on a board with SDRAM",
            "xip": "the weights exceed the QSPI flash: try quant=q4",
        }[region.kind]
        messages.append(
            f"{image.target.name} firmware does not fit: region {region.name} ({region.size:,} bytes at "
            f"{region.origin:#010x}) would need {int(excess):,} bytes more; {advice}"
        )
    return messages


def link(command: str, image: FirmwareImage) -> int:
    """Run the link command; turn region overflows into errors a user can act on."""
    result = subprocess.run(command, shell=True, capture_output=True, text=True)
    sys.stdout.write(result.stdout)
    if result.returncode != 0:
        explained = explain_link_errors(result.stderr, image)
        sys.stderr.write(result.stderr if not explained else "")
        for message in explained:
            print(f"llmcu: error: {message}", file=sys.stderr)
    return result.returncode
