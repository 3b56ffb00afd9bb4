"""Arithmetic whose results do not depend on the CPU, its SIMD level or the BLAS library.

Whatever decides bytes in a build (the calibration's statistics and sampled stories, the q16 KV-cache scales, GPTQ's
error feedback, the quality figures that steer ``quant=auto``) must give the same bits on a developer's laptop, in
CI and on a colleague's machine. numpy does not promise that: ``@``/``np.dot``/``np.linalg`` go to BLAS, whose
kernels and summation order change with the CPU (OpenBLAS picks them at run time), and ``np.exp``, ``np.log``,
``np.sin``, ``np.cos`` and ``np.power`` have SIMD variants (AVX2, AVX-512, SVML) that differ in the last bits.

What is portable, and all this module uses: IEEE basic operations elementwise (``+ - * /``, ``sqrt``, ``rint``,
``ldexp``, ``frexp``, comparisons), which are correctly rounded on every CPU, reductions in numpy's own fixed order
(pairwise along a row, sequential across rows), and BLAS on float64 arrays that hold *integers* whose every partial
sum stays below 2^53: such a sum is exact, so its order does not matter (:func:`fixed_matmul`).
"""

from __future__ import annotations

import math

import numpy as np

F64 = np.float64
# A float64 sum of integers is exact while every partial sum stays below 2^53; products are kept below 2^52 / K.
_EXACT_BITS = 52

# ---------------------------------------------------------------------------------------------------------
# Matrix products
# ---------------------------------------------------------------------------------------------------------


