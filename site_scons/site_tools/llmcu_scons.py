"""SCons glue for llmcu: turns the library's build settings into SCons nodes. No build logic lives here.

SConstruct loads it with ``env.Tool("llmcu_scons")`` and then calls ``env.LlmcuBuild(ARGUMENTS)``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import SCons.Script as scons
from SCons.Variables import EnumVariable, Variables

from llmcu.builder import codegen, compileflags, export, flashalgo, linux, memplan, outputs, steps
from llmcu.builder import options as option_rules
from llmcu.builder.settings import (
    LIBRARY_DIR,
    TEMPLATES_DIR,
    BuildSettings,
    FirmwareImage,
    RunParams,
    configure,
    help_intro,
    options_table,
)
from llmcu.core import fileio, interrupts
from llmcu.core.errors import LlmcuError
from llmcu.core.paths import ROOT, RUNTIME_DIR, TARGETS_DIR
from llmcu.device import debug, flashing, linux_run, monitor, qemu, session
from llmcu.model.sources import source_files
from llmcu.platform import watchdog
from llmcu.power import runpower

# Short command lines unless verbose=1.
QUIET_COMMANDS = {
    "CCCOMSTR": "CC      $SOURCE",
    "ASPPCOMSTR": "AS      $SOURCE",
    "LINKCOMSTR": "LINK    $TARGET",
}


def _fail(error: Exception) -> None:
    print(f"llmcu: error: {error}", file=sys.stderr)
    scons.Exit(2)


def _variables(table: list) -> Variables:
    variables = Variables(None, scons.ARGUMENTS)
    for option in table:
        if option.allowed is not None:
            variables.Add(EnumVariable(option.name, option.full_help, option.default, allowed_values=option.allowed))
        else:
            variables.Add(option.name, f"{option.full_help} ({option.allowed_text})", option.default)
    return variables


def _reported(work: Callable[[], object]) -> int:
    """Runs an action's work with Python's own signal handling (llmcu.core.interrupts: SCons's handlers would let
    it run on after Ctrl-C or SIGTERM); an LlmcuError becomes its message and a failed action, not a traceback; an
    interruption, once the work has cleaned up (logs finished, ports closed), ends scons with 128 + the signal."""
    try:
        with interrupts.python_signals():
            work()
    except LlmcuError as error:
        print(f"llmcu: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interruption:
        print(f"llmcu: {interrupts.describe(interruption)}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(interrupts.exit_status(interruption))  # SCons would turn SystemExit into a build error
    return 0


def _print_lines(lines: Iterable[str], prefix: str = "") -> None:
    for line in lines:
        print(f"{prefix}{line}")


# Actions are plain module functions that find their settings in the environment. SCons signs a function
# action by its code; a closure over the settings would sign differently on every run and rebuild every time.
# SCons calls actions with (target, source, env).
def _generate_action(target, source, env) -> int:
    return _reported(lambda: steps.generate_sources(env["LLMCU_SETTINGS"]))


def _run_action(target, source, env) -> int:
    settings = env["LLMCU_SETTINGS"]
    options = settings.run_options
    if settings.linux is not None:  # a Linux board over SSH, or qemu-user (power= is refused for it at configure)
        return _reported(lambda: linux_run.run(settings, options.log_dir))
    return _reported(lambda: runpower.run(settings, options, settings.power))  # host, twin or board; logs the run


def _console_action(target, source, env) -> int:
    settings = env["LLMCU_SETTINGS"]
    options = settings.run_options
    return _reported(lambda: session.console(settings, options, prompts=options.prompts))


def _monitor_action(target, source, env) -> int:
    settings = env["LLMCU_SETTINGS"]
    return _reported(lambda: monitor.monitor_build(settings, settings.run_options))


def _debug_action(target, source, env) -> int:
    settings = env["LLMCU_SETTINGS"]
    options = settings.run_options
    status = 0

    def work() -> None:
        nonlocal status
        status = debug.debug(settings, options)

    return _reported(work) or status


def _firmware_outputs_action(target, source, env) -> int:
    return _reported(lambda: _print_lines(steps.firmware_outputs(env["LLMCU_SETTINGS"], env["LLMCU_IMAGE"]).table()))


def _flash_algo_action(target, source, env) -> int:
    return _reported(lambda: flashalgo.build_for_settings(env["LLMCU_SETTINGS"]))


def _flash_action(target, source, env) -> int:
    settings = env["LLMCU_SETTINGS"]
    probe = settings.run_options.probe
    return _reported(
        lambda: _print_lines(flashing.flash_build(settings, probe, progress=sys.stderr.isatty()).lines(), "[llmcu] ")
    )


def _export_action(target, source, env) -> int:
    settings = env["LLMCU_SETTINGS"]

    def work() -> None:
        # A firmware export's MEMORY.md gives the stack the runtime needs, measured on the build's QEMU twin.
        twin = next((image for image in settings.images if image.target.run.method == "qemu-system"), None)
        peak = 0
        if twin is not None:
            measured = qemu.run_firmware(twin.elf, RunParams("Once upon a time", export.STACK_RUN_STEPS, 0.0, 0.9, 1))
            peak = int(measured.summary.get("peak_stack", "0") or 0)
        print(f"[llmcu] export: {export.export(settings, stack_peak=peak)} (README.md there says how to use it)")

    return _reported(work)


def _flash_algo(env, settings: BuildSettings) -> list:
    """The board's QSPI flash algorithm (flashalgo/qspi.flm) that `flash` needs; none without QSPI flash."""
    build = flashalgo.for_settings(settings)
    if build is None:
        return []
    path, sources = build
    action = env.Action(_flash_algo_action, f"FLM     {path}")
    return env.Command(str(path), [str(source) for source in sources], action, LLMCU_SETTINGS=settings)


