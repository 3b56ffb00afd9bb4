"""kv_type=q16 (runtime_c/README.md, "q16: integer attention"): the Python definition (llmcu.model.kvq16) against the
C one's constants, its edge cases, and its distance from float attention.

That every kernel set computes exactly this is tested where the kernels are: the kernel harnesses
(test_cortex_m7_kernels.py, test_neon_kernels.py, test_x86_kernels.py) and the whole-model builds, which use q16 by
default for quantized weights (test_host_build.py against the oracle; test_qemu_m7.py and test_rzv2l.py against
the host, on the golden prompts and to the end of the context).
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from llmcu.core.config import ModelConfig
from llmcu.model import kvq16
from llmcu.model.checkpoint import random_checkpoint, read_checkpoint
from llmcu.model.kvcache import auto_kv_types, kv_cache_bytes, q16_positions
from llmcu.model.reference import Reference
from support.build import ROOT

F32 = np.float32


def test_exp_table_is_the_c_headers() -> None:
    header = (ROOT / "runtime_c" / "kernels" / "q16_exp2.h").read_text()
    body = header[header.index("q16_exp2[2048] = {") :]
    values = [int(v) for v in re.findall(r"\b\d+\b", body[body.index("{") : body.index("};")])]
    assert values == kvq16.EXP_TABLE.tolist()
    assert values[0] == 32679 and values[-2] == 1 and values[-1] == 0 and max(values) < 32768
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_query_bits_keep_a_score_inside_int32() -> None:
    assert [kvq16.query_bits(h) for h in (8, 16, 48, 64, 128)] == [13, 12, 10, 10, 9]
    for head_size in range(2, 300, 2):
        bits = kvq16.query_bits(head_size)
        assert head_size * ((1 << bits) - 1) * kvq16.KV_Q16_MAX < 2**31
        assert bits == 15 or head_size * ((1 << (bits + 1)) - 1) * kvq16.KV_Q16_MAX >= 2**31


def test_query_quantization_edges() -> None:
    factor = np.full(8, F32(0.01), dtype=F32)
    codes, g = kvq16.quantize_query(np.zeros(8, F32), factor, 13)
    assert g == kvq16.MAX_SHIFT_EXPONENT and not codes.any()  # a zero query: every weight equal
    q = np.array([1.0, -3.0, 0.5, 2.0, 0, 0, 0, 0.25], dtype=F32)
    codes, g = kvq16.quantize_query(q, factor, 13)
    assert 2**12 <= np.abs(codes).max() <= 2**13 - 1
    assert np.allclose(codes / 2.0**g, q * factor, atol=2.0**-g)
    codes, g = kvq16.quantize_query(np.full(8, F32(1e30)), factor, 13)  # huge: the smallest G, saturated
    assert g == kvq16.MIN_SHIFT_EXPONENT and (codes == 2**13 - 1).all()
    codes, g = kvq16.quantize_query(np.array([np.nan, 1, 0, 0, 0, 0, 0, 0], dtype=F32), factor, 13)
    assert codes[0] == 0 and 2**12 <= codes[1] < 2**13  # NaN counts as 0


def test_store_rounds_saturates_and_maps_nan_to_zero() -> None:
    scale = np.full(5, F32(0.5), dtype=F32)
    codes = kvq16.store(np.array([0.75, -0.25, 1e9, -1e9, np.nan], dtype=F32), scale)
    assert codes.tolist() == [2, -1, 32767, -32767, 0]


def test_scales_come_from_the_calibrated_magnitudes() -> None:
    scales = kvq16.scales_from_ranges(np.array([[2.0, 0.0]]), np.array([[1.0, 3.0]]), head_size=2)
    assert scales.key[0, 0] == F32(F32(8.0) / F32(32767)) and scales.key[0, 1] == 1.0  # a silent channel
    assert scales.key_factor[0, 0] == F32(scales.key[0, 0] * F32(kvq16.LOG2E / np.sqrt(F32(2))))
    assert scales.as_array().shape == (3, 1, 2)


def test_integer_attention_is_close_to_float_attention() -> None:
    """What q16 approximates: softmax(q . k / sqrt(d)) . v over the stored keys and values."""
    rng = np.random.default_rng(5)
    for head_size, positions in ((8, 1), (8, 37), (48, 200), (64, 9)):
        keys = rng.normal(size=(positions, head_size)).astype(F32)
        values = rng.normal(size=(positions, head_size)).astype(F32)
        q = (rng.normal(size=head_size) * 2).astype(F32)
        scales = kvq16.scales_from_ranges(np.abs(keys).max(0)[None], np.abs(values).max(0)[None], head_size)
        k_codes, v_codes = kvq16.store(keys, scales.key[0]), kvq16.store(values, scales.value[0])
        got = kvq16.attend(q, k_codes, v_codes, scales.key_factor[0], scales.value[0])
        k_back, v_back = k_codes * scales.key[0], v_codes * scales.value[0]
        logits = k_back.astype(np.float64) @ q / np.sqrt(head_size)
        weights = np.exp(logits - logits.max())
        want = (weights / weights.sum()) @ v_back
        assert np.abs(got - want).max() < 0.01 * np.abs(values).max(), head_size


def test_auto_prefers_q16_for_quantized_weights_and_f32_for_fp32() -> None:
    assert auto_kv_types(True)[0] == "q16" and auto_kv_types(False)[0] == "f32"
    config = ModelConfig(16, 40, 2, 4, 2, 512, 30, False)
    ckpt = random_checkpoint(config, seed=3)
    assert Reference.from_checkpoint(ckpt, "q8", 8).kv_type == "q16"
    assert Reference.from_checkpoint(ckpt, "fp32").kv_type == "f32"
    assert q16_positions(30) == 32 and kv_cache_bytes(config, 30, "q16") == 2 * 2 * 32 * config.kv_dim * 2


def test_reference_q16_stays_near_the_float_cache(stories260k) -> None:
    """Teacher-forced over 64 positions of one model run, q16 against the fp32 cache: the same top-1 token
    almost everywhere (the README's table has the full figures)."""
    ckpt = read_checkpoint(stories260k)
    exact = Reference.from_checkpoint(ckpt, "q8", 32, kv_type="f32")
    q16 = Reference(ckpt, exact.plan, kv_type="q16")
    tokens, agree = [1], 0
    for pos in range(64):
        a, b = exact.forward(tokens[-1], pos), q16.forward(tokens[-1], pos)
        agree += int(np.argmax(a) == np.argmax(b))
        tokens.append(int(np.argmax(a)))
    assert agree >= 62


def test_q16_refuses_a_head_size_it_cannot_bound() -> None:
    with pytest.raises(ValueError, match="head_size"):
        kvq16.query_bits(40000)
