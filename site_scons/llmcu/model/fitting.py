"""Fitting a group-quantized matrix: which integer codes and which scale per group.

The storage format (llmcu.model.quantize, runtime_c/README.md) fixes only what a kernel reads: per group of a row one
float32 scale ``s`` and integer codes ``q`` in ``[qmin, qmax]`` (q8: -127..127, q4: -8..7), the weight being
``q * s``. How ``q`` and ``s`` are chosen is free, and the kernels never know. Three fits, each better than the
one before on the measurements in docs/models-and-quantization.md ("Quantization"):

- ``absmax``: ``s = max|w| / qmax``, ``q = round(w / s)`` (llama2.c's export; q4 then uses 15 of its 16 codes
  and each group's scale is set by its single largest weight);
- ``search``: per group, the scale that minimises the squared error weighted by each input channel's importance
  (the mean square of that channel in calibration, or 1 without calibration), searched over a grid around
  ``max|w| / qmax`` that includes the asymmetric ``max|w| / 8`` of q4, then refitted by least squares for the
  codes it chose;
- ``gptq``: GPTQ's error feedback. Columns are quantized left to right; the error each one leaves is spread
  over the not yet quantized columns of the row through the inverse of the input's second moment ``H``, so
  that ``W x`` rather than ``W`` stays close. A group's scale is searched (as ``search``) when the
  quantization reaches its first column, on the weights the feedback has already moved.

``q4z`` (:func:`fit_q4z`) adds a zero point per group: the same three methods choose a scale and an offset
that is a whole number of steps (llmcu.model.quantize describes the format).

Everything is float64 numpy, vectorised over rows, and portable: every sum is in numpy's own order or exact
(llmcu.model.portable), never BLAS's or LAPACK's, so the codes are the same bytes on every CPU. A stories15M-shaped
model fits in ~17 s
with GPTQ (plus ~8 s of calibration), stories260K in under a second.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from ..core.errors import QuantizationError
from . import portable

# The fits, the default (and best) first.
FITS = ("gptq", "search", "absmax")
# The grid of max|w| / scale ratios the search tries, relative to qmax: q4 tries 5.6 .. 8.4 (and 8 reaches the
# asymmetric code -8), q8 a narrower band, where rounding is already fine.
_GRID = {"q4": np.linspace(0.80, 1.20, 17), "q8": np.linspace(0.94, 1.02, 5)}
# GPTQ's damping: a fraction of H's mean diagonal added to the diagonal, so that H is safely invertible.
GPTQ_DAMPING = 0.01


def code_range(qtype: str) -> tuple[int, int]:
    """The integer codes a type stores: q8 -127..127 (m7_panels needs -128 free), q4 all 16: -8..7."""
    return {"q8": (-127, 127), "q4": (-8, 7)}[qtype]


def round_half_away(values: np.ndarray) -> np.ndarray:
    """C's ``roundf``: halves round away from zero. Computed in float64, where ``|v| + 0.5`` is exact."""
    wide = np.asarray(values, dtype=np.float64)
    return np.sign(wide) * np.floor(np.abs(wide) + 0.5)


