"""The AArch64 NEON kernel set (runtime_c/kernels/neon/) against the reference kernels (runtime_c/kernels/ref/).

tests/c/test_kernels.c drives every kernel over many shapes and prints each result's bits. It is cross-compiled
with the target's flags twice: against the reference kernels, and against the NEON set chosen by the build's own
file-replacement rule (llmcu.builder.compileflags.runtime_sources). Both run under ``qemu-aarch64 -cpu max``; outputs
must be equal bit for bit: the integer matmuls, the default fp32 matmul, attention, quantization, all of it. The
optional fast fp32 matmul (LLMCU_FAST_F32) must stay within the tolerance stated in runtime_c/kernels/neon/matmul.c.

Then the whole model: stories260K built for the RZ/V2L target with kernels=opt and kernels=ref must generate the same
tokens (and the fp32 build llama2.c's exact text). Last, instructions per matmul call, counted by QEMU's llmcu_insn
plugin; ``python tests/runtime/test_neon_kernels.py`` prints the table for the 260K and 15M shapes.

Everything skips cleanly without aarch64-linux-gnu-gcc or qemu-aarch64 (tools/setup.sh installs both).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "site_scons"))
sys.path.insert(0, str(ROOT / "tests"))

from llmcu.builder.compileflags import runtime_sources  # noqa: E402
from llmcu.core.paths import RUNTIME_DIR  # noqa: E402
from llmcu.device.protocol import parse  # noqa: E402
from support.build import scons  # noqa: E402

CC = os.environ.get("LLMCU_AARCH64_CC", "aarch64-linux-gnu-gcc")
QEMU = "qemu-aarch64"
HARNESS = ROOT / "tests" / "c" / "test_kernels.c"
KERNEL_SET = "neon"

# The RZ/V2L target's CPU flag and the numeric contract's flags (llmcu/platform/targets.py), warnings as errors.
CFLAGS = [
    "-std=c99", "-static", "-mcpu=cortex-a55", "-O2", "-ffp-contract=off", "-fno-fast-math",
    "-Wall", "-Wextra", "-Wshadow", "-Wdouble-promotion", "-Werror",
]  # fmt: skip

# The fast fp32 matmul's tolerance (runtime_c/kernels/neon/matmul.c): |fast - ref| <= 2 gamma(cols) sum |W x|, plus
# an allowance for gradual underflow that normal-range data never uses.
UNIT_ROUNDOFF = 2.0**-24
SMALLEST_SUBNORMAL = 2.0**-149

missing = [tool for tool in (CC, QEMU) if shutil.which(tool) is None]
pytestmark = pytest.mark.skipif(bool(missing), reason=f"{' and '.join(missing)} not found (tools/setup.sh)")


def gamma(n: int) -> float:
    return n * UNIT_ROUNDOFF / (1 - n * UNIT_ROUNDOFF)


def fast_f32_tolerance(cols: int, abs_sum: float) -> float:
    return 2 * gamma(cols) * abs_sum + 2 * cols * SMALLEST_SUBNORMAL


def kernel_sources(kernel_set: str) -> list[Path]:
    """The kernel files a build with ``kernel_set`` compiles, by the build's own replacement rule."""
    kernels_dir = RUNTIME_DIR / "kernels"
    return [path for path in runtime_sources(kernel_set) if kernels_dir in path.parents]


def build_harness(program: Path, kernel_set: str, extra_flags: tuple[str, ...] = ()) -> Path:
    """tests/c/test_kernels.c linked with the kernel files of ``kernel_set`` ("" = the reference ones)."""
    command = [CC, *CFLAGS, *extra_flags, f"-I{RUNTIME_DIR}", str(HARNESS),
               *map(str, kernel_sources(kernel_set)), "-o", str(program), "-lm"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr}"
    return program


def run_check(program: Path) -> list[str]:
    result = subprocess.run([QEMU, "-cpu", "max", str(program), "check"], capture_output=True, text=True,
                            timeout=900)  # fmt: skip
    assert result.returncode == 0, f"{program.name} check failed ({result.returncode}):\n{result.stderr[-2000:]}"
    lines = result.stdout.splitlines()
    assert lines and lines[-1] == "done", f"{program.name}: output ends early"
    return lines


