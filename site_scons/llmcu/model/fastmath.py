"""numerics=fast on the Cortex-M7, mirrored in numpy: the C math of the Python reference with the kernels' fast exp.

The Cortex-M7 kernels' fast route (runtime_c/kernels/cortex_m7/exp_m7.h, ``m7_fast_expf``) replaces the C
library's ``expf`` in softmax, the attention weights and SwiGLU, and changes nothing else: every other operation
keeps the numeric contract. So the reference transformer with this exp (:class:`M7FastMath`) computes what the
device computes, bit for bit; tests/runtime/test_cortex_m7_fast.py checks that (the twin's tokens equal the mirrored
reference's) and holds the mirrored reference to the quality bounds of tests/model/test_quality.py.

``m7_fast_expf`` uses fused multiply-adds; :func:`fmaf` gives their single rounding exactly (the product of two
float32 is exact in float64, the sum's rounding error comes from an error-free two-sum, and a float64 sum that
lands on a float32 rounding midpoint is settled by that error's sign).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .reference import F32, CMath, c_math, sequential_sum

EXP_HEADER = Path(__file__).resolve().parents[3] / "runtime_c" / "kernels" / "cortex_m7" / "exp_m7.h"

# m7_fast_expf's constants, as written in exp_m7.h (tests check that each literal is there).
SHIFT = "0x1.8p+23"  # 1.5 * 2^23: adding it rounds to an integer kept in the low mantissa bits
INV_STEP = "0x1.715476p+5"  # 32 / ln2
STEP_HI = "0x1.62e430p-6"  # ln2 / 32, high part
STEP_LO = "0x1.05c610p-34"  # ... and what it misses
CUBIC = "0x1.555556p-3"  # 1/6
LITERALS = (SHIFT, INV_STEP, STEP_HI, STEP_LO, CUBIC)


def _f32(literal: str) -> np.float32:
    return F32(float.fromhex(literal))


def exp_table(header: Path = EXP_HEADER) -> np.ndarray:
    """m7_fast_exp_tab (uint32[32]) read from the header, so that the kernels' table is the one source."""
    text = header.read_text()
    body = re.search(r"m7_fast_exp_tab\[32\]\s*=\s*\{(.*?)\};", text, re.S)
    if body is None:
        raise ValueError(f"{header}: no m7_fast_exp_tab")
    words = [int(word, 16) for word in re.findall(r"0x([0-9a-fA-F]+)u", body.group(1))]
    if len(words) != 32:
        raise ValueError(f"{header}: m7_fast_exp_tab has {len(words)} entries, not 32")
    return np.array(words, dtype=np.uint32)


def fmaf(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """C's fmaf on float32 arrays: a * b + c rounded once to float32 (to nearest, ties to even)."""
    a64, b64, c64 = (np.asarray(v, dtype=F32).astype(np.float64) for v in (a, b, c))
    p = a64 * b64  # exact: 24 + 24 significant bits
    s = p + c64
    bp = s - c64  # two-sum: err is exactly (p + c) - s
    err = (p - bp) + (c64 - (s - bp))
    with np.errstate(over="ignore"):
        r = s.astype(F32)
        toward = np.where(s > r.astype(np.float64), F32(np.inf), F32(-np.inf)).astype(F32)
        other = np.nextafter(r, toward)
    # s exactly halfway between r and its neighbour: the exact sum is on err's side of that midpoint.
    half = (other.astype(np.float64) - r.astype(np.float64)) / 2
    midpoint = (s - r.astype(np.float64) == half) & (half != 0)
    past = midpoint & (err != 0) & (np.sign(err) == np.sign(half))
    return np.where(past, other, r).astype(F32)


def fast_expf(x: np.ndarray, table: np.ndarray | None = None) -> np.ndarray:
    """m7_fast_expf, operation by operation in float32 (its comment in exp_m7.h says why each step is there)."""
    tab = exp_table() if table is None else table
    x = np.asarray(x, dtype=F32)
    x = np.fmin(np.fmax(x, F32(-87.0)), F32(88.0))  # fmaxf/fminf: a NaN gives the bound, as on the device
    shift = _f32(SHIFT)
    z = fmaf(x, np.full_like(x, _f32(INV_STEP)), np.full_like(x, shift))
    ki = z.view(np.uint32)
    kf = (z - shift).astype(F32)
    r = fmaf(kf, np.full_like(x, -_f32(STEP_HI)), x)
    r = fmaf(kf, np.full_like(x, _f32(STEP_LO)), r)
    one = np.ones_like(x)
    p = fmaf(fmaf(fmaf(r, np.full_like(x, _f32(CUBIC)), np.full_like(x, F32(0.5))), r, one), r, one)
    scale_bits = (tab[ki & np.uint32(31)] + (ki << np.uint32(18))).astype(np.uint32)
    return (scale_bits.view(F32) * p).astype(F32)


class M7FastMath(CMath):
    """The reference's C math with ``expf`` replaced by the Cortex-M7 kernels' fast exp (numerics=fast)."""

    name = "m7-fast"

    def __init__(self, base: CMath | None = None) -> None:
        self.base = base if base is not None else c_math("auto")
        self.table = exp_table()

    def expf(self, x: np.ndarray) -> np.ndarray:
        return fast_expf(x, self.table)

    def cosf(self, x: np.ndarray) -> np.ndarray:
        return self.base.cosf(x)

    def sinf(self, x: np.ndarray) -> np.ndarray:
        return self.base.sinf(x)

    def powf(self, base: float, exponents: np.ndarray) -> np.ndarray:
        return self.base.powf(base, exponents)

    def attention(self, keys: np.ndarray, values: np.ndarray, heads: np.ndarray) -> np.ndarray:
        """runtime_c/kernels/cortex_m7/attention.c under numerics=fast, operation by operation: q scaled by
        1/sqrt(head_size); a score is an FMA chain over the even elements plus one over the odd ones; the
        unnormalised exp weights are fused into each output's sum in position order, then times 1/sum."""
        head_size = heads.shape[-1]
        scaled = (heads[0] * (F32(1.0) / np.sqrt(F32(head_size)))).astype(F32)  # (head, head_size)
        chains = []
        for first in (0, 1)[: min(head_size, 2)]:
            chain = (keys[:, :, first] * scaled[:, first]).astype(F32)
            for i in range(first + 2, head_size, 2):
                chain = fmaf(np.broadcast_to(scaled[:, i], chain.shape), keys[:, :, i], chain)
            chains.append(chain)
        scores = chains[0] if len(chains) == 1 else (chains[0] + chains[1]).astype(F32)  # (t, head)
        weights = self.expf((scores - np.max(scores, axis=0, keepdims=True)).astype(F32))
        inv_sum = (F32(1.0) / sequential_sum(weights, axis=0)).astype(F32)
        out = np.zeros(heads.shape[1:], dtype=F32)
        for t in range(keys.shape[0]):
            out = fmaf(np.broadcast_to(weights[t][:, None], out.shape), values[t], out)
        return (out * inv_sum[:, None]).astype(F32)