def group_bounds(cols: int, group_size: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` column range of each group of a row."""
    return [(start, min(start + group_size, cols)) for start in range(0, cols, group_size)]


def grouped(shape: tuple[int, int], group_size: int) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
    """A ``(rows, cols)`` matrix's groups (``group_bounds``), and its int8 codes and float32 scales, zero, to fill
    group by group."""
    rows, cols = shape
    groups = group_bounds(cols, group_size)
    return groups, np.zeros((rows, cols), dtype=np.int8), np.zeros((rows, len(groups)), dtype=np.float32)


def absmax_groups(matrix: np.ndarray, group_size: int, qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """The contract's run-time rule, in float32 as the C runtime computes it: per group ``s = max|w| / qmax``,
    ``q = roundf(w / s)`` clipped to ``[-qmax, qmax]``. Returns int8 ``(rows, cols)`` codes and float32
    ``(rows, ngroups)`` scales."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    groups, q, scales = grouped(matrix.shape, group_size)
    for g, (start, end) in enumerate(groups):
        block = matrix[:, start:end]
        scale = (np.max(np.abs(block), axis=1) / np.float32(qmax)).astype(np.float32)
        safe = np.where(scale == 0, np.float32(1), scale).astype(np.float32)
        codes = np.clip(round_half_away((block / safe[:, None]).astype(np.float32)), -qmax, qmax)
        codes[scale == 0, :] = 0
        q[:, start:end] = codes.astype(np.int8)
        scales[:, g] = scale
    return q, scales


def codes_for(block: np.ndarray, scales: np.ndarray, qmin: int, qmax: int) -> np.ndarray:
    """``clip(round(w / s))`` for a ``(rows, n)`` block and ``(rows,)`` scales (a zero scale gives zero codes).
    Ties round to even: the codes are stored, so no kernel repeats this rounding, and it is the fast one."""
    scales32 = np.asarray(scales, dtype=np.float32)
    safe = np.where(scales32 == 0, np.float32(1), scales32).astype(np.float64)
    codes = np.clip(np.rint(np.asarray(block, dtype=np.float64) / safe[:, None]), qmin, qmax)
    codes[scales32 == 0, :] = 0
    return codes


def search_scales(block: np.ndarray, qtype: str, importance: np.ndarray | None = None) -> np.ndarray:
    """Per row of a ``(rows, n)`` group block, the float32 scale with the least importance-weighted squared error:
    for each ratio of the grid the plain scale ``max|w| / (qmax * ratio)`` and the least-squares scale for the
    codes the plain one gives."""
    qmin, qmax = code_range(qtype)
    block = np.asarray(block, dtype=np.float64)
    n = block.shape[1]
    weight = np.ones(n) if importance is None else np.maximum(np.asarray(importance, dtype=np.float64), 1e-12)
    amax = np.max(np.abs(block), axis=1)
    best_scale = (amax / qmax).astype(np.float32)
    best_error = _weighted_error(block, best_scale, codes_for(block, best_scale, qmin, qmax), weight)
    for ratio in _GRID[qtype]:
        plain = (amax / (qmax * ratio)).astype(np.float32)
        codes = codes_for(block, plain, qmin, qmax)
        num, den = (codes * block * weight).sum(axis=1), (codes * codes * weight).sum(axis=1)
        refit = np.where(den > 0, num / np.where(den > 0, den, 1), plain)
        refit = np.where(refit > 0, refit, plain).astype(np.float32)
        for candidate, candidate_codes in ((plain, codes), (refit, None)):
            if candidate_codes is None:
                candidate_codes = codes_for(block, candidate, qmin, qmax)
            error = _weighted_error(block, candidate, candidate_codes, weight)
            better = error < best_error
            best_scale = np.where(better, candidate, best_scale).astype(np.float32)
            best_error = np.where(better, error, best_error)
    best_scale[amax == 0] = 0
    return best_scale


def _weighted_error(block: np.ndarray, scales: np.ndarray, codes: np.ndarray, weight: np.ndarray) -> np.ndarray:
    diff = block - codes * np.asarray(scales, dtype=np.float32).astype(np.float64)[:, None]
    return portable.weighted_sum(diff * diff, weight)


def fit_absmax(matrix: np.ndarray, qtype: str, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """llama2.c's fit: ``s = max|w| / qmax`` (q4: 7), codes in ``[-qmax, qmax]``."""
    return absmax_groups(matrix, group_size, code_range(qtype)[1])


def fit_search(
    matrix: np.ndarray, qtype: str, group_size: int, importance: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each group's scale searched for the least importance-weighted error (``importance``: per column)."""
    qmin, qmax = code_range(qtype)
    matrix = np.asarray(matrix, dtype=np.float64)
    groups, q, scales = grouped(matrix.shape, group_size)
    for g, (start, end) in enumerate(groups):
        block = matrix[:, start:end]
        scale = search_scales(block, qtype, None if importance is None else importance[start:end])
        q[:, start:end] = codes_for(block, scale, qmin, qmax).astype(np.int8)
        scales[:, g] = scale
    return q, scales


def _prepared_hessian(work: np.ndarray, hessian: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``H`` with dead inputs made harmless (their diagonal 1, ``work``'s columns zeroed in place), and each
    input's importance, ``H``'s diagonal."""
    cols = work.shape[1]
    h = np.array(hessian, dtype=np.float64)
    if h.shape != (cols, cols):
        raise QuantizationError(f"GPTQ: a {h.shape} second moment for a matrix of {cols} columns")
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    work[:, dead] = 0.0
    return h, np.diag(h).copy()


def _inverse_factor(h: np.ndarray) -> np.ndarray:
    """The upper Cholesky factor of the damped ``H^-1``: row j holds how column j's error moves the columns
    after it."""
    h = h.copy()
    h[np.diag_indices(len(h))] += GPTQ_DAMPING * float(np.mean(np.diag(h)))
    try:
        return portable.inverse_upper_factor(h)
    except ValueError as error:
        raise QuantizationError(f"GPTQ: the calibration's second moment cannot be inverted ({error})") from None


def _feedback_group(
    work: np.ndarray, upper: np.ndarray, start: int, end: int, codes_of: Callable[[np.ndarray], np.ndarray], scale
) -> np.ndarray:
    """GPTQ over one group's columns: each column's codes (``codes_of`` of the ``(rows, 1)`` column, times
    ``scale`` the weight), its error spread over the group's later columns, the group's errors over the row's
    later groups (``work`` is updated in place). Returns the group's codes."""
    rows = work.shape[0]
    scale64 = np.asarray(scale, dtype=np.float32).astype(np.float64)
    codes = np.zeros((rows, end - start))
    errors = np.zeros((rows, end - start))
    for j in range(start, end):
        codes[:, j - start] = codes_of(work[:, j : j + 1])[:, 0]
        error = (work[:, j] - codes[:, j - start] * scale64) / upper[j, j]
        work[:, j + 1 : end] -= np.outer(error, upper[j, j + 1 : end])
        errors[:, j - start] = error
    if end < work.shape[1]:
        work[:, end:] -= portable.fixed_matmul(errors, upper[start:end, end:])
    return codes


def fit_gptq(matrix: np.ndarray, qtype: str, group_size: int, hessian: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GPTQ with per-group scales: ``hessian`` is the input's second moment ``E[x x^T]`` (cols x cols)."""
    qmin, qmax = code_range(qtype)
    work = np.array(matrix, dtype=np.float64)
    h, importance = _prepared_hessian(work, hessian)
    upper = _inverse_factor(h)
    groups, q, scales = grouped(work.shape, group_size)
    for g, (start, end) in enumerate(groups):
        scale = search_scales(work[:, start:end], qtype, importance[start:end])
        scales[:, g] = scale
        codes = _feedback_group(work, upper, start, end, partial(codes_for, scales=scale, qmin=qmin, qmax=qmax), scale)
        q[:, start:end] = codes.astype(np.int8)
    return q, scales


# ---- q4z: 4-bit codes with a zero point per group and a 16-bit group word ----
#
# A q4z group stores codes n in 0..15 and one uint16: bits 3..0 the zero point z, and with those bits cleared
# the word is the scale as an IEEE binary16 number that is positive and normal (exponent field 1..30) with 6
# mantissa bits: 2^(e - 15) * (1 + m / 64), from 2^-14 to 65024. Hardware half-precision conversion (VCVTB on
# the Cortex-M7, F16C, NEON) decodes it in one instruction. The weight is scale * (n - z): an offset the size
# of a whole number of steps lets a group whose weights lean to one side use all 16 codes on them.
Q4Z_SCALE_MIN = 2.0**-14
Q4Z_SCALE_MAX = 2.0**15 * (1 + 63 / 64)


def q4z_decode(words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint16 group words -> (float32 scales, uint8 zero points), exactly as the C runtime decodes them."""
    words = np.asarray(words, dtype=np.uint32)
    bits = ((words & 0xFFF0) << 13) + 0x38000000
    return bits.astype(np.uint32).view(np.float32), (words & 15).astype(np.uint8)


def q4z_encode(scales: np.ndarray, zeros: np.ndarray) -> np.ndarray:
    """Representable float32 scales (:func:`q4z_round_scale`) and zero points 0..15 -> uint16 group words."""
    bits = np.asarray(scales, dtype=np.float32).view(np.uint32).astype(np.int64)
    scale_bits = ((bits - 0x38000000) >> 13) & 0xFFF0
    return (scale_bits | np.asarray(zeros, dtype=np.int64)).astype(np.uint16)


def q4z_round_scale(scales: np.ndarray) -> np.ndarray:
    """The nearest representable q4z scale (6 mantissa bits, 2^-14 .. 65024) of each positive scale."""
    wide = np.clip(np.asarray(scales, dtype=np.float64), Q4Z_SCALE_MIN, Q4Z_SCALE_MAX)
    mantissa, exponent = np.frexp(wide)  # wide = mantissa * 2^exponent, mantissa in [0.5, 1)
    steps = np.rint(mantissa * 128) / 128  # 1 + 6 bits
    return np.clip(steps * np.exp2(exponent), Q4Z_SCALE_MIN, Q4Z_SCALE_MAX).astype(np.float32)


def _q4z_codes(block: np.ndarray, scales: np.ndarray, zeros: np.ndarray) -> np.ndarray:
    """``n - z`` for each weight of a ``(rows, n)`` block: ``clip(rint(w / s) + z, 0, 15) - z``."""
    n = np.clip(np.rint(block / scales.astype(np.float64)[:, None]) + zeros[:, None], 0, 15)
    return n - zeros[:, None]


# Shrinks of the group's range [min(w, 0), max(w, 0)] from each end that the q4z search tries.
_Q4Z_SHRINK = np.linspace(0.0, 0.24, 5)


def search_q4z(block: np.ndarray, importance: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a ``(rows, n)`` group block, the (scale, zero point) with the least importance-weighted
    squared error: ranges shrunk from either end, each with its least-squares scale for the codes it gives."""
    block = np.asarray(block, dtype=np.float64)
    weight = np.ones(block.shape[1]) if importance is None else np.maximum(np.asarray(importance, np.float64), 1e-12)
    low, high = np.minimum(block.min(axis=1), 0.0), np.maximum(block.max(axis=1), 0.0)
    best_error = np.full(len(block), np.inf)
    best_scale = np.full(len(block), Q4Z_SCALE_MIN, dtype=np.float32)
    best_zero = np.zeros(len(block), dtype=np.uint8)
    for cut_low in _Q4Z_SHRINK:
        for cut_high in _Q4Z_SHRINK:
            lo, hi = low * (1 - cut_low), high * (1 - cut_high)
            plain = q4z_round_scale(np.maximum((hi - lo) / 15, Q4Z_SCALE_MIN))
            zeros = np.clip(np.rint(-lo / plain), 0, 15).astype(np.uint8)
            codes = _q4z_codes(block, plain, zeros)
            num, den = portable.weighted_sum(codes * block, weight), portable.weighted_sum(codes * codes, weight)
            refit = q4z_round_scale(np.where(den > 0, num / np.where(den > 0, den, 1), plain))
            for scale, candidate in ((plain, codes), (refit, None)):
                if candidate is None:
                    candidate = _q4z_codes(block, scale, zeros)
                diff = block - candidate * scale.astype(np.float64)[:, None]
                error = portable.weighted_sum(diff * diff, weight)
                better = error < best_error
                best_error = np.where(better, error, best_error)
                best_scale = np.where(better, scale, best_scale).astype(np.float32)
                best_zero = np.where(better, zeros, best_zero).astype(np.uint8)
    return best_scale, best_zero


def fit_q4z(
    matrix: np.ndarray, group_size: int, method: str, hessian: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q4z codes ``n - z`` (int8, -15..15), float32 scales and uint8 zero points of a ``(rows, cols)`` matrix.
    ``absmax`` and ``search`` search each group alone (absmax: unweighted); ``gptq`` adds error feedback."""
    work = np.array(matrix, dtype=np.float64)
    groups, q, scales = grouped(work.shape, group_size)
    zeros = np.zeros(scales.shape, dtype=np.uint8)
    upper, importance = None, None
    if hessian is not None and method != "absmax":
        h, importance = _prepared_hessian(work, hessian)
        if method == "gptq":
            upper = _inverse_factor(h)
    for g, (start, end) in enumerate(groups):
        scale, zero = search_q4z(work[:, start:end], None if importance is None else importance[start:end])
        scales[:, g], zeros[:, g] = scale, zero
        if upper is None:
            codes = _q4z_codes(work[:, start:end], scale, zero)
        else:
            codes = _feedback_group(work, upper, start, end, partial(_q4z_codes, scales=scale, zeros=zero), scale)
        q[:, start:end] = codes.astype(np.int8)
    return q, scales, zeros


def fit_exact(matrix: np.ndarray, qtype: str, group_size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(q, scales)`` that give back every value of ``matrix`` exactly (``q * s`` in float32 equal to it), or None
    when some group has none: for a matrix that was group-quantized already at this group size, such as a GGUF
    file's Q8_0 or Q4_0 tensors, so that their codes are kept and not fitted again.

    A group's values are ``c * d``. Its largest magnitude ``m`` is ``k * d`` for some code ``k``, so ``d`` is
    ``m / k`` (exact in float32: the true quotient is representable) for one of the few ``k`` in the code range.
    The candidates are tried most likely first (``k = qmax``, the absmax rule of Q8_0, then ``k = qmin``, Q4_0's
    ``d = max / -8``), and a positive scale before a negative one; any that reproduces the group is as good as
    the file's own, since the kernels only ever see ``q * s``. A negative scale is legal: Q4_0 stores the
    largest weight as code -8, so a group whose largest weight is positive has a negative ``d``."""
    qmin, qmax = code_range(qtype)
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    rows = matrix.shape[0]
    groups, q, scales = grouped(matrix.shape, group_size)
    order = sorted(range(max(qmax, -qmin), 0, -1), key=lambda k: (k not in (qmax, -qmin), -k))
    for g, (start, end) in enumerate(groups):
        block = matrix[:, start:end]
        peak = block[np.arange(rows), np.argmax(np.abs(block), axis=1)]  # the largest magnitude, with its sign
        todo = peak != 0  # an all-zero group keeps scale 0 and codes 0
        for sign in (1, -1):
            for k in order:
                if not todo.any():
                    break
                code = sign * k * np.sign(peak[todo])  # the code the peak would have
                usable = (code >= qmin) & (code <= qmax)
                candidate = (peak[todo] / np.where(usable, code, 1)).astype(np.float32)
                codes = np.rint(block[todo] / candidate[:, None].astype(np.float64))
                good = usable & np.all((codes >= qmin) & (codes <= qmax), axis=1)
                good &= np.all((codes * candidate[:, None]).astype(np.float32) == block[todo], axis=1)
                index = np.flatnonzero(todo)[good]
                q[index, start:end] = codes[good].astype(np.int8)
                scales[index, g] = candidate[good]
                todo[index] = False
        if todo.any():
            return None
    return q, scales


def fit(
    matrix: np.ndarray,
    qtype: str,
    group_size: int,
    method: str,
    hessian: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(q, scales)`` of a ``(rows, cols)`` matrix by ``method``; ``gptq`` without a ``hessian`` is ``search``."""
    if method not in FITS:
        raise QuantizationError(f"unknown fit {method!r}; allowed: {', '.join(FITS)}")
    if method == "absmax":
        return fit_absmax(matrix, qtype, group_size)
    if method == "gptq" and hessian is not None:
        return fit_gptq(matrix, qtype, group_size, hessian)
    importance = None if hessian is None else np.diag(hessian).copy()
    return fit_search(matrix, qtype, group_size, importance)
