/*
 * Attention for one head, and the KV cache's element types, for the Cortex-M7; bit-identical to
 * kernels/ref/attention.c.
 *
 * The reference makes five passes over the positions: scores, softmax's max, exp and sum, normalisation,
 * and the weighted sum of the values. Here the max is taken as the
 * scores are made, and for head_size 8 the normalising division happens as each weight is used, so three
 * passes remain; every value is computed by the same operations in the same order as the reference's. For
 * head_size 8 (stories260K) the dot products and the weighted sum are unrolled asm: q and the eight output
 * sums stay in FPU registers, a key or value row is one VLDM, and each sum still adds its terms one by one,
 * left to right. Other head sizes, and the int8 cache, take four passes in C, the weighted sum eight
 * outputs at a time.
 *
 * Two details differ from the reference's code, not its results:
 * - The max is VMAXNM over the scores. It can differ from the reference's "first score greater than the
 *   max so far" only in the sign of a zero max, and x - max is then the same for every score x (nonzero x:
 *   x itself; a zero x: a zero, whose expf is 1); a NaN score (from a NaN or infinity in q or k) makes every
 *   output NaN either way.
 * - A score starts from its first product instead of 0.0f + that product. They differ only when the
 *   product is -0, and then only in the sign of a zero score, which the point above shows cannot matter.
 *
 * numerics=fast (LLMCU_NUMERICS_FAST) changes the arithmetic, not the passes: q is scaled by 1/sqrt(head_size)
 * once instead of each score divided; a score is two fused multiply-add chains (even and odd elements, so the
 * chip can overlap them) added at the end; the weighted sum fuses each term into its sum (VFMA) with the
 * unnormalised exp weights, and the eight outputs are multiplied by 1/sum at the end. 14 and 13 instructions
 * per position for head_size 8 instead of 23 and 23. site_scons/llmcu/model/fastmath.py (M7FastMath.attention)
 * computes the same, operation by operation; tests/runtime/test_cortex_m7_fast.py checks the twin against it.
 *
 * binary16: the M7's FPU converts in hardware (VCVTB, IEEE rounding to nearest even, with subnormals and
 * NaN payloads: FPSCR's reset value has FZ, DN and AHP clear), which gives the integer code's bits for
 * every float (checked over a sweep of all floats by tests/runtime/test_cortex_m7_kernels.py). The one exception is
 * a signalling NaN in binary16, which the FPU quiets; f16_to_f32 keeps the reference's bits for it, and the
 * cache never holds one (f32_to_f16 makes every NaN quiet).
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "exp_m7.h"
#include "kernels/kernels.h"

/* ---- IEEE binary16 ---- */

static inline float half_to_float(uint16_t h) {
    float in, out;
    uint32_t bits = h;
    memcpy(&in, &bits, sizeof in);
    __asm__("vcvtb.f32.f16 %0, %1" : "=t"(out) : "t"(in));
    return out;
}

static inline uint16_t float_to_half(float x) {
    float out;
    __asm__("vcvtb.f16.f32 %0, %1" : "=t"(out) : "t"(x)); /* writes the low half of the register */
    uint32_t bits;
    memcpy(&bits, &out, sizeof bits);
    return (uint16_t)bits;
}

uint16_t f32_to_f16(float x) { return float_to_half(x); }

float f16_to_f32(uint16_t h) {
    if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0 && !(h & 0x200u)) {
        /* A signalling NaN: the FPU would set the quiet bit; the contract keeps the payload as it is. */
        return m7_bits_f32(((uint32_t)(h & 0x8000u) << 16) | 0x7f800000u | ((uint32_t)(h & 0x3ffu) << 13));
    }
    return half_to_float(h);
}

void kv_store_f16(uint16_t *dst, const float *src, int n) {
    for (int i = 0; i < n; i++) {
        dst[i] = float_to_half(src[i]);
    }
}

/* ---- the passes ---- */

enum { KV_F32, KV_F16, KV_Q8 };

/* Element i of position t of the cache, as float32 (q8: the contract's (float)q * scale). */
static inline __attribute__((always_inline)) float kv_at(const void *base, size_t at, int kind, float scale) {
    if (kind == KV_F16) {
        return half_to_float(((const uint16_t *)base)[at]);
    }
    if (kind == KV_Q8) {
        return (float)((const int8_t *)base)[at] * scale;
    }
    return ((const float *)base)[at];
}

