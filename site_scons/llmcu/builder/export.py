"""``scons ... export``: a build's model and runtime as a library for a product's own firmware or program.

The export folder builds outside this repository with nothing but the target's compiler:

    include/llmcu.h, include/llmcu_model_config.h   the public API and the model's configuration
    src/                                            the runtime, the kernel set this build chose, the generated model
    lib/libllmcu.a                                  the same compiled with this build's exact flags
    lib/libllmcu.so, llmcu.pc, python/              hosted and Linux builds: shared library, pkg-config, Python
    CMakeLists.txt, llmcuConfig.cmake               add_subdirectory() or find_package(llmcu): target llmcu::llmcu
    llmcu.mk, library.json                          plain Makefiles, PlatformIO
    README.md, quant_report.md                      for the integrator
    llmcu_sections.ld, MEMORY.md                    firmware: where the plan put the weights, KV cache and state

Every global symbol the library defines starts with ``llmcu_``: the runtime's own names (its kernels, its console
parser, the port's optional hooks ``platform_*``) are renamed in the compiled objects, definitions and references
alike (objcopy --redefine-syms with ``src/llmcu_prefix.syms``, the list the export made from what the compiler
produced; the CMake and Makefile builds from ``src/`` apply it to their library too), so the runtime's sources stay
as they are and a product's ``rmsnorm`` or ``platform_write`` never clashes with llmcu's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from ..core.errors import LlmcuError
from ..core.fileio import write_text_atomic
from ..core.paths import ROOT, RUNTIME_DIR, TARGETS_DIR
from .compileflags import OPTIMIZE_FLAGS, runtime_defines, runtime_sources
from .exportfiles import (
    ExportToolchain,
    cmake_lists,
    config_cmake,
    library_json,
    makefile,
    memory_md,
    pkg_config,
    readme,
)
from .linux import posix_defines
from .settings import BuildSettings

MARKER = ".llmcu-export.json"  # what makes a folder an export (and safe to replace)
CONFIG_HEADER = "llmcu_model_config.h"  # model_config.h, renamed: no header named like a product's own
BINDING = Path(__file__).parent / "exportdata" / "llmcu_model.py"  # the Python binding, copied into python/
FIRMWARE_BOOT = Path(__file__).parent / "exportdata" / "llmcu_sections.c"  # llmcu_copy_weights, firmware only
OPEN = Path(__file__).parent / "exportdata" / "llmcu_open.c"  # llmcu_open, weights_file builds only
STATE_FILE = "src/llmcu_static.json"  # the static state's bytes, for the README
PREFIX_FILE = "llmcu_prefix.syms"  # "name llmcu_name" per line, for objcopy --redefine-syms


class ExportError(LlmcuError):
    pass


def toolchain(settings: BuildSettings) -> ExportToolchain:
    target = settings.images[0].target if settings.images else settings.target
    prefix = target.tool_prefix
    defines = [(name, str(value).replace('\\"', '"')) for name, value in runtime_defines(settings, target)]
    threads = not settings.images
    if threads:
        defines += posix_defines(settings.default_threads)
    else:  # firmware: the product's linker script must include llmcu_sections.ld (gen.c)
        defines.append(("LLMCU_REQUIRE_LINKER_FRAGMENT", "1"))
    cflags = (*target.all_cflags, *OPTIMIZE_FLAGS[settings.options["optimize"]])
    tools = (f"{prefix}ar", f"{prefix}nm", f"{prefix}objcopy", f"{prefix}size")
    return ExportToolchain(target.cc, *tools, cflags, tuple(defines), threads)


def destination(settings: BuildSettings) -> Path:
    """``export_dir=`` (relative to the checkout), or ``<build dir>/export``."""
    chosen = settings.options["export_dir"]
    if not chosen:
        return settings.out_dir / "export"
    path = Path(chosen)
    return path if path.is_absolute() else ROOT / path


def check_destination(path: Path) -> None:
    """A folder that exists and is not a previous export is refused: nothing of a product is ever overwritten."""
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not (path / MARKER).is_file())):
        raise ExportError(f"export_dir={path} exists and is not an llmcu export (no {MARKER} in it): nothing was "
                          "written; choose another export_dir= or remove it")  # fmt: skip


def _copy(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    text = source.read_bytes()
    if source.suffix in (".c", ".h", ".S"):
        text = text.replace(b'#include "model_config.h"', f'#include "{CONFIG_HEADER}"'.encode())
    destination.write_bytes(text)


def _sources(settings: BuildSettings, staging: Path) -> list[Path]:
    """Copies the runtime (the build's kernel set over the reference kernels) and the generated model; returns the
    library's source files in the staging folder."""
    for path in RUNTIME_DIR.rglob("*"):
        relative = path.relative_to(RUNTIME_DIR)
        kernel_set = relative.parts[1] if relative.parts[0] == "kernels" and len(relative.parts) > 2 else None
        if path.suffix not in (".c", ".h") or kernel_set not in (None, "ref", settings.kernel_set):
            continue  # another architecture's kernels; the optimised sets include the reference files they reuse
        _copy(path, staging / ("include" if path.name == "llmcu.h" else "src") / relative)
    files = [staging / "src" / path.relative_to(RUNTIME_DIR) for path in runtime_sources(settings.kernel_set)]
    gen = settings.gen_dir
    _copy(gen / "model_config.h", staging / "include" / CONFIG_HEADER)
    for name in ("model_weights.c", "model_data.S"):
        _copy(gen / name, staging / "src" / "model" / name)
        files.append(staging / "src" / "model" / name)
    for data in gen.glob("*.bin"):
        shutil.copy(data, staging / "src" / "model" / data.name)
    if settings.weights_file:  # the weights live in model.bin: llmcu_open maps it, with the program's own checks
        for name in ("weights_file.c", "posix.h"):
            _copy(TARGETS_DIR / "posix" / name, staging / "src" / name)
        files.append(staging / "src" / "weights_file.c")
        shutil.copy(OPEN, staging / "src" / OPEN.name)
        files.append(staging / "src" / OPEN.name)
        shutil.copy(settings.out_dir / "model.bin", staging / "model.bin")
    if settings.images:  # firmware: the boot step that copies weights into SDRAM (llmcu_sections.ld's table)
        shutil.copy(FIRMWARE_BOOT, staging / "src" / FIRMWARE_BOOT.name)
        files.append(staging / "src" / FIRMWARE_BOOT.name)
    return files


def _compile(tools: ExportToolchain, sources: list[Path], staging: Path, objects: Path, extra: tuple[str, ...] = ()
             ) -> list[Path]:  # fmt: skip
    objects.mkdir(parents=True, exist_ok=True)
    includes = ["-I", str(staging / "include"), "-I", str(staging / "src"), f"-Wa,-I{staging / 'src' / 'model'}"]
    includes.append(f"-ffile-prefix-map={staging}=.")  # no build folder's path in the library's debug information
    defines = [f"-D{name}={value}" for name, value in tools.defines]
    out = []
    for index, source in enumerate(sources):
        obj = objects / f"{index:02d}-{source.stem}.o"
        command = [tools.cc, *tools.cflags, *extra, *defines, *includes, "-c", str(source), "-o", str(obj)]
        result = subprocess.run(command, capture_output=True, text=True, cwd=source.parent)
        if result.returncode != 0:
            raise ExportError(f"compiling {source.name} for the export failed:\n{result.stderr[-2000:]}")
        out.append(obj)
    return out


def _defined_globals(tools: ExportToolchain, objects: list[Path]) -> set[str]:
    result = subprocess.run([tools.nm, "-g", "--defined-only", *map(str, objects)], capture_output=True, text=True,
                            check=True)  # fmt: skip
    return {line.split()[-1] for line in result.stdout.splitlines() if len(line.split()) == 3}


def _static_state(tools: ExportToolchain, objects: list[Path]) -> dict[str, int]:
    """Bytes of the library's static state by section (the KV cache, the run state, the rest of .bss and .data),
    from the compiled objects (``size -A``): what the README states."""
    result = subprocess.run([tools.size, "-A", *map(str, objects)], capture_output=True, text=True, check=True)
    totals = {"kv_cache": 0, "run_state": 0, "other": 0}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            continue
        name, size = parts[0], int(parts[1])
        if name == ".bss.llmcu_kv":
            totals["kv_cache"] += size
        elif name == ".bss.llmcu_state":
            totals["run_state"] += size
        elif name.startswith((".bss", ".data")):
            totals["other"] += size
    return totals


def _library(tools: ExportToolchain, sources: list[Path], staging: Path, scratch: Path) -> list[str]:
    """lib/libllmcu.a with every defined global prefixed; returns the names that got the prefix."""
    objects = _compile(tools, sources, staging, scratch / "objects")
    renamed = sorted(name for name in _defined_globals(tools, objects) if not name.startswith("llmcu_"))
    symbols = staging / "src" / PREFIX_FILE
    symbols.write_text("".join(f"{name} llmcu_{name}\n" for name in renamed))
    for obj in objects:  # definitions and references alike, in every object
        subprocess.run([tools.objcopy, f"--redefine-syms={symbols}", str(obj)], check=True)
    left = sorted(name for name in _defined_globals(tools, objects) if not name.startswith("llmcu_"))
    if left:
        raise ExportError(f"the export's library would define globals without the llmcu_ prefix: {', '.join(left)}")
    (staging / "lib").mkdir(exist_ok=True)
    subprocess.run([tools.ar, "rcs", str(staging / "lib" / "libllmcu.a"), *map(str, objects)], check=True)
    write_text_atomic(staging / STATE_FILE, json.dumps(_static_state(tools, objects)) + "\n")
    if tools.threads:  # a hosted or Linux build: the shared library too (pkg-config, the Python binding)
        shared = _compile(tools, sources, staging, scratch / "shared", ("-fPIC",))
        for obj in shared:
            subprocess.run([tools.objcopy, f"--redefine-syms={symbols}", str(obj)], check=True)
        result = subprocess.run([tools.cc, "-shared", "-o", str(staging / "lib" / "libllmcu.so"), *map(str, shared),
                                 "-lm", "-lpthread"], capture_output=True, text=True)  # fmt: skip
        if result.returncode != 0:
            raise ExportError(f"linking lib/libllmcu.so failed:\n{result.stderr[-2000:]}")
    return renamed


STACK_RUN_STEPS = 32  # the twin's run that measures a firmware export's stack (MEMORY.md)


def export(settings: BuildSettings, path: Path | None = None, *, stack_peak: int = 0) -> Path:
    """Write the export of a built ``settings`` to ``path`` (default: :func:`destination`), atomically: it is built
    beside it and moved into place; a previous export there is replaced, anything else is refused."""
    path = path or destination(settings)
    check_destination(path)
    tools = toolchain(settings)
    staging = path.with_name(f".{path.name}.partial")
    scratch = path.with_name(f".{path.name}.objects")
    for folder in (staging, scratch):
        shutil.rmtree(folder, ignore_errors=True)
    try:
        sources = _sources(settings, staging)
        renamed = _library(tools, sources, staging, scratch)
        relative = [source.relative_to(staging).as_posix() for source in sources]
        write_text_atomic(staging / "CMakeLists.txt", cmake_lists(tools, relative))
        write_text_atomic(staging / "llmcuConfig.cmake", config_cmake(tools))
        write_text_atomic(staging / "llmcu.mk", makefile(tools, relative))
        write_text_atomic(staging / "library.json", library_json(settings, tools))
        state = json.loads((staging / STATE_FILE).read_text())
        write_text_atomic(staging / "README.md", readme(settings, tools, renamed, state))
        if settings.images:  # firmware: the placement for the product's linker script, and the plan
            image = settings.images[0]
            shutil.copy(image.linker_script.parent / "llmcu_sections.ld", staging / "llmcu_sections.ld")
            report = image.out_dir / "memory_report.md"
            memory = report.read_text() if report.is_file() else ""
            write_text_atomic(staging / "MEMORY.md", memory_md(settings, memory, stack_peak, STACK_RUN_STEPS))
        if tools.threads:
            write_text_atomic(staging / "llmcu.pc", pkg_config(settings))
            (staging / "python").mkdir()
            shutil.copy(BINDING, staging / "python" / BINDING.name)
        report = settings.out_dir / "quant_report.md"
        if report.is_file():
            shutil.copy(report, staging / "quant_report.md")
        marker = {"target": settings.target.name, "model": settings.model_name, "quant": settings.quant_label,
                  "kernels": settings.kernel_set or "ref", "compiler": tools.cc}  # fmt: skip
        write_text_atomic(staging / MARKER, json.dumps(marker, indent=2) + "\n")
        if path.exists():
            shutil.rmtree(path)
        staging.replace(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    return path
