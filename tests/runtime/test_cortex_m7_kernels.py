"""The Cortex-M7 kernel set (runtime_c/kernels/cortex_m7) against the reference kernels, bit for bit.

- Kernels: tests/c/kernel_harness.c is linked once with kernels/ref and once with kernels/cortex_m7 (the
  same files replaced by name, as the build does) and run on the QEMU twin; every case (random inputs, the
  shapes of stories260K and 15M, tail groups, odd rows, misaligned rows, group sizes the fast paths do not
  take, extreme sums, expf's special range, all binary16 values) must hash the same. The optimised image
  also checks its expf and exp pass against the library's expf over a sweep of all floats.
- LLMCU_FAST_EXP: the approximation's error bound, on the host.
- Whole model: twin builds with kernels=opt and kernels=ref generate the same tokens for the golden cases.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from llmcu.builder import codegen, layouts
from llmcu.builder.compileflags import runtime_sources
from llmcu.builder.settings import RunParams
from llmcu.core.config import ModelConfig
from llmcu.device.qemu import qemu_command, run_firmware
from llmcu.model import fitting
from llmcu.model.quantize import quantize_matrix
from llmcu.platform.targets import load_target
from support.build import ROOT, scons

KERNEL_SET = "cortex_m7"
HARNESS = ROOT / "tests" / "c" / "kernel_harness.c"
HARNESS_LD = ROOT / "tests" / "c" / "kernel_harness.ld"
FAST_EXP_HOST = ROOT / "tests" / "c" / "fast_exp_host.c"

needs_qemu = pytest.mark.skipif(
    shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
    reason="qemu-system-arm or arm-none-eabi-gcc missing (tools/setup.sh installs them)",
)


def build_harness(kernel_set: str, out: Path, defines: tuple[str, ...] = ()) -> Path:
    """The harness with one kernel set, the twin's compiler flags and its board layer (without the
    firmware's main)."""
    target = load_target("qemu-m7", ROOT / "targets")
    kernels = [path for path in runtime_sources(kernel_set) if "kernels" in path.parts]
    board = [path for path in target.board_sources if path.name != "firmware_main.c"]
    command = [target.cc, *target.all_cflags, *defines, f"-I{ROOT / 'runtime_c'}", f"-I{ROOT / 'targets' / 'cortex-m'}",
               str(HARNESS), *map(str, kernels), *map(str, board), "-T", str(HARNESS_LD), *target.ldflags,
               *(f"-l{lib}" for lib in target.libs), "-o", str(out)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return out


def run_harness(elf: Path) -> str:
    result = subprocess.run(qemu_command(elf), stdin=subprocess.DEVNULL, capture_output=True, timeout=300)
    text = result.stdout.decode("ascii", errors="replace")
    assert result.returncode == 0 and text.endswith("done\n"), (result.returncode, text[-500:], result.stderr)
    return text


def cases(text: str) -> dict[str, tuple[str, int]]:
    """case line without its cost -> (hash, cost)."""
    found = {}
    for line in text.splitlines():
        if line.startswith("case "):
            cost = re.search(r" cost=(\d+)", line)
            key = re.sub(r" cost=\d+", "", line)
            found[key.rsplit(" hash=", 1)[0]] = (key.rsplit(" hash=", 1)[1], int(cost.group(1)) if cost else 0)
    return found


@pytest.fixture(scope="module")
def harness_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("kernel-harness")
    ref = build_harness("", out / "ref.elf")
    opt = build_harness(KERNEL_SET, out / "opt.elf", ("-DHARNESS_EXP_SWEEP", "-DHARNESS_LAYOUT_M7_PANELS"))
    with ThreadPoolExecutor(2) as pool:
        ref_text, opt_text = pool.map(run_harness, [ref, opt])
    return {"ref": ref_text, "opt": opt_text}


@needs_qemu
def test_kernels_are_bit_identical_to_the_reference(harness_outputs: dict[str, str]) -> None:
    ref, opt = cases(harness_outputs["ref"]), cases(harness_outputs["opt"])
    assert len(ref) > 150 and ref.keys() == opt.keys()
    differ = [name for name in ref if ref[name][0] != opt[name][0]]
    assert not differ, "\n".join(differ)
    # The instruction counts, for the record (pytest -s): a kernel faster than the reference is the point.
    for name in ref:
        print(f"{name:70s} ref {ref[name][1]:>9,} opt {opt[name][1]:>9,}")
    hot = (
        "matmul_f32",
        "matmul_q8 rows=64 cols=64",
        "matmul_q4 rows=64 cols=172",
        "matmul_q4z rows=64 cols=172",
        "attention_f32 head_size=8",
    )
    for kernel in hot:
        ref_cost = sum(cost for name, (_, cost) in ref.items() if kernel in name)
        opt_cost = sum(cost for name, (_, cost) in opt.items() if kernel in name)
        assert opt_cost < ref_cost / 2, (kernel, ref_cost, opt_cost)


@needs_qemu
def test_rope_rotate_with_the_librarys_values_is_rope(harness_outputs: dict[str, str]) -> None:
    """rope_rotate fed the C library's cosf/sinf (what the build-time table holds) gives rope's bits, on both sets."""
    for image in ("ref", "opt"):
        rotations = [line for line in harness_outputs[image].splitlines() if line.startswith("case rope_rotate ")]
        assert len(rotations) == 7
        assert all(" same_as_rope=1 " in line for line in rotations), rotations


def fnv1a64(data: bytes) -> int:
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


@needs_qemu
def test_build_time_rope_table_equals_the_device_librarys_values(harness_outputs: dict[str, str]) -> None:
    """codegen.rope_table is computed on the build machine (the host libm, as the Python reference); the
    device computes cosf/sinf/powf with newlib. The table is only honest if both give the same floats, for
    every position of the stock models' head sizes and contexts."""
    lines = re.findall(r"rope_table head_size=(\d+) seq_len=(\d+) hash=(\w+)", harness_outputs["opt"])
    assert len(lines) == 4
    for head_size, seq_len, device_hash in lines:
        config = ModelConfig(int(head_size), 1, 1, 1, 1, 1, int(seq_len))  # dim = head_size, one head
        table = codegen.rope_table(config, int(seq_len))
        assert table.shape == (int(seq_len), int(head_size))
        assert f"{fnv1a64(table.astype('<f4').tobytes()):016x}" == device_hash, (head_size, seq_len)


@needs_qemu
def test_inlined_expf_gives_the_library_bits(harness_outputs: dict[str, str]) -> None:
    sweep = re.search(r"expf_sweep n=(\d+) mismatches=(\d+) first=(\w+)", harness_outputs["opt"])
    assert sweep and int(sweep.group(1)) > 4_000_000
    assert int(sweep.group(2)) == 0, f"first mismatch at float bits 0x{sweep.group(3)}"
    assert "exp_pass mismatches=0\n" in harness_outputs["opt"]


def test_fast_exp_error_bound_on_the_host(tmp_path: Path) -> None:
    """LLMCU_FAST_EXP's m7_fast_expf: within 1.84 ulp of exp (computed in double) on [-87, 88]."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no host C compiler")
    program = tmp_path / "fast_exp"
    subprocess.run([cc, "-std=c99", "-O2", "-ffp-contract=off", f"-I{ROOT / 'runtime_c'}", str(FAST_EXP_HOST),
                    "-lm", "-o", str(program)], check=True)  # fmt: skip
    result = subprocess.run([str(program), "97"], capture_output=True, text=True, check=True, timeout=120)
    fields = dict(field.split("=") for field in result.stdout.split())
    assert int(fields["n"]) > 20_000_000
    assert float(fields["max_ulp"]) <= 1.84
    assert float(fields["max_rel"]) < 2e-7
    assert fields["clamped_ok"] == "1"


# ---- whole model: the optimised set generates the reference set's tokens ----

# (weight quant, KV cache type): the three quants with the twin's f32 cache, and the binary16 cache a
# NUCLEO-H743ZI (no SDRAM) uses for stories260K.
BUILDS = (("fp32", "f32"), ("q8", "f32"), ("q4", "f32"), ("q8", "f16"))


def build_twin(quant: str, kv_type: str, kernels: str, build_root: Path, models_dir: Path) -> Path:
    args = [f"quant={quant}", f"kv_type={kv_type}", f"kernels={kernels}", f"build_dir={build_root}"]
    scons(["target=qemu-m7", "model=260k", *args], models_dir)
    variant = (
        f"260k-{quant}"
        + ("" if kv_type == "f32" and quant == "fp32" else f"-kv{kv_type}")  # f32 is auto's choice for fp32 only
        + ("-refkernels" if kernels == "ref" else "")
    )
    return build_root / "qemu-m7" / variant / "firmware.elf"


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory, stories260k: Path) -> dict[tuple[str, str, str], Path]:
    """(quant, kv_type, kernels) -> the twin's firmware, for kernels opt and ref."""
    build_root = tmp_path_factory.mktemp("m7-model")
    keys = [(*build, kernels) for build in BUILDS for kernels in ("opt", "ref")]
    with ThreadPoolExecutor(2) as pool:
        elves = pool.map(lambda key: build_twin(*key, build_root, stories260k.parent), keys)
        return dict(zip(keys, elves, strict=True))


@needs_qemu
@pytest.mark.parametrize(("quant", "kv_type"), BUILDS, ids=[f"{q}-kv{kv}" for q, kv in BUILDS])
def test_model_tokens_equal_the_reference_kernels(
    quant: str, kv_type: str, twins: dict[tuple[str, str, str], Path], golden_cases: list[dict]
) -> None:
    """The greedy golden case (256 tokens, the longest attention) and, with the f32 cache, a sampled one
    (softmax over the vocabulary), on both kernel sets."""
    chosen = [case for case in golden_cases if case["temperature"] == 0][:1]
    if kv_type == "f32":
        chosen += [case for case in golden_cases if case["temperature"] == 1.0][:1]
    params = [RunParams(c["prompt"], c["steps"], c["temperature"], c["topp"], c["seed"]) for c in chosen]
    jobs = [(kernels, p) for kernels in ("opt", "ref") for p in params]
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda job: run_firmware(twins[quant, kv_type, job[0]], job[1]), jobs))
    opt_runs, ref_runs = runs[: len(params)], runs[len(params) :]
    for case, got, want in zip(chosen, opt_runs, ref_runs, strict=True):
        assert got.ok and want.ok
        assert got.token_sequence() == want.token_sequence(), (quant, kv_type, case["prompt"])
        assert got.text == want.text
        if quant == "fp32":
            assert got.text.decode() == case["stdout"]
    greedy_opt, greedy_ref = float(opt_runs[0].summary["cost_per_token"]), float(ref_runs[0].summary["cost_per_token"])
    print(f"{quant} kv {kv_type}: {greedy_opt:,.0f} instructions/token with {KERNEL_SET}, {greedy_ref:,.0f} with ref")
    assert greedy_opt < greedy_ref / 2