/* Any head size, any cache type (kind is a constant once inlined). */
static inline __attribute__((always_inline)) void attend_c(float *out, float *att, const float *q, const void *k,
                                                           const float *ks, const void *v, const float *vs,
                                                           int stride, int scale_stride, int head_size, int n_pos,
                                                           int kind) {
    float scale = sqrtf((float)head_size);
    float max = -INFINITY;
    for (int t = 0; t < n_pos; t++) {
        size_t row = (size_t)t * (size_t)stride;
        float kscale = kind == KV_Q8 ? ks[(size_t)t * (size_t)scale_stride] : 0.0f;
        float score = q[0] * kv_at(k, row, kind, kscale);
        for (int i = 1; i < head_size; i++) {
            score += q[i] * kv_at(k, row + (size_t)i, kind, kscale);
        }
        score /= scale;
        att[t] = score;
        max = fmaxf(max, score);
    }
    float sum = m7_exp_pass(att, n_pos, max);
    for (int t = 0; t < n_pos; t++) {
        att[t] /= sum; /* softmax's normalisation, as the reference does it */
    }
    /* The weighted sum, eight outputs at a time so that their sums stay in registers over all positions
     * (each still adds its terms in position order); the last head_size % 8 outputs one by one. */
    int c = 0;
    for (; c + 8 <= head_size; c += 8) {
        float o0 = 0.0f, o1 = 0.0f, o2 = 0.0f, o3 = 0.0f, o4 = 0.0f, o5 = 0.0f, o6 = 0.0f, o7 = 0.0f;
        for (int t = 0; t < n_pos; t++) {
            size_t row = (size_t)t * (size_t)stride + (size_t)c;
            float vscale = kind == KV_Q8 ? vs[(size_t)t * (size_t)scale_stride] : 0.0f;
            float a = att[t];
            o0 += a * kv_at(v, row, kind, vscale);
            o1 += a * kv_at(v, row + 1, kind, vscale);
            o2 += a * kv_at(v, row + 2, kind, vscale);
            o3 += a * kv_at(v, row + 3, kind, vscale);
            o4 += a * kv_at(v, row + 4, kind, vscale);
            o5 += a * kv_at(v, row + 5, kind, vscale);
            o6 += a * kv_at(v, row + 6, kind, vscale);
            o7 += a * kv_at(v, row + 7, kind, vscale);
        }
        out[c] = o0;
        out[c + 1] = o1;
        out[c + 2] = o2;
        out[c + 3] = o3;
        out[c + 4] = o4;
        out[c + 5] = o5;
        out[c + 6] = o6;
        out[c + 7] = o7;
    }
    for (; c < head_size; c++) {
        float o = 0.0f;
        for (int t = 0; t < n_pos; t++) {
            float vscale = kind == KV_Q8 ? vs[(size_t)t * (size_t)scale_stride] : 0.0f;
            o += att[t] * kv_at(v, (size_t)t * (size_t)stride + (size_t)c, kind, vscale);
        }
        out[c] = o;
    }
}

/* numerics=fast, any head size, any cache type: the arithmetic described at the top. */
static inline __attribute__((always_inline)) void attend_c_fast(float *out, float *att, const float *q,
                                                                const void *k, const float *ks, const void *v,
                                                                const float *vs, int stride, int scale_stride,
                                                                int head_size, int n_pos, int kind) {
    float inv_scale = 1.0f / sqrtf((float)head_size);
    float max = -INFINITY;
    for (int t = 0; t < n_pos; t++) {
        size_t row = (size_t)t * (size_t)stride;
        float kscale = kind == KV_Q8 ? ks[(size_t)t * (size_t)scale_stride] : 0.0f;
        float even = (q[0] * inv_scale) * kv_at(k, row, kind, kscale);
        for (int i = 2; i < head_size; i += 2) {
            even = fmaf(q[i] * inv_scale, kv_at(k, row + (size_t)i, kind, kscale), even);
        }
        float score = even;
        if (head_size > 1) {
            float odd = (q[1] * inv_scale) * kv_at(k, row + 1, kind, kscale);
            for (int i = 3; i < head_size; i += 2) {
                odd = fmaf(q[i] * inv_scale, kv_at(k, row + (size_t)i, kind, kscale), odd);
            }
            score = even + odd;
        }
        att[t] = score;
        max = fmaxf(max, score);
    }
    float inv_sum = 1.0f / m7_exp_pass(att, n_pos, max);
    for (int c = 0; c < head_size; c++) {
        float o = 0.0f;
        for (int t = 0; t < n_pos; t++) {
            float vscale = kind == KV_Q8 ? vs[(size_t)t * (size_t)scale_stride] : 0.0f;
            o = fmaf(att[t], kv_at(v, (size_t)t * (size_t)stride + (size_t)c, kind, vscale), o);
        }
        out[c] = o * inv_sum;
    }
}

