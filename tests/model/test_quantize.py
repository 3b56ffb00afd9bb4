"""Group quantization: row-local groups, short last groups, q4 packing, rounding, plans and reports."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from llmcu.core.errors import QuantizationError
from llmcu.model.quantize import (
    QuantPlan,
    error_report,
    group_bounds,
    pack_q4,
    quantize_groups,
    quantize_matrix,
    quantize_model,
    round_half_away,
    unpack_q4,
)


def test_groups_of_a_172_wide_row_end_short() -> None:
    assert group_bounds(172, 32) == [(0, 32), (32, 64), (64, 96), (96, 128), (128, 160), (160, 172)]


def test_short_last_group_has_its_own_scale() -> None:
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(3, 172)).astype(np.float32)
    matrix[:, 160:] *= 0.01  # the tail is much smaller than the rest of the row
    q, scales = quantize_groups(matrix, 32, 127)
    assert scales.shape == (3, 6)
    np.testing.assert_allclose(scales[:, 5], np.abs(matrix[:, 160:]).max(axis=1) / 127, rtol=1e-6)
    assert np.abs(q[:, 160:]).max() == 127  # the tail uses the full int8 range, not the row's scale
    restored = q.astype(np.float32) * np.repeat(scales, 32, axis=1)[:, :172]
    assert np.max(np.abs(restored - matrix)[:, 160:]) <= scales[:, 5].max() / 2 + 1e-9


def test_groups_never_cross_rows() -> None:
    rng = np.random.default_rng(1)
    matrix = rng.normal(size=(4, 40)).astype(np.float32)
    q_before, s_before = quantize_groups(matrix, 32, 127)
    matrix[2] *= 1000  # a change in one row must not move any other row's quantization
    q_after, s_after = quantize_groups(matrix, 32, 127)
    for row in (0, 1, 3):
        np.testing.assert_array_equal(q_before[row], q_after[row])
        np.testing.assert_array_equal(s_before[row], s_after[row])


def test_round_half_away_matches_c_roundf() -> None:
    values = np.array([0.5, -0.5, 1.5, 2.5, -2.5, 0.49999997, 126.5], dtype=np.float32)
    np.testing.assert_array_equal(round_half_away(values), [1, -1, 2, 3, -3, 0, 127])


def test_zero_group_has_zero_scale_and_values() -> None:
    q, scales = quantize_groups(np.zeros((2, 8), dtype=np.float32), 4, 7)
    assert not q.any() and not scales.any()


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.int8, hnp.array_shapes(min_dims=2, max_dims=2, max_side=17), elements=st.integers(-7, 7)))
def test_q4_pack_round_trip(values: np.ndarray) -> None:
    packed = pack_q4(values)
    assert packed.shape == (values.shape[0], (values.shape[1] + 1) // 2)
    np.testing.assert_array_equal(unpack_q4(packed, values.shape[1]), values)


def test_q4_nibble_order() -> None:
    assert pack_q4(np.array([[-7, 7, 0]], dtype=np.int8)).tolist() == [[0x01 | 0xF0, 0x08]]


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 5), st.integers(1, 70)),
        elements=st.floats(-100, 100, width=32, allow_nan=False),
    ),
    st.sampled_from([2, 4, 8, 32]),
    st.sampled_from(["q8", "q4"]),
)
def test_error_is_bounded_by_half_a_step(matrix: np.ndarray, group_size: int, qtype: str) -> None:
    """llama2.c's absmax fit never clips, so every weight is within half a step; the searched fit may clip an
    outlier for a finer step, and its squared error is then never larger than absmax's, group by group."""
    absmax = quantize_matrix(matrix, qtype, group_size, fit="absmax")
    steps = np.repeat(absmax.scales, group_size, axis=-1)[..., : matrix.shape[-1]]
    error = np.abs(absmax.dequantize() - matrix)
    assert np.all(error <= steps / 2 * (1 + 1e-5) + 1e-30)
    searched = quantize_matrix(matrix, qtype, group_size)
    for start in range(0, matrix.shape[-1], group_size):
        group = slice(start, start + group_size)
        ours = np.sum((searched.dequantize()[:, group].astype(np.float64) - matrix[:, group]) ** 2, axis=1)
        theirs = np.sum((absmax.dequantize()[:, group].astype(np.float64) - matrix[:, group]) ** 2, axis=1)
        # float32 dequantization rounds each term: a searched fit equal to absmax's in exact arithmetic can come out
        # a few float32 ulps (hypothesis found 2e-6 relative) above it
        assert np.all(ours <= theirs * (1 + 1e-5) + 1e-30)


