/*
 * Scaled dot-product attention for one query head against the cached keys and values, and the KV cache's
 * element types (runtime_c/README.md, "KV cache types"): float32, IEEE binary16 or int8 with a scale.
 *
 * The three attention variants are the same arithmetic; only the load of a cached element differs. The
 * binary16 conversions are written out in integer code rather than with _Float16/__fp16, which not every
 * compiler or core has, so the rounding is the same everywhere.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "kernels/kernels.h"

void attention_head(float *out, float *att, const float *q, const float *k, const float *v, int stride,
                    int head_size, int n_pos) {
    float scale = sqrtf((float)head_size);
    for (int t = 0; t < n_pos; t++) {
        const float *kt = k + (size_t)t * (size_t)stride;
        float score = 0.0f;
        for (int i = 0; i < head_size; i++) {
            score += q[i] * kt[i];
        }
        att[t] = score / scale;
    }

    softmax(att, n_pos);

    /* Weighted sum of the values, accumulated position by position (t outer) as run.c does. */
    for (int i = 0; i < head_size; i++) {
        out[i] = 0.0f;
    }
    for (int t = 0; t < n_pos; t++) {
        const float *vt = v + (size_t)t * (size_t)stride;
        float a = att[t];
        for (int i = 0; i < head_size; i++) {
            out[i] += a * vt[i];
        }
    }
}

/* ---- IEEE binary16: 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits ---- */

static inline uint32_t float_bits(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits); /* the portable way to reinterpret; compiles to a move */
    return bits;
}

static inline float bits_float(uint32_t bits) {
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* Drops the low `shift` bits of `value` (1 <= shift <= 24), rounding to nearest with ties to even. */
static inline uint32_t shift_round_even(uint32_t value, int shift) {
    uint32_t kept = value >> shift;
    uint32_t rest = value & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1);
    if (rest > half || (rest == half && (kept & 1u))) {
        kept++;
    }
    return kept;
}

static inline uint16_t to_half(float x) {
    uint32_t bits = float_bits(x);
    uint32_t sign = (bits >> 16) & 0x8000u;
    int exp = (int)((bits >> 23) & 0xffu); /* float32's biased exponent */
    uint32_t man = bits & 0x7fffffu;

    if (exp == 0xff) {
        /* Infinity stays infinity. A NaN stays a NaN: quiet bit set (so a payload that lived only in the
         * dropped low bits cannot turn it into infinity), upper payload bits kept. */
        return (uint16_t)(sign | 0x7c00u | (man ? 0x200u | (man >> 13) : 0u));
    }
    int e = exp - 127; /* unbiased */
    if (e > 15) {
        return (uint16_t)(sign | 0x7c00u); /* beyond the largest finite half (65504): +-inf */
    }
    if (e >= -14) {
        /* Normal half: keep 10 of the 23 mantissa bits. A carry out of the mantissa correctly bumps the
         * exponent, and out of exponent 30 gives exactly the infinity encoding 0x7c00. */
        uint32_t h = ((uint32_t)(e + 15) << 10) | (man >> 13);
        uint32_t rest = man & 0x1fffu;
        if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) {
            h++;
        }
        return (uint16_t)(sign | h);
    }
    if (exp == 0 || e < -25) {
        /* float32 subnormals and everything below half the smallest half subnormal (2^-24) round to zero. */
        return (uint16_t)sign;
    }
    /* Subnormal half: the value is m * 2^(e-23) with the implicit bit, in units of 2^-24 that is
     * m >> (-e - 1); rounding up out of the subnormals gives the smallest normal's encoding, 0x0400. */
    uint32_t m = man | 0x800000u;
    return (uint16_t)(sign | shift_round_even(m, -e - 1));
}

static inline float from_half(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) {
        return bits_float(sign | 0x7f800000u | (man << 13)); /* inf, or NaN with its payload */
    }
    if (exp != 0) {
        return bits_float(sign | ((exp + 112u) << 23) | (man << 13)); /* rebias 15 -> 127 */
    }
    if (man == 0) {
        return bits_float(sign); /* +-0 */
    }
    /* Subnormal half, man * 2^-24: normalise so the leading 1 becomes float32's implicit bit. */
    uint32_t e = 113; /* float32's biased exponent of 2^-14 */
    while (!(man & 0x400u)) {
        man <<= 1;
        e--;
    }
    return bits_float(sign | (e << 23) | ((man & 0x3ffu) << 13));
}

uint16_t f32_to_f16(float x) { return to_half(x); }

float f16_to_f32(uint16_t h) { return from_half(h); }

void kv_store_f16(uint16_t *dst, const float *src, int n) {
    for (int i = 0; i < n; i++) {
        dst[i] = to_half(src[i]);
    }
}

void attention_head_f16(float *out, float *att, const float *q, const uint16_t *k, const uint16_t *v, int stride,
                        int head_size, int n_pos) {
    float scale = sqrtf((float)head_size);
    for (int t = 0; t < n_pos; t++) {
        const uint16_t *kt = k + (size_t)t * (size_t)stride;
        float score = 0.0f;
        for (int i = 0; i < head_size; i++) {
            score += q[i] * from_half(kt[i]);
        }
        att[t] = score / scale;
    }

    softmax(att, n_pos);

    for (int i = 0; i < head_size; i++) {
        out[i] = 0.0f;
    }
    for (int t = 0; t < n_pos; t++) {
        const uint16_t *vt = v + (size_t)t * (size_t)stride;
        float a = att[t];
        for (int i = 0; i < head_size; i++) {
            out[i] += a * from_half(vt[i]);
        }
    }
}

void attention_head_q8(float *out, float *att, const float *q, const int8_t *k, const float *ks, const int8_t *v,
                       const float *vs, int stride, int scale_stride, int head_size, int n_pos) {
    float scale = sqrtf((float)head_size);
    for (int t = 0; t < n_pos; t++) {
        const int8_t *kt = k + (size_t)t * (size_t)stride;
        float kscale = ks[(size_t)t * (size_t)scale_stride];
        float score = 0.0f;
        /* Each key element is dequantized first, then multiplied: factoring the scale out of the sum
         * would round differently from the contract's dot product over the dequantized key. */
        for (int i = 0; i < head_size; i++) {
            score += q[i] * ((float)kt[i] * kscale);
        }
        att[t] = score / scale;
    }

    softmax(att, n_pos);

    for (int i = 0; i < head_size; i++) {
        out[i] = 0.0f;
    }
    for (int t = 0; t < n_pos; t++) {
        const int8_t *vt = v + (size_t)t * (size_t)stride;
        float vscale = vs[(size_t)t * (size_t)scale_stride];
        float a = att[t];
        for (int i = 0; i < head_size; i++) {
            out[i] += a * ((float)vt[i] * vscale);
        }
    }
}
