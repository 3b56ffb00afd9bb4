/*
 * NEON matrix-vector products for AArch64 (written for the Cortex-A55), out[i] = sum_j W[i][j] * x[j].
 * Replaces kernels/ref/matmul.c, so it defines the same three functions.
 *
 * Bit-exactness with the reference (runtime_c/README.md, "The numeric contract"):
 *
 * - matmul_f32 (default): over the fp32 panel layout (four rows' values per column side by side), one row
 *   per lane, each lane summing its row left to right with a separate multiply and add (no FMA): every row
 *   sees exactly the reference's operations, so the result is bit-identical. The speed comes from doing eight
 *   rows' chains side by side, a column of four rows per load.
 * - matmul_f32 with LLMCU_FAST_F32 (numerics=fast): FMA by lane, two partial sums per row. Not
 *   bit-identical; see the tolerance stated above its definition.
 * - matmul_q8 / matmul_q4: the integer dot product of each group is exact in int32 whatever the order,
 *   so it is computed with the dot-product instruction (SDOT, vdotq_s32: sixteen int8 products summed into
 *   four int32 lanes); the float part, out[i] = sum_g ((float)isum * ws[i][g]) * xs[g], stays sequential
 *   over g for each row, with four rows in the four lanes. Bit-identical.
 *
 * Without the dot-product extension (plain ARMv8.0-A, e.g. a Cortex-A53) the same integer sums are
 * formed with widening multiplies (SMULL + SADALP): slower, equally exact.
 */
#include <arm_neon.h>
#include <stddef.h>
#include <string.h>

#include "kernels/kernels.h"
#include "neon_common.h"

/* ---- fp32 ---- */

/*
 * fp32 matrices are stored in panels (site_scons/llmcu/builder/layouts.py, neon_panels, for every fp32 matrix of a
 * build with this set): rows in panels of four, zero rows padding the last, and per column the four rows' values
 * side by side, so that one vector load is one column of four rows and a panel is 4 * cols floats. Row r of a
 * range starting at a multiple of four (the thread pool splits at multiples of 16) is where the row-major offset
 * arithmetic of transformer.c puts it. Each activation x[j] then multiplies a whole column by lane, with no
 * transposition: two panels (eight rows) per pass share every load of x.
 */

#if defined(LLMCU_NUMERICS_FAST) && LLMCU_NUMERICS_FAST && !defined(LLMCU_FAST_F32)
#define LLMCU_FAST_F32 1 /* numerics=fast takes the FMA matmul below */
#endif

#ifndef LLMCU_FAST_F32

/* acc (lane k = row k of the panel) += column c * x_j, as the reference does it: the product rounded, then the
 * sum, separately (no FMA), and W[i][j] * x[j] in that operand order (it only matters for which NaN
 * propagates). Every lane sees its row's operations in the reference's order, so the result is bit-identical. */
#define F32_STEP(acc, column, xv, lane) vaddq_f32((acc), vmulq_laneq_f32((column), (xv), (lane)))

/* `np` (1 or 2) panels from panel p on: out rows 4p.. (at most `rows` - 4p of them stored). */
NEON_ALWAYS_INLINE void f32_panels_pass(float *out, const float *x, const float *w, int p, int np, int rows,
                                        int cols) {
    const float *w0 = w + (size_t)p * 4 * (size_t)cols, *w1 = w0 + (size_t)(np - 1) * 4 * (size_t)cols;
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = acc0; /* the reference's `val = 0.0f`, one per row */
    int j = 0;
    for (; j + 4 <= cols; j += 4) {
        float32x4_t xv = vld1q_f32(x + j);
        float32x4x4_t c = vld1q_f32_x4(w0 + 4 * (size_t)j); /* columns j..j+3 of four rows */
        acc0 = F32_STEP(acc0, c.val[0], xv, 0);
        acc0 = F32_STEP(acc0, c.val[1], xv, 1);
        acc0 = F32_STEP(acc0, c.val[2], xv, 2);
        acc0 = F32_STEP(acc0, c.val[3], xv, 3);
        if (np == 2) {
            c = vld1q_f32_x4(w1 + 4 * (size_t)j);
            acc1 = F32_STEP(acc1, c.val[0], xv, 0);
            acc1 = F32_STEP(acc1, c.val[1], xv, 1);
            acc1 = F32_STEP(acc1, c.val[2], xv, 2);
            acc1 = F32_STEP(acc1, c.val[3], xv, 3);
        }
    }
    for (; j < cols; j++) { /* the last cols % 4 columns */
        acc0 = vaddq_f32(acc0, vmulq_n_f32(vld1q_f32(w0 + 4 * (size_t)j), x[j]));
        if (np == 2) {
            acc1 = vaddq_f32(acc1, vmulq_n_f32(vld1q_f32(w1 + 4 * (size_t)j), x[j]));
        }
    }
    int valid = rows - 4 * p;
    store_lanes_f32(out + 4 * p, acc0, valid < 4 ? valid : 4);
    if (np == 2) {
        valid -= 4;
        store_lanes_f32(out + 4 * p + 4, acc1, valid < 4 ? valid : 4);
    }
}

#else /* LLMCU_FAST_F32 */

/*
 * The fast fp32 matmul: fused multiply-adds by lane into two partial sums per row (columns 4k, 4k + 2 into one,
 * 4k + 1, 4k + 3 into the other, so two independent FMA chains per panel hide the latency), added at the end.
 * This changes the rounding, so it is NOT bit-identical to the reference.
 *
 * Stated tolerance (tests/runtime/test_neon_kernels.py checks it on every matmul_f32 case of tests/c/test_kernels.c):
 * for every row i, unless something overflows to infinity,
 *
 *     |out_fast[i] - out_ref[i]| <= 2 * gamma(cols) * sum_j |W[i][j] * x[j]|  +  2 * cols * 2^-149,
 *     gamma(n) = n * u / (1 - n * u),  u = 2^-24 (float32's unit roundoff),
 *
 * i.e. a relative error of at most 2 * gamma(cols) ~= cols * 1.19e-7 measured against the sum of the
 * magnitudes of the products: 7.6e-6 for cols = 64, 3.4e-5 for cols = 288, 9.2e-5 for cols = 768. The
 * second term only matters for products in float32's subnormal range, where a rounding can lose up to
 * 2^-150 absolutely. Why: however n float32 products are summed, with or without the products rounded
 * first, the result is within gamma(n) * sum |W x| of the exact dot product (Higham, "Accuracy and Stability
 * of Numerical Algorithms", 2nd ed., section 3.1; no term goes through more than cols roundings here), and
 * both the reference and this kernel are such sums. Relative to |out| itself no bound exists: when the
 * products cancel, the reference's own result is mostly rounding error.
 */
NEON_ALWAYS_INLINE void f32_panels_pass(float *out, const float *x, const float *w, int p, int np, int rows,
                                        int cols) {
    const float *w0 = w + (size_t)p * 4 * (size_t)cols, *w1 = w0 + (size_t)(np - 1) * 4 * (size_t)cols;
    float32x4_t a0 = vdupq_n_f32(0.0f), b0 = a0, a1 = a0, b1 = a0;
    int j = 0;
    for (; j + 4 <= cols; j += 4) {
        float32x4_t xv = vld1q_f32(x + j);
        float32x4x4_t c = vld1q_f32_x4(w0 + 4 * (size_t)j);
        a0 = vfmaq_laneq_f32(a0, c.val[0], xv, 0);
        b0 = vfmaq_laneq_f32(b0, c.val[1], xv, 1);
        a0 = vfmaq_laneq_f32(a0, c.val[2], xv, 2);
        b0 = vfmaq_laneq_f32(b0, c.val[3], xv, 3);
        if (np == 2) {
            c = vld1q_f32_x4(w1 + 4 * (size_t)j);
            a1 = vfmaq_laneq_f32(a1, c.val[0], xv, 0);
            b1 = vfmaq_laneq_f32(b1, c.val[1], xv, 1);
            a1 = vfmaq_laneq_f32(a1, c.val[2], xv, 2);
            b1 = vfmaq_laneq_f32(b1, c.val[3], xv, 3);
        }
    }
    for (; j < cols; j++) { /* the last cols % 4 columns */
        a0 = vfmaq_n_f32(a0, vld1q_f32(w0 + 4 * (size_t)j), x[j]);
        if (np == 2) {
            a1 = vfmaq_n_f32(a1, vld1q_f32(w1 + 4 * (size_t)j), x[j]);
        }
    }
    int valid = rows - 4 * p;
    store_lanes_f32(out + 4 * p, vaddq_f32(a0, b0), valid < 4 ? valid : 4);
    if (np == 2) {
        valid -= 4;
        store_lanes_f32(out + 4 * p + 4, vaddq_f32(a1, b1), valid < 4 ? valid : 4);
    }
}

#endif /* LLMCU_FAST_F32 */

void matmul_f32(float *out, const float *x, const float *w, int rows, int cols) {
    int panels = (rows + 3) / 4;
    int p = 0;
    for (; p + 2 <= panels; p += 2) {
        f32_panels_pass(out, x, w, p, 2, rows, cols);
    }
    if (p < panels) {
        f32_panels_pass(out, x, w, p, 1, rows, cols);
    }
}

