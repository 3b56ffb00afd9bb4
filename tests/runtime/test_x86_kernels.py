"""The x86-64 kernel set (runtime_c/kernels/x86/, the host target's) against the reference kernels.

tests/c/test_kernels_dump.c runs every kernel over seeded random inputs and edge shapes (matmul cols 1..768 with
rows that are not multiples of the 8-row block, every group size from 2 to 256 with short tail groups, attention
head sizes that are not multiples of 8, ...) and prints every result's bits; each input ends at a guard page, so
reading past a tensor crashes. It is compiled with the host's contract flags against the reference kernels, against
the x86 set as the build selects it (compileflags.runtime_sources), and against the x86 set with its SIMD code
compiled out (the fallback a CPU without AVX2 runs): all three outputs must be identical, bit for bit. The x86 set
reads its own weight layout (x86_panels), so for it the harness lays the random matrices out as a build does
(tests/c/x86_layout.h, -DHARNESS_LAYOUT_X86_PANELS), also ending at a guard page.

Then the whole model: stories260K host builds with kernels=opt and kernels=ref generate the same tokens and text for
every golden case, in fp32, q8 and q4, plus a group size of 16 (tail groups) and an int8 KV cache.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from llmcu.builder.compileflags import runtime_sources
from llmcu.core.paths import RUNTIME_DIR
from llmcu.device.protocol import parse
from support.build import ROOT, case_args, scons

HARNESS = ROOT / "tests" / "c" / "test_kernels_dump.c"
KERNEL_SET = "x86"
LAYOUT = ("-DHARNESS_LAYOUT_X86_PANELS",)  # what a build with the x86 set links: layouts.X86_PANELS
CFLAGS = [
    "-std=c99", "-O2", "-ffp-contract=off", "-fno-fast-math",
    "-Wall", "-Wextra", "-Wshadow", "-Wdouble-promotion", "-Werror",
]  # fmt: skip

pytestmark = [
    pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="not an x86-64 host"),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not found"),
]


def cpu_has_avx2() -> bool:
    try:
        return any(
            line.startswith("flags") and " avx2" in line for line in Path("/proc/cpuinfo").read_text().splitlines()
        )
    except OSError:
        return False


def kernel_sources(kernel_set: str) -> list[Path]:
    """The kernel files a build with ``kernel_set`` compiles, by the build's own replacement rule."""
    kernels_dir = RUNTIME_DIR / "kernels"
    return [path for path in runtime_sources(kernel_set) if kernels_dir in path.parents]


def dump(program: Path, kernel_set: str, extra_flags: tuple[str, ...] = ()) -> list[str]:
    command = ["gcc", *CFLAGS, *extra_flags, f"-I{RUNTIME_DIR}", str(HARNESS), *map(str, kernel_sources(kernel_set)),
               "-o", str(program), "-lm"]  # fmt: skip
    built = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, f"{' '.join(command)}\n{built.stderr}"
    result = subprocess.run([str(program)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{program.name} failed ({result.returncode}): {result.stderr}"
    return result.stdout.splitlines()


def first_difference(expected: list[str], actual: list[str]) -> str:
    """The first case whose output differs, and where."""
    for want, got in zip(expected, actual, strict=False):
        if want != got:
            name, _, want_values = want.partition(":")
            _, _, got_values = got.partition(":")
            for index, (a, b) in enumerate(zip(want_values.split(), got_values.split(), strict=False)):
                if a != b:
                    return f"{name}: value {index} is {b}, the reference gives {a}"
            return f"{name}: {len(got_values.split())} values, the reference gives {len(want_values.split())}"
    return f"{len(actual)} cases, the reference gives {len(expected)}"


@pytest.fixture(scope="module")
def reference_dump(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return dump(tmp_path_factory.mktemp("ref") / "dump_ref", "")


def test_the_set_replaces_the_hot_kernels() -> None:
    names = {path.parent.name + "/" + path.name for path in kernel_sources(KERNEL_SET)}
    assert {"x86/matmul.c", "x86/attention.c", "x86/ops.c", "x86/quant.c", "x86/q4z.c"} <= names


def test_x86_kernels_equal_the_reference_bit_for_bit(reference_dump: list[str], tmp_path: Path) -> None:
    if not cpu_has_avx2():
        pytest.skip("this CPU has no AVX2: the x86 set would run its reference fallback only")
    x86 = dump(tmp_path / "dump_x86", KERNEL_SET, LAYOUT)
    assert len(reference_dump) > 2000
    assert x86 == reference_dump, first_difference(reference_dump, x86)


def test_fallback_without_simd_equals_the_reference(reference_dump: list[str], tmp_path: Path) -> None:
    fallback = dump(tmp_path / "dump_fallback", KERNEL_SET, ("-DLLMCU_X86_NO_SIMD", *LAYOUT))
    assert fallback == reference_dump, first_difference(reference_dump, fallback)


def test_no_fused_multiply_add_in_the_x86_objects(tmp_path: Path) -> None:
    """The contract's products and sums round separately: no vfmadd* may appear, whatever gcc decides."""
    if shutil.which("objdump") is None:
        pytest.skip("objdump not found")
    for source in kernel_sources(KERNEL_SET):
        obj = tmp_path / (source.stem + ".o")
        subprocess.run(["gcc", *CFLAGS, f"-I{RUNTIME_DIR}", "-c", str(source), "-o", str(obj)], check=True)
        listing = subprocess.run(["objdump", "-d", str(obj)], capture_output=True, text=True, check=True).stdout
        assert "vfmadd" not in listing and "vfmsub" not in listing and "vfnmadd" not in listing, source.name


# ---- the whole model ----

VARIANTS = [
    ("fp32", ()),
    ("q8", ()),
    ("q4", ()),
    ("q4", ("group_size=16",)),  # 172 = 10 * 16 + 12: a short tail group in every w2 row
    ("q8", ("kv_type=q8",)),  # the int8 cache: quantize_activations with a group per head
]


def build(build_root: Path, models: Path, quant: str, extra: tuple[str, ...], kernels: str) -> Path:
    args = ["target=host", "model=260k", f"quant={quant}", f"kernels={kernels}", f"build_dir={build_root}", *extra]
    scons(args, models)
    (program,) = (build_root / "host").glob("*/llmcu")  # one variant per build root
    return program


def run_case(program: Path, case: dict) -> bytes:
    args = [str(program), *case_args(case)]
    return subprocess.run(args, capture_output=True, check=True, timeout=120).stdout


# The kernel harness above already proves every kernel bit-identical; of the whole-model runs only fp32 (whose
# golden output is run.c's) stays in the default run, the others are slow.
@pytest.mark.parametrize(
    ("quant", "extra"),
    [pytest.param(q, e, marks=() if q == "fp32" else pytest.mark.slow) for q, e in VARIANTS],
    ids=[" ".join((q, *e)) for q, e in VARIANTS],
)
def test_opt_and_ref_builds_generate_the_same_tokens(
    quant: str, extra: tuple[str, ...], tmp_path: Path, stories260k: Path, golden_cases: list[dict]
) -> None:
    programs = {
        kernels: build(tmp_path / kernels, stories260k.parent, quant, extra, kernels) for kernels in ("opt", "ref")
    }
    for case in golden_cases:
        opt = parse(run_case(programs["opt"], case))
        ref = parse(run_case(programs["ref"], case))
        assert opt.ok and ref.ok
        assert opt.token_sequence() == ref.token_sequence(), (quant, extra, case["prompt"])
        assert opt.text == ref.text
        if quant == "fp32" and not extra:
            assert opt.text.decode() == case["stdout"]  # llama2.c's run.c, byte for byte