/* ---- head_size 8, float32 or binary16 cache: asm ---- */

/* Position t's eight keys or values into s8..s15 from P (binary16: one VLDM of four words, then VCVTB/VCVTT
 * for the low and high half of each). */
#define LOAD8_F32(P) "vldmia " P ", {s8-s15}\n\t"
#define LOAD8_F16(P)                                                                                     \
    "vldmia " P ", {s26-s29}\n\t"                                                                        \
    "vcvtb.f32.f16 s8, s26\n\t"                                                                          \
    "vcvtt.f32.f16 s9, s26\n\t"                                                                          \
    "vcvtb.f32.f16 s10, s27\n\t"                                                                         \
    "vcvtt.f32.f16 s11, s27\n\t"                                                                         \
    "vcvtb.f32.f16 s12, s28\n\t"                                                                         \
    "vcvtt.f32.f16 s13, s28\n\t"                                                                         \
    "vcvtb.f32.f16 s14, s29\n\t"                                                                         \
    "vcvtt.f32.f16 s15, s29\n\t"

/* Scores of positions 0..n-1 into att (q in s0..s7), each divided by scale; their max. */
#define SCORES8(LOAD8)                                                                                   \
    "vldmia %[q], {s0-s7}\n\t"                                                                           \
    "1:\n\t" LOAD8("%[kp]") "add %[kp], %[kp], %[st]\n\t"                                                \
    "vmul.f32 s16, s0, s8\n\t"                                                                           \
    "vmul.f32 s17, s1, s9\n\t"                                                                           \
    "vadd.f32 s16, s16, s17\n\t"                                                                         \
    "vmul.f32 s17, s2, s10\n\t"                                                                          \
    "vadd.f32 s16, s16, s17\n\t"                                                                         \
    "vmul.f32 s17, s3, s11\n\t"                                                                          \
    "vadd.f32 s16, s16, s17\n\t"                                                                         \
    "vmul.f32 s17, s4, s12\n\t"                                                                          \
    "vadd.f32 s16, s16, s17\n\t"                                                                         \
    "vmul.f32 s17, s5, s13\n\t"                                                                          \
    "vadd.f32 s16, s16, s17\n\t"                                                                         \
    "vmul.f32 s17, s6, s14\n\t"                                                                          \
    "vadd.f32 s16, s16, s17\n\t"                                                                         \
    "vmul.f32 s17, s7, s15\n\t"                                                                          \
    "vadd.f32 s16, s16, s17\n\t"                                                                         \
    "vdiv.f32 s16, s16, %[scale]\n\t"                                                                    \
    "vmaxnm.f32 %[max], %[max], s16\n\t"                                                                 \
    "vstmia %[att]!, {s16}\n\t"                                                                          \
    "subs %[n], %[n], #1\n\t"                                                                            \
    "bne 1b\n\t"

/* out[0..8) = sum over t of (att[t] / sum) * v_t, term by term from 0.0f (the sums in s16..s23). */
#define VALUES8(LOAD8)                                                                                   \
    "vmov s16, s17, %[zero], %[zero]\n\t"                                                                \
    "vmov s18, s19, %[zero], %[zero]\n\t"                                                                \
    "vmov s20, s21, %[zero], %[zero]\n\t"                                                                \
    "vmov s22, s23, %[zero], %[zero]\n\t"                                                                \
    "1:\n\t"                                                                                             \
    "vldmia %[att]!, {s25}\n\t"                                                                          \
    "vdiv.f32 s25, s25, %[sum]\n\t" LOAD8("%[vp]") "add %[vp], %[vp], %[st]\n\t"                         \
    "vmul.f32 s24, s25, s8\n\t"                                                                          \
    "vadd.f32 s16, s16, s24\n\t"                                                                         \
    "vmul.f32 s24, s25, s9\n\t"                                                                          \
    "vadd.f32 s17, s17, s24\n\t"                                                                         \
    "vmul.f32 s24, s25, s10\n\t"                                                                         \
    "vadd.f32 s18, s18, s24\n\t"                                                                         \
    "vmul.f32 s24, s25, s11\n\t"                                                                         \
    "vadd.f32 s19, s19, s24\n\t"                                                                         \
    "vmul.f32 s24, s25, s12\n\t"                                                                         \
    "vadd.f32 s20, s20, s24\n\t"                                                                         \
    "vmul.f32 s24, s25, s13\n\t"                                                                         \
    "vadd.f32 s21, s21, s24\n\t"                                                                         \
    "vmul.f32 s24, s25, s14\n\t"                                                                         \
    "vadd.f32 s22, s22, s24\n\t"                                                                         \
    "vmul.f32 s24, s25, s15\n\t"                                                                         \
    "vadd.f32 s23, s23, s24\n\t"                                                                         \
    "subs %[n], %[n], #1\n\t"                                                                            \
    "bne 1b\n\t"                                                                                         \
    "vstmia %[out], {s16-s23}\n\t"