/* ---- group-quantized weights: exact integer group sums, then the reference's float chain per row ---- */

/* acc + the sum of the 16 products a[k] * b[k], spread over acc's four int32 lanes (exact). */
static inline int32x4_t dot16(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(__ARM_FEATURE_DOTPROD)
    return vdotq_s32(acc, a, b);
#else
    /* An int8 product fits int16 (|p| <= 128 * 128 = 16384), and SADALP adds neighbouring pairs of them
     * into the int32 lanes. */
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    return vpadalq_s16(acc, vmull_high_s8(a, b));
#endif
}

/* Lanes 16 - n .. 15 all ones, the others zero (1 <= n <= 15): a load of 16 bytes at mask_table + n. */
static const int8_t mask_table[32] = {0, 0, 0, 0, 0, 0, 0, 0, 0,  0,  0,  0,  0,  0,  0,  0,
                                      -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1};

static inline int8x16_t last_lanes_mask(int n) { return vld1q_s8(mask_table + n); }

/* 16 q8 weights from a row of W, which the integer kernels walk as bytes (q8 and q4 alike). */
static inline int8x16_t load_s8(const uint8_t *p) { return vld1q_s8((const int8_t *)p); }

/* The four lanes' int32 totals of a0..a3, as one vector (lane r = the sum of a_r's lanes). */
static inline int32x4_t reduce4(int32x4_t a0, int32x4_t a1, int32x4_t a2, int32x4_t a3) {
    return vpaddq_s32(vpaddq_s32(a0, a1), vpaddq_s32(a2, a3));
}

/*
 * acc[r] += ((float)isum[r] * scales[r]) * xs_g: the reference's three float32 roundings in its order, for
 * the four rows in the four lanes. The int32 -> float32 conversion rounds to nearest like the C cast (it is
 * exact anyway below 2^24, i.e. for any group of at most 1040 columns).
 */
static inline float32x4_t scale_and_add(float32x4_t acc, int32x4_t isum, float32x4_t scales, float xs_g) {
    return vaddq_f32(acc, vmulq_n_f32(vmulq_f32(vcvtq_f32_s32(isum), scales), xs_g));
}

/*
 * The exact int32 dot products of four q8 rows with xq over the group's columns [start, end).
 *
 * Whole blocks of 16 columns go straight to SDOT. A group's last end - j < 16 columns would need a short
 * load; instead the 16 bytes that END at the group's end are loaded (they start inside this row, or in
 * the previous row of W, both in bounds, as long as end >= 16) and the activation lanes that belong to
 * columns already counted are zeroed, so those weights multiply 0. Only a matrix narrower than 16 columns
 * (or a first group shorter than 16) takes the zero-padded copy.
 */
static inline int32x4_t q8_group_dot4(const uint8_t *const r[4], const int8_t *xq, int start, int end) {
    int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0;
    int j = start;
    for (; j + 16 <= end; j += 16) {
        int8x16_t xv = vld1q_s8(xq + j);
        a0 = dot16(a0, load_s8(r[0] + j), xv);
        a1 = dot16(a1, load_s8(r[1] + j), xv);
        a2 = dot16(a2, load_s8(r[2] + j), xv);
        a3 = dot16(a3, load_s8(r[3] + j), xv);
    }
    int rest = end - j;
    if (rest > 0) {
        if (end >= 16) {
            int at = end - 16;
            int8x16_t xv = vandq_s8(vld1q_s8(xq + at), last_lanes_mask(rest));
            a0 = dot16(a0, load_s8(r[0] + at), xv);
            a1 = dot16(a1, load_s8(r[1] + at), xv);
            a2 = dot16(a2, load_s8(r[2] + at), xv);
            a3 = dot16(a3, load_s8(r[3] + at), xv);
        } else {
            int8_t xpad[16] = {0}, wpad[4][16] = {{0}};
            memcpy(xpad, xq + j, (size_t)rest);
            for (int k = 0; k < 4; k++) {
                memcpy(wpad[k], r[k] + j, (size_t)rest);
            }
            int8x16_t xv = vld1q_s8(xpad);
            a0 = dot16(a0, vld1q_s8(wpad[0]), xv);
            a1 = dot16(a1, vld1q_s8(wpad[1]), xv);
            a2 = dot16(a2, vld1q_s8(wpad[2]), xv);
            a3 = dot16(a3, vld1q_s8(wpad[3]), xv);
        }
    }
    return reduce4(a0, a1, a2, a3);
}

/*
 * The straight path of matmul_q8 and matmul_q4 for groups made of whole vector blocks (the usual group sizes),
 * and its per-group bookkeeping:
 *
 * - The integer accumulators are not cleared per group: they keep a running total over the row, and a
 *   group's sum is the difference between the totals after and before it. That is exact even if a total
 *   wraps around (NEON integer adds are modulo 2^32 and a group's own sum always fits an int32), and it
 *   saves four register clears per group.
 * - The scales of four groups are loaded at once, one contiguous vector per row, and transposed so that
 *   each group's vector holds its four rows' scales: three instructions per group instead of four lane
 *   loads and their address arithmetic.
 */
typedef struct {
    int32x4_t a0, a1, a2, a3; /* running integer totals of the four rows, spread over the lanes */
    int32x4_t done;           /* the totals (lane r = row r) after the last group that was scaled */
} running_sums;

/* The sum of the group since the previous call; `times16`: the sums are q4_dot32's, which carry a factor 16. */
static inline int32x4_t next_group_sum(running_sums *rs, int times16) {
    int32x4_t total = reduce4(rs->a0, rs->a1, rs->a2, rs->a3);
    int32x4_t group = vsubq_s32(total, rs->done);
    rs->done = total;
    return times16 ? vshrq_n_s32(group, 4) : group;
}

/*
 * q4: a byte holds column 2k (low nibble) and 2k + 1 (high nibble), each stored as q + 8.
 *
 * XOR with 0x88 flips bit 3 of both nibbles, which turns the stored q + 8 (0..15) into q as a 4-bit two's
 * complement number. Shifting the byte left by 4 then gives the low nibble's q * 16 as an int8, and
 * masking with 0xF0 the high nibble's q * 16: three operations for 32 weights, with no separate sign
 * extension or "- 8". The group's dot product comes out multiplied by 16, exactly (|16 q x| <= 128 * 128
 * still fits SDOT's int8 x int8 products), and an arithmetic shift right by 4 undoes it.
 *
 * The activations are split into even and odd columns by the de-interleaving load LD2, so that the
 * low-nibble vector meets the even columns and the high-nibble vector the odd ones.
 */
static inline int32x4_t q4_dot32(int32x4_t acc, uint8x16_t bytes, int8x16_t x_even, int8x16_t x_odd) {
    uint8x16_t q = veorq_u8(bytes, vdupq_n_u8(0x88));
    acc = dot16(acc, vreinterpretq_s8_u8(vshlq_n_u8(q, 4)), x_even);
    return dot16(acc, vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0xF0))), x_odd);
}

/*
 * The exact int32 dot products of four q4 rows (each starting on a byte boundary) with xq over [start, end);
 * start is even. Blocks of 32 columns (16 bytes) go to q4_dot32; the group's last pairs of columns use the
 * same end-aligned load and lane mask as q8 (in bytes: lanes of byte pairs), and a final odd column (the
 * last column of a row of odd length, in the low nibble of the row's last byte) is added by itself.
 */
static inline int32x4_t q4_group_dot4(const uint8_t *const r[4], const int8_t *xq, int start, int end) {
    int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0;
    int pairs_end = start + ((end - start) & ~1);
    int j = start;
    for (; j + 32 <= pairs_end; j += 32) {
        int8x16x2_t xv = vld2q_s8(xq + j);
        int b = j / 2;
        a0 = q4_dot32(a0, vld1q_u8(r[0] + b), xv.val[0], xv.val[1]);
        a1 = q4_dot32(a1, vld1q_u8(r[1] + b), xv.val[0], xv.val[1]);
        a2 = q4_dot32(a2, vld1q_u8(r[2] + b), xv.val[0], xv.val[1]);
        a3 = q4_dot32(a3, vld1q_u8(r[3] + b), xv.val[0], xv.val[1]);
    }
    int rest_bytes = (pairs_end - j) / 2;
    if (rest_bytes > 0) {
        int8x16_t even, odd;
        int b;
        if (pairs_end >= 32) {
            /* The 16 bytes ending at the group's last pair, and the 32 activations they cover. */
            b = pairs_end / 2 - 16;
            int8x16x2_t xv = vld2q_s8(xq + 2 * b);
            int8x16_t mask = last_lanes_mask(rest_bytes);
            even = vandq_s8(xv.val[0], mask);
            odd = vandq_s8(xv.val[1], mask);
        } else {
            int8_t xpad[32] = {0};
            memcpy(xpad, xq + j, (size_t)(pairs_end - j));
            int8x16x2_t xv = vld2q_s8(xpad);
            even = xv.val[0];
            odd = xv.val[1];
            b = -1; /* the weights are copied below */
        }
        if (b >= 0) {
            a0 = q4_dot32(a0, vld1q_u8(r[0] + b), even, odd);
            a1 = q4_dot32(a1, vld1q_u8(r[1] + b), even, odd);
            a2 = q4_dot32(a2, vld1q_u8(r[2] + b), even, odd);
            a3 = q4_dot32(a3, vld1q_u8(r[3] + b), even, odd);
        } else {
            uint8_t wpad[4][16] = {{0}};
            for (int k = 0; k < 4; k++) {
                memcpy(wpad[k], r[k] + j / 2, (size_t)rest_bytes);
            }
            a0 = q4_dot32(a0, vld1q_u8(wpad[0]), even, odd);
            a1 = q4_dot32(a1, vld1q_u8(wpad[1]), even, odd);
            a2 = q4_dot32(a2, vld1q_u8(wpad[2]), even, odd);
            a3 = q4_dot32(a3, vld1q_u8(wpad[3]), even, odd);
        }
    }
    /* Exact: every term above was a multiple of 16. */
    int32x4_t isum = vshrq_n_s32(reduce4(a0, a1, a2, a3), 4);
    if (pairs_end < end) {
        int last = end - 1, b = last / 2;
        int32_t x_last = xq[last];
        int32_t odd_terms[4] = {((r[0][b] & 0x0F) - 8) * x_last, ((r[1][b] & 0x0F) - 8) * x_last,
                                ((r[2][b] & 0x0F) - 8) * x_last, ((r[3][b] & 0x0F) - 8) * x_last};
        isum = vaddq_s32(isum, vld1q_s32(odd_terms));
    }
    return isum;
}