def test_storage_sizes() -> None:
    matrix = np.ones((3, 172), dtype=np.float32)
    q8 = quantize_matrix(matrix, "q8", 32)
    q4 = quantize_matrix(matrix, "q4", 32)
    assert [len(part) for part in q8.storage()] == [3 * 172, 3 * 6 * 4]
    assert [len(part) for part in q4.storage()] == [3 * 86, 3 * 6 * 4]
    assert len(quantize_matrix(matrix, "fp32", 32).storage()[0]) == 3 * 172 * 4


def test_plan_overrides_and_errors() -> None:
    plan = QuantPlan.parse("q4", 32, "tok_embeddings=q8, w2=fp32")
    assert plan.qtype("tok_embeddings") == "q8" and plan.qtype("w2") == "fp32" and plan.qtype("wq") == "q4"
    assert plan.name == "q4+tok_embeddings=q8+w2=fp32"
    with pytest.raises(QuantizationError, match="unknown tensor 'w9'"):
        QuantPlan.parse("q4", 32, "w9=q8")
    with pytest.raises(QuantizationError, match="kind=qtype"):
        QuantPlan.parse("q4", 32, "q8")
    with pytest.raises(QuantizationError, match="allowed: fp32, q8, q4"):
        QuantPlan.parse("q4", 32, "wq=q2")
    with pytest.raises(QuantizationError, match="even"):
        QuantPlan("q8", 5)


def test_quantize_model_applies_the_plan() -> None:
    rng = np.random.default_rng(2)
    weights = {
        "tok_embeddings": rng.normal(size=(10, 8)).astype(np.float32),
        "wq": rng.normal(size=(2, 8, 8)).astype(np.float32),
    }
    quantized = quantize_model(weights, QuantPlan.parse("q4", 4, "tok_embeddings=q8"))
    assert quantized["tok_embeddings"].qtype == "q8" and quantized["wq"].qtype == "q4"
    assert quantized["wq"].scales.shape == (2, 8, 2)


def test_error_report_figures() -> None:
    matrix = np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32)
    report = error_report("m", matrix, quantize_matrix(matrix, "q8", 32))
    assert report.nbytes == 64 + 2 * 4
    assert 0 < report.max_abs_error <= 1 / 127 / 2 + 1e-7
    assert 0 < report.rmse < report.max_abs_error
    assert 0.9999 < report.cosine <= 1.0


@pytest.mark.parametrize("group", [32, 64])
def test_llama2c_v2_codes_are_kept_by_a_q8_build_of_their_group_size(group: int, stories260k, tmp_path) -> None:
    """runq.c's int8 checkpoints (llama2.c v2): a q8 build at the file's group size keeps the codes and scales of
    every matrix whose rows are whole groups (w2's 172 columns are not, at 32 or 64), bit for bit; another group
    size fits them again."""
    from llmcu.model.checkpoint import read_checkpoint, write_checkpoint
    from llmcu.model.quantize import QuantPlan, kept_from_source, quantize_checkpoint

    path = tmp_path / "v2.bin"
    write_checkpoint(path, read_checkpoint(stories260k), version=2, group_size=group)
    ckpt = read_checkpoint(path)
    whole = ["tok_embeddings", "w1", "w3", "wk", "wo", "wq", "wv"]
    assert ckpt.extra["stored"] == {kind: f"Q8_0/{group}" for kind in whole}
    plan = QuantPlan.parse("q8", group)
    kept = kept_from_source(ckpt, plan, quantize_checkpoint(ckpt, plan))
    assert sorted(kept) == whole
    other = QuantPlan.parse("q8", 96 - group)
    assert kept_from_source(ckpt, other, quantize_checkpoint(ckpt, other)) == {}
