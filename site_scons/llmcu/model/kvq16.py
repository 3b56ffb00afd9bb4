"""The q16 KV cache and its integer attention (``runtime_c/README.md``, "q16: integer attention"), in numpy.

Keys and values are stored as int16 with a scale per (layer, channel) that the build measures: the largest
magnitude each channel reaches while the fp32 model reads its calibration stories, times :data:`HEADROOM`.
With scales that do not change from one position to the next, attention is integer arithmetic from the dot
products to the weighted sum: the queries are quantized once per head with a power-of-two scale, a score is
an exact int32 dot product, softmax's exponential is a table lookup on the score's distance from the
maximum, and the weighted sum of the values is an exact int64 sum. One float multiply and one divide per
output element remain. Every kernel set computes exactly this, so the results are the same bits everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import quantcache
from .checkpoint import Checkpoint
from .fitting import round_half_away

F32 = np.float32

KV_Q16_MAX = 32767  # stored keys and values: -32767..32767
HEADROOM = 4.0  # scale = 4 x the calibrated magnitude: a value may grow 4x before it saturates
LOG2E = F32(1.4426950408889634)
EXP_FRACTION_BITS = 7  # the exponent's steps: 1/128 of an octave
EXP_TABLE_SIZE = 2048  # distances of 0..2046 steps (16 octaves) are looked up; 2047 and beyond weigh 0
MIN_SHIFT_EXPONENT = EXP_FRACTION_BITS + 1  # the query scale 2^-G has G >= this (the shift G - 7 is >= 1)
MAX_SHIFT_EXPONENT = EXP_FRACTION_BITS + 31  # ... and G - 7 <= 31


def exp_table() -> np.ndarray:
    """``EXP_TABLE[y] = round(32768 * 2^(-(y + 0.5) / 128))``, halves away from zero: the weight of a score ``y``
    steps below the maximum, taken at the middle of its step (uint16; the first, 32679, is below int16's
    limit). The last entry, for 2047 steps and beyond, is 0: 16 octaves down, a weight would round to 1 and
    hundreds of such positions would add up to what the softmax gives them: nothing."""
    y = np.arange(EXP_TABLE_SIZE, dtype=np.float64)
    table = round_half_away(32768.0 * np.exp2(-(y + 0.5) / (1 << EXP_FRACTION_BITS))).astype(np.uint16)
    table[-1] = 0
    return table


EXP_TABLE = exp_table()


def query_bits(head_size: int) -> int:
    """Quantized queries are -(2^b - 1)..2^b - 1 with the largest b (at most 15, int16) for which a score,
    head_size products with a stored key, stays inside int32."""
    bits = int(np.floor(np.log2((2**31 - 1) / (head_size * KV_Q16_MAX))))
    if bits < 2:
        raise ValueError(f"head_size {head_size} is too large for q16 attention")
    return min(bits, 15)


@dataclass(frozen=True)
class Q16Scales:
    """float32 ``(n_layers, kv_dim)`` arrays: what a stored key or value unit is worth, and ``key_factor``, the
    key scale times log2(e) / sqrt(head_size) (a query times it gives the score's contribution in octaves)."""

    key: np.ndarray
    value: np.ndarray
    key_factor: np.ndarray

    def as_array(self) -> np.ndarray:
        """``(3, n_layers, kv_dim)``: key, value, key_factor; what the build links in (llmcu_kv_q16_scales)."""
        return np.stack([self.key, self.value, self.key_factor]).astype(F32)


def scales_from_ranges(key_absmax: np.ndarray, value_absmax: np.ndarray, head_size: int) -> Q16Scales:
    """The scales for calibrated magnitudes (a channel that stayed 0 gets scale 1: it stores what it gets)."""

    def scale(absmax: np.ndarray) -> np.ndarray:
        wide = (np.asarray(absmax, dtype=F32) * F32(HEADROOM)).astype(F32)
        return np.where(wide > 0, (wide / F32(KV_Q16_MAX)).astype(F32), F32(1.0)).astype(F32)

    key, value = scale(key_absmax), scale(value_absmax)
    per_octave = (LOG2E / np.sqrt(F32(head_size))).astype(F32)
    return Q16Scales(key, value, (key * per_octave).astype(F32))


def store(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """int16 codes of ``x`` (float32): ``roundf(x / scale)`` saturated to +-32767; NaN stores 0."""
    ratio = (np.asarray(x, dtype=F32) / scale).astype(F32)
    with np.errstate(invalid="ignore"):
        codes = np.clip(round_half_away(ratio), -KV_Q16_MAX, KV_Q16_MAX)
    return np.where(np.isnan(codes), 0, codes).astype(np.int16)


def quantize_query(q: np.ndarray, key_factor: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    """One head's query as integers ``a`` and the exponent ``G``: ``a ~ q * key_factor * 2^G``, ``G`` chosen from
    the largest magnitude's float exponent so that the largest ``|a|`` is in ``[2^(bits-1), 2^bits]``
    (saturated at ``2^bits - 1``), then kept in ``[8, 38]``."""
    a = (np.asarray(q, dtype=F32) * key_factor).astype(F32)
    with np.errstate(invalid="ignore"):
        amax = F32(np.max(np.where(np.isnan(a), F32(0), np.abs(a))))
    exponent_field = int(amax.view(np.uint32) >> 23) & 0xFF
    if exponent_field == 0:  # zero or subnormal: every score is 0 and every weight equal
        return np.zeros(a.shape, dtype=np.int32), MAX_SHIFT_EXPONENT
    exponent = exponent_field - 126  # amax = f * 2^exponent, f in [0.5, 1)
    g = min(max(bits - exponent, MIN_SHIFT_EXPONENT), MAX_SHIFT_EXPONENT)
    limit = (1 << bits) - 1
    with np.errstate(invalid="ignore", over="ignore"):
        codes = np.clip(round_half_away(a.astype(np.float64) * 2.0**g), -limit, limit)
    return np.where(np.isnan(codes), 0, codes).astype(np.int32), g


def attend(
    q: np.ndarray, keys: np.ndarray, values: np.ndarray, key_factor: np.ndarray, value_scale: np.ndarray
) -> np.ndarray:
    """One query head over stored int16 ``keys``/``values`` ``(positions, head_size)`` of its kv head, with
    that head's slices of the scales: the head's float32 output."""
    head_size = keys.shape[1]
    a, g = quantize_query(q, key_factor, query_bits(head_size))
    scores = keys.astype(np.int64) @ a.astype(np.int64)  # exact; within int32 by query_bits
    distance = (scores.max() - scores) >> (g - EXP_FRACTION_BITS)
    weights = EXP_TABLE[np.minimum(distance, EXP_TABLE_SIZE - 1)].astype(np.int64)
    total = weights @ values.astype(np.int64)  # exact int64
    return ((total.astype(F32) * value_scale).astype(F32) / F32(weights.sum())).astype(F32)


def attention(
    q: np.ndarray, keys: np.ndarray, values: np.ndarray, scales: Q16Scales, layer: int, n_kv_heads: int
) -> np.ndarray:
    """Every query head of ``layer``: ``q`` ``(dim,)``, ``keys``/``values`` int16 ``(positions, kv_dim)``."""
    kv_dim = keys.shape[1]
    head_size = kv_dim // n_kv_heads
    n_heads = q.shape[0] // head_size
    kv_mul = n_heads // n_kv_heads
    out = np.empty(q.shape[0], dtype=F32)
    for head in range(n_heads):
        channels = slice((head // kv_mul) * head_size, (head // kv_mul + 1) * head_size)
        out[head * head_size : (head + 1) * head_size] = attend(
            q[head * head_size : (head + 1) * head_size],
            keys[:, channels],
            values[:, channels],
            scales.key_factor[layer, channels],
            scales.value[layer, channels],
        )
    return out


def calibrated_scales(ckpt: Checkpoint, show_progress: bool = False) -> Q16Scales:
    """The scales a build links in: from the channels' magnitudes over the sampled calibration stories
    (llmcu.model.calibration; the same text whatever ``calib=`` says, so that the KV cache does not change with it)."""
    from .calibration import SAMPLED, calibrate, weights_digest

    key = quantcache.measurement_key("kv-ranges", weights_digest(ckpt))
    cached = quantcache.load_arrays(key)
    if cached is not None and {"key_absmax", "value_absmax"} <= cached.keys():
        return scales_from_ranges(cached["key_absmax"], cached["value_absmax"], ckpt.config.head_size)
    measured = calibrate(ckpt, SAMPLED, show_progress=show_progress, inputs=frozenset())  # the ranges only
    assert measured is not None and measured.key_absmax is not None and measured.value_absmax is not None
    quantcache.store_arrays(key, {"key_absmax": measured.key_absmax, "value_absmax": measured.value_absmax})
    return scales_from_ranges(measured.key_absmax, measured.value_absmax, ckpt.config.head_size)
