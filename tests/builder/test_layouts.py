"""Build-time weight layouts (llmcu.builder.layouts): the NEON and x86 panel arrangements, element by element."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "site_scons"))

from llmcu.builder import layouts
from llmcu.model.quantize import quantize_matrix


def test_each_kernel_set_names_its_layout() -> None:
    assert layouts.for_kernel_set("neon") == layouts.NEON_PANELS
    assert layouts.for_kernel_set("") == layouts.REFERENCE
    assert layouts.for_kernel_set("cortex_m7") == layouts.M7_PANELS
    assert layouts.for_kernel_set("x86") == layouts.X86_PANELS


@pytest.mark.parametrize("rows", [4, 6, 9])
def test_q8_panels_put_each_weight_where_the_kernel_reads_it(rows: int) -> None:
    cols, group = 24, 8
    matrix = quantize_matrix(np.random.default_rng(rows).standard_normal((rows, cols)), "q8", group)
    data, scales = layouts.storage(matrix, layouts.NEON_PANELS)
    panels = -(-rows // 4)
    assert len(data) == panels * 4 * cols and len(scales) == panels * 4 * (cols // group) * 4
    flat = np.frombuffer(data, dtype=np.int8)
    s = np.frombuffer(scales, dtype="<f4")
    for r in range(panels * 4):
        for c in range(cols):
            expected = matrix.q[r, c] if r < rows else 0
            assert flat[(r // 4) * 4 * cols + (c // 4) * 16 + (r % 4) * 4 + c % 4] == expected
        for g in range(cols // group):
            expected_scale = matrix.scales[r, g] if r < rows else 0.0
            assert s[((r // 4) * (cols // group) + g) * 4 + r % 4] == expected_scale


def test_q4_pair_panels_hold_row_k_high_and_row_k_plus_4_low() -> None:
    rows, cols, group = 10, 12, 4  # two panels of eight, the second padded with six zero rows
    matrix = quantize_matrix(np.random.default_rng(4).standard_normal((rows, cols)), "q4", group)
    data, scales = layouts.storage(matrix, layouts.NEON_PANELS)
    assert len(data) == 16 * cols // 2
    flat = np.frombuffer(data, dtype=np.uint8)
    for r in range(16):
        for c in range(cols):
            byte = int(flat[(r // 8) * 4 * cols + (c // 4) * 16 + (r % 4) * 4 + c % 4])
            # rows 0-3: the high nibble, two's complement; rows 4-7: the low nibble, q + 8
            value = (byte >> 4) - 16 * (byte >> 7) if r % 8 < 4 else (byte & 0x0F) - 8
            assert value == (matrix.q[r, c] if r < rows else 0)
    panel_scales = np.frombuffer(scales, dtype="<f4").reshape(2, cols // group, 8)  # per panel, per group, 8 rows
    assert np.array_equal(panel_scales[0].T, matrix.scales[:8])
    assert np.array_equal(panel_scales[1, :, :2].T, matrix.scales[8:]) and not panel_scales[1, :, 2:].any()


def test_q4z_codes_keep_four_row_panels_of_twos_complement_nibbles() -> None:
    rows, cols = 8, 16
    codes = np.random.default_rng(5).integers(-8, 8, size=(rows, cols))
    flat = layouts.panel_q4(codes)
    for r in range(rows):
        for c in range(cols):
            byte = int(flat[(r // 4) * 2 * cols + (c // 8) * 16 + (r % 4) * 4 + c % 4])
            nibble = (byte >> 4) if c % 8 >= 4 else (byte & 0x0F)
            assert (nibble - 16 if nibble >= 8 else nibble) == codes[r, c]


def test_fp32_panels_put_a_column_of_four_rows_side_by_side_and_pad_the_last_panel() -> None:
    rows, cols = 6, 5
    values = np.random.default_rng(7).standard_normal((rows, cols)).astype(np.float32)
    matrix = quantize_matrix(values, "fp32", 32)
    data, scales = layouts.storage(matrix, layouts.NEON_PANELS)
    assert scales == b""
    flat = np.frombuffer(data, dtype="<f4")
    assert len(flat) == 8 * cols  # two panels: rows 6 and 7 are zeros
    for r in range(8):
        for c in range(cols):
            assert flat[(r // 4) * 4 * cols + c * 4 + r % 4] == (values[r, c] if r < rows else 0.0)
    # the Cortex-M7 set reads fp32 row-major
    assert layouts.storage(matrix, layouts.M7_PANELS) == matrix.storage()


def test_shapes_the_panels_do_not_fit_stay_row_major() -> None:
    for qtype, cols, group in (("q8", 18, 6), ("q4", 18, 6), ("q4z", 172, 32)):
        matrix = quantize_matrix(np.ones((4, cols), dtype=np.float32), qtype, group)
        assert layouts.storage(matrix, layouts.NEON_PANELS) == matrix.storage()
    matrix = quantize_matrix(np.ones((4, 8), dtype=np.float32), "q8", 4)
    assert layouts.storage(matrix, layouts.REFERENCE) == matrix.storage()
    with pytest.raises(ValueError, match="unknown weight layout"):
        layouts.storage(matrix, "zigzag")


# ---- x86_panels (runtime_c/kernels/x86/matmul.c) ----


@pytest.mark.parametrize("rows", [8, 11])
def test_x86_q8_panels_put_pairs_of_eight_rows_side_by_side(rows: int) -> None:
    cols, group = 18, 6  # even, not a multiple of 4: x86_panels takes it, neon_panels does not
    matrix = quantize_matrix(np.random.default_rng(rows).standard_normal((rows, cols)), "q8", group)
    data, scales = layouts.storage(matrix, layouts.X86_PANELS)
    panels, ngroups = -(-rows // 8), cols // group
    stored = layouts.stored_bytes("q8", rows, cols, group, layouts.X86_PANELS)
    assert len(data) == panels * 8 * cols == stored - len(scales)
    flat = np.frombuffer(data, dtype=np.int8)
    s = np.frombuffer(scales, dtype="<f4")
    for r in range(panels * 8):
        for c in range(cols):
            expected = matrix.q[r, c] if r < rows else 0
            assert flat[(r // 8) * 8 * cols + (c // 2) * 16 + (r % 8) * 2 + c % 2] == expected
        for g in range(ngroups):
            assert s[((r // 8) * ngroups + g) * 8 + r % 8] == (matrix.scales[r, g] if r < rows else 0.0)


@pytest.mark.parametrize("qtype", ["q4", "q4z"])
def test_x86_4bit_panels_hold_unsigned_codes_low_then_high_half_of_each_block(qtype: str) -> None:
    rows, cols, group = 12, 24, 8
    matrix = quantize_matrix(np.random.default_rng(9).standard_normal((rows, cols)), qtype, group)
    data, extra = layouts.storage(matrix, layouts.X86_PANELS)
    row_major, row_extra = matrix.storage()
    flat = np.frombuffer(data, dtype=np.uint8)
    codes = np.frombuffer(row_major, dtype=np.uint8).reshape(rows, cols // 2)  # the reference's q + 8 (q4z: n)
    assert len(flat) == 16 * cols // 2
    for r in range(rows):
        for c in range(cols):
            byte = int(flat[(r // 8) * 4 * cols + (c // 8) * 32 + (r % 8) * 4 + c % 4])
            stored = int(codes[r, c // 2] >> 4 if c % 2 else codes[r, c // 2] & 0x0F)
            assert ((byte >> 4) if c % 8 >= 4 else (byte & 0x0F)) == stored
    unit = "<u2" if qtype == "q4z" else "<f4"
    per_panel = np.frombuffer(extra, dtype=unit).reshape(2, cols // group, 8)  # per panel, per group, eight rows
    reference = np.frombuffer(row_extra, dtype=unit).reshape(rows, cols // group)
    assert np.array_equal(per_panel[0].T, reference[:8])
    assert np.array_equal(per_panel[1, :, :4].T, reference[8:]) and not per_panel[1, :, 4:].any()


def test_x86_fp32_panels_hold_a_column_of_eight_rows_and_other_shapes_stay_row_major() -> None:
    rows, cols = 3, 5
    values = np.random.default_rng(3).standard_normal((rows, cols)).astype(np.float32)
    data, _ = layouts.storage(quantize_matrix(values, "fp32", 32), layouts.X86_PANELS)
    flat = np.frombuffer(data, dtype="<f4")
    assert len(flat) == 8 * cols
    for r in range(8):
        for c in range(cols):
            assert flat[c * 8 + r] == (values[r, c] if r < rows else 0.0)
    for qtype, cols, group in (("q8", 9, 3), ("q4", 12, 4), ("q4z", 172, 32)):
        matrix = quantize_matrix(np.ones((4, cols), dtype=np.float32), qtype, group)
        assert layouts.storage(matrix, layouts.X86_PANELS) == matrix.storage()
