#!/usr/bin/env python3
"""Build and run the C fuzz targets (tools/fuzz/c/) under AddressSanitizer and UndefinedBehaviorSanitizer.

    python3 tools/fuzz/c/run_c_fuzz.py --iterations 100000            # both targets, gcc, own mutator
    python3 tools/fuzz/c/run_c_fuzz.py console --seed 7 crash-console-0123456789abcdef   # replay a finding
    python3 tools/fuzz/c/run_c_fuzz.py --libfuzzer -- -max_total_time=600   # clang's libFuzzer, if installed

The tokenizer target links a model's generated vocabulary, the gen target the whole runtime with the model: the
sources are generated (no compiling of the model) for ``--model`` (default 260k) in ``--work`` (default
build/fuzz-c), with the models found as scons finds them (LLMCU_MODELS, the cache). Exit status 0 when every input
ran clean; a finding prints the sanitizer's report or the broken invariant and leaves the input as
``crash-<target>-<hash>`` in ``--work``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]

TARGETS = ("console", "tokenizer", "gen")
MODEL_TARGETS = ("tokenizer", "gen")  # link a model build's generated sources
# Every report is fatal and aborts (the driver's SIGABRT handler saves the input; the exit status says that
# something was found); leaks are findings too.
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:abort_on_error=1",
    "UBSAN_OPTIONS": "halt_on_error=1:abort_on_error=1:print_stacktrace=1",
}
WARNINGS = ["-Wall", "-Wextra", "-Wshadow", "-Werror"]


def generate_model(model: str, work: Path) -> Path:
    """The generated sources of a host q8 build of ``model`` (only the vocabulary is used); returns gen/."""
    from llmcu.builder import steps
    from llmcu.builder.settings import configure

    # kernels=ref: the matrices row-major, as the reference kernels that sources() compiles read them
    settings = configure({"model": model, "quant": "q8", "kernels": "ref", "build_dir": str(work / "model")})
    if not (settings.gen_dir / "model_weights.c").is_file():
        steps.generate_sources(settings)
    return settings.gen_dir


def sources(target: str, gen: Path | None) -> list[Path]:
    runtime = ROOT / "runtime_c"
    if target == "console":
        return [runtime / "console.c"]
    assert gen is not None
    model = [gen / "model_weights.c", gen / "model_data.S"]
    if target == "tokenizer":
        return [runtime / "tokenizer.c", *model]
    from llmcu.builder.compileflags import runtime_sources

    return [*runtime_sources(""), *model]  # the whole runtime (reference kernels): the API's forward passes


def build(target: str, work: Path, gen: Path | None, *, libfuzzer: bool = False, defines: tuple[str, ...] = ()) -> Path:
    """Compiles one target with the sanitizers: with gcc and fuzz_driver.c, or as a libFuzzer target with clang."""
    from llmcu.builder.compileflags import sanitizer_flags

    compiler = "clang" if libfuzzer else os.environ.get("CC", "gcc")
    if shutil.which(compiler) is None:
        raise SystemExit(f"run_c_fuzz: {compiler} not found" + (" (apt-get install clang)" if libfuzzer else ""))
    sanitizers = ("address", "undefined")
    flags = sanitizer_flags(sanitizers)
    if libfuzzer:
        flags = [flags[0].replace("-fsanitize=", "-fsanitize=fuzzer,"), *flags[1:]]
    driver = [HERE / "fuzz_fail.c"] + ([] if libfuzzer else [HERE / "fuzz_driver.c"])
    program = work / (f"fuzz_{target}" + ("_libfuzzer" if libfuzzer else ""))
    includes = [f"-I{HERE}", f"-I{ROOT / 'runtime_c'}"] + ([f"-I{gen}", f"-Wa,-I{gen}"] if gen else [])
    command = [compiler, "-std=c99", "-O1", "-g", *WARNINGS, *flags, *includes, f'-DFUZZ_TARGET_NAME="{target}"',
               "-D_GNU_SOURCE", *defines, *map(str, [HERE / f"fuzz_{target}.c", *driver, *sources(target, gen)]),
               "-lm", "-o", str(program)]  # fmt: skip
    if subprocess.run(command).returncode != 0:
        raise SystemExit(f"run_c_fuzz: building {program.name} failed (the compiler said why above)")
    return program


def run(program: Path, args: list[str], work: Path) -> int:
    env = {**os.environ, **SANITIZER_ENV}
    return subprocess.run([str(program), *args], cwd=work, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help=f"targets ({', '.join(TARGETS)}; default all)")
    parser.add_argument("--iterations", type=int, default=10000, help="generated inputs per target")
    parser.add_argument("--seed", type=int, default=1, help="the mutator's seed (a run repeats exactly)")
    parser.add_argument("--max-len", type=int, default=4096, help="longest generated input")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "fuzz-c", help="programs, crash files")
    parser.add_argument("--model", default="260k", help="model whose vocabulary the tokenizer target links")
    parser.add_argument("--libfuzzer", action="store_true", help="build with clang -fsanitize=fuzzer instead")
    parser.add_argument("--define", action="append", default=[], help="extra -D for the targets (tests)")
    args, rest = parser.parse_known_args(argv)
    names = [name for name in args.targets if not Path(name).exists()] or list(TARGETS)
    files = [name for name in args.targets if Path(name).exists()] + [r for r in rest if Path(r).exists()]
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target {', '.join(unknown)}; targets: {', '.join(TARGETS)}")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    gen = generate_model(args.model, work) if set(names) & set(MODEL_TARGETS) else None
    status = 0
    for name in names:
        program = build(name, work, gen if name in MODEL_TARGETS else None, libfuzzer=args.libfuzzer,
                        defines=tuple(f"-D{d}" for d in args.define))  # fmt: skip
        if args.libfuzzer:
            extra = [r for r in rest if r != "--"]
            code = run(program, [f"-runs={args.iterations}", f"-seed={args.seed}", f"-max_len={args.max_len}",
                                 *extra, *map(str, files)], work)  # fmt: skip
        else:
            code = run(program, ["--iterations", str(args.iterations), "--seed", str(args.seed), "--max-len",
                                 str(args.max_len), "--crash-dir", str(work), *map(str, files)], work)  # fmt: skip
        if code != 0:
            print(f"run_c_fuzz: {name}: a finding (exit status {code}); the input is in {work}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