def _model_sources(env, settings: BuildSettings) -> list:
    """The generated C and data, rebuilt when the model files, the options or the generator change."""
    targets = outputs.generated_files(settings)
    changed = outputs.discard_changed(settings)  # a damaged model.bin or an edited source is generated again
    if changed:
        print(f"llmcu: {'; '.join(changed)}: generating the model's files again", file=sys.stderr)
    identity = env.Value(settings.identity())  # every build-stage option and what was made of it
    model_files = {*source_files(settings.checkpoint), *source_files(settings.tokenizer)}  # a folder: its files
    sources = [*(str(path) for path in sorted(model_files)), identity]
    if settings.plan.calibrated and Path(settings.plan.calibration).is_file():  # calib=PATH: its text counts
        sources.append(settings.plan.calibration)
    sources += [str(path) for path in sorted(TEMPLATES_DIR.glob("*.j2"))]
    sources += [str(path) for path in sorted(LIBRARY_DIR.rglob("*.py"))]
    sources += [str(image.target.folder / "target.toml") for image in settings.images]
    if settings.images and settings.board:
        sources.append(str(settings.target.folder / "boards" / f"{settings.board}.toml"))
    return env.Command(
        [str(path) for path in targets],
        sources,
        env.Action(_generate_action, f"GEN     {settings.gen_dir}"),
        LLMCU_SETTINGS=settings,
    )


def _object(build_env, stem, source, gen):
    """One object, with the target's cold_cflags unless it is hot code (llmcu.builder.memplan.is_hot_object)."""
    target = build_env["LLMCU_TARGET"]
    if target.cold_cflags and not memplan.is_hot_object(f"{stem}.o"):
        build_env = build_env.Clone()
        build_env.Append(CCFLAGS=list(target.cold_cflags))  # after -O2: the last -O wins
    return _compiled(build_env, stem, source, gen)


def _compiled(build_env, stem, source, gen):
    """One object. The generated headers (model_config.h, board_config.h) are found by the C scanner, so only
    the objects that include them wait for and rebuild with them; the weights that model_data.S pulls in with
    .incbin are a dependency no scanner sees. (Making every object depend on every generated file recompiled
    the whole runtime whenever a weight or a report changed.)"""
    built = build_env.Object(str(stem), str(source))
    if Path(source).name == "model_data.S":
        build_env.Depends(built, str(gen / codegen.DATA_FILE))
    return built


def _program(env, settings: BuildSettings):
    target = settings.target
    gen = settings.gen_dir
    build_env = env.Clone(
        CC=target.cc,
        CCFLAGS=list(target.all_cflags),
        LINKFLAGS=list(target.ldflags),
        LIBS=list(target.libs),
        CPPPATH=[str(RUNTIME_DIR), str(gen)],
        CPPDEFINES=compileflags.runtime_defines(settings, target),
        ASFLAGS=[f"-Wa,-I{gen}"],  # .incbin finds model_data.bin through the assembler's include path
        LLMCU_TARGET=target,
    )
    build_env.Append(CPPDEFINES=linux.posix_defines(settings.default_threads))  # the thread pool (runtime_c/parallel.h)
    sanitize_flags = compileflags.sanitizer_flags(settings.sanitize)  # sanitize=: compile and link with them
    build_env.Append(CCFLAGS=sanitize_flags, LINKFLAGS=sanitize_flags)
    if settings.linux is not None:  # the hosted program, cross-compiled
        build_env.Replace(**linux.construction_variables(settings.target, settings.linux, build_env["ENV"]))
    # After the cross toolchain's flags (which replace CCFLAGS), so every hosted and Linux program gets it.
    build_env.Append(CCFLAGS=compileflags.build_flags(settings))  # reproducible: no absolute paths in the program
    sources = [(path, path.relative_to(ROOT)) for path in compileflags.runtime_sources(settings.kernel_set)]
    sources += [(path, path.relative_to(ROOT)) for path in target.board_sources]
    sources += [(gen / "model_weights.c", "gen/model_weights.c"), (gen / "model_data.S", "gen/model_data.S")]
    objects = []
    for path, rel in sources:
        stem = str(rel).rsplit(".", 1)[0]
        objects += _object(build_env, settings.obj_dir / stem, path, gen)
    return build_env.Program(str(settings.out_dir / "llmcu"), objects)


