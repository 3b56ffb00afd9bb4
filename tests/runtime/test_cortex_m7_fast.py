"""numerics=fast on the Cortex-M7 twin: not bit-identical to the reference, so shown to stay within the quality
bounds of tests/model/test_quality.py, by a mirror that is itself checked bit for bit.

The M7 kernels' fast route changes two things: softmax, the attention weights and SwiGLU take m7_fast_expf
(runtime_c/kernels/cortex_m7/exp_m7.h, <= 1.84 ulp, its bound tested in tests/runtime/test_cortex_m7_kernels.py) instead
of the C library's expf, and attention fuses its multiply-adds (runtime_c/kernels/cortex_m7/attention.c).
llmcu.model.fastmath mirrors both in numpy, so the Python reference with them computes what the twin computes. The
tests check the chain:

1. the mirror gives m7_fast_expf's bits (the C function compiled on the host, over a sweep of inputs);
2. the twin built with numerics=fast generates the mirrored reference's tokens (256 greedy tokens);
3. the mirrored reference, teacher-forced on fp32's greedy sequence, keeps the quality bounds (top-1, mean KL).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from llmcu.builder.settings import RunParams
from llmcu.device.qemu import run_firmware
from llmcu.model import fastmath
from llmcu.model.checkpoint import read_checkpoint
from llmcu.model.oracle import generate
from llmcu.model.quality import _log_softmax, fp32_baseline
from llmcu.model.reference import Reference
from llmcu.model.tokenizer import read_tokenizer
from model.test_quality import BOUNDS
from support.build import ROOT, scons

PROMPT = "Once upon a time"
STEPS = 256
needs_qemu = pytest.mark.skipif(
    shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
    reason="qemu-system-arm or arm-none-eabi-gcc missing (tools/setup.sh installs them)",
)


def test_the_header_holds_the_mirrors_constants() -> None:
    text = fastmath.EXP_HEADER.read_text()
    for literal in fastmath.LITERALS:
        assert literal in text, literal
    assert len(fastmath.exp_table()) == 32


def test_fmaf_rounds_once() -> None:
    """Cases where a float64 sum followed by a float32 rounding would round twice."""
    one, eps = np.float32(1.0), np.float32(2.0**-24)
    # 1 + 2^-24 + 2^-60: the exact sum is past the midpoint, so it rounds up; a double-rounded sum ties to 1.
    got = fastmath.fmaf(np.array([eps]), np.array([one + np.float32(2.0**-23)]), np.array([one]))
    assert got[0] == np.float32(1.0) + np.float32(2.0**-23)
    assert fastmath.fmaf(np.array([eps]), np.array([one]), np.array([one]))[0] == one  # a true tie: to even


def test_mirror_gives_the_c_functions_bits(tmp_path: Path) -> None:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no host C compiler")
    program = tmp_path / "fast_exp_bits"
    subprocess.run([cc, "-std=c99", "-O2", "-ffp-contract=off", f"-I{ROOT / 'runtime_c'}",
                    str(ROOT / "tests" / "c" / "fast_exp_bits.c"), "-lm", "-o", str(program)], check=True)  # fmt: skip
    rng = np.random.default_rng(6)
    x = np.concatenate([
        rng.uniform(-90.0, 90.0, 150_000), rng.uniform(-1.0, 1.0, 50_000), -rng.exponential(3.0, 50_000),
        [0.0, -0.0, 1e-30, -1e-30, -87.0, 88.0, -87.5, 88.5, -200.0, 200.0, np.inf, -np.inf, np.nan],
    ]).astype(np.float32)  # fmt: skip
    stdin = "\n".join(f"{bits:08x}" for bits in x.view(np.uint32))
    result = subprocess.run([str(program)], input=stdin, capture_output=True, text=True, check=True, timeout=60)
    want = np.array([int(word, 16) for word in result.stdout.split()], dtype=np.uint32)
    got = fastmath.fast_expf(x).view(np.uint32)
    differ = np.flatnonzero(got != want)
    assert differ.size == 0, [(float(x[i]), f"{got[i]:08x}", f"{want[i]:08x}") for i in differ[:5]]


def _fast_reference(ckpt, quant: str, kv_type: str = "f32") -> Reference:
    return Reference.from_checkpoint(ckpt, quant, 32, math=fastmath.M7FastMath(), kv_type=kv_type)


@needs_qemu
@pytest.mark.parametrize(
    ("quant", "kv_type"),
    [
        ("q8", "f32"),
        pytest.param("q8", "q8", marks=pytest.mark.slow),
        pytest.param("q8", "f16", marks=pytest.mark.slow),
        pytest.param("q4", "f32", marks=pytest.mark.slow),
    ],
)
def test_fast_twin_equals_the_mirror_and_keeps_the_quality_bounds(
    quant: str, kv_type: str, tmp_path: Path, stories260k: Path, tok512: Path
) -> None:
    """kv_type f32 and f16 take the asm attention for head_size 8, q8 the C one (attend_c_fast)."""
    options = ["target=qemu-m7", "model=260k", f"quant={quant}", f"kv_type={kv_type}", "numerics=fast"]
    scons([*options, f"build_dir={tmp_path}"], stories260k.parent)
    elf = next((tmp_path / "qemu-m7").glob(f"260k-{quant}*fast*/firmware.elf"))
    run = run_firmware(elf, RunParams(PROMPT, STEPS, 0.0, 0.9, 1))
    assert run.ok

    ckpt, tok = read_checkpoint(stories260k), read_tokenizer(tok512, 512)
    mirror = generate(_fast_reference(ckpt, quant, kv_type), tok, PROMPT, STEPS, 0.0, 0.9, 1)
    assert run.token_sequence() == mirror.tokens[: len(run.token_sequence())]
    assert len(run.token_sequence()) == len(mirror.tokens)
    if kv_type != "f32":
        return  # the quality bounds below are the weights' quantization's, measured with the float cache

    # Teacher forcing on fp32's greedy sequence (llmcu.model.quality.compare's measure, with the fast exp).
    baseline = fp32_baseline(ckpt, tok, PROMPT, STEPS)
    assert baseline.logits is not None
    model = _fast_reference(ckpt, quant)
    kls, top1 = [], []
    for pos, (token, fp32_logits) in enumerate(zip(baseline.tokens, baseline.logits, strict=False)):
        q_log = _log_softmax(model.forward(token, pos))
        if pos + 1 < baseline.prompt_tokens:
            continue
        p_log = _log_softmax(fp32_logits)
        kls.append(float(np.sum(np.exp(p_log) * (p_log - q_log))))
        top1.append(int(np.argmax(p_log)) == int(np.argmax(q_log)))
    min_top1, max_kl = BOUNDS[quant]
    print(f"numerics=fast {quant}: teacher-forced top-1 {np.mean(top1):.3f}, mean KL {np.mean(kls):.5f}")
    assert np.mean(top1) >= min_top1 and np.mean(kls) <= max_kl