/*
 * `blocks` blocks of four rows into the running sums, the pointers walking: blocks of 16 q8 columns, or
 * with q4 of 32 q4 columns (16 bytes too).
 */
static inline void q_blocks(running_sums *rs, const uint8_t **w, const int8_t **xp, int blocks, int q4) {
    NEON_UNROLL4
    for (int b = 0; b < blocks; b++) {
        if (q4) {
            int8x16x2_t xv = vld2q_s8(*xp);
            rs->a0 = q4_dot32(rs->a0, vld1q_u8(w[0]), xv.val[0], xv.val[1]);
            rs->a1 = q4_dot32(rs->a1, vld1q_u8(w[1]), xv.val[0], xv.val[1]);
            rs->a2 = q4_dot32(rs->a2, vld1q_u8(w[2]), xv.val[0], xv.val[1]);
            rs->a3 = q4_dot32(rs->a3, vld1q_u8(w[3]), xv.val[0], xv.val[1]);
            *xp += 32;
        } else {
            int8x16_t xv = vld1q_s8(*xp);
            rs->a0 = dot16(rs->a0, load_s8(w[0]), xv);
            rs->a1 = dot16(rs->a1, load_s8(w[1]), xv);
            rs->a2 = dot16(rs->a2, load_s8(w[2]), xv);
            rs->a3 = dot16(rs->a3, load_s8(w[3]), xv);
            *xp += 16;
        }
        w[0] += 16;
        w[1] += 16;
        w[2] += 16;
        w[3] += 16;
    }
}

/*
 * matmul_q8 (q4 = 0) or matmul_q4 (q4 = 1) for one group size, W's rows walked as bytes; inlined with
 * constant q4 and group_size, the branches on q4, the block counts and the loops fold.
 */
NEON_ALWAYS_INLINE void q_matmul(float *out, const int8_t *xq, const float *xs, const uint8_t *w, const float *ws,
                              int rows, int cols, int group_size, int q4) {
    int ngroups = group_count(cols, group_size);
    size_t row_bytes = q4 ? ((size_t)cols + 1) / 2 : (size_t)cols;
    /* Groups made of whole blocks (16 q8 columns or 32 q4 columns: group sizes 32, 64, ...) take the straight
     * path; a row's last, shorter group and other group sizes take q8_group_dot4 / q4_group_dot4. */
    int block_cols = q4 ? 32 : 16;
    int blocks = group_size % block_cols == 0 ? group_size / block_cols : 0;
    int simple_groups = blocks ? cols / group_size : 0;
    for (int i = 0; i < rows; i += 4) {
        int valid = rows - i < 4 ? rows - i : 4;
        size_t d1 = (size_t)clamp_row(1, valid), d2 = (size_t)clamp_row(2, valid), d3 = (size_t)clamp_row(3, valid);
        const uint8_t *row0 = w + (size_t)i * row_bytes;
        const uint8_t *row[4] = {row0, row0 + d1 * row_bytes, row0 + d2 * row_bytes, row0 + d3 * row_bytes};
        const float *s0 = ws + (size_t)i * (size_t)ngroups; /* the rows' scales, walking one group at a time */
        const float *s1 = s0 + d1 * (size_t)ngroups, *s2 = s0 + d2 * (size_t)ngroups, *s3 = s0 + d3 * (size_t)ngroups;
        const uint8_t *wp[4] = {row[0], row[1], row[2], row[3]};
        const int8_t *xp = xq;
        running_sums rs = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
        float32x4_t acc = vdupq_n_f32(0.0f);
        int g = 0;
        for (; g + 4 <= simple_groups; g += 4) {
            float32x4_t c0 = vld1q_f32(s0), c1 = vld1q_f32(s1), c2 = vld1q_f32(s2), c3 = vld1q_f32(s3);
            transpose4_f32(&c0, &c1, &c2, &c3); /* c_k: the four rows' scales of group g + k */
            s0 += 4, s1 += 4, s2 += 4, s3 += 4;
            q_blocks(&rs, wp, &xp, blocks, q4);
            acc = scale_and_add(acc, next_group_sum(&rs, q4), c0, xs[g]);
            q_blocks(&rs, wp, &xp, blocks, q4);
            acc = scale_and_add(acc, next_group_sum(&rs, q4), c1, xs[g + 1]);
            q_blocks(&rs, wp, &xp, blocks, q4);
            acc = scale_and_add(acc, next_group_sum(&rs, q4), c2, xs[g + 2]);
            q_blocks(&rs, wp, &xp, blocks, q4);
            acc = scale_and_add(acc, next_group_sum(&rs, q4), c3, xs[g + 3]);
        }
        for (; g < simple_groups; g++) {
            q_blocks(&rs, wp, &xp, blocks, q4);
            acc = scale_and_add(acc, next_group_sum(&rs, q4), gather4_f32(s0++, s1++, s2++, s3++), xs[g]);
        }
        for (; g < ngroups; g++) {
            int start = g * group_size;
            int end = start + group_size < cols ? start + group_size : cols;
            int32x4_t isum = q4 ? q4_group_dot4(row, xq, start, end) : q8_group_dot4(row, xq, start, end);
            acc = scale_and_add(acc, isum, gather4_f32(s0++, s1++, s2++, s3++), xs[g]);
        }
        store_lanes_f32(out + i, acc, valid);
    }
}

/* The common group sizes get a copy of the loops specialised for them (fully unrolled blocks). */
NEON_ALWAYS_INLINE void q_matmul_sized(float *out, const int8_t *xq, const float *xs, const uint8_t *w,
                                    const float *ws, int rows, int cols, int group_size, int q4) {
    switch (group_size) {
    case 32:
        q_matmul(out, xq, xs, w, ws, rows, cols, 32, q4);
        break;
    case 64:
        q_matmul(out, xq, xs, w, ws, rows, cols, 64, q4);
        break;
    default:
        q_matmul(out, xq, xs, w, ws, rows, cols, group_size, q4);
        break;
    }
}

/* ---- the panel layout (site_scons/llmcu/builder/layouts.py, "neon_panels"): what codegen stores for this set ---- */

/*
 * Codegen stores every q8/q4 matrix whose columns and group size allow it in panels of four rows (the rows
 * padded with zero rows to a multiple of four, zero scales), so that one SDOT by element gives four rows'
 * partial sums in its four lanes, with no horizontal reduction:
 *
 * - q8 (cols % 4 == 0, group_size % 4 == 0): a panel is its 4 rows' columns in quads; the 16 bytes of quad c
 *   are row 0's columns 4c..4c+3, then row 1's, row 2's, row 3's. `vdotq_laneq_s32(acc, quad, x, l)` with
 *   lane l of x holding columns 4c..4c+3 adds each row's four products to its lane.
 * - q4 (cols % 8 == 0, group_size % 8 == 0): 16 bytes hold 4 rows x 8 columns; byte 4k + m holds row k's
 *   column 8b + m in its low nibble and column 8b + 4 + m in its high nibble, each as the 4-bit two's
 *   complement of q (not q + 8). A left shift by 4 gives the low nibbles' q * 16 as int8, a mask with 0xF0
 *   the high nibbles', so 32 weights cost two instructions to unpack.
 * - scales: per panel, per group, the four rows' scales side by side (one vector load per group).
 *
 * A panel is 4 * cols bytes (q8) or 2 * cols (q4) and 4 * ngroups scales, so row r of a range starting at a
 * multiple of four (the thread pool splits at multiples of 16) is where the row-major offset arithmetic of
 * transformer.c puts it. Other shapes keep the reference's row-major layout and the code above.
 */