# The variants of the harness: kernel set and extra compiler flags.
# NEON builds link their quantized matrices in the set's panel layout (llmcu.builder.layouts): the harness makes it too.
LAYOUT = ("-DHARNESS_LAYOUT_NEON_PANELS",)
VARIANTS = {
    "ref": ("", ()),
    "neon": (KERNEL_SET, LAYOUT),
    "neon_fast": (KERNEL_SET, (*LAYOUT, "-DLLMCU_FAST_F32")),
    # plain ARMv8.0-A (no dot-product instructions, e.g. a Cortex-A53): the SMULL/SADALP fallback
    "neon_armv8": (KERNEL_SET, (*LAYOUT, "-mcpu=generic", "-march=armv8-a")),
}


def build_variants(directory: Path, names: list[str]) -> dict[str, Path]:
    with ThreadPoolExecutor() as pool:  # independent compiler runs
        futures = {name: pool.submit(build_harness, directory / name, *VARIANTS[name]) for name in names}
        return {name: future.result() for name, future in futures.items()}


@pytest.fixture(scope="module")
def harnesses(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_variants(tmp_path_factory.mktemp("neon_kernels"), list(VARIANTS))


@pytest.fixture(scope="module")
def outputs(harnesses: dict[str, Path]) -> dict[str, list[str]]:
    with ThreadPoolExecutor() as pool:  # four emulated runs side by side
        futures = {name: pool.submit(run_check, program) for name, program in harnesses.items()}
        return {name: future.result() for name, future in futures.items()}


def first_differences(expected: list[str], actual: list[str], limit: int = 8) -> str:
    diffs = [f"  ref:  {a}\n  got:  {b}" for a, b in zip(expected, actual, strict=False) if a != b][:limit]
    if len(expected) != len(actual):
        diffs.append(f"  {len(expected)} lines vs {len(actual)}")
    return "\n".join(diffs)


def f32(bits: str) -> float:
    return struct.unpack("<f", struct.pack("<I", int(bits, 16)))[0]


def test_neon_set_replaces_the_reference_files_by_name() -> None:
    names = {path.name: path.parent.name for path in kernel_sources(KERNEL_SET)}
    assert names == {
        name: "neon" for name in ("attention.c", "attention_q16.c", "matmul.c", "ops.c", "quant.c", "q4z.c")
    }


def test_harness_covers_every_kernel(outputs: dict[str, list[str]]) -> None:
    kernels = {line.split()[0] for line in outputs["ref"]}
    expected = {
        "matmul_f32", "matmul_q8", "matmul_q4", "matmul_q4z", "quantize_xq", "quantize_xs", "embed_f32", "embed_q8",
        "embed_q4", "embed_q4z",
        "attention_f32", "attention_f16", "attention_q8", "attention_f32_att", "attention_f16_att",
        "attention_q8_att", "f16_to_f32", "f32_to_f16", "kv_store_f16", "attention_q16", "kv_store_q16", "argmax",
    }  # fmt: skip
    assert expected <= kernels
    for name, lines in outputs.items():
        assert not [line for line in lines if line.startswith("PLACEMENT-MISMATCH")], name


@pytest.mark.parametrize("variant", ["neon", "neon_armv8"])
def test_neon_equals_reference_bit_for_bit(variant: str, outputs: dict[str, list[str]]) -> None:
    """q8/q4 matmuls, the default fp32 matmul, attention (f32/f16/q8 caches), quantization, conversions."""
    expected, actual = outputs["ref"], outputs[variant]
    assert actual == expected, f"{variant} differs from the reference:\n{first_differences(expected, actual)}"


def test_fast_f32_is_within_the_stated_tolerance(outputs: dict[str, list[str]]) -> None:
    expected, actual = outputs["ref"], outputs["neon_fast"]
    assert len(expected) == len(actual)
    in_nonfinite = False
    checked = differing = 0
    worst = 0.0
    for ref_line, fast_line in zip(expected, actual, strict=True):
        if ref_line.startswith("fp32-nonfinite"):
            in_nonfinite = ref_line.endswith("begin")
            continue
        if not ref_line.startswith("matmul_f32 "):
            assert fast_line == ref_line  # every other kernel is the bit-exact one
            continue
        kernel, case, row, ref_bits, abs_sum, cols = ref_line.split()
        if in_nonfinite and not math.isfinite(f32(ref_bits)):
            assert fast_line == ref_line  # the same infinity, or the default NaN
            continue
        assert fast_line.split()[:3] == [kernel, case, row] and fast_line.split()[4:] == [abs_sum, cols]
        ref_value, fast_value = f32(ref_bits), f32(fast_line.split()[3])
        bound = fast_f32_tolerance(int(cols), float.fromhex(abs_sum))
        error = abs(fast_value - ref_value)
        assert math.isfinite(fast_value) and error <= bound, (ref_line, fast_line, error, bound)
        checked += 1
        differing += fast_value != ref_value
        if float.fromhex(abs_sum) > 0:
            worst = max(worst, error / float.fromhex(abs_sum) / (2 * gamma(int(cols))))
    assert checked > 30_000
    assert differing > checked // 10, "LLMCU_FAST_F32 did not select the FMA kernel"
    print(f"fast fp32: {differing}/{checked} rows differ; worst error {worst:.3f} of the stated bound")


# ---- the whole model on the RZ/V2L target ----

RZV2L = ROOT / "targets" / "rzv2l" / "target.toml"


def rzv2l_program(build_dir: Path, models_dir: Path, quant: str, kernels: str, kv_type: str) -> Path:
    scons(["target=rzv2l", "model=260k", f"quant={quant}", f"kernels={kernels}", f"kv_type={kv_type}",
           f"build_dir={build_dir}"], models_dir)  # fmt: skip
    programs = [path for path in build_dir.rglob("llmcu") if path.is_file()]
    assert len(programs) == 1, programs
    return programs[0]


def run_under_qemu(program: Path, case: dict, *, quiet: bool = False) -> bytes:
    args = ["-p", case["prompt"], "-n", str(case["steps"]), "-t", repr(case["temperature"]),
            "-P", repr(case["topp"]), "-s", str(case["seed"])]  # fmt: skip
    if quiet:
        args.append("-q")
    result = subprocess.run([QEMU, "-cpu", "max", str(program), *args], capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result.stdout


@pytest.mark.skipif(not RZV2L.is_file(), reason="the RZ/V2L target does not exist yet")
@pytest.mark.parametrize(
    ("quant", "kv_type"),
    [("fp32", "f32"), *(pytest.param(q, kv, marks=pytest.mark.slow)
                        for q, kv in (("q8", "f32"), ("q4", "f32"), ("q8", "f16"), ("q8", "q8")))],
)  # fmt: skip
def test_rzv2l_opt_and_ref_kernels_generate_the_same_tokens(
    quant: str, kv_type: str, tmp_path: Path, stories260k: Path, golden_cases: list[dict]
) -> None:
    with ThreadPoolExecutor(2) as pool:  # scons builds one file at a time: two builds use both cores
        built = pool.map(lambda kernels: rzv2l_program(tmp_path / kernels, stories260k.parent, quant, kernels, kv_type),
                         ("opt", "ref"))  # fmt: skip
        programs = dict(zip(("opt", "ref"), built, strict=True))
    for case in golden_cases:
        runs = {kernels: parse(run_under_qemu(program, case)) for kernels, program in programs.items()}
        assert runs["opt"].ok and runs["ref"].ok
        assert runs["opt"].token_sequence() == runs["ref"].token_sequence(), (quant, kv_type, case["prompt"])
        assert runs["opt"].text == runs["ref"].text
        if quant == "fp32" and kv_type == "f32":  # and both are llama2.c's run.c, byte for byte
            assert run_under_qemu(programs["opt"], case, quiet=True).decode() == case["stdout"], case["prompt"]


# ---- instructions per matmul call ----

SHAPES_260K = [(64, 64), (32, 64), (172, 64), (64, 172), (512, 64)]  # wq/wo, wk/wv, w1/w3, w2, classifier
SHAPES_15M = [(288, 288), (768, 288), (288, 768), (32000, 288)]


def count_instructions(program: Path, plugin: Path, kind: str, rows: int, cols: int, group_size: int = 32) -> int:
    """Guest instructions of one kernel call (with its call and loop, a few instructions), from llmcu_insn.
    kind: f32|q8|q4 (a matmul of rows x cols) or att_f32|att_f16|att_q8 (rows positions of a head of cols
    values, group_size kv heads)."""
    from llmcu.device.qemu_user import QemuUser

    command = QemuUser("qemu-aarch64", "max").command(
        program, ["bench", kind, str(rows), str(cols), str(group_size), "1"], plugin=plugin, plugin_args=["inline=on"]
    )
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    line = next(line for line in result.stdout.splitlines() if line.startswith("instructions_per_call "))
    return int(line.split()[1])


COUNTED = ("ref", "neon", "neon_fast")


@pytest.fixture(scope="module")
def counting(tmp_path_factory: pytest.TempPathFactory, harnesses: dict[str, Path]) -> tuple[dict[str, Path], Path]:
    """The ref and neon harnesses, and the instruction-counting plugin (built with the host's gcc)."""
    try:
        from llmcu.device.qemu_user import plugin_library

        plugin = plugin_library(tmp_path_factory.mktemp("plugin"))
    except Exception as error:  # the plugin is the RZ/V2L work's; without it there is nothing to count with
        pytest.skip(f"no instruction-counting QEMU plugin: {error}")
    return {name: harnesses[name] for name in COUNTED}, plugin


def instruction_table(programs: dict[str, Path], plugin: Path, shapes: list[tuple[int, int]]) -> list[dict]:
    rows = []
    for kind in ("f32", "q8", "q4"):
        for rows_, cols in shapes:
            entry = {"kind": kind, "rows": rows_, "cols": cols}
            for name, program in programs.items():
                if name == "neon_fast" and kind != "f32":
                    continue
                entry[name] = count_instructions(program, plugin, kind, rows_, cols)
            rows.append(entry)
    return rows


def check_speedups(table: list[dict]) -> None:
    for entry in table:
        macs = entry["rows"] * entry["cols"]
        # NEON: f32 about 1.3-1.6 instructions per multiply-add (against ~7), q8/q4 under 0.6 (against 7-8).
        limit = 2.0 if entry["kind"] == "f32" else 0.8
        assert entry["neon"] <= limit * macs, entry
        assert entry["neon"] * (3 if entry["kind"] == "f32" else 6) < entry["ref"], entry


def test_neon_matmuls_take_far_fewer_instructions_260k(counting: tuple[dict[str, Path], Path]) -> None:
    table = instruction_table(*counting, SHAPES_260K)
    print(json.dumps(table))
    check_speedups(table)


@pytest.mark.slow
def test_neon_matmuls_take_far_fewer_instructions_15m(counting: tuple[dict[str, Path], Path]) -> None:
    table = instruction_table(*counting, SHAPES_15M)
    print(json.dumps(table))
    check_speedups(table)


def main() -> None:
    """Prints instructions per matmul call, reference vs NEON, for the 260K and 15M shapes."""
    import tempfile

    from llmcu.device.qemu_user import plugin_library

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        plugin = plugin_library(directory)
        programs = build_variants(directory, list(COUNTED))
        print("Instructions per call (qemu-aarch64 -cpu max, llmcu_insn plugin)\n")
        print("| kernel | shape (rows x cols) | ref | neon | ref/neon | neon per MAC | neon fast |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for model, shapes in (("260K", SHAPES_260K), ("15M", SHAPES_15M)):
            for entry in instruction_table(programs, plugin, shapes):
                macs = entry["rows"] * entry["cols"]
                fast = f"{entry['neon_fast']:,}" if "neon_fast" in entry else ""
                print(
                    f"| matmul_{entry['kind']} | {model} {entry['rows']}x{entry['cols']} | {entry['ref']:,} | "
                    f"{entry['neon']:,} | {entry['ref'] / entry['neon']:.1f} | {entry['neon'] / macs:.2f} | {fast} |"
                )
        print("\n| kernel | positions x head size (kv heads) | ref | neon | ref/neon |")
        print("|---|---|---:|---:|---:|")
        for model, (head_size, kv_heads), positions in (("260K", (8, 4), (32, 256, 512)), ("15M", (48, 6), (64, 256))):
            for kind in ("att_f32", "att_f16", "att_q8"):
                for n_pos in positions:
                    counts = [count_instructions(programs[name], plugin, kind, n_pos, head_size, kv_heads)
                              for name in ("ref", "neon")]  # fmt: skip
                    print(f"| attention_head ({kind[4:]} cache) | {model} {n_pos} x {head_size} ({kv_heads}) | "
                          f"{counts[0]:,} | {counts[1]:,} | {counts[0] / counts[1]:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
