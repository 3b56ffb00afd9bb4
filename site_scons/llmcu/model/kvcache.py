"""The KV cache's element types (``runtime_c/README.md``, "KV cache types"): names, sizes, and the numpy
definition of what a stored key or value reads back as.

- ``f32``: float32, as computed.
- ``f16``: IEEE binary16, rounded to nearest even; read back exactly.
- ``q8``: int8 per (position, kv head) vector of ``head_size`` values, ``scale = amax / 127``, with the
  weight contract's rounding; read back as ``(float)q * scale``.
- ``q16``: int16 with a scale per (layer, channel) measured at build time, and integer attention
  (llmcu.model.kvq16). Room for a multiple of 8 positions: the kernel sets lay positions out in blocks.

numpy's float32 -> float16 cast gives the same bits as the C runtime's ``f32_to_f16`` for every float32 that
is not a NaN (round to nearest even, overflow to infinity, subnormals; compared over all 2^32 bit patterns
once, and on every rounding case by ``tests/model/test_kv_cache.py``), so it is used directly. A NaN stays a NaN
either way; only its payload bits may differ (the C code quiets a signalling NaN).
"""

from __future__ import annotations

import numpy as np

from ..core.config import ModelConfig
from ..core.errors import OptionError
from .quantize import quantize_groups

KV_TYPES = ("f32", "f16", "q8", "q16")
KV_CODES = {kv_type: code for code, kv_type in enumerate(KV_TYPES)}  # LLMCU_KV_F32 0, _F16 1, _Q8 2, _Q16 3
ELEMENT_BYTES = {"f32": 4, "f16": 2, "q8": 1, "q16": 2}
KV_QMAX = 127

F32 = np.float32


def auto_kv_types(quantized: bool) -> tuple[str, ...]:
    """What ``kv_type=auto`` tries, in order, taking the first that fits: for quantized weights the fast integer
    attention (q16), then the smallest cache; for fp32 weights the exact float32 cache first (run.c's output)."""
    return ("q16", "q8") if quantized else ("f32", "f16", "q8")


def kv_type_candidates(kv_type: str, quantized: bool) -> tuple[str, ...]:
    """The KV cache types a build with ``kv_type=`` tries, in order, taking the first that fits: the one it names,
    or auto's for weights that are ``quantized`` or not. The one place kv_type=auto is decided."""
    return auto_kv_types(quantized) if kv_type == "auto" else (kv_type,)


def check_kv_type(kv_type: str) -> str:
    if kv_type not in KV_TYPES:
        raise OptionError(f"unknown KV cache type {kv_type!r}; allowed: {', '.join(KV_TYPES)}")
    return kv_type


def kv_cache_bytes(config: ModelConfig, seq_len: int, kv_type: str) -> int:
    """Bytes of the key and value caches for ``seq_len`` positions, q8's float scales included."""
    check_kv_type(kv_type)
    if kv_type == "q16":
        seq_len = q16_positions(seq_len)
    rows = 2 * config.n_layers * seq_len  # (cache, layer, position)
    total = rows * config.kv_dim * ELEMENT_BYTES[kv_type]
    if kv_type == "q8":
        total += rows * config.n_kv_heads * 4
    return total


def q16_positions(seq_len: int) -> int:
    """Positions a q16 cache has room for: ``seq_len`` rounded up to a multiple of 8 (LLMCU_KV_POSITIONS)."""
    return -(-seq_len // 8) * 8


def to_f16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> binary16 bit patterns (uint16), round to nearest even."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(x, dtype=F32).astype(np.float16).view(np.uint16)


def from_f16_bits(bits: np.ndarray) -> np.ndarray:
    """binary16 bit patterns -> float32 (exact)."""
    return np.asarray(bits, dtype=np.uint16).view(np.float16).astype(F32)


def quantize_heads(x: np.ndarray, head_size: int) -> tuple[np.ndarray, np.ndarray]:
    """int8 values and one float32 scale per ``head_size`` values of the last axis."""
    flat = np.asarray(x, dtype=F32).reshape(-1, head_size)
    q, scales = quantize_groups(flat, head_size, KV_QMAX)
    return q.reshape(np.shape(x)), scales.reshape(*np.shape(x)[:-1], -1)


def stored(x: np.ndarray, kv_type: str, head_size: int) -> np.ndarray:
    """What a float32 key or value vector (last axis: kv_dim) reads back as after going through the cache."""
    x = np.asarray(x, dtype=F32)
    if kv_type == "f32":
        return x
    if kv_type == "f16":
        with np.errstate(over="ignore", invalid="ignore"):
            return x.astype(np.float16).astype(F32)
    check_kv_type(kv_type)
    q, scales = quantize_heads(x, head_size)
    return (q.astype(F32) * np.repeat(scales, head_size, axis=-1)).astype(F32)