def _link_action(target, source, env) -> int:  # SCons calls actions with (target, source, env)
    return steps.link(env.subst("$LLMCU_LINKCMD", target=target, source=source), env["LLMCU_IMAGE"])


def _link_string(target, source, env) -> str:  # SCons calls strfunctions with (target, source, env)
    if env.get("LINKCOMSTR"):
        return f"LINK    {target[0]}"
    return env.subst("$LLMCU_LINKCMD", target=target, source=source)


def _firmware(env, settings: BuildSettings, image: FirmwareImage):
    """Compile the runtime and the board layer for one firmware image, link it with its planned script."""
    target = image.target
    gen = settings.gen_dir
    build_env = env.Clone(
        CC=target.cc,
        CCFLAGS=list(target.all_cflags),
        ASFLAGS=[*target.cpu_flags, f"-Wa,-I{gen}"],
        LINKFLAGS=[
            *target.cpu_flags,
            *target.ldflags,
            f"-T{image.linker_script}",
            f"-Wl,-Map={image.out_dir / 'firmware.map'}",
        ],
        LIBS=list(target.libs),
        CPPPATH=[str(RUNTIME_DIR), str(gen), str(TARGETS_DIR / "cortex-m"), str(target.folder)],
        CPPDEFINES=compileflags.runtime_defines(settings, target),
        PROGSUFFIX=".elf",
        LLMCU_IMAGE=image,
        LLMCU_TARGET=target,
    )
    # watchdog=: the register values for this image's watchdog (the board's, or its twin's)
    build_env.Append(CPPDEFINES=watchdog.defines(target, settings.firmware.watchdog_s if settings.firmware else 0.0))
    build_env.Append(CCFLAGS=compileflags.build_flags(settings))  # reproducible: no absolute paths in the ELF
    # Link through llmcu so that a region overflow becomes an error naming the region and what would fit.
    build_env["LLMCU_LINKCMD"] = build_env["LINKCOM"]
    build_env["LINKCOM"] = build_env.Action(_link_action, strfunction=_link_string)
    sources = [(path, path.relative_to(ROOT)) for path in compileflags.runtime_sources(settings.kernel_set)]
    sources += [(path, path.resolve().relative_to(ROOT)) for path in target.board_sources]
    sources += [(gen / "model_weights.c", "gen/model_weights.c"), (gen / "model_data.S", "gen/model_data.S")]
    if settings.selftest:  # the bring-up firmware: its region table, from this image's memory plan
        build_env.Append(CPPDEFINES=[("LLMCU_SELFTEST", 1)])
        sources.append((steps.selftest_regions_path(image), "gen/selftest_regions.c"))
    objects = []
    for path, rel in sources:
        stem = str(rel).rsplit(".", 1)[0]
        objects += _object(build_env, image.out_dir / "obj" / stem, path, gen)
    elf = build_env.Program(str(image.elf.with_suffix("")), objects)
    build_env.Depends(elf, str(image.linker_script))  # -T in LINKFLAGS is no dependency SCons sees
    outputs = [image.out_dir / "memory_report.json", image.out_dir / "memory_report.md", image.out_dir / "firmware.hex"]
    outputs.append(image.out_dir / "firmware.bin")  # the boot flash's image: always written, since code is there
    report = build_env.Command(
        [str(path) for path in outputs],
        elf,
        build_env.Action(_firmware_outputs_action, f"REPORT  {image.out_dir / 'memory_report.md'}"),
        LLMCU_SETTINGS=settings,
        LLMCU_IMAGE=image,
    )
    # Other flash regions' images (firmware-qspi.bin) exist only when the plan put something there, which is
    # known after planning; `scons -c` removes them too.
    boot = next(region for region in image.regions if region.kind == "flash")
    others = [region for region in image.regions if region.kind != "ram" and region is not boot]
    build_env.Clean(report, [str(image.out_dir / f"firmware-{region.name}.bin") for region in others])
    return elf + report