/* acc[k] += the dot product of w's bytes 4k..4k+3 with lane `lane` (bytes 4 lane..4 lane+3) of x. */
#if defined(__ARM_FEATURE_DOTPROD)
#define SDOT_LANE(acc, w, x, lane) vdotq_laneq_s32((acc), (w), (x), (lane))
#else
static inline int32x4_t sdot_lane_emulated(int32x4_t acc, int8x16_t w, int8x16_t x4) {
    int32x4_t lo = vpaddlq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(x4)));  /* rows 0, 1: two pair sums each */
    int32x4_t hi = vpaddlq_s16(vmull_high_s8(w, x4));                        /* rows 2, 3 */
    return vaddq_s32(acc, vpaddq_s32(lo, hi));
}
#define SDOT_LANE(acc, w, x, lane)                                                                                     \
    sdot_lane_emulated((acc), (w), vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(x), (lane))))
#endif

/* `count` (1..4) quads of activations, exactly 4 * count bytes read (never past the vector's end). */
static inline int8x16_t load_x_quads(const int8_t *p, int count) {
    if (count >= 4) {
        return vld1q_s8(p);
    }
    int32_t word;
    int8x8_t low;
    if (count == 1) {
        memcpy(&word, p, sizeof word);
        return vreinterpretq_s8_s32(vdupq_n_s32(word));
    }
    low = vld1_s8(p);
    if (count == 2) {
        return vcombine_s8(low, low);
    }
    memcpy(&word, p + 8, sizeof word);
    return vreinterpretq_s8_s32(vsetq_lane_s32(word, vreinterpretq_s32_s8(vcombine_s8(low, low)), 2));
}

/* Four quads of a panel (q8) against the four lanes of xv. */
static inline int32x4_t panel_dot4(int32x4_t acc, const uint8_t *w, int8x16_t xv) {
    int8x16x4_t q = vld1q_s8_x4((const int8_t *)w);
    acc = SDOT_LANE(acc, q.val[0], xv, 0);
    acc = SDOT_LANE(acc, q.val[1], xv, 1);
    acc = SDOT_LANE(acc, q.val[2], xv, 2);
    return SDOT_LANE(acc, q.val[3], xv, 3);
}

/* One q4 block (16 bytes: 4 rows x 8 columns) against lanes `lane`, `lane` + 1 of xv; the sums carry x16. */
#define Q4_BLOCK(acc, bytes, xv, lane)                                                                                 \
    do {                                                                                                               \
        int8x16_t b_ = (bytes);                                                                                        \
        (acc) = SDOT_LANE((acc), vshlq_n_s8(b_, 4), (xv), (lane));                                                     \
        (acc) = SDOT_LANE((acc), vandq_s8(b_, vdupq_n_s8((int8_t)0xF0)), (xv), (lane) + 1);                           \
    } while (0)

/* The integer sums of one group, `len` columns (a multiple of 4, q8; of 8, q4), for `np` (1 or 2) panels whose
 * weights w[0], w[1] walk on; each activation load serves both panels. q4 sums come out exact (the x16 undone). */
NEON_ALWAYS_INLINE void panel_group(int32x4_t sums[2], const uint8_t *w[2], const int8_t *x, int len, int np,
                                    int q4) {
    int32x4_t a0 = vdupq_n_s32(0), a1 = a0;
    const uint8_t *p0 = w[0], *p1 = w[np - 1]; /* one panel: p1 is never used */
    int j = 0;
    if (q4) {
        NEON_UNROLL4
        for (; j + 16 <= len; j += 16) { /* two blocks against one x vector */
            int8x16_t xv = vld1q_s8(x + j);
            int8x16x2_t b = vld1q_s8_x2((const int8_t *)p0);
            Q4_BLOCK(a0, b.val[0], xv, 0);
            Q4_BLOCK(a0, b.val[1], xv, 2);
            p0 += 32;
            if (np == 2) {
                b = vld1q_s8_x2((const int8_t *)p1);
                Q4_BLOCK(a1, b.val[0], xv, 0);
                Q4_BLOCK(a1, b.val[1], xv, 2);
                p1 += 32;
            }
        }
        if (j < len) { /* one block of 8 columns */
            int8x16_t xv = load_x_quads(x + j, 2);
            Q4_BLOCK(a0, vld1q_s8((const int8_t *)p0), xv, 0);
            p0 += 16;
            if (np == 2) {
                Q4_BLOCK(a1, vld1q_s8((const int8_t *)p1), xv, 0);
                p1 += 16;
            }
        }
        a0 = vshrq_n_s32(a0, 4);
        a1 = vshrq_n_s32(a1, 4);
    } else {
        NEON_UNROLL4
        for (; j + 16 <= len; j += 16) {
            int8x16_t xv = vld1q_s8(x + j);
            a0 = panel_dot4(a0, p0, xv);
            p0 += 64;
            if (np == 2) {
                a1 = panel_dot4(a1, p1, xv);
                p1 += 64;
            }
        }
        int rest = (len - j) / 4;
        if (rest > 0) {
            int8x16_t xv = load_x_quads(x + j, rest);
            for (int r = 0; r < np; r++) {
                const int8_t *p = (const int8_t *)(r ? p1 : p0);
                int32x4_t a = r ? a1 : a0;
                a = SDOT_LANE(a, vld1q_s8(p), xv, 0);
                if (rest > 1) {
                    a = SDOT_LANE(a, vld1q_s8(p + 16), xv, 1);
                }
                if (rest > 2) {
                    a = SDOT_LANE(a, vld1q_s8(p + 32), xv, 2);
                }
                if (r) {
                    a1 = a;
                } else {
                    a0 = a;
                }
            }
            p0 += 16 * rest;
            p1 += 16 * rest;
        }
    }
    w[0] = p0;
    if (np == 2) {
        w[1] = p1;
    }
    sums[0] = a0;
    sums[1] = a1;
}

/* acc[r] += ((float)isum[r] * scale[r]) * xs_g, lanes = rows: the reference's chain step in its order. */
static inline float32x4_t panel_step(float32x4_t acc, int32x4_t isum, const float *scales, float xs_g) {
    return vaddq_f32(acc, vmulq_n_f32(vmulq_f32(vcvtq_f32_s32(isum), vld1q_f32(scales)), xs_g));
}

/* `np` (1 or 2) panels from panel p on: out rows 4p.. (at most `rows` - 4p of them stored). */
NEON_ALWAYS_INLINE void panels_pass(float *out, const int8_t *xq, const float *xs, const uint8_t *w, const float *ws,
                                    int p, int np, int rows, int cols, int group_size, int q4) {
    int ngroups = group_count(cols, group_size);
    size_t panel_bytes = q4 ? 2 * (size_t)cols : 4 * (size_t)cols;
    size_t panel_scales = 4 * (size_t)ngroups;
    const uint8_t *wp[2] = {w + (size_t)p * panel_bytes, w + (size_t)(p + np - 1) * panel_bytes};
    const float *s0 = ws + (size_t)p * panel_scales, *s1 = s0 + (np - 1) * panel_scales;
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = acc0;
    int32x4_t sums[2];
    int full = cols / group_size; /* whole groups: a constant length, so their loops unroll */
    int g = 0;
    for (; g < full; g++) {
        panel_group(sums, wp, xq + g * group_size, group_size, np, q4);
        acc0 = panel_step(acc0, sums[0], s0 + 4 * g, xs[g]);
        if (np == 2) {
            acc1 = panel_step(acc1, sums[1], s1 + 4 * g, xs[g]);
        }
    }
    if (g < ngroups) { /* the row's last, shorter group */
        panel_group(sums, wp, xq + g * group_size, cols - g * group_size, np, q4);
        acc0 = panel_step(acc0, sums[0], s0 + 4 * g, xs[g]);
        if (np == 2) {
            acc1 = panel_step(acc1, sums[1], s1 + 4 * g, xs[g]);
        }
    }
    int valid = rows - 4 * p;
    store_lanes_f32(out + 4 * p, acc0, valid < 4 ? valid : 4);
    if (np == 2) {
        valid -= 4;
        store_lanes_f32(out + 4 * p + 4, acc1, valid < 4 ? valid : 4);
    }
}

/*
 * The end of a group in the assembly loops below: v0-v3 hold four vectors of rows' exact int32 sums, v20-v23 their
 * scales, v18 lane 0 the group's xs; each accumulator operand acc0-acc3 takes its step acc += ((float)isum * ws) * xs
 * (SCVTF, FMUL, FMUL, FADD: the reference's operations in its order, nothing fused), and the loop goes on while
 * `groups` counts down.
 */
#define ASM_GROUP_STEP4                                                                                                \
    "scvtf  v0.4s, v0.4s\n\t"                                                                                          \
    "scvtf  v1.4s, v1.4s\n\t"                                                                                          \
    "scvtf  v2.4s, v2.4s\n\t"                                                                                          \
    "scvtf  v3.4s, v3.4s\n\t"                                                                                          \
    "fmul   v0.4s, v0.4s, v20.4s\n\t"                                                                                  \
    "fmul   v1.4s, v1.4s, v21.4s\n\t"                                                                                  \
    "fmul   v2.4s, v2.4s, v22.4s\n\t"                                                                                  \
    "fmul   v3.4s, v3.4s, v23.4s\n\t"                                                                                  \
    "fmul   v0.4s, v0.4s, v18.s[0]\n\t"                                                                                \
    "fmul   v1.4s, v1.4s, v18.s[0]\n\t"                                                                                \
    "fmul   v2.4s, v2.4s, v18.s[0]\n\t"                                                                                \
    "fmul   v3.4s, v3.4s, v18.s[0]\n\t"                                                                                \
    "fadd   %[acc0].4s, %[acc0].4s, v0.4s\n\t"                                                                         \
    "fadd   %[acc1].4s, %[acc1].4s, v1.4s\n\t"                                                                         \
    "fadd   %[acc2].4s, %[acc2].4s, v2.4s\n\t"                                                                         \
    "fadd   %[acc3].4s, %[acc3].4s, v3.4s\n\t"                                                                         \
    "subs   %[groups], %[groups], #1\n\t"                                                                              \
    "b.ne   1b\n\t"

