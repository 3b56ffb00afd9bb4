"""Weight layouts: how a kernel set wants its quantized matrices stored, made here at build time.

The reference kernels read every matrix row-major (runtime_c/README.md, "Group quantization", Storage). An
optimised kernel set may read another arrangement of the same bytes; codegen asks :func:`storage` for a matrix's
bytes in the layout of the kernel set the build compiles (:func:`for_kernel_set`; ``kernels=ref`` keeps the
reference layout). A layout keeps the runtime's offset arithmetic valid: a range of rows starting at a multiple
of 16 (where the thread pool splits a matmul) starts where it would in the row-major layout.

``neon_panels`` (runtime_c/kernels/neon/matmul.c describes the C side): rows in panels of four (padded with zero
rows and zero scales to a multiple of four);

- fp32, every matrix: per panel, for each column, the four rows' values side by side (16 bytes), so that one
  vector load is a column of four rows;

- q8, when cols and group_size are multiples of 4: per panel, for each quad of columns 4c..4c+3, row 0's four
  bytes, then row 1's, row 2's, row 3's (16 bytes);
- q4, when cols and group_size are multiples of 4: pair panels, rows in panels of eight (padded with zero rows
  and zero scales to a multiple of eight); per panel, 16 bytes per quad of columns 4c..4c+3, byte 4k + m holding
  row k's column 4c + m in its high nibble (the 4-bit two's complement of q) and row k + 4's in its low nibble
  (q + 8); scales per panel, per group, the eight rows' side by side;
- q4z, when cols and group_size are multiples of 8: per panel of four rows, 16 bytes per block of 8 columns
  8b..8b+7, byte 4k + m holding row k's column 8b + m in its low nibble and column 8b + 4 + m in its high nibble,
  each nibble the 4-bit two's complement of n - 8; its group words per panel, per group, the four rows' side by
  side;
- q8 scales: per panel, per group, the four rows' scales side by side.

``m7_panels`` (runtime_c/kernels/cortex_m7/matmul.c describes the C side):

- q8, when cols and group_size are multiples of 4: four-row panels, per quad of columns each row's four bytes
  (the arrangement of ``neon_panels``), except that an odd column's byte holds q - 1 where the even column
  before it is negative: the word's halfwords are then q_even + 256 q_odd as int16, which the kernel multiplies
  as they are (q must be in [-127, 127], as the quantizer makes it). Scales per panel, per group, the four rows'
  side by side;
- q4, when cols is a multiple of 4 and group_size of 8: rows in panels of two (padded with a row of zeros, q + 8
  = 0x88, and zero scales to an even count); per panel, per block of 8 columns, row 0's four bytes then row 1's,
  each the reference's bytes (q + 8, the even column in the low nibble); when cols % 8 == 4, the last four
  columns as row 0's two bytes then row 1's. Scales per panel, per group, the two rows' side by side. A panel is
  ``cols`` bytes: the rows stay where the row-major layout has them, in pairs;
- q4z, when q4's applies: the codes as q4's panels (n in place of q + 8), and per panel, per group, the two
  rows' 16-bit group words side by side.

``x86_panels`` (runtime_c/kernels/x86/matmul.c describes the C side): rows in panels of eight (padded with zero
rows and zero scales to a multiple of eight), so that one 32-byte load holds a piece of eight rows;

- fp32, every matrix: per panel, for each column, the eight rows' values side by side (32 bytes);
- q8, when cols and group_size are even: per panel, for each pair of columns 2c, 2c + 1, row 0's two bytes, then
  row 1's, ... row 7's (16 bytes);
- q4 and q4z, when cols and group_size are multiples of 8: per panel, 32 bytes per block of 8 columns 8b..8b+7,
  byte 4k + m holding row k's column 8b + m in its low nibble and column 8b + 4 + m in its high nibble, each the
  unsigned code (q + 8 for q4, q4z's n);
- scales (q8, q4) and q4z's group words: per panel, per group, the eight rows' side by side.

Other shapes stay row-major, and so do fp32 matrices outside ``neon_panels`` and ``x86_panels``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..model.quantize import QuantizedMatrix, matrix_bytes, unpack_q4

REFERENCE = "rowmajor"
NEON_PANELS = "neon_panels"
M7_PANELS = "m7_panels"
X86_PANELS = "x86_panels"
LAYOUTS = (REFERENCE, NEON_PANELS, M7_PANELS, X86_PANELS)
# The layout each optimised kernel set reads (runtime_c/kernels/<set>/); a set not named here reads the
# reference layout.
KERNEL_SET_LAYOUTS = {"neon": NEON_PANELS, "cortex_m7": M7_PANELS, "x86": X86_PANELS}


def for_kernel_set(kernel_set: str) -> str:
    """The layout a build with ``kernel_set`` ("" = the reference kernels) links in."""
    return KERNEL_SET_LAYOUTS.get(kernel_set, REFERENCE)


def panel_applies(qtype: str, cols: int, group_size: int) -> bool:
    """Whether ``neon_panels`` rearranges a matrix (the same test as the C side's panel_layout(); fp32 always)."""
    unit = {"fp32": 1, "q8": 4, "q4": 4, "q4z": 8}.get(qtype)
    return unit is not None and cols % unit == 0 and group_size % unit == 0


def m7_panel_applies(qtype: str, cols: int, group_size: int) -> bool:
    """Whether ``m7_panels`` rearranges a matrix (the same test as the C side's m7_panel_layout())."""
    if qtype == "q8":
        return cols % 4 == 0 and group_size % 4 == 0
    return qtype in ("q4", "q4z") and cols % 4 == 0 and group_size % 8 == 0


def x86_panel_applies(qtype: str, cols: int, group_size: int) -> bool:
    """Whether ``x86_panels`` rearranges a matrix (the same test as the C side's x86_panel_layout(); fp32 always)."""
    unit = {"fp32": 1, "q8": 2, "q4": 8, "q4z": 8}.get(qtype)
    return unit is not None and cols % unit == 0 and group_size % unit == 0


def _pad_rows(array: np.ndarray, multiple: int) -> np.ndarray:
    rows = array.shape[0]
    padded = np.zeros((-(-rows // multiple) * multiple, *array.shape[1:]), dtype=array.dtype)
    padded[:rows] = array
    return padded


def interleave(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """``(rows, cols)`` -> flat: rows in panels of ``height`` (zero rows pad the last), per panel, for each run of
    ``width`` columns, the panel's rows' runs side by side."""
    padded = _pad_rows(np.asarray(values), height)
    panels, cols = padded.shape[0] // height, padded.shape[1]
    # (panel, row in panel, run, column in run) -> (panel, run, row in panel, column in run)
    return padded.reshape(panels, height, cols // width, width).transpose(0, 2, 1, 3).reshape(-1)


def panel_q8(q: np.ndarray, height: int = 4, width: int = 4) -> np.ndarray:
    """``(rows, cols)`` int8 -> the q8 panel bytes (uint8, flat): neon_panels' quads of four rows by default."""
    return interleave(np.asarray(q, dtype=np.int8), height, width).view(np.uint8)


def panel_f32(values: np.ndarray, height: int = 4) -> np.ndarray:
    """``(rows, cols)`` float32 -> the fp32 panel values (float32, flat): per panel, per column, ``height`` rows."""
    return interleave(np.asarray(values, dtype=np.float32), height, 1)


def pair_panels_q4(q: np.ndarray) -> np.ndarray:
    """``(rows, cols)`` int4 values in [-8, 7] -> the q4 pair-panel bytes (uint8, flat)."""
    padded = _pad_rows(np.asarray(q, dtype=np.int8), 8)
    panels, cols = padded.shape[0] // 8, padded.shape[1]
    # (panel, half, row in half, quad, m) -> (panel, quad, row in half, m) for each half
    halves = padded.reshape(panels, 2, 4, cols // 4, 4).transpose(0, 1, 3, 2, 4)
    high = (halves[:, 0].astype(np.uint8) & 0x0F) << 4
    low = (halves[:, 1].astype(np.int16) + 8).astype(np.uint8)
    return (high | low).reshape(-1).astype(np.uint8)


def panel_q4(q: np.ndarray, height: int = 4) -> np.ndarray:
    """``(rows, cols)`` 4-bit values -> the q4 panel bytes (uint8, flat) of ``height``-row panels, each value's low
    four bits stored: neon_panels' q4z codes (values in [-8, 7]) and x86_panels' codes (values in [0, 15])."""
    nibbles = _pad_rows(np.asarray(q, dtype=np.int8), height).astype(np.uint8) & 0x0F
    panels, cols = nibbles.shape[0] // height, nibbles.shape[1]
    # (panel, row in panel, block, half, m) -> (panel, block, row in panel, m) for each half
    blocks = nibbles.reshape(panels, height, cols // 8, 2, 4).transpose(0, 2, 1, 3, 4)
    return (blocks[..., 0, :] | (blocks[..., 1, :] << 4)).reshape(-1).astype(np.uint8)


def panel_scales(scales: np.ndarray, panel_rows: int = 4) -> np.ndarray:
    """``(rows, ngroups)`` float32 -> per panel, per group, the panel's rows' scales (flat, float32)."""
    return interleave(np.asarray(scales, dtype=np.float32), panel_rows, 1)


def m7_panels_q8(q: np.ndarray) -> np.ndarray:
    """``(rows, cols)`` int8 in [-127, 127] -> the q8 bytes of ``m7_panels`` (uint8, flat)."""
    q = np.asarray(q, dtype=np.int8)
    if q.size and q.min() < -127:
        raise ValueError("m7_panels holds q8 values in [-127, 127] only")
    pairs = panel_q8(q).view(np.int8).astype(np.int16).reshape(-1, 2)  # (even column, odd column)
    pairs[:, 1] -= pairs[:, 0] < 0  # little-endian halfword: even + 256 * odd == q_even + 256 * q_odd
    return pairs.astype(np.int8).reshape(-1).view(np.uint8)


def m7_pairs_q4(q: np.ndarray) -> np.ndarray:
    """``(rows, cols)`` int4 values in [-8, 7] -> the q4 bytes of ``m7_panels`` (uint8, flat)."""
    stored = np.asarray(q, dtype=np.int16) + 8  # the reference's q + 8, 1..15 (0x88: the padding row's zeros)
    stored = np.concatenate([stored, np.full((stored.shape[0] % 2, stored.shape[1]), 8, dtype=np.int16)])
    rows, cols = stored.shape
    row_bytes = (stored[:, 0::2] | (stored[:, 1::2] << 4)).astype(np.uint8)  # the reference's bytes, per row
    pairs = row_bytes.reshape(rows // 2, 2, cols // 2)
    full = (cols // 8) * 4  # bytes in whole blocks of 8 columns
    blocks = pairs[:, :, :full].reshape(rows // 2, 2, cols // 8, 4).transpose(0, 2, 1, 3).reshape(rows // 2, -1)
    return np.concatenate([blocks, pairs[:, :, full:].reshape(rows // 2, -1)], axis=1).reshape(-1)


def x86_panels_q8(q: np.ndarray) -> np.ndarray:
    """``(rows, cols)`` int8 -> the q8 bytes of ``x86_panels``: eight-row panels of column pairs."""
    return panel_q8(q, 8, 2)


def x86_panels_q4(q: np.ndarray) -> np.ndarray:
    """``(rows, cols)`` int4 values in [-8, 7] -> the 4-bit bytes of ``x86_panels``: eight-row panels of 8-column
    blocks holding q + 8 (the reference's stored code)."""
    return panel_q4(np.asarray(q, dtype=np.int8) + 8, 8)


def x86_panels_f32(values: np.ndarray) -> np.ndarray:
    """``(rows, cols)`` float32 -> the fp32 values of ``x86_panels``: per eight-row panel, per column, eight rows."""
    return panel_f32(values, 8)


def _q4z_codes_and_words(matrix: QuantizedMatrix) -> tuple[np.ndarray, np.ndarray]:
    """A q4z matrix's codes n (int16, 0..15) and group words (little-endian uint16), as the reference stores them."""
    row_major, words = matrix.storage()
    codes = unpack_q4(np.frombuffer(row_major, np.uint8).reshape(matrix.rows, -1), matrix.cols).astype(np.int16) + 8
    return codes, np.frombuffer(words, "<u2").reshape(matrix.rows, -1)


@dataclass(frozen=True)
class PanelLayout:
    """How a kernel set's panel layout arranges the quantized matrices it applies to."""

    applies: Callable[[str, int, int], bool]  # (qtype, cols, group size): whether it rearranges the matrix
    q8: Callable[[np.ndarray], np.ndarray]  # int8 codes -> bytes
    q4: Callable[[np.ndarray], np.ndarray]  # int4 codes in [-8, 7] -> bytes
    q4z: Callable[[np.ndarray], np.ndarray]  # q4z's codes as n - 8 in [-8, 7] -> bytes
    q4_scale_rows: int  # q4: the rows whose scales sit together, group by group
    q4z_word_rows: int  # q4z: the rows whose group words sit together, group by group
    f32: Callable[[np.ndarray], np.ndarray] | None = None  # float32 values -> float32 values; None: row-major
    heights: tuple[tuple[str, int], ...] = ()  # (qtype, rows per panel): the row count the layout pads to
    q8_scale_rows: int = 4  # q8: the rows whose scales sit together, group by group


PANEL_LAYOUTS = {
    NEON_PANELS: PanelLayout(
        panel_applies,
        panel_q8,
        pair_panels_q4,
        panel_q4,
        q4_scale_rows=8,
        q4z_word_rows=4,
        f32=panel_f32,
        heights=(("fp32", 4), ("q8", 4), ("q4", 8), ("q4z", 4)),
    ),
    M7_PANELS: PanelLayout(
        m7_panel_applies,
        m7_panels_q8,
        m7_pairs_q4,
        m7_pairs_q4,
        q4_scale_rows=2,
        q4z_word_rows=2,
        heights=(("q8", 4), ("q4", 2), ("q4z", 2)),
    ),
    X86_PANELS: PanelLayout(
        x86_panel_applies,
        x86_panels_q8,
        x86_panels_q4,
        x86_panels_q4,  # q4z's codes n - 8 in, its n stored
        q4_scale_rows=8,
        q4z_word_rows=8,
        f32=x86_panels_f32,
        heights=(("fp32", 8), ("q8", 8), ("q4", 8), ("q4z", 8)),
        q8_scale_rows=8,
    ),
}


def stored_bytes(qtype: str, rows: int, cols: int, group_size: int, layout: str = REFERENCE) -> int:
    """What a ``(rows, cols)`` matrix of ``qtype`` stores in ``layout`` (the length of :func:`storage`'s two parts,
    without the matrix): the reference's bytes, for its rows padded up to the layout's panel height where it
    applies."""
    panels = PANEL_LAYOUTS.get(layout)
    height = dict(panels.heights).get(qtype, 1) if panels is not None else 1
    if height > 1 and panels is not None and panels.applies(qtype, cols, group_size):
        rows = -(-rows // height) * height
    return matrix_bytes(qtype, rows, cols, group_size)


def storage(matrix: QuantizedMatrix, layout: str = REFERENCE) -> tuple[bytes, bytes]:
    """A (rows, cols) matrix's bytes as the runtime links them in ``layout``: (weights, scales)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown weight layout {layout!r}; known: {', '.join(LAYOUTS)}")
    panels = PANEL_LAYOUTS.get(layout)
    if panels is None or not panels.applies(matrix.qtype, matrix.cols, matrix.group_size):
        return matrix.storage()
    if matrix.qtype == "fp32":
        if panels.f32 is None:
            return matrix.storage()
        return panels.f32(matrix.q).astype("<f4").tobytes(), b""
    assert matrix.scales is not None and matrix.q.ndim == 2
    if matrix.qtype == "q4z":
        codes, words = _q4z_codes_and_words(matrix)
        return panels.q4z(codes - 8).tobytes(), interleave(words, panels.q4z_word_rows, 1).tobytes()
    if matrix.qtype == "q4":
        return panels.q4(matrix.q).tobytes(), panel_scales(matrix.scales, panels.q4_scale_rows).astype("<f4").tobytes()
    return panels.q8(matrix.q).tobytes(), panel_scales(matrix.scales, panels.q8_scale_rows).astype("<f4").tobytes()
