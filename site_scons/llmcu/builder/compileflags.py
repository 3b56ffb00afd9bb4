"""The compiler's flags and sources that a build's settings decide, beside the target's own (target.toml):
which runtime files, the defines every program gets, sanitizers, and the flags that keep paths out of the objects.
The SCons glue applies them; nothing here runs a compiler."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import OptionError
from ..core.paths import ROOT, RUNTIME_DIR
from ..platform.targets import Target
from .settings import BuildSettings


def runtime_defines(settings: BuildSettings, target: Target) -> list[tuple[str, object]]:
    """Defines of every runtime file, for the program or firmware image built for ``target``."""
    defines: list[tuple[str, object]] = [
        ("LLMCU_TARGET_NAME", f'\\"{target.name}\\"'),
        ("LLMCU_PROMPT_MAX_BYTES", target.prompt_max_bytes),
        ("LLMCU_PHASES", int(settings.phases)),
    ]
    if settings.numerics == "fast":  # kernels may use FMA, reordered sums and a fast exp (kernels/neon/README.md)
        defines.append(("LLMCU_NUMERICS_FAST", 1))
    return defines


# optimize=: the -O that follows the target's -O2 (the last -O wins). On firmware the code off the per-token path
# gets the target's cold_cflags after it (llmcu.builder.memplan.is_hot_object), so only the hot code changes.
OPTIMIZE_FLAGS = {"speed": (), "fast": ("-O3",), "size": ("-Os",)}


def build_flags(settings: BuildSettings) -> list[str]:
    """CCFLAGS that go after the target's and the toolchain's own (a cross toolchain replaces CCFLAGS):
    optimize='s level and the reproducible paths."""
    return [*OPTIMIZE_FLAGS[settings.options["optimize"]], *prefix_map_flags(settings)]


def sanitizer_flags(sanitize: tuple[str, ...]) -> list[str]:
    """Compiler and linker flags for a sanitized build: every report is fatal (no recovering and carrying on,
    so a test sees a non-zero exit status) and frames keep their pointer for readable stack traces."""
    if not sanitize:
        return []
    # GCC's "undefined" leaves out float-to-integer conversions that overflow (UB in C: the quantizers and
    # the tokenizer's casts must clamp first); checked too.
    checks = [*sanitize, "float-cast-overflow"] if "undefined" in sanitize else list(sanitize)
    return [f"-fsanitize={','.join(checks)}", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]


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