/*
 * q4 in pair panels (cols and group_size multiples of 4): rows in panels of eight, and per quad of columns 16
 * bytes, byte 4k + m holding row k's column 4c + m in its high nibble (the 4-bit two's complement of q) and row
 * k + 4's in its low nibble (q + 8, unsigned). As an int8 such a byte is 16 q_k + (q_{k+4} + 8), so one SDOT by
 * lane on the raw bytes gives A = 16 S_k + L_{k+4} in lane k, and one on the bytes masked to their low nibbles
 * gives L_{k+4} = sum (q_{k+4} + 8) x: the eight rows' exact group sums are S = (A - L) >> 4 (rows 0-3) and
 * L - 8 sum x (rows 4-7). Three instructions per 32 weights (a mask and two SDOTs) where unpacking both nibbles
 * takes four, which brings q4 close to q8's cost per weight. Scales: per panel, per group, the eight rows' scales
 * side by side.
 */

/* The sum of `len` activations (exact in int32). */
static inline int32_t group_sum(const int8_t *x, int len) {
    int32_t sum = 0;
    int j = 0;
    for (; j + 16 <= len; j += 16) {
        sum += vaddlvq_s8(vld1q_s8(x + j)); /* 16 int8 summed into an int16: no overflow */
    }
    for (; j < len; j++) {
        sum += x[j];
    }
    return sum;
}

/* One quad (4 columns, 16 bytes at *w) against lane `lane` of xv into the raw (a) and low-nibble (l) sums. */
#define PAIR_QUAD(a, l, bytes, xv, lane)                                                                                \
    do {                                                                                                               \
        int8x16_t b_ = (bytes);                                                                                        \
        (a) = SDOT_LANE((a), b_, (xv), (lane));                                                                        \
        (l) = SDOT_LANE((l), vandq_s8(b_, vdupq_n_s8(0x0F)), (xv), (lane));                                            \
    } while (0)

/* The raw and low-nibble sums of `len` columns (a multiple of 4) of one pair panel; *w moves past them. */
NEON_ALWAYS_INLINE void pair_group(int32x4_t *a_out, int32x4_t *l_out, const int8_t **w, const int8_t *x, int len) {
    int32x4_t a = vdupq_n_s32(0), l = a;
    int j = 0;
    for (; j + 16 <= len; j += 16) {
        int8x16_t xv = vld1q_s8(x + j);
        int8x16x4_t b = vld1q_s8_x4(*w);
        *w += 64;
        PAIR_QUAD(a, l, b.val[0], xv, 0);
        PAIR_QUAD(a, l, b.val[1], xv, 1);
        PAIR_QUAD(a, l, b.val[2], xv, 2);
        PAIR_QUAD(a, l, b.val[3], xv, 3);
    }
    int rest = (len - j) / 4;
    if (rest > 0) {
        int8x16_t xv = load_x_quads(x + j, rest);
        PAIR_QUAD(a, l, vld1q_s8(*w), xv, 0);
        if (rest > 1) {
            PAIR_QUAD(a, l, vld1q_s8(*w + 16), xv, 1);
        }
        if (rest > 2) {
            PAIR_QUAD(a, l, vld1q_s8(*w + 32), xv, 2);
        }
        *w += 16 * rest;
    }
    *a_out = a;
    *l_out = l;
}

/* One group (`len` columns from `start`) of pair panels p and p + 1 (np = 2) or p alone: the four accumulators'
 * chain steps, rows 0-3 (hi) and 4-7 (lo) of each panel. */
NEON_ALWAYS_INLINE void pair_step(float32x4_t acc[4], const int8_t *w[2], const float *s[2], const int8_t *x,
                                  float xs_g, int len, int np) {
    int32x4_t a, l, low_fix = vdupq_n_s32(8 * group_sum(x, len)); /* the low rows' + 8 */
    pair_group(&a, &l, &w[0], x, len);
    acc[0] = panel_step(acc[0], vshrq_n_s32(vsubq_s32(a, l), 4), s[0], xs_g);
    acc[1] = panel_step(acc[1], vsubq_s32(l, low_fix), s[0] + 4, xs_g);
    s[0] += 8;
    if (np == 2) {
        pair_group(&a, &l, &w[1], x, len);
        acc[2] = panel_step(acc[2], vshrq_n_s32(vsubq_s32(a, l), 4), s[1], xs_g);
        acc[3] = panel_step(acc[3], vsubq_s32(l, low_fix), s[1] + 4, xs_g);
        s[1] += 8;
    }
}

/* Pair panels p and p + 1 (np = 2) or p alone: out rows 8p.. (at most `rows` - 8p of them stored). */
NEON_ALWAYS_INLINE void pairs_pass(float *out, const int8_t *xq, const float *xs, const uint8_t *w, const float *ws,
                                   int p, int np, int rows, int cols, int group_size) {
    int ngroups = group_count(cols, group_size);
    const int8_t *w0 = (const int8_t *)w + (size_t)p * 4 * (size_t)cols;
    const int8_t *wp[2] = {w0, w0 + (size_t)(np - 1) * 4 * (size_t)cols};
    const float *s0 = ws + (size_t)p * 8 * (size_t)ngroups;
    const float *sp[2] = {s0, s0 + (size_t)(np - 1) * 8 * (size_t)ngroups};
    float32x4_t acc[4] = {vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f), vdupq_n_f32(0.0f)};
    int full = cols / group_size; /* whole groups: a constant length, so their loops unroll */
    int g = 0;
    for (; g < full; g++) {
        pair_step(acc, wp, sp, xq + g * group_size, xs[g], group_size, np);
    }
    if (g < ngroups) { /* the rows' last, shorter group */
        pair_step(acc, wp, sp, xq + g * group_size, xs[g], cols - g * group_size, np);
    }
    int valid = rows - 8 * p;
    for (int half = 0; half < 2 * np; half++, valid -= 4) {
        if (valid > 0) {
            store_lanes_f32(out + 8 * p + 4 * half, acc[half], valid < 4 ? valid : 4);
        }
    }
}

/* matmul_q4 over pair panels, two per pass (16 rows) sharing the activation loads; group size 32 gets its own copy
 * of the loops (fully unrolled). */
NEON_ALWAYS_INLINE void q4_pairs_rows(float *out, const int8_t *xq, const float *xs, const uint8_t *w,
                                      const float *ws, int rows, int cols, int group_size) {
    int panels = (rows + 7) / 8;
    int p = 0;
    for (; p + 2 <= panels; p += 2) {
        pairs_pass(out, xq, xs, w, ws, p, 2, rows, cols, group_size);
    }
    if (p < panels) {
        pairs_pass(out, xq, xs, w, ws, p, 1, rows, cols, group_size);
    }
}

/* The 32 columns of one group of a pair panel (128 bytes, *w moves past them): its eight rows' exact integer sums,
 * rows 0-3 into *hi and rows 4-7 into *lo, given low_fix = 8 * the group's sum of x in every lane. */
NEON_ALWAYS_INLINE void pair_panel_g32(int32x4_t *hi, int32x4_t *lo, const int8_t **w, int8x16_t xa, int8x16_t xb,
                                       int32x4_t low_fix) {
    int8x16x4_t b0 = vld1q_s8_x4(*w), b1 = vld1q_s8_x4(*w + 64);
    *w += 128;
    int32x4_t a = vdupq_n_s32(0), l = a;
    PAIR_QUAD(a, l, b0.val[0], xa, 0);
    PAIR_QUAD(a, l, b0.val[1], xa, 1);
    PAIR_QUAD(a, l, b0.val[2], xa, 2);
    PAIR_QUAD(a, l, b0.val[3], xa, 3);
    PAIR_QUAD(a, l, b1.val[0], xb, 0);
    PAIR_QUAD(a, l, b1.val[1], xb, 1);
    PAIR_QUAD(a, l, b1.val[2], xb, 2);
    PAIR_QUAD(a, l, b1.val[3], xb, 3);
    *hi = vshrq_n_s32(vsubq_s32(a, l), 4);
    *lo = vsubq_s32(l, low_fix);
}

/* Pair panels p and p + 1 (rows 8p..8p+15, all real rows), group size 32, cols a multiple of 32; sums8[g] is
 * 8 * the sum of group g's activations. */