/* numerics=fast: scores of q (already scaled, in s0..s7) as even and odd FMA chains, then their sum. */
#define SCORES8_FAST(LOAD8)                                                                              \
    "vldmia %[q], {s0-s7}\n\t"                                                                           \
    "1:\n\t" LOAD8("%[kp]") "add %[kp], %[kp], %[st]\n\t"                                                \
    "vmul.f32 s16, s0, s8\n\t"                                                                           \
    "vmul.f32 s17, s1, s9\n\t"                                                                           \
    "vfma.f32 s16, s2, s10\n\t"                                                                          \
    "vfma.f32 s17, s3, s11\n\t"                                                                          \
    "vfma.f32 s16, s4, s12\n\t"                                                                          \
    "vfma.f32 s17, s5, s13\n\t"                                                                          \
    "vfma.f32 s16, s6, s14\n\t"                                                                          \
    "vfma.f32 s17, s7, s15\n\t"                                                                          \
    "vadd.f32 s16, s16, s17\n\t"                                                                         \
    "vmaxnm.f32 %[max], %[max], s16\n\t"                                                                 \
    "vstmia %[att]!, {s16}\n\t"                                                                          \
    "subs %[n], %[n], #1\n\t"                                                                            \
    "bne 1b\n\t"

/* numerics=fast: out[0..8) = sum over t of att[t] * v_t, each term fused into its sum (unnormalised). */
#define VALUES8_FAST(LOAD8)                                                                              \
    "vmov s16, s17, %[zero], %[zero]\n\t"                                                                \
    "vmov s18, s19, %[zero], %[zero]\n\t"                                                                \
    "vmov s20, s21, %[zero], %[zero]\n\t"                                                                \
    "vmov s22, s23, %[zero], %[zero]\n\t"                                                                \
    "1:\n\t"                                                                                             \
    "vldmia %[att]!, {s25}\n\t" LOAD8("%[vp]") "add %[vp], %[vp], %[st]\n\t"                             \
    "vfma.f32 s16, s25, s8\n\t"                                                                          \
    "vfma.f32 s17, s25, s9\n\t"                                                                          \
    "vfma.f32 s18, s25, s10\n\t"                                                                         \
    "vfma.f32 s19, s25, s11\n\t"                                                                         \
    "vfma.f32 s20, s25, s12\n\t"                                                                         \
    "vfma.f32 s21, s25, s13\n\t"                                                                         \
    "vfma.f32 s22, s25, s14\n\t"                                                                         \
    "vfma.f32 s23, s25, s15\n\t"                                                                         \
    "subs %[n], %[n], #1\n\t"                                                                            \
    "bne 1b\n\t"                                                                                         \
    "vstmia %[out], {s16-s23}\n\t"

#define SCORE_CLOBBERS                                                                                   \
    "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13", "s14", "s15",  \
        "s16", "s17", "s26", "s27", "s28", "s29", "cc", "memory"
#define VALUE_CLOBBERS                                                                                   \
    "s8", "s9", "s10", "s11", "s12", "s13", "s14", "s15", "s16", "s17", "s18", "s19", "s20", "s21", "s22",  \
        "s23", "s24", "s25", "s26", "s27", "s28", "s29", "cc", "memory"

