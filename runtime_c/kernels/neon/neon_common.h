/*
 * Helpers shared by the NEON kernel set (AArch64 Advanced SIMD, tuned for the Cortex-A55).
 *
 * The numeric contract (runtime_c/README.md) fixes the order of every float32 sum: each output is a
 * left-to-right chain of additions starting from 0.0f. A chain cannot be split across the lanes of one
 * vector without changing its rounding, so these kernels put *independent* chains side by side instead:
 * lane r of an accumulator is the whole sequential sum of row r (of a matrix, or of a key position).
 * Each lane then performs exactly the reference's operations in the reference's order (a float multiply
 * rounded to float32, then a float add rounded to float32: no FMA), which makes the results bit-identical.
 *
 * AArch64 NEON is fully IEEE 754 for float32 (denormals included, as long as FPCR.FZ is clear, which is
 * the Linux default), unlike 32-bit ARMv7 NEON, which flushes denormals to zero. That is why the set is
 * AArch64 only.
 */
#ifndef LLMCU_KERNELS_NEON_COMMON_H
#define LLMCU_KERNELS_NEON_COMMON_H

#if !defined(__aarch64__)
#error "kernels/neon needs AArch64 Advanced SIMD (IEEE float32 lanes, vdivq_f32, vpaddq_s32): use an aarch64 compiler"
#endif

#include <arm_neon.h>

/* Forces a function's body into each caller, where constant arguments specialise it (GCC and Clang). */
#define NEON_ALWAYS_INLINE static inline __attribute__((always_inline))

/* Unrolls the loop that follows up to four times: a group's few vector blocks then run without loop
 * bookkeeping once the group size is a constant. */
#if defined(__clang__)
#define NEON_UNROLL4 _Pragma("unroll 4")
#else
#define NEON_UNROLL4 _Pragma("GCC unroll 4")
#endif

/* Transposes the 4x4 block whose rows are r0..r3 (32-bit transposes of row pairs, then 64-bit ones across
 * the pairs): afterwards r_k holds column k, (r0[k], r1[k], r2[k], r3[k]). */
static inline void transpose4_f32(float32x4_t *r0, float32x4_t *r1, float32x4_t *r2, float32x4_t *r3) {
    float64x2_t t0 = vreinterpretq_f64_f32(vtrn1q_f32(*r0, *r1)); /* r0[0] r1[0] r0[2] r1[2] */
    float64x2_t t1 = vreinterpretq_f64_f32(vtrn2q_f32(*r0, *r1)); /* r0[1] r1[1] r0[3] r1[3] */
    float64x2_t t2 = vreinterpretq_f64_f32(vtrn1q_f32(*r2, *r3)); /* r2[0] r3[0] r2[2] r3[2] */
    float64x2_t t3 = vreinterpretq_f64_f32(vtrn2q_f32(*r2, *r3)); /* r2[1] r3[1] r2[3] r3[3] */
    *r0 = vreinterpretq_f32_f64(vtrn1q_f64(t0, t2));
    *r1 = vreinterpretq_f32_f64(vtrn1q_f64(t1, t3));
    *r2 = vreinterpretq_f32_f64(vtrn2q_f64(t0, t2));
    *r3 = vreinterpretq_f32_f64(vtrn2q_f64(t1, t3));
}

/*
 * Adds, lane by lane, the four columns of a 4x4 block of products to acc, one column after the other:
 * p_r holds row r's products for four consecutive columns j..j+3, and lane r of the result is
 * ((((acc[r] + p_r[0]) + p_r[1]) + p_r[2]) + p_r[3]), the reference's left-to-right order for row r.
 *
 * The products are computed in row layout (one contiguous load per row, multiplied by the contiguous
 * vector it meets) and only then transposed so that a column sits across the lanes; transposing after
 * the multiply rather than before costs the same eight permutes and keeps the loads contiguous.
 */