#if defined(__ARM_FEATURE_DOTPROD)
/*
 * With the dot-product extension the loop is written out in assembly (GCC's C spends 101 instructions a group,
 * spilling; this takes 85): per group the 32 activations, xs and 8 * sum x in three loads; per pair panel its 128
 * bytes in two four-register loads, two zeroed sums and per quad a mask and two SDOTs; then the sums as above and
 * each half's step acc += ((float)isum * ws) * xs (SCVTF, FMUL, FMUL, FADD: the reference's order, nothing fused).
 */
NEON_ALWAYS_INLINE void q4_pairs2_g32(float *out, const int8_t *xq, const float *xs, const int32_t *sums8,
                                      const uint8_t *w, const float *ws, int p, int cols) {
    long groups = cols / 32;
    const int8_t *w0 = (const int8_t *)w + (size_t)p * 4 * (size_t)cols, *w1 = w0 + 4 * (size_t)cols;
    const float *s0 = ws + (size_t)p * 8 * (size_t)groups, *s1 = s0 + 8 * (size_t)groups;
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    __asm__("movi   v4.16b, #0x0f\n\t"
            "1:\n\t"
            "ld1    {v16.16b, v17.16b}, [%[xq]], #32\n\t"
            "ld1    {v20.16b-v23.16b}, [%[w0]], #64\n\t"
            "ld1    {v24.16b-v27.16b}, [%[w0]], #64\n\t"
            "ldr    s18, [%[xs]], #4\n\t"
            "ld1r   {v19.4s}, [%[sums8]], #4\n\t"
            "movi   v0.4s, #0\n\t"
            "movi   v1.4s, #0\n\t"
            "movi   v2.4s, #0\n\t"
            "movi   v3.4s, #0\n\t"
            "and    v28.16b, v20.16b, v4.16b\n\t"
            "sdot   v0.4s, v20.16b, v16.4b[0]\n\t"
            "sdot   v1.4s, v28.16b, v16.4b[0]\n\t"
            "and    v29.16b, v21.16b, v4.16b\n\t"
            "sdot   v0.4s, v21.16b, v16.4b[1]\n\t"
            "sdot   v1.4s, v29.16b, v16.4b[1]\n\t"
            "and    v28.16b, v22.16b, v4.16b\n\t"
            "sdot   v0.4s, v22.16b, v16.4b[2]\n\t"
            "sdot   v1.4s, v28.16b, v16.4b[2]\n\t"
            "and    v29.16b, v23.16b, v4.16b\n\t"
            "sdot   v0.4s, v23.16b, v16.4b[3]\n\t"
            "sdot   v1.4s, v29.16b, v16.4b[3]\n\t"
            "ld1    {v20.16b-v23.16b}, [%[w1]], #64\n\t"
            "and    v28.16b, v24.16b, v4.16b\n\t"
            "sdot   v0.4s, v24.16b, v17.4b[0]\n\t"
            "sdot   v1.4s, v28.16b, v17.4b[0]\n\t"
            "and    v29.16b, v25.16b, v4.16b\n\t"
            "sdot   v0.4s, v25.16b, v17.4b[1]\n\t"
            "sdot   v1.4s, v29.16b, v17.4b[1]\n\t"
            "and    v28.16b, v26.16b, v4.16b\n\t"
            "sdot   v0.4s, v26.16b, v17.4b[2]\n\t"
            "sdot   v1.4s, v28.16b, v17.4b[2]\n\t"
            "and    v29.16b, v27.16b, v4.16b\n\t"
            "sdot   v0.4s, v27.16b, v17.4b[3]\n\t"
            "sdot   v1.4s, v29.16b, v17.4b[3]\n\t"
            "ld1    {v24.16b-v27.16b}, [%[w1]], #64\n\t"
            "and    v28.16b, v20.16b, v4.16b\n\t"
            "sdot   v2.4s, v20.16b, v16.4b[0]\n\t"
            "sdot   v3.4s, v28.16b, v16.4b[0]\n\t"
            "and    v29.16b, v21.16b, v4.16b\n\t"
            "sdot   v2.4s, v21.16b, v16.4b[1]\n\t"
            "sdot   v3.4s, v29.16b, v16.4b[1]\n\t"
            "and    v28.16b, v22.16b, v4.16b\n\t"
            "sdot   v2.4s, v22.16b, v16.4b[2]\n\t"
            "sdot   v3.4s, v28.16b, v16.4b[2]\n\t"
            "and    v29.16b, v23.16b, v4.16b\n\t"
            "sdot   v2.4s, v23.16b, v16.4b[3]\n\t"
            "sdot   v3.4s, v29.16b, v16.4b[3]\n\t"
            "and    v28.16b, v24.16b, v4.16b\n\t"
            "sdot   v2.4s, v24.16b, v17.4b[0]\n\t"
            "sdot   v3.4s, v28.16b, v17.4b[0]\n\t"
            "and    v29.16b, v25.16b, v4.16b\n\t"
            "sdot   v2.4s, v25.16b, v17.4b[1]\n\t"
            "sdot   v3.4s, v29.16b, v17.4b[1]\n\t"
            "and    v28.16b, v26.16b, v4.16b\n\t"
            "sdot   v2.4s, v26.16b, v17.4b[2]\n\t"
            "sdot   v3.4s, v28.16b, v17.4b[2]\n\t"
            "and    v29.16b, v27.16b, v4.16b\n\t"
            "sdot   v2.4s, v27.16b, v17.4b[3]\n\t"
            "sdot   v3.4s, v29.16b, v17.4b[3]\n\t"
            "sub    v0.4s, v0.4s, v1.4s\n\t"
            "sub    v2.4s, v2.4s, v3.4s\n\t"
            "sub    v1.4s, v1.4s, v19.4s\n\t"
            "sub    v3.4s, v3.4s, v19.4s\n\t"
            "sshr   v0.4s, v0.4s, #4\n\t"
            "sshr   v2.4s, v2.4s, #4\n\t"
            "ld1    {v20.4s, v21.4s}, [%[s0]], #32\n\t"
            "ld1    {v22.4s, v23.4s}, [%[s1]], #32\n\t"
            ASM_GROUP_STEP4
            : [acc0] "+w"(acc0), [acc1] "+w"(acc1), [acc2] "+w"(acc2), [acc3] "+w"(acc3), [xq] "+r"(xq), [xs] "+r"(xs),
              [sums8] "+r"(sums8), [w0] "+r"(w0), [w1] "+r"(w1), [s0] "+r"(s0), [s1] "+r"(s1), [groups] "+r"(groups)
            :
            : "cc", "memory", "v0", "v1", "v2", "v3", "v4", "v16", "v17", "v18", "v19", "v20", "v21", "v22", "v23",
              "v24", "v25", "v26", "v27", "v28", "v29");
    vst1q_f32(out + 8 * p, acc0);
    vst1q_f32(out + 8 * p + 4, acc1);
    vst1q_f32(out + 8 * p + 8, acc2);
    vst1q_f32(out + 8 * p + 12, acc3);
}
#else
NEON_ALWAYS_INLINE void q4_pairs2_g32(float *out, const int8_t *xq, const float *xs, const int32_t *sums8,
                                      const uint8_t *w, const float *ws, int p, int cols) {
    int ngroups = cols / 32;
    const int8_t *w0 = (const int8_t *)w + (size_t)p * 4 * (size_t)cols, *w1 = w0 + 4 * (size_t)cols;
    const float *s0 = ws + (size_t)p * 8 * (size_t)ngroups, *s1 = s0 + 8 * (size_t)ngroups;
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (int g = 0; g < ngroups; g++) {
        int8x16_t xa = vld1q_s8(xq), xb = vld1q_s8(xq + 16);
        xq += 32;
        float xs_g = xs[g];
        int32x4_t low_fix = vld1q_dup_s32(sums8 + g), h0, l0, h1, l1;
        pair_panel_g32(&h0, &l0, &w0, xa, xb, low_fix);
        pair_panel_g32(&h1, &l1, &w1, xa, xb, low_fix);
        acc0 = panel_step(acc0, h0, s0, xs_g);
        acc1 = panel_step(acc1, l0, s0 + 4, xs_g);
        acc2 = panel_step(acc2, h1, s1, xs_g);
        acc3 = panel_step(acc3, l1, s1 + 4, xs_g);
        s0 += 8;
        s1 += 8;
    }
    vst1q_f32(out + 8 * p, acc0);
    vst1q_f32(out + 8 * p + 4, acc1);
    vst1q_f32(out + 8 * p + 8, acc2);
    vst1q_f32(out + 8 * p + 12, acc3);
}
#endif

/* Group size 32 takes q4_pairs2_g32 for whole pairs of panels when the group sums fit this buffer (any matrix up to
 * 16384 columns); the rest goes through the general loops. */
#define PAIR_SUMS_MAX 512

static void q4_pairs_matmul(float *out, const int8_t *xq, const float *xs, const uint8_t *w, const float *ws,
                            int rows, int cols, int group_size) {
    if (group_size == 32 && cols % 32 == 0 && cols / 32 <= PAIR_SUMS_MAX) {
        int32_t sums8[PAIR_SUMS_MAX];
        for (int g = 0; g < cols / 32; g++) {
            sums8[g] = 8 * group_sum(xq + 32 * g, 32);
        }
        int p = 0;
        for (; 8 * (p + 2) <= rows; p += 2) {
            q4_pairs2_g32(out, xq, xs, sums8, w, ws, p, cols);
        }
        if (8 * p < rows) { /* the last eight rows or fewer */
            q4_pairs_rows(out + 8 * p, xq, xs, w + (size_t)p * 4 * (size_t)cols,
                          ws + (size_t)p * 8 * (size_t)(cols / 32), rows - 8 * p, cols, 32);
        }
        return;
    }
    q4_pairs_rows(out, xq, xs, w, ws, rows, cols, group_size);
}

