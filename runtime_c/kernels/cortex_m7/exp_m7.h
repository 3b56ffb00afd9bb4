/*
 * expf for the Cortex-M7 kernels, inlined into the softmax and SwiGLU loops.
 *
 * m7_expf (the default) gives the same bits as the toolchain's expf for every input. newlib's expf (as
 * glibc's) is Arm's optimized-routines algorithm: x/ln2 split into k/32 + r with a 32-entry table of
 * 2^(i/32) and a cubic in r, evaluated in double precision. On an FPv5-D16 core doubles are hardware, so
 * the routine is only ~23 instructions; what a call adds (branch, push/pop, constant loads, return) is as
 * much again. This is the same evaluation, operation for operation, with the fused multiply-adds where the
 * library binary has them (arm-none-eabi newlib is built with FMA contraction: its expf has vfma.f64 and
 * vfnms.f64), so every intermediate double rounds identically. Arguments the library treats specially
 * (|x| >= 88, infinities, NaN: overflow, underflow, errno) go to expf itself. tests/test_cortex_m7_kernels.py
 * checks m7_expf against expf on the twin, bit for bit, over a dense sweep of all floats.
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

/* exp2f_data of optimized-routines (newlib's __exp2f_data): tab[i] = bits(2^(i/32)) - (i << 47), so that
 * adding k << 47 for k = 32 m + i gives the bits of 2^(k/32) (the integer part lands in the exponent).
 * Defined once, in ops.c (or wherever M7_EXP_DEFINE_TABLE is set before this header). */
#ifdef M7_EXP_DEFINE_TABLE
const uint64_t m7_exp_tab[32] = {
    0x3ff0000000000000u, 0x3fefd9b0d3158574u, 0x3fefb5586cf9890fu, 0x3fef9301d0125b51u,
    0x3fef72b83c7d517bu, 0x3fef54873168b9aau, 0x3fef387a6e756238u, 0x3fef1e9df51fdee1u,
    0x3fef06fe0a31b715u, 0x3feef1a7373aa9cbu, 0x3feedea64c123422u, 0x3feece086061892du,
    0x3feebfdad5362a27u, 0x3feeb42b569d4f82u, 0x3feeab07dd485429u, 0x3feea47eb03a5585u,
    0x3feea09e667f3bcdu, 0x3fee9f75e8ec5f74u, 0x3feea11473eb0187u, 0x3feea589994cce13u,
    0x3feeace5422aa0dbu, 0x3feeb737b0cdc5e5u, 0x3feec49182a3f090u, 0x3feed503b23e255du,
    0x3feee89f995ad3adu, 0x3feeff76f2fb5e47u, 0x3fef199bdd85529cu, 0x3fef3720dcef9069u,
    0x3fef5818dcfba487u, 0x3fef7c97337b9b5fu, 0x3fefa4afa2a490dau, 0x3fefd0765b6e4540u,
};
#else
extern const uint64_t m7_exp_tab[32];
#endif

#define M7_EXP_SHIFT 0x1.8p+52                   /* adding it rounds to an integer, kept in the low bits */
#define M7_EXP_INVLN2N 0x1.71547652b82fep+5      /* 32 / ln 2 */
#define M7_EXP_C0 0x1.c6af84b912394p-20          /* 2^(r/32) ~ C0 r^3 + C1 r^2 + C2 r + 1 */
#define M7_EXP_C1 0x1.ebfce50fac4f3p-13
#define M7_EXP_C2 0x1.62e42ff0c52d6p-6

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

static inline float m7_expf(float x) {
    /* |x| >= 88 (or not finite): the library's own overflow/underflow handling, rarely taken. The test is
     * the library's: the top 12 bits without the sign, against those of 88.0f. */
    if (((m7_f32_bits(x) >> 20) & 0x7ffu) >= 0x42bu) {
        return expf(x);
    }
    double xd = (double)x;
    double kd = __builtin_fma(M7_EXP_INVLN2N, xd, M7_EXP_SHIFT); /* round(x * 32/ln2) + SHIFT */
    uint64_t ki;
    memcpy(&ki, &kd, sizeof ki);
    kd -= M7_EXP_SHIFT;
    double r = __builtin_fma(M7_EXP_INVLN2N, xd, -kd); /* x * 32/ln2 - k, in [-1/2, 1/2] */
    uint64_t t = m7_exp_tab[ki % 32u] + (ki << 47);
    double s;
    memcpy(&s, &t, sizeof s); /* 2^(k/32) */
    double z = __builtin_fma(M7_EXP_C0, r, M7_EXP_C1);
    double r2 = r * r;
    double y = __builtin_fma(M7_EXP_C2, r, 1.0);
    y = __builtin_fma(z, r2, y);
    return (float)(y * s);
}

/*
 * The approximation behind LLMCU_FAST_EXP, in single precision only: x = (k + f) ln2/32 with the same
 * 2^(i/32) table (as floats) and 2^(f/32) ~ 1 + r + r^2/2 + r^3/6 for r = x - k ln2/32, |r| <= ln2/64.
 * It saves the double conversions and the special-case branch: x is clamped to [-87, 88] instead, so
 * below -87 it returns ~1.6e-38 rather than a smaller number or 0, and above 88 ~1.65e38 rather than
 * more or infinity (harmless where it is used: softmax after the max is subtracted has x <= 0, and
 * silu's 1 / (1 + e) is then ~0 either way); a NaN comes back as a number.
 *
 * Error bound on [-87, 88] (checked on the host against expf computed in double, over every float in
 * the range): at most 2 ulp; 0.54% of the inputs give a different float than expf.
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
 * softmax's exp pass: x[i] = expf(x[i] - max) for i < n, returning their sum, added in order from 0.0f;
 * max is the largest x and min the smallest (whether any x - max can reach expf's special cases). The default is
 * m7_expf's evaluation as an asm loop (ops.c), ~25 instructions an element; with LLMCU_FAST_EXP a C loop
 * over m7_fast_expf.
 */
float m7_exp_pass(float *x, int n, float max, float min);

/* What the kernels call for a single value. */
#ifdef LLMCU_FAST_EXP
#define M7_EXP(x) m7_fast_expf(x)
#else
#define M7_EXP(x) m7_expf(x)
#endif

#endif /* LLMCU_CORTEX_M7_EXP_M7_H */
