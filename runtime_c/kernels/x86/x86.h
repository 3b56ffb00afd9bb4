/*
 * Shared by the x86 kernel set (runtime_c/kernels/x86/): how the SIMD code is compiled and selected.
 *
 * The set's files replace kernels/ref/ files of the same name (site_scons/llmcu/builder/compileflags.py,
 * runtime_sources). Each one #includes its reference file with the functions it replaces renamed to
 * ref_<name> (kernels/ref/ref.h), so that the kernels it does not replace, and the fallback of those it does,
 * are the reference code itself rather than a copy of it.
 *
 * Choice of ISA: run-time dispatch, not -march=native. The SIMD functions are compiled with
 * __attribute__((target("avx2"))) and each kernel checks __builtin_cpu_supports("avx2") (a load and a
 * test of libgcc's CPU model) before using them; without AVX2, on a non-x86 host or with a compiler
 * that has neither, the reference code runs. Reasons:
 *  - the host program stays an x86-64 program that runs anywhere (a build copied to, or cached on, an
 *    older CI machine falls back instead of dying of SIGILL), and the target's flags stay generic;
 *  - "avx2" does not include "fma". GCC implements _mm256_mul_ps/_mm256_add_ps as plain vector
 *    arithmetic, which -ffp-contract may fuse; with FMA absent from the instruction set no fusion is
 *    possible whatever the flags, and the rest of the runtime is not compiled for an FMA-capable ISA
 *    either (-march=native would enable FMA for every file, leaving only -ffp-contract=off between the
 *    contract's separate multiply and add roundings and a fused multiply-add).
 *
 * Exactness rules the SIMD code keeps (runtime_c/README.md, "The numeric contract"):
 *  - a float sum that the contract makes sequential gets one vector LANE per independent sum (a matrix
 *    row, an attention position, an output element) and is accumulated in the same order, from 0.0f,
 *    with a separate multiply and add; vector IEEE add/mul/div round exactly as the scalar ones do;
 *  - integer dot products are exact in any order (int8 x int8 products sum in int16 pairs and int32).
 *
 * The hot loops keep their vectors in named variables (no arrays of vectors, no loops over them), so
 * that the compiler keeps them in registers at -O2.
 */
#ifndef LLMCU_KERNELS_X86_H
#define LLMCU_KERNELS_X86_H

#include <stddef.h>
#include <stdint.h>

/*
 * The weight layout this set reads, "x86_panels" (site_scons/llmcu/builder/layouts.py makes it at build time;
 * kernels/x86/matmul.c describes it): rows in panels of eight, so that one 32-byte load holds a piece of eight
 * rows and a matmul streams each matrix front to back. fp32 matrices are always in panels; a quantized one when
 * x86_panel_layout() says so, a property of its columns and group size only (the same test as layouts.py's).
 */
#define X86_PANEL_ROWS 8

static inline int x86_panel_layout(int cols, int group_size, int q4) {
    int unit = q4 ? 8 : 2; /* q4: blocks of eight columns; q8: pairs of columns */
    return cols % unit == 0 && group_size % unit == 0;
}

/* One element of a panel matrix, for the loops that read it a value at a time (the fallback matmuls without AVX2
 * and the embedding lookups, which read the table that doubles as the classifier). */

/* Row r's column j in an fp32 (width 1) or q8 (width 2) panel matrix: panel r / 8, then `width` columns of the
 * eight rows side by side. */
static inline size_t x86_panel_index(int r, int j, int cols, int width) {
    size_t panel = (size_t)(r / X86_PANEL_ROWS) * X86_PANEL_ROWS * (size_t)cols;
    return panel + (size_t)(j / width) * X86_PANEL_ROWS * (size_t)width + (size_t)(r % X86_PANEL_ROWS) * (size_t)width +
           (size_t)(j % width);
}

/* Row r's code n in column j of a q4/q4z panel matrix (block j / 8; low nibble for j % 8 < 4, else high). */
static inline int32_t x86_panel_code(const uint8_t *w, int r, int j, int cols) {
    size_t panel = (size_t)(r / X86_PANEL_ROWS) * X86_PANEL_ROWS * (size_t)cols / 2;
    uint8_t byte = w[panel + (size_t)(j / 8) * 32 + (size_t)(r % X86_PANEL_ROWS) * 4 + (size_t)(j % 4)];
    return (j % 8 < 4) ? (byte & 0x0F) : (byte >> 4);
}

/* Row r's entry for group g in a panel matrix's scales or group words (the eight rows' side by side). */
static inline size_t x86_panel_group_index(int r, int g, int ngroups) {
    return (size_t)(r / X86_PANEL_ROWS) * X86_PANEL_ROWS * (size_t)ngroups + (size_t)g * X86_PANEL_ROWS +
           (size_t)(r % X86_PANEL_ROWS);
}

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(LLMCU_X86_NO_SIMD)
#define X86_SIMD 1
#include <immintrin.h>

/* The attribute of every function that uses AVX2 intrinsics (AVX2 implies AVX and SSE4.1), and of the
 * small helpers, which must be inlined into the loops that call them. */
#define X86_AVX2 __attribute__((target("avx2")))
#define X86_AVX2_INLINE __attribute__((target("avx2"), always_inline)) static inline

/* Whether this CPU runs AVX2 code; libgcc fills in the CPU model before main. */
static inline int x86_have_avx2(void) { return __builtin_cpu_supports("avx2"); }