_BUILD_DIR_LOCK = None  # the open lock file of this process's build directory (llmcu.core.fileio.lock_dir)


def _waiting_for(out_dir) -> None:
    print(f"llmcu: another scons is building {out_dir}; waiting for it to finish", file=sys.stderr, flush=True)


def llmcu_build(env, arguments: dict[str, str]):
    """Declare the whole build for the given command-line options; returns the program node."""
    table = options_table()
    try:  # llmcu's own check first: one `llmcu: error:` line naming what is allowed, never SCons's enum message
        values = option_rules.parse_options(arguments, table)
    except LlmcuError as error:
        _fail(error)
        return None
    variables = _variables(table)
    variables.Update(env)
    scons.Help(help_intro() + variables.GenerateHelpText(env), append=False)
    if scons.GetOption("help"):
        return None
    try:
        settings = configure(values)
    except LlmcuError as error:
        _fail(error)
        return None
    if not settings.verbose:
        env.Replace(**QUIET_COMMANDS)
    # One signature database per build directory: builds of different variants may run at the same time
    # (tests, several terminals) and must not overwrite each other's records in one shared file.
    global _BUILD_DIR_LOCK
    try:
        fileio.ensure_dir(settings.out_dir)  # a read-only or full build_dir= is one clear error, not a traceback
        # One scons at a time per build directory (a second one waits): the lock lives as long as this process.
        _BUILD_DIR_LOCK = fileio.lock_dir(settings.out_dir, lambda: _waiting_for(settings.out_dir))
        damaged = fileio.set_aside_damaged_database(settings.out_dir / ".sconsign.dblite")
    except LlmcuError as error:
        _fail(error)
        return None
    if damaged:
        print(f"llmcu: warning: {damaged}", file=sys.stderr)
    env.SConsignFile(str(settings.out_dir / ".sconsign"))
    # `scons compiledb`: compile_commands.json for clangd and IDEs, with each object's real (cross-)compiler
    # command. The tool hooks the compile builders, so it goes in before any object is declared.
    env.Tool("compilation_db")
    env["COMPILATIONDB_USE_ABSPATH"] = True
    compile_db = env.CompilationDatabase(str(settings.out_dir / "compile_commands.json"))
    env.Alias("compiledb", compile_db)
    generated = _model_sources(env, settings)
    # The database names the generated headers (model_config.h, ...): make them too, so that clangd finds them
    # in a fresh build directory (nothing is compiled).
    env.Alias("compiledb", generated)
    if settings.images:
        program = []
        for image in settings.images:
            program += _firmware(env, settings, image)
        program += _flash_algo(env, settings)
    else:
        program = _program(env, settings)
    program = list(program) + list(generated)  # the reports and a weights file are outputs nothing links
    env.Default(program)
    env.Alias("build", program)
    run = env.Alias(
        "run",
        program,
        env.Action(_run_action, None),
        LLMCU_SETTINGS=settings,
    )
    env.AlwaysBuild(run)
    # `console`, `monitor` and `debug`: sessions on the runner `run` would use (llmcu.device.session, .monitor,
    # .debug). monitor attaches to what runs already, so it builds nothing.
    console = env.Alias("console", program, env.Action(_console_action, None), LLMCU_SETTINGS=settings)
    watch = env.Alias("monitor", [], env.Action(_monitor_action, None), LLMCU_SETTINGS=settings)
    gdb = env.Alias("debug", program, env.Action(_debug_action, None), LLMCU_SETTINGS=settings)
    env.AlwaysBuild(console, watch, gdb)
    if "flash" in scons.COMMAND_LINE_TARGETS:
        try:
            flashing.check_flashable(settings.target)
        except LlmcuError as error:
            _fail(error)
    flash = env.Alias("flash", program, env.Action(_flash_action, None), LLMCU_SETTINGS=settings)
    env.AlwaysBuild(flash)
    # `export`: the model and the runtime as a library for a product's own build (llmcu.builder.export).
    exported = env.Alias("export", program, env.Action(_export_action, None), LLMCU_SETTINGS=settings)
    env.AlwaysBuild(exported)
    out = settings.out_dir
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    print(f"llmcu: {settings.target.name} {settings.model_name} {settings.quant_label} -> {shown}")
    return program


def generate(env) -> None:
    env.AddMethod(llmcu_build, "LlmcuBuild")


def exists(env) -> bool:
    return True
