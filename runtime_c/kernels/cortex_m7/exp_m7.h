/*
 * expf for the Cortex-M7 kernels. By default it IS the C library's expf, so the results stay bit-identical
 * to the reference kernels (the contract); the kernels save work around it, not inside it.
 *
 * LLMCU_FAST_EXP (off by default) replaces it by m7_fast_expf, an approximation in single precision that
 * does NOT give expf's bits: see its comment for the error bound, which the host test checks.
 *
 * This header is plain C99 (no inline assembly), so that the host test can compile it.
 */
#ifndef LLMCU_CORTEX_M7_EXP_M7_H
#define LLMCU_CORTEX_M7_EXP_M7_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t m7_f32_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline float m7_bits_f32(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static inline float m7_expf(float x) { return expf(x); }

/*
 * The approximation behind LLMCU_FAST_EXP, in single precision only: e^x = 2^(k/32) e^r with k the integer
 * nearest x 32/ln2, 2^(k/32) from a table of 2^(i/32) (as floats) and e^r ~ 1 + r + r^2/2 + r^3/6 for
 * r = x - k ln2/32, |r| <= ln2/64.
 * It saves the double conversions and the special-case branch: x is clamped to [-87, 88] instead, so
 * below -87 it returns ~1.6e-38 rather than a smaller number or 0, and above 88 ~1.65e38 rather than
 * more or infinity (harmless where it is used: softmax after the max is subtracted has x <= 0, and
 * silu's 1 / (1 + e) is then ~0 either way); a NaN comes back as a number.
 *
 * Error bound on [-87, 88]: at most 1.84 ulp of the exact e^x (1.7e-7 relative), measured over every float
 * of the range against exp in double precision when this was written; tests/c/fast_exp_host.c checks every
 * 97th. 3.6% of those floats give another result than a correctly rounded expf.
 */
static const uint32_t m7_fast_exp_tab[32] = { /* bits(2^(i/32) as float) - (i << 18), as above */
    0x3f800000u, 0x3f7ecd87u, 0x3f7daac3u, 0x3f7c980fu, 0x3f7b95c2u, 0x3f7aa43au, 0x3f79c3d3u, 0x3f78f4f0u,
    0x3f7837f0u, 0x3f778d3au, 0x3f76f532u, 0x3f767043u, 0x3f75fed7u, 0x3f75a15bu, 0x3f75583fu, 0x3f7523f6u,
    0x3f7504f3u, 0x3f74fbafu, 0x3f7508a4u, 0x3f752c4du, 0x3f75672au, 0x3f75b9beu, 0x3f76248cu, 0x3f76a81eu,
    0x3f7744fdu, 0x3f77fbb8u, 0x3f78ccdfu, 0x3f79b907u, 0x3f7ac0c7u, 0x3f7be4bau, 0x3f7d257du, 0x3f7e83b3u,
};

static inline float m7_fast_expf(float x) {
    x = fmaxf(x, -87.0f); /* vmaxnm/vminnm: one instruction each, no branch */
    x = fminf(x, 88.0f);
    /* z = x * 32/ln2 + 1.5 * 2^23: the float addition rounds x*32/ln2 to the integer k, kept in z's low
     * mantissa bits (two's complement, |k| < 2^13). */
    float z = fmaf(x, 0x1.715476p+5f, 0x1.8p+23f);
    uint32_t ki = m7_f32_bits(z);
    float kf = z - 0x1.8p+23f;
    /* r = x - k ln2/32, with ln2/32 as a float plus its remainder (each fma rounds once). */
    float r = fmaf(kf, -0x1.62e430p-6f, x);
    r = fmaf(kf, 0x1.05c610p-34f, r);
    float p = fmaf(fmaf(fmaf(r, 0x1.555556p-3f, 0.5f), r, 1.0f), r, 1.0f);
    /* 2^(k/32) = table[k mod 32] with k div 32 added to its exponent (ki << 18 moves bits 5.. of k to the
     * exponent field; the arithmetic wraps mod 2^32 like the two's complement it is). */
    uint32_t s = m7_fast_exp_tab[ki & 31u] + (ki << 18);
    return m7_bits_f32(s) * p;
}

/*
 * softmax's exp pass: x[i] = expf(x[i] - max) for i < n, returning their sum, added in order from 0.0f.
 * max must be the largest x.
 */
float m7_exp_pass(float *x, int n, float max);

/* What the kernels call for a single value. numerics=fast (LLMCU_NUMERICS_FAST, runtime_c/README.md "Fast
 * numerics") takes the approximation: its results are what site_scons/llmcu/model/fastmath.py computes, and
 * tests/runtime/test_cortex_m7_fast.py holds the model to the quality bounds with it. */
#ifndef LLMCU_NUMERICS_FAST
#define LLMCU_NUMERICS_FAST 0
#endif
#if defined(LLMCU_FAST_EXP) || LLMCU_NUMERICS_FAST
#define M7_EXP(x) m7_fast_expf(x)
#else
#define M7_EXP(x) m7_expf(x)
#endif

#endif /* LLMCU_CORTEX_M7_EXP_M7_H */