/* Transposes eight vectors of eight floats in place: afterwards *r<c> holds what was lane c of each. */
X86_AVX2_INLINE void x86_transpose8(__m256 *r0, __m256 *r1, __m256 *r2, __m256 *r3, __m256 *r4, __m256 *r5,
                                           __m256 *r6, __m256 *r7) {
    __m256 t0 = _mm256_unpacklo_ps(*r0, *r1);
    __m256 t1 = _mm256_unpackhi_ps(*r0, *r1);
    __m256 t2 = _mm256_unpacklo_ps(*r2, *r3);
    __m256 t3 = _mm256_unpackhi_ps(*r2, *r3);
    __m256 t4 = _mm256_unpacklo_ps(*r4, *r5);
    __m256 t5 = _mm256_unpackhi_ps(*r4, *r5);
    __m256 t6 = _mm256_unpacklo_ps(*r6, *r7);
    __m256 t7 = _mm256_unpackhi_ps(*r6, *r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44);
    __m256 u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44);
    __m256 u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44);
    __m256 u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44);
    __m256 u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    *r0 = _mm256_permute2f128_ps(u0, u4, 0x20);
    *r1 = _mm256_permute2f128_ps(u1, u5, 0x20);
    *r2 = _mm256_permute2f128_ps(u2, u6, 0x20);
    *r3 = _mm256_permute2f128_ps(u3, u7, 0x20);
    *r4 = _mm256_permute2f128_ps(u0, u4, 0x31);
    *r5 = _mm256_permute2f128_ps(u1, u5, 0x31);
    *r6 = _mm256_permute2f128_ps(u2, u6, 0x31);
    *r7 = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/*
 * acc (lane k: the sum of the float at p + k * stride) += p[k * stride + e] * x[e] for e = 0..7 in order:
 * eight sequential sums advanced by eight terms each, e.g. eight matrix rows or eight cached keys. The
 * products are formed row-wise (eight rows times x), then transposed so that each vector holds one term of
 * every sum, and added term by term.
 */
X86_AVX2_INLINE __m256 x86_dot8x8(__m256 acc, const float *p, size_t stride, const float *x) {
    __m256 xv = _mm256_loadu_ps(x);
    __m256 c0 = _mm256_mul_ps(_mm256_loadu_ps(p), xv);
    __m256 c1 = _mm256_mul_ps(_mm256_loadu_ps(p + stride), xv);
    __m256 c2 = _mm256_mul_ps(_mm256_loadu_ps(p + 2 * stride), xv);
    __m256 c3 = _mm256_mul_ps(_mm256_loadu_ps(p + 3 * stride), xv);
    __m256 c4 = _mm256_mul_ps(_mm256_loadu_ps(p + 4 * stride), xv);
    __m256 c5 = _mm256_mul_ps(_mm256_loadu_ps(p + 5 * stride), xv);
    __m256 c6 = _mm256_mul_ps(_mm256_loadu_ps(p + 6 * stride), xv);
    __m256 c7 = _mm256_mul_ps(_mm256_loadu_ps(p + 7 * stride), xv);
    x86_transpose8(&c0, &c1, &c2, &c3, &c4, &c5, &c6, &c7);
    acc = _mm256_add_ps(acc, c0);
    acc = _mm256_add_ps(acc, c1);
    acc = _mm256_add_ps(acc, c2);
    acc = _mm256_add_ps(acc, c3);
    acc = _mm256_add_ps(acc, c4);
    acc = _mm256_add_ps(acc, c5);
    acc = _mm256_add_ps(acc, c6);
    acc = _mm256_add_ps(acc, c7);
    return acc;
}

/* The same for one term: acc += p[k * stride] * x[0]. */
X86_AVX2_INLINE __m256 x86_dot8x1(__m256 acc, const float *p, size_t stride, const float *x) {
    __m256 c = _mm256_setr_ps(p[0], p[stride], p[2 * stride], p[3 * stride], p[4 * stride], p[5 * stride],
                              p[6 * stride], p[7 * stride]);
    return _mm256_add_ps(acc, _mm256_mul_ps(c, _mm256_broadcast_ss(x)));
}

/* Eight vectors of int32 partial sums -> one vector whose lane k is the total of a<k> (exact). */
X86_AVX2_INLINE __m256i x86_hsum8_epi32(__m256i a0, __m256i a1, __m256i a2, __m256i a3, __m256i a4, __m256i a5,
                                               __m256i a6, __m256i a7) {
    __m256i t0 = _mm256_hadd_epi32(a0, a1);
    __m256i t1 = _mm256_hadd_epi32(a2, a3);
    __m256i t2 = _mm256_hadd_epi32(a4, a5);
    __m256i t3 = _mm256_hadd_epi32(a6, a7);
    __m256i u0 = _mm256_hadd_epi32(t0, t1); /* low half: a0..a3's low-lane sums; high half: their high-lane sums */
    __m256i u1 = _mm256_hadd_epi32(t2, t3); /* the same for a4..a7 */
    return _mm256_add_epi32(_mm256_permute2x128_si256(u0, u1, 0x20), _mm256_permute2x128_si256(u0, u1, 0x31));
}
#else
#define X86_SIMD 0
#endif

#endif /* LLMCU_KERNELS_X86_H */