/*
 * q8 with group size 32 (GGUF's Q8_0 blocks, and llmcu's default): four panels (16 rows) per pass, a group at a
 * time, written out so that nothing but the work is left in the loop. Per group and panel: the 32 columns' weights
 * in two four-register loads, eight SDOTs by lane against the group's two activation vectors, and the float step
 * with the panel's four scales in one load. The activations and their scale are loaded once for the four panels.
 */

/* The integer sums of one group of 32 columns of a q8 panel (128 bytes, *w moves past them). */
NEON_ALWAYS_INLINE int32x4_t q8_panel_g32(const int8_t **w, int8x16_t xa, int8x16_t xb) {
    int8x16x4_t lo = vld1q_s8_x4(*w);
    *w += 64;
    int8x16x4_t hi = vld1q_s8_x4(*w);
    *w += 64;
    int32x4_t acc = SDOT_LANE(vdupq_n_s32(0), lo.val[0], xa, 0);
    acc = SDOT_LANE(acc, lo.val[1], xa, 1);
    acc = SDOT_LANE(acc, lo.val[2], xa, 2);
    acc = SDOT_LANE(acc, lo.val[3], xa, 3);
    acc = SDOT_LANE(acc, hi.val[0], xb, 0);
    acc = SDOT_LANE(acc, hi.val[1], xb, 1);
    acc = SDOT_LANE(acc, hi.val[2], xb, 2);
    return SDOT_LANE(acc, hi.val[3], xb, 3);
}

/* q8 panels p..p+3 (rows 4p..4p+15, all of them real rows) of a matrix whose cols are a multiple of 32. */
#if defined(__ARM_FEATURE_DOTPROD)
/*
 * With the dot-product extension the loop is written out in assembly: the C below (the fallback) leaves GCC copying
 * and bumping the eight pointers around its loads, 80 instructions a group where 68 do the work. Per group: the
 * 32 activations in one load; each panel's 128 bytes in two four-register loads that move their pointer on; a
 * zeroed accumulator and eight SDOTs by lane per panel; then each panel's step acc += ((float)isum * ws) * xs
 * (SCVTF, FMUL by the four scales, FMUL by xs, FADD: the reference's operations in its order, nothing fused).
 * The loads of the next panel's weights are placed among the current panel's SDOTs (the A55 issues in order).
 */
NEON_ALWAYS_INLINE void q8_panels4_g32(float *out, const int8_t *xq, const float *xs, const uint8_t *w,
                                       const float *ws, int p, int cols) {
    long groups = cols / 32;
    size_t panel_bytes = 4 * (size_t)cols;
    const int8_t *w0 = (const int8_t *)w + (size_t)p * panel_bytes, *w1 = w0 + panel_bytes, *w2 = w1 + panel_bytes,
                 *w3 = w2 + panel_bytes;
    const float *s0 = ws + (size_t)p * 4 * (size_t)groups, *s1 = s0 + 4 * (size_t)groups,
                *s2 = s1 + 4 * (size_t)groups, *s3 = s2 + 4 * (size_t)groups;
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    __asm__("1:\n\t"
            "ld1    {v16.16b, v17.16b}, [%[xq]], #32\n\t"
            "ld1    {v20.16b-v23.16b}, [%[w0]], #64\n\t"
            "ld1    {v24.16b-v27.16b}, [%[w0]], #64\n\t"
            "movi   v0.4s, #0\n\t"
            "movi   v1.4s, #0\n\t"
            "movi   v2.4s, #0\n\t"
            "movi   v3.4s, #0\n\t"
            "ld1    {v4.16b-v7.16b}, [%[w1]], #64\n\t"
            "sdot   v0.4s, v20.16b, v16.4b[0]\n\t"
            "sdot   v0.4s, v21.16b, v16.4b[1]\n\t"
            "sdot   v0.4s, v22.16b, v16.4b[2]\n\t"
            "sdot   v0.4s, v23.16b, v16.4b[3]\n\t"
            "ld1    {v28.16b-v31.16b}, [%[w1]], #64\n\t"
            "sdot   v0.4s, v24.16b, v17.4b[0]\n\t"
            "sdot   v0.4s, v25.16b, v17.4b[1]\n\t"
            "sdot   v0.4s, v26.16b, v17.4b[2]\n\t"
            "sdot   v0.4s, v27.16b, v17.4b[3]\n\t"
            "ld1    {v20.16b-v23.16b}, [%[w2]], #64\n\t"
            "sdot   v1.4s, v4.16b, v16.4b[0]\n\t"
            "sdot   v1.4s, v5.16b, v16.4b[1]\n\t"
            "sdot   v1.4s, v6.16b, v16.4b[2]\n\t"
            "sdot   v1.4s, v7.16b, v16.4b[3]\n\t"
            "ld1    {v24.16b-v27.16b}, [%[w2]], #64\n\t"
            "sdot   v1.4s, v28.16b, v17.4b[0]\n\t"
            "sdot   v1.4s, v29.16b, v17.4b[1]\n\t"
            "sdot   v1.4s, v30.16b, v17.4b[2]\n\t"
            "sdot   v1.4s, v31.16b, v17.4b[3]\n\t"
            "ld1    {v4.16b-v7.16b}, [%[w3]], #64\n\t"
            "sdot   v2.4s, v20.16b, v16.4b[0]\n\t"
            "sdot   v2.4s, v21.16b, v16.4b[1]\n\t"
            "sdot   v2.4s, v22.16b, v16.4b[2]\n\t"
            "sdot   v2.4s, v23.16b, v16.4b[3]\n\t"
            "ld1    {v28.16b-v31.16b}, [%[w3]], #64\n\t"
            "sdot   v2.4s, v24.16b, v17.4b[0]\n\t"
            "sdot   v2.4s, v25.16b, v17.4b[1]\n\t"
            "sdot   v2.4s, v26.16b, v17.4b[2]\n\t"
            "sdot   v2.4s, v27.16b, v17.4b[3]\n\t"
            "ldr    q20, [%[s0]], #16\n\t"
            "sdot   v3.4s, v4.16b, v16.4b[0]\n\t"
            "sdot   v3.4s, v5.16b, v16.4b[1]\n\t"
            "ldr    q21, [%[s1]], #16\n\t"
            "sdot   v3.4s, v6.16b, v16.4b[2]\n\t"
            "sdot   v3.4s, v7.16b, v16.4b[3]\n\t"
            "ldr    q22, [%[s2]], #16\n\t"
            "sdot   v3.4s, v28.16b, v17.4b[0]\n\t"
            "sdot   v3.4s, v29.16b, v17.4b[1]\n\t"
            "ldr    q23, [%[s3]], #16\n\t"
            "sdot   v3.4s, v30.16b, v17.4b[2]\n\t"
            "sdot   v3.4s, v31.16b, v17.4b[3]\n\t"
            "ldr    s18, [%[xs]], #4\n\t"
            ASM_GROUP_STEP4
            : [acc0] "+w"(acc0), [acc1] "+w"(acc1), [acc2] "+w"(acc2), [acc3] "+w"(acc3), [xq] "+r"(xq), [xs] "+r"(xs),
              [w0] "+r"(w0), [w1] "+r"(w1), [w2] "+r"(w2), [w3] "+r"(w3), [s0] "+r"(s0), [s1] "+r"(s1), [s2] "+r"(s2),
              [s3] "+r"(s3), [groups] "+r"(groups)
            :
            : "cc", "memory", "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v16", "v17", "v18", "v20", "v21", "v22",
              "v23", "v24", "v25", "v26", "v27", "v28", "v29", "v30", "v31");
    vst1q_f32(out + 4 * p, acc0);
    vst1q_f32(out + 4 * p + 4, acc1);
    vst1q_f32(out + 4 * p + 8, acc2);
    vst1q_f32(out + 4 * p + 12, acc3);
}
#else
NEON_ALWAYS_INLINE void q8_panels4_g32(float *out, const int8_t *xq, const float *xs, const uint8_t *w,
                                       const float *ws, int p, int cols) {
    int ngroups = cols / 32;
    size_t panel_bytes = 4 * (size_t)cols;
    const int8_t *w0 = (const int8_t *)w + (size_t)p * panel_bytes, *w1 = w0 + panel_bytes, *w2 = w1 + panel_bytes,
                 *w3 = w2 + panel_bytes;
    const float *s0 = ws + (size_t)p * 4 * (size_t)ngroups, *s1 = s0 + 4 * (size_t)ngroups,
                *s2 = s1 + 4 * (size_t)ngroups, *s3 = s2 + 4 * (size_t)ngroups;
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (int g = 0; g < ngroups; g++) {
        int8x16_t xa = vld1q_s8(xq), xb = vld1q_s8(xq + 16);
        xq += 32;
        float xs_g = xs[g];
        int32x4_t i0 = q8_panel_g32(&w0, xa, xb), i1 = q8_panel_g32(&w1, xa, xb);
        int32x4_t i2 = q8_panel_g32(&w2, xa, xb), i3 = q8_panel_g32(&w3, xa, xb);
        acc0 = panel_step(acc0, i0, s0, xs_g);
        acc1 = panel_step(acc1, i1, s1, xs_g);
        acc2 = panel_step(acc2, i2, s2, xs_g);
        acc3 = panel_step(acc3, i3, s3, xs_g);
        s0 += 4;
        s1 += 4;
        s2 += 4;
        s3 += 4;
    }
    vst1q_f32(out + 4 * p, acc0);
    vst1q_f32(out + 4 * p + 4, acc1);
    vst1q_f32(out + 4 * p + 8, acc2);
    vst1q_f32(out + 4 * p + 12, acc3);
}
#endif