static inline float32x4_t add_columns_in_order(float32x4_t acc, float32x4_t p0, float32x4_t p1, float32x4_t p2,
                                               float32x4_t p3) {
    transpose4_f32(&p0, &p1, &p2, &p3);
    /* The adds form one dependent chain per lane, so the order below is the summation order. */
    acc = vaddq_f32(acc, p0); /* column j */
    acc = vaddq_f32(acc, p1); /* column j + 1 */
    acc = vaddq_f32(acc, p2); /* column j + 2 */
    return vaddq_f32(acc, p3); /* column j + 3 */
}

/* Gathers one float from each of four rows into the lanes of a vector (for a tail column). */
static inline float32x4_t gather4_f32(const float *r0, const float *r1, const float *r2, const float *r3) {
    float32x4_t v = vld1q_dup_f32(r0);
    v = vld1q_lane_f32(r1, v, 1);
    v = vld1q_lane_f32(r2, v, 2);
    return vld1q_lane_f32(r3, v, 3);
}

/* Writes the first `count` (1..4) lanes of v to dst: the last block of rows or positions may be short. */
static inline void store_lanes_f32(float *dst, float32x4_t v, int count) {
    if (count >= 4) {
        vst1q_f32(dst, v);
        return;
    }
    vst1q_lane_f32(dst, v, 0);
    if (count > 1) {
        vst1q_lane_f32(dst + 1, v, 1);
    }
    if (count > 2) {
        vst1q_lane_f32(dst + 2, v, 2);
    }
}

/* Row r of a block of four, where only `valid` (1..4) rows exist: the missing ones repeat the last valid
 * row, so the block code runs unchanged and the duplicate lanes are simply not stored. Lanes never mix, so
 * a repeated row cannot change the others' results. */
static inline int clamp_row(int r, int valid) { return r < valid ? r : valid - 1; }

/* Whether codegen stored a q8 (q4 = 0) or q4 matrix of `cols` columns in this set's panel layout (matmul.c
 * describes it; site_scons/llmcu/builder/layouts.py makes it): a property of the columns and the group size only,
 * so a range of rows handed to a thread answers it as the whole matrix does. */
static inline int panel_layout(int cols, int group_size, int q4) {
    int unit = q4 ? 8 : 4;
    return cols % unit == 0 && group_size % unit == 0;
}

/* Whether codegen stored a q4 matrix in pair panels (matmul.c; layouts.py's q4 in neon_panels): checked before
 * panel_layout(), which then applies to q4z only among the 4-bit types. */
static inline int q4_pair_layout(int cols, int group_size) { return cols % 4 == 0 && group_size % 4 == 0; }

#if defined(LLMCU_NUMERICS_FAST) && LLMCU_NUMERICS_FAST
/*
 * exp(x) in four lanes for numerics=fast (softmax, SwiGLU, attention): x = n ln2 + r with n = round(x / ln2) and
 * |r| <= ln2 / 2 (ln2 in two parts, the second folded in with FMA, so r is nearly exact), exp(r) by its Taylor
 * polynomial to degree 6 (truncation below 1.3e-7 relative on that interval), times 2^n built in the exponent
 * bits. x is clamped to [-87, 88] first, so 2^n stays a normal float: below -87 the result is about 1.6e-38
 * where the C library's expf would give a subnormal or 0 -- no difference to a softmax or a sigmoid. NaN in
 * gives NaN out. Relative error about 2.4e-7 (2 ulp) over the whole range (tests/runtime/test_neon_kernels.py).
 */
static inline float32x4_t neon_exp4(float32x4_t x) {
    x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-87.0f)), vdupq_n_f32(88.0f));
    float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693145751953125f)); /* ln2's first 16 bits: n * hi is exact */
    r = vfmsq_f32(r, n, vdupq_n_f32(1.428606765330187e-06f));         /* ln2 - hi */
    float32x4_t p = vdupq_n_f32(1.0f / 720.0f);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 120.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 24.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 6.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(0.5f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    int32x4_t scale = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23); /* 2^n's bits */
    return vmulq_f32(p, vreinterpretq_f32_s32(scale));
}
#endif

#endif /* LLMCU_KERNELS_NEON_COMMON_H */