def product_bits(k: int) -> int:
    """The bits each factor of a length-``k`` dot product may keep so that the integer sum is exact in float64:
    ``k * 2^(2 bits) <= 2^52`` (23 bits for k <= 64, 21 for k <= 1024, 19 up to 16384)."""
    return max((_EXACT_BITS - math.ceil(math.log2(max(k, 1)))) // 2, 8)


def _exponents(x: np.ndarray, axis: int, bits: int) -> np.ndarray:
    """Per slice along ``axis``, the power of two ``e`` with ``max|x| / 2^e <= 2^bits`` (0 for an all-zero slice)."""
    with np.errstate(invalid="ignore"):
        peak = np.max(np.abs(x), axis=axis, keepdims=True)
    _, exponent = np.frexp(np.where(np.isfinite(peak), peak, 0.0))  # peak = m * 2^exponent, m in [0.5, 1)
    return exponent.astype(np.int64) - bits


class FixedMatrix:
    """A ``(..., k, n)`` right-hand factor prepared once for :func:`fixed_matmul`: each column as integers (float64)
    of at most ``bits`` bits and the column's power-of-two scale."""

    def __init__(self, b: np.ndarray, bits: int | None = None) -> None:
        b = np.asarray(b, dtype=F64)
        self.k = b.shape[-2]
        self.bits = product_bits(self.k) if bits is None else bits
        self.exponents = _exponents(b, -2, self.bits)
        self.ints = np.rint(np.ldexp(b, -self.exponents))

    @classmethod
    def of_rows(cls, w: np.ndarray) -> FixedMatrix:
        """A weight matrix ``(n, k)`` (rows are outputs) as the factor of ``x @ w.T``."""
        return cls(np.asarray(w).T)


def fixed_matmul(a: np.ndarray, b: np.ndarray | FixedMatrix) -> np.ndarray:
    """``a @ b`` (float64) with the same bits on every machine. Each row of ``a`` and each column of ``b`` is
    rounded to integers of ``product_bits(k)`` bits times a power of two (21 significant bits for k <= 1024,
    about float32's precision), so every product is an integer and every sum exact: BLAS may add in any order.
    Broadcasts over leading axes like ``np.matmul``."""
    fixed = b if isinstance(b, FixedMatrix) else FixedMatrix(b)
    a = np.asarray(a, dtype=F64)
    if a.shape[-1] != fixed.k:
        raise ValueError(f"fixed_matmul: {a.shape} @ {fixed.ints.shape}")
    a_exponents = _exponents(a, -1, fixed.bits)
    a_ints = np.rint(np.ldexp(a, -a_exponents))
    exact = a_ints @ fixed.ints
    return np.ldexp(exact, a_exponents + fixed.exponents)


def gram(rows: np.ndarray) -> np.ndarray:
    """``rows.T @ rows`` (float64) with the same bits on every machine: one power-of-two scale for the whole block
    (so that every product of the sum has the same unit) and an exact integer sum."""
    rows = np.asarray(rows, dtype=F64)
    if rows.size == 0:
        return np.zeros((rows.shape[1], rows.shape[1]))
    exponent = int(_exponents(rows, None, product_bits(rows.shape[0])).reshape(-1)[0])  # type: ignore[arg-type]
    ints = np.rint(np.ldexp(rows, -exponent))
    return np.ldexp(ints.T @ ints, 2 * exponent)


def weighted_sum(values: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``values @ weight`` along the last axis in numpy's own (pairwise, CPU-independent) order, not BLAS's."""
    return (np.asarray(values, dtype=F64) * np.asarray(weight, dtype=F64)).sum(axis=-1)


# ---------------------------------------------------------------------------------------------------------
# Elementary functions (float64, within a few units in the last place; the same bits everywhere)
# ---------------------------------------------------------------------------------------------------------

_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that n * _LN2_HI is exact for |n| < 2^11
_LN2_LO = 1.90821492927058770002e-10
_LOG2E = 1.4426950408889634
_EXP_TERMS = tuple(1.0 / math.factorial(k) for k in range(14))  # |r| <= ln2/2: the 14th term is below 1e-17


def exp(x: np.ndarray) -> np.ndarray:
    """``e^x``: ``x = n ln2 + r`` (Cody and Waite), a Taylor polynomial for ``e^r``, then ``2^n`` by ``ldexp``."""
    x = np.asarray(x, dtype=F64)
    nan = np.isnan(x)
    clipped = np.clip(np.where(nan, 0.0, x), -746.0, 710.0)
    n = np.rint(clipped * _LOG2E)
    r = (clipped - n * _LN2_HI) - n * _LN2_LO
    p = np.full_like(r, _EXP_TERMS[-1])
    for c in _EXP_TERMS[-2::-1]:
        p = p * r + c
    with np.errstate(over="ignore"):
        out = np.ldexp(p, n.astype(np.int64))
    return np.where(nan, np.nan, out)


_SQRT_HALF = 0.7071067811865476


def log(x: np.ndarray) -> np.ndarray:
    """Natural logarithm of positive ``x``: ``x = m 2^e`` with ``m`` in [sqrt(1/2), sqrt(2)), then
    ``ln m = 2 atanh((m - 1) / (m + 1))`` as a series. Zero gives -inf, negatives and NaN give NaN."""
    x = np.asarray(x, dtype=F64)
    positive = np.isfinite(x) & (x > 0)
    m, e = np.frexp(np.where(positive, x, 1.0))
    low = m < _SQRT_HALF
    m = np.where(low, m * 2.0, m)
    e = (e - low).astype(F64)
    f = (m - 1.0) / (m + 1.0)  # |f| <= 0.1716
    f2 = f * f
    series = np.full_like(f, 1.0 / 23.0)
    for k in range(21, 0, -2):
        series = series * f2 + 1.0 / k
    out = (e * _LN2_HI + 2.0 * f * series) + e * _LN2_LO
    out = np.where(x == 0, -np.inf, out)
    out = np.where(np.isposinf(x), np.inf, out)
    return np.where(positive | (x == 0) | np.isposinf(x), out, np.nan)


_PIO2_1 = 1.57079632673412561417e00  # pi/2 in three parts (fdlibm's): k * _PIO2_1 is exact for k < 2^20
_PIO2_2 = 6.07710050630396597660e-11
_PIO2_3 = 2.02226624871116645580e-21
_TWO_OVER_PI = 0.6366197723675814


def cos_sin(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(cos x, sin x)`` for ``|x| < 2^19`` (RoPE's angles): reduced by pi/2 in three parts, Taylor polynomials
    on [-pi/4, pi/4], the quadrant applied."""
    x = np.asarray(x, dtype=F64)
    k = np.rint(x * _TWO_OVER_PI)
    r = ((x - k * _PIO2_1) - k * _PIO2_2) - k * _PIO2_3
    r2 = r * r
    sin_r = np.full_like(r, (-1) ** 8 / math.factorial(17))
    for j in range(7, -1, -1):
        sin_r = sin_r * r2 + (-1) ** j / math.factorial(2 * j + 1)
    sin_r = sin_r * r
    cos_r = np.full_like(r, (-1) ** 9 / math.factorial(18))
    for j in range(8, -1, -1):
        cos_r = cos_r * r2 + (-1) ** j / math.factorial(2 * j)
    quadrant = k.astype(np.int64) & 3
    cos_x = np.choose(quadrant, (cos_r, -sin_r, -cos_r, sin_r))
    sin_x = np.choose(quadrant, (sin_r, cos_r, -sin_r, -cos_r))
    return cos_x, sin_x


def power(base: float, exponents: np.ndarray) -> np.ndarray:
    """``base ** exponents`` for a positive ``base``, as ``exp(exponents * ln base)``."""
    return exp(np.asarray(exponents, dtype=F64) * log(np.asarray(base, dtype=F64)))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis`` in float64."""
    wide = np.asarray(x, dtype=F64)
    e = exp(wide - wide.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Log-softmax along ``axis`` in float64."""
    wide = np.asarray(x, dtype=F64)
    shifted = wide - wide.max(axis=axis, keepdims=True)
    return shifted - log(exp(shifted).sum(axis=axis, keepdims=True))


# ---------------------------------------------------------------------------------------------------------
# Factorizations (elementwise updates in a fixed order)
# ---------------------------------------------------------------------------------------------------------


def cholesky_lower(a: np.ndarray) -> np.ndarray:
    """``L`` lower with ``a = L L^T`` for a symmetric positive definite ``a``, column by column with rank-one
    updates of the rest; raises ValueError when ``a`` is not positive definite."""
    work = np.array(a, dtype=F64)
    n = len(work)
    lower = np.zeros_like(work)
    for j in range(n):
        pivot = work[j, j]
        if not pivot > 0:
            raise ValueError(f"matrix is not positive definite (pivot {j} is {pivot})")
        column = work[j:, j] / math.sqrt(pivot)
        lower[j:, j] = column
        tail = column[1:]
        work[j + 1 :, j + 1 :] -= tail[:, None] * tail[None, :]
    return lower


def upper_inverse(upper: np.ndarray) -> np.ndarray:
    """The inverse of an upper triangular matrix with a non-zero diagonal, rows from the bottom up."""
    n = len(upper)
    out = np.zeros((n, n))
    pending = np.zeros((n, n))  # pending[i] = -sum over solved k > i of upper[i, k] * out[k]
    for i in range(n - 1, -1, -1):
        row = pending[i].copy()
        row[i] += 1.0
        out[i, i:] = row[i:] / upper[i, i]
        pending[:i, i:] -= upper[:i, i, None] * out[i, None, i:]
    return out


def inverse_upper_factor(h: np.ndarray) -> np.ndarray:
    """``U`` upper with ``h^-1 = U^T U`` (the upper Cholesky factor of ``h``'s inverse, as
    ``np.linalg.cholesky(np.linalg.inv(h)).T``): with ``h = R R^T``, ``R`` upper (the Cholesky factor of ``h`` with
    rows and columns reversed), ``U = R^-1``."""
    reversed_lower = cholesky_lower(np.asarray(h, dtype=F64)[::-1, ::-1])
    return upper_inverse(reversed_lower[::-1, ::-1])