def test_both_cortex_m7_targets_select_the_set() -> None:
    for name in ("qemu-m7", "stm32h743"):
        assert load_target(name, ROOT / "targets").kernel_set == KERNEL_SET
    files = {path.name: path for path in runtime_sources(KERNEL_SET)}
    for name in ("matmul.c", "attention.c", "ops.c", "quant.c"):
        assert files[name].parent.name == KERNEL_SET


M7_LAYOUT_SHAPES = [("q8", 6, 172, 32), ("q4", 5, 172, 32), ("q4", 4, 64, 16)]


@pytest.mark.parametrize(("qtype", "rows", "cols", "group"), M7_LAYOUT_SHAPES)
def test_m7_panels_put_each_weight_where_the_kernels_read_it(qtype: str, rows: int, cols: int, group: int) -> None:
    """llmcu.builder.layouts' m7_panels against runtime_c/kernels/cortex_m7/m7_layout.h's accessors, spelled again
    here."""
    matrix = quantize_matrix(np.random.default_rng(rows).standard_normal((rows, cols)), qtype, group)
    data, scales = layouts.storage(matrix, layouts.for_kernel_set(KERNEL_SET))
    panel_rows, ngroups = (4 if qtype == "q8" else 2), -(-cols // group)
    padded = -(-rows // panel_rows) * panel_rows
    assert len(data) == padded * (cols if qtype == "q8" else cols // 2) and len(scales) == padded * ngroups * 4
    flat, s = np.frombuffer(data, dtype=np.uint8), np.frombuffer(scales, dtype="<f4")
    for r in range(padded):
        for c in range(cols):
            if qtype == "q8":  # an odd column's byte is q - 1 after a negative even column
                at = (r // 4) * 4 * cols + (c // 4) * 16 + (r % 4) * 4 + c % 4
                q = int(flat[at].astype(np.int8)) + (c % 2 == 1 and flat[at - 1] >= 128)
            else:
                full = cols // 8 * 8
                at = (r // 2) * cols + (c % 8) // 2 + ((c // 8) * 8 + (r % 2) * 4 if c < full else full + (r % 2) * 2)
                q = (int(flat[at]) >> (4 * (c % 2)) & 0x0F) - 8
            assert q == (matrix.q[r, c] if r < rows else 0), (r, c)
        for g in range(ngroups):
            want = matrix.scales[r, g] if r < rows else 0.0
            assert s[((r // panel_rows) * ngroups + g) * panel_rows + r % panel_rows] == want
    assert layouts.storage(matrix, layouts.for_kernel_set("")) == matrix.storage()


def test_m7_q8_halfwords_are_even_plus_256_odd() -> None:
    q = np.array([[-127, -127, 127, 127, 0, -127, -1, 0], [5, -3, -5, 3, 127, -127, -127, 127]] * 2, dtype=np.int8)
    matrix = quantize_matrix(q.astype(np.float32), "q8", 8)
    assert (matrix.q == q).all()
    halves = np.frombuffer(layouts.storage(matrix, layouts.M7_PANELS)[0], dtype="<i2").reshape(-1, 2)  # per word
    words = q.reshape(4, 2, 4).transpose(1, 0, 2).reshape(-1, 4).astype(np.int32)  # block, row in panel, byte
    assert (halves[:, 0] == words[:, 0] + 256 * words[:, 1]).all()
    assert (halves[:, 1] == words[:, 2] + 256 * words[:, 3]).all()
    with pytest.raises(ValueError, match="-127, 127"):
        layouts.m7_panels_q8(np.full((4, 4), -128, dtype=np.int8))


@pytest.mark.parametrize(("rows", "cols", "group"), [(5, 172, 32), (4, 64, 16)])
def test_m7_panels_put_each_q4z_code_and_word_where_the_kernels_read_it(rows: int, cols: int, group: int) -> None:
    """q4z in m7_panels: the codes as q4's panels hold them (n for q + 8), the two rows' group words side by side."""
    matrix = quantize_matrix(np.random.default_rng(rows).standard_normal((rows, cols)) + 0.5, "q4z", group)
    assert matrix.zeros is not None and matrix.scales is not None
    data, words = layouts.storage(matrix, layouts.for_kernel_set(KERNEL_SET))
    ngroups, padded = -(-cols // group), rows + rows % 2
    assert len(data) == padded * cols // 2 and len(words) == padded * ngroups * 2
    flat, w = np.frombuffer(data, dtype=np.uint8), np.frombuffer(words, dtype="<u2")
    full = cols // 8 * 8
    for r in range(rows):
        for g in range(ngroups):
            word = int(w[((r // 2) * ngroups + g) * 2 + r % 2])
            scale, zero = fitting.q4z_decode(np.array([word]))
            assert scale[0] == matrix.scales[r, g] and zero[0] == matrix.zeros[r, g]
            for c in range(g * group, min(cols, (g + 1) * group)):
                at = (r // 2) * cols + (c % 8) // 2 + ((c // 8) * 8 + (r % 2) * 4 if c < full else full + (r % 2) * 2)
                assert (int(flat[at]) >> (4 * (c % 2)) & 0x0F) - int(zero[0]) == matrix.q[r, c], (r, c)
    assert layouts.storage(matrix, layouts.for_kernel_set("")) == matrix.storage()