/*
 * matmul_q8/q4 over panels: two panels (eight rows) per pass share every activation load, each lane of a
 * float accumulator doing its row's chain acc += ((float)isum * ws) * xs over the groups in order.
 */
NEON_ALWAYS_INLINE void q_matmul_panels(float *out, const int8_t *xq, const float *xs, const uint8_t *w,
                                        const float *ws, int rows, int cols, int group_size, int q4) {
    int panels = (rows + 3) / 4;
    int p = 0;
    if (!q4 && group_size == 32 && cols % 32 == 0) {
        for (; 4 * (p + 4) <= rows; p += 4) {
            q8_panels4_g32(out, xq, xs, w, ws, p, cols);
        }
    }
    for (; p + 2 <= panels; p += 2) {
        panels_pass(out, xq, xs, w, ws, p, 2, rows, cols, group_size, q4);
    }
    if (p < panels) {
        panels_pass(out, xq, xs, w, ws, p, 1, rows, cols, group_size, q4);
    }
}

/* The common group sizes get a copy of the loops specialised for them (fully unrolled). */
NEON_ALWAYS_INLINE void q_matmul_any(float *out, const int8_t *xq, const float *xs, const uint8_t *w, const float *ws,
                                     int rows, int cols, int group_size, int q4) {
    if (panel_layout(cols, group_size, q4)) {
        switch (group_size) {
        case 32:
            q_matmul_panels(out, xq, xs, w, ws, rows, cols, 32, q4);
            return;
        case 64:
            q_matmul_panels(out, xq, xs, w, ws, rows, cols, 64, q4);
            return;
        default:
            q_matmul_panels(out, xq, xs, w, ws, rows, cols, group_size, q4);
            return;
        }
    }
    q_matmul_sized(out, xq, xs, w, ws, rows, cols, group_size, q4);
}

void matmul_q8(float *out, const int8_t *xq, const float *xs, const int8_t *w, const float *ws, int rows,
               int cols, int group_size) {
    q_matmul_any(out, xq, xs, (const uint8_t *)w, ws, rows, cols, group_size, 0);
}

void matmul_q4(float *out, const int8_t *xq, const float *xs, const uint8_t *w, const float *ws, int rows,
               int cols, int group_size) {
    if (q4_pair_layout(cols, group_size)) {
        q4_pairs_matmul(out, xq, xs, w, ws, rows, cols, group_size);
        return;
    }
    q_matmul_any(out, xq, xs, w, ws, rows, cols, group_size, 1);
}

/* ---- q4z ---- */

/*
 * A q4z code n is stored where q4 keeps q (as q4's nibbles: n - 8 in neon_panels, n in the row-major layout),
 * so q4's dot products give sum((n - 8) x) exactly; the group's integer sum is that minus (z - 8) * sum(x):
 * sum((n - z) x), exact in int32. Four rows' group words are decoded in one vector: the zero points by a mask,
 * the scales by the contract's bit formula ((word & 0xFFF0) << 13) + 0x38000000, the float32 value of the
 * binary16 scale.
 */

/* acc[r] += ((float)(isum[r] - (z[r] - 8) * xsum) * scale[r]) * xs_g for the four rows' group words. */
static inline float32x4_t q4z_step(float32x4_t acc, int32x4_t isum, uint32x4_t word, int32_t xsum, float xs_g) {
    int32x4_t zero_minus_8 = vsubq_s32(vreinterpretq_s32_u32(vandq_u32(word, vdupq_n_u32(15))), vdupq_n_s32(8));
    uint32x4_t bits = vaddq_u32(vshlq_n_u32(vandq_u32(word, vdupq_n_u32(0xFFF0)), 13), vdupq_n_u32(0x38000000));
    isum = vmlsq_n_s32(isum, zero_minus_8, xsum);
    return vaddq_f32(acc, vmulq_n_f32(vmulq_f32(vcvtq_f32_s32(isum), vreinterpretq_f32_u32(bits)), xs_g));
}

/* `np` (1 or 2) q4z panels from panel p on (panels_pass's loop; per panel and group four words side by side). */
NEON_ALWAYS_INLINE void q4z_panels_pass(float *out, const int8_t *xq, const float *xs, const uint8_t *w,
                                        const uint16_t *wg, int p, int np, int rows, int cols, int group_size) {
    int ngroups = group_count(cols, group_size);
    const uint8_t *wp[2] = {w + (size_t)p * 2 * (size_t)cols, w + (size_t)(p + np - 1) * 2 * (size_t)cols};
    const uint16_t *g0 = wg + (size_t)p * 4 * (size_t)ngroups, *g1 = g0 + (size_t)(np - 1) * 4 * (size_t)ngroups;
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = acc0;
    int32x4_t sums[2];
    int full = cols / group_size; /* whole groups: a constant length, so their loops unroll */
    for (int g = 0; g < ngroups; g++) {
        int len = g < full ? group_size : cols - g * group_size; /* the row's last group may be shorter */
        const int8_t *x = xq + g * group_size;
        int32_t xsum;
        if (g < full) {
            panel_group(sums, wp, x, group_size, np, 1);
            xsum = group_sum(x, group_size);
        } else {
            panel_group(sums, wp, x, len, np, 1);
            xsum = group_sum(x, len);
        }
        acc0 = q4z_step(acc0, sums[0], vmovl_u16(vld1_u16(g0 + 4 * g)), xsum, xs[g]);
        if (np == 2) {
            acc1 = q4z_step(acc1, sums[1], vmovl_u16(vld1_u16(g1 + 4 * g)), xsum, xs[g]);
        }
    }
    int valid = rows - 4 * p;
    store_lanes_f32(out + 4 * p, acc0, valid < 4 ? valid : 4);
    if (np == 2) {
        valid -= 4;
        store_lanes_f32(out + 4 * p + 4, acc1, valid < 4 ? valid : 4);
    }
}

NEON_ALWAYS_INLINE void q4z_matmul_panels(float *out, const int8_t *xq, const float *xs, const uint8_t *w,
                                          const uint16_t *wg, int rows, int cols, int group_size) {
    int panels = (rows + 3) / 4;
    int p = 0;
    for (; p + 2 <= panels; p += 2) {
        q4z_panels_pass(out, xq, xs, w, wg, p, 2, rows, cols, group_size);
    }
    if (p < panels) {
        q4z_panels_pass(out, xq, xs, w, wg, p, 1, rows, cols, group_size);
    }
}

/* Row-major q4z (matrices neon_panels does not cover), four rows at a time. */
static void q4z_matmul_rows(float *out, const int8_t *xq, const float *xs, const uint8_t *w, const uint16_t *wg,
                            int rows, int cols, int group_size) {
    int ngroups = group_count(cols, group_size);
    size_t row_bytes = ((size_t)cols + 1) / 2;
    for (int i = 0; i < rows; i += 4) {
        int valid = rows - i < 4 ? rows - i : 4;
        const uint8_t *row[4];
        const uint16_t *words[4];
        for (int k = 0; k < 4; k++) {
            size_t r = (size_t)i + (size_t)clamp_row(k, valid);
            row[k] = w + r * row_bytes;
            words[k] = wg + r * (size_t)ngroups;
        }
        float32x4_t acc = vdupq_n_f32(0.0f);
        for (int g = 0; g < ngroups; g++) {
            int start = g * group_size;
            int end = start + group_size < cols ? start + group_size : cols;
            uint32_t packed[4] = {words[0][g], words[1][g], words[2][g], words[3][g]};
            acc = q4z_step(acc, q4_group_dot4(row, xq, start, end), vld1q_u32(packed),
                           group_sum(xq + start, end - start), xs[g]);
        }
        store_lanes_f32(out + i, acc, valid);
    }
}

void matmul_q4z(float *out, const int8_t *xq, const float *xs, const uint8_t *w, const uint16_t *wg, int rows,
                int cols, int group_size) {
    if (!panel_layout(cols, group_size, 1)) {
        q4z_matmul_rows(out, xq, xs, w, wg, rows, cols, group_size);
    } else if (group_size == 32) { /* the common group size gets its own copy, unrolled */
        q4z_matmul_panels(out, xq, xs, w, wg, rows, cols, 32);
    } else {
        q4z_matmul_panels(out, xq, xs, w, wg, rows, cols, group_size);
    }
}