/* `bytes` per element; k and v 4-byte aligned and stride * bytes a multiple of 4 (VLDM). */
static inline __attribute__((always_inline)) void attend8(float *out, float *att, const float *q, const void *k,
                                                          const void *v, int stride, int n_pos, int f16) {
    int stride_bytes = stride * (f16 ? 2 : 4);
    float max = -INFINITY;
    const void *kp = k;
    float *ap = att;
    int n = n_pos;
#if LLMCU_NUMERICS_FAST
    float inv_scale = 1.0f / sqrtf(8.0f);
    float qs[8];
    for (int i = 0; i < 8; i++) {
        qs[i] = q[i] * inv_scale;
    }
    if (f16) {
        __asm__ volatile(SCORES8_FAST(LOAD8_F16)
                         : [kp] "+r"(kp), [att] "+r"(ap), [n] "+r"(n), [max] "+t"(max)
                         : [q] "r"(qs), [st] "r"(stride_bytes)
                         : SCORE_CLOBBERS);
    } else {
        __asm__ volatile(SCORES8_FAST(LOAD8_F32)
                         : [kp] "+r"(kp), [att] "+r"(ap), [n] "+r"(n), [max] "+t"(max)
                         : [q] "r"(qs), [st] "r"(stride_bytes)
                         : SCORE_CLOBBERS);
    }
    float inv_sum = 1.0f / m7_exp_pass(att, n_pos, max);
    const void *vp = v;
    ap = att;
    n = n_pos;
    if (f16) {
        __asm__ volatile(VALUES8_FAST(LOAD8_F16)
                         : [vp] "+r"(vp), [att] "+r"(ap), [n] "+r"(n)
                         : [out] "r"(out), [st] "r"(stride_bytes), [zero] "r"(0)
                         : VALUE_CLOBBERS);
    } else {
        __asm__ volatile(VALUES8_FAST(LOAD8_F32)
                         : [vp] "+r"(vp), [att] "+r"(ap), [n] "+r"(n)
                         : [out] "r"(out), [st] "r"(stride_bytes), [zero] "r"(0)
                         : VALUE_CLOBBERS);
    }
    for (int i = 0; i < 8; i++) {
        out[i] *= inv_sum;
    }
#else
    float scale = sqrtf(8.0f);
    if (f16) {
        __asm__ volatile(SCORES8(LOAD8_F16)
                         : [kp] "+r"(kp), [att] "+r"(ap), [n] "+r"(n), [max] "+t"(max)
                         : [q] "r"(q), [st] "r"(stride_bytes), [scale] "t"(scale)
                         : SCORE_CLOBBERS);
    } else {
        __asm__ volatile(SCORES8(LOAD8_F32)
                         : [kp] "+r"(kp), [att] "+r"(ap), [n] "+r"(n), [max] "+t"(max)
                         : [q] "r"(q), [st] "r"(stride_bytes), [scale] "t"(scale)
                         : SCORE_CLOBBERS);
    }
    float sum = m7_exp_pass(att, n_pos, max);
    const void *vp = v;
    ap = att;
    n = n_pos;
    if (f16) {
        __asm__ volatile(VALUES8(LOAD8_F16)
                         : [vp] "+r"(vp), [att] "+r"(ap), [n] "+r"(n)
                         : [out] "r"(out), [st] "r"(stride_bytes), [sum] "t"(sum), [zero] "r"(0)
                         : VALUE_CLOBBERS);
    } else {
        __asm__ volatile(VALUES8(LOAD8_F32)
                         : [vp] "+r"(vp), [att] "+r"(ap), [n] "+r"(n)
                         : [out] "r"(out), [st] "r"(stride_bytes), [sum] "t"(sum), [zero] "r"(0)
                         : VALUE_CLOBBERS);
    }
#endif
}

/* The C passes: the exact ones, or numerics=fast's. */
#if LLMCU_NUMERICS_FAST
#define ATTEND_C attend_c_fast
#else
#define ATTEND_C attend_c
#endif

/* ---- the kernels ---- */

void attention_head(float *out, float *att, const float *q, const float *k, const float *v, int stride,
                    int head_size, int n_pos) {
    if (head_size == 8 && n_pos > 0) {
        attend8(out, att, q, k, v, stride, n_pos, 0);
    } else {
        ATTEND_C(out, att, q, k, NULL, v, NULL, stride, 0, head_size, n_pos, KV_F32);
    }
}

void attention_head_f16(float *out, float *att, const float *q, const uint16_t *k, const uint16_t *v, int stride,
                        int head_size, int n_pos) {
    if (head_size == 8 && n_pos > 0 && !(((uintptr_t)k | (uintptr_t)v | (uintptr_t)stride * 2u) & 3u)) {
        attend8(out, att, q, k, v, stride, n_pos, 1);
    } else {
        ATTEND_C(out, att, q, k, NULL, v, NULL, stride, 0, head_size, n_pos, KV_F16);
    }
}

void attention_head_q8(float *out, float *att, const float *q, const int8_t *k, const float *ks, const int8_t *v,
                       const float *vs, int stride, int scale_stride, int head_size, int n_pos) {
    ATTEND_C(out, att, q, k, ks, v, vs, stride, scale_stride, head_size, n_pos, KV_Q8);
}
