/*
 * NEON attention for one query head, and the binary16 KV cache conversions, for AArch64 (Cortex-A55).
 * Replaces kernels/ref/attention.c, so it defines the same functions; softmax stays the reference one
 * (kernels/ref/ops.c).
 *
 * Bit-identical to the reference (runtime_c/README.md, "The numeric contract", "KV cache types"):
 *
 * - Scores: each score_t = (sum_i q[i] * k_t[i]) / sqrt(head_size) is a sequential chain over i. Four
 *   positions are scored at once, position t + r in lane r, each lane performing its own chain in the
 *   reference order (multiply, then add; no FMA). The division is IEEE, like the scalar one.
 * - Values: xb[i] = sum_t a_t * v_t[i] is a chain over t for each i, so lanes are simply consecutive i
 *   and the loop over t runs inside, in order.
 * - binary16: the A64 conversion instructions (FCVTL, FCVTN) are exact IEEE conversions: binary16 ->
 *   float32 is exact (subnormals included), and float32 -> binary16 rounds to nearest even with the
 *   contract's overflow, subnormal and NaN rules, as long as FPCR has its Linux defaults (round to nearest,
 *   FZ = 0, DN = 0, AHP = 0). They replace the reference's integer code, which exists only because not
 *   every core has them; the tests compare the two on every binary16 value and a sweep of float32 values.
 *   One difference: FCVTL quiets a signalling NaN, which the contract's binary16 -> float32 keeps as is,
 *   so f16_to_f32 treats NaNs itself (see there) and attention's loads may ignore it.
 * - int8: an element is read back as (float)q * scale rounded to float32 before it meets q[i] or a_t,
 *   as the contract says; the same two roundings happen here per lane.
 */
#include <arm_neon.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "kernels/kernels.h"
#include "neon_common.h"

/* ---- IEEE binary16 <-> float32 ---- */

static inline float32x4_t f16x4_to_f32(uint16x4_t h) { return vcvt_f32_f16(vreinterpret_f16_u16(h)); }

static inline uint16x4_t f32x4_to_f16(float32x4_t x) { return vreinterpret_u16_f16(vcvt_f16_f32(x)); }

uint16_t f32_to_f16(float x) { return vget_lane_u16(f32x4_to_f16(vdupq_n_f32(x)), 0); }

float f16_to_f32(uint16_t h) {
    if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0) {
        /* A NaN: FCVTL would set the quiet bit of a signalling one, the contract keeps its bits as they
         * are. (The cache never holds a signalling NaN, since every store goes through f32_to_f16, which
         * quiets NaNs; so attention's loads below can use FCVTL directly.) */
        uint32_t bits = (uint32_t)(h & 0x8000u) << 16 | 0x7f800000u | (uint32_t)(h & 0x3ffu) << 13;
        float x;
        memcpy(&x, &bits, sizeof x);
        return x;
    }
    return vgetq_lane_f32(f16x4_to_f32(vdup_n_u16(h)), 0);
}

void kv_store_f16(uint16_t *dst, const float *src, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        vst1q_u16(dst + i, vcombine_u16(f32x4_to_f16(vld1q_f32(src + i)), f32x4_to_f16(vld1q_f32(src + i + 4))));
    }
    for (; i + 4 <= n; i += 4) {
        vst1_u16(dst + i, f32x4_to_f16(vld1q_f32(src + i)));
    }
    for (; i < n; i++) {
        dst[i] = f32_to_f16(src[i]);
    }
}

/* ---- one attention head over a cache of float32, binary16 or int8 elements ---- */

/* The cache element types; `type` is a constant at every call, so each public function below compiles
 * to a loop specialised for its type. */
enum { CACHE_F32, CACHE_F16, CACHE_Q8 };

/* Elements index..index+3 of a cache row, as the float32 values attention reads (int8: times `scale`). */
static inline float32x4_t load4(const void *row, int index, int type, float scale) {
    if (type == CACHE_F16) {
        return f16x4_to_f32(vld1_u16((const uint16_t *)row + index));
    }
    if (type == CACHE_Q8) {
        int32_t word; /* four int8 values; memcpy because the row is only byte aligned */
        memcpy(&word, (const int8_t *)row + index, sizeof word);
        int16x8_t wide = vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(word)));
        return vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(wide))), scale);
    }
    return vld1q_f32((const float *)row + index);
}

/* Elements index..index+7 of a cache row, as two float32 vectors: one 8-byte or 16-byte load where the
 * element is narrower than a float, which halves the loads and widenings of two load4 calls. */
static inline float32x4x2_t load8(const void *row, int index, int type, float scale) {
    float32x4x2_t v;
    if (type == CACHE_F16) {
        float16x8_t h = vreinterpretq_f16_u16(vld1q_u16((const uint16_t *)row + index));
        v.val[0] = vcvt_f32_f16(vget_low_f16(h));
        v.val[1] = vcvt_high_f32_f16(h);
    } else if (type == CACHE_Q8) {
        int16x8_t wide = vmovl_s8(vld1_s8((const int8_t *)row + index));
        v.val[0] = vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(wide))), scale);
        v.val[1] = vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(wide)), scale);
    } else {
        v.val[0] = vld1q_f32((const float *)row + index);
        v.val[1] = vld1q_f32((const float *)row + index + 4);
    }
    return v;
}

/* Element `index` of a cache row, as float32. */
static inline float load1(const void *row, int index, int type, float scale) {
    if (type == CACHE_F16) {
        return f16_to_f32(((const uint16_t *)row)[index]);
    }
    if (type == CACHE_Q8) {
        return (float)((const int8_t *)row)[index] * scale;
    }
    return ((const float *)row)[index];
}

/* The address of position t's row in a cache whose positions are `stride` elements apart. */
static inline const void *cache_row(const void *base, int t, int stride, int type) {
    size_t offset = (size_t)t * (size_t)stride;
    if (type == CACHE_F16) {
        return (const uint16_t *)base + offset;
    }
    if (type == CACHE_Q8) {
        return (const int8_t *)base + offset;
    }
    return (const float *)base + offset;
}

/* Writes att[t] = score_t for the positions 0..n_pos-1, four at a time. */
static inline void scores(float *att, const float *q, const void *k, const float *ks, int stride, int scale_stride,
                          int head_size, int n_pos, int type) {
    float32x4_t divisor = vdupq_n_f32(sqrtf((float)head_size));
    for (int t = 0; t < n_pos; t += 4) {
        int valid = n_pos - t < 4 ? n_pos - t : 4;
        const void *kt[4];
        float scale[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int r = 0; r < 4; r++) {
            int pos = t + clamp_row(r, valid);
            kt[r] = cache_row(k, pos, stride, type);
            if (type == CACHE_Q8) {
                scale[r] = ks[(size_t)pos * (size_t)scale_stride];
            }
        }
        float32x4_t acc = vdupq_n_f32(0.0f); /* the reference's `score = 0.0f` */
        int i = 0;
        /* Narrow elements: eight at a time, so each row takes one load and one widening (float32 rows gain
         * nothing from it, and the compiler schedules the four-column loop below better). */
        for (; type != CACHE_F32 && i + 8 <= head_size; i += 8) {
            float32x4x2_t k0 = load8(kt[0], i, type, scale[0]), k1 = load8(kt[1], i, type, scale[1]);
            float32x4x2_t k2 = load8(kt[2], i, type, scale[2]), k3 = load8(kt[3], i, type, scale[3]);
            float32x4_t qv = vld1q_f32(q + i);
            acc = add_columns_in_order(acc, vmulq_f32(qv, k0.val[0]), vmulq_f32(qv, k1.val[0]),
                                       vmulq_f32(qv, k2.val[0]), vmulq_f32(qv, k3.val[0]));
            qv = vld1q_f32(q + i + 4);
            acc = add_columns_in_order(acc, vmulq_f32(qv, k0.val[1]), vmulq_f32(qv, k1.val[1]),
                                       vmulq_f32(qv, k2.val[1]), vmulq_f32(qv, k3.val[1]));
        }
        for (; i + 4 <= head_size; i += 4) {
            float32x4_t qv = vld1q_f32(q + i);
            /* q[i] * k_t[i], the reference's operand order; lane r of the sum is position t + r. */
            acc = add_columns_in_order(acc, vmulq_f32(qv, load4(kt[0], i, type, scale[0])),
                                       vmulq_f32(qv, load4(kt[1], i, type, scale[1])),
                                       vmulq_f32(qv, load4(kt[2], i, type, scale[2])),
                                       vmulq_f32(qv, load4(kt[3], i, type, scale[3])));
        }
        for (; i < head_size; i++) {
            float32x4_t column = vdupq_n_f32(load1(kt[0], i, type, scale[0]));
            column = vsetq_lane_f32(load1(kt[1], i, type, scale[1]), column, 1);
            column = vsetq_lane_f32(load1(kt[2], i, type, scale[2]), column, 2);
            column = vsetq_lane_f32(load1(kt[3], i, type, scale[3]), column, 3);
            acc = vaddq_f32(acc, vmulq_f32(vdupq_n_f32(q[i]), column));
        }
        store_lanes_f32(att + t, vdivq_f32(acc, divisor), valid);
    }
}

/* out[i] = sum_t att[t] * v_t[i], sequential over t for each i; 16, 8 or 4 values of i per pass over t. */
static inline void weighted_values(float *out, const float *att, const void *v, const float *vs, int stride,
                                   int scale_stride, int head_size, int n_pos, int type) {
    int i = 0;
    for (; i + 16 <= head_size; i += 16) {
        float32x4_t o0 = vdupq_n_f32(0.0f), o1 = o0, o2 = o0, o3 = o0;
        for (int t = 0; t < n_pos; t++) {
            const void *vt = cache_row(v, t, stride, type);
            float scale = type == CACHE_Q8 ? vs[(size_t)t * (size_t)scale_stride] : 0.0f;
            float32x4_t a = vdupq_n_f32(att[t]);
            float32x4x2_t v01 = load8(vt, i, type, scale), v23 = load8(vt, i + 8, type, scale);
            o0 = vaddq_f32(o0, vmulq_f32(a, v01.val[0]));
            o1 = vaddq_f32(o1, vmulq_f32(a, v01.val[1]));
            o2 = vaddq_f32(o2, vmulq_f32(a, v23.val[0]));
            o3 = vaddq_f32(o3, vmulq_f32(a, v23.val[1]));
        }
        vst1q_f32(out + i, o0);
        vst1q_f32(out + i + 4, o1);
        vst1q_f32(out + i + 8, o2);
        vst1q_f32(out + i + 12, o3);
    }
    if (i + 8 <= head_size) { /* e.g. stories260K's 8-wide heads in one pass */
        float32x4_t o0 = vdupq_n_f32(0.0f), o1 = o0;
        for (int t = 0; t < n_pos; t++) {
            const void *vt = cache_row(v, t, stride, type);
            float scale = type == CACHE_Q8 ? vs[(size_t)t * (size_t)scale_stride] : 0.0f;
            float32x4_t a = vdupq_n_f32(att[t]);
            float32x4x2_t vv = load8(vt, i, type, scale);
            o0 = vaddq_f32(o0, vmulq_f32(a, vv.val[0]));
            o1 = vaddq_f32(o1, vmulq_f32(a, vv.val[1]));
        }
        vst1q_f32(out + i, o0);
        vst1q_f32(out + i + 4, o1);
        i += 8;
    }
    for (; i + 4 <= head_size; i += 4) {
        float32x4_t o = vdupq_n_f32(0.0f);
        for (int t = 0; t < n_pos; t++) {
            const void *vt = cache_row(v, t, stride, type);
            float scale = type == CACHE_Q8 ? vs[(size_t)t * (size_t)scale_stride] : 0.0f;
            o = vaddq_f32(o, vmulq_f32(vdupq_n_f32(att[t]), load4(vt, i, type, scale)));
        }
        vst1q_f32(out + i, o);
    }
    for (; i < head_size; i++) {
        float o = 0.0f;
        for (int t = 0; t < n_pos; t++) {
            const void *vt = cache_row(v, t, stride, type);
            float scale = type == CACHE_Q8 ? vs[(size_t)t * (size_t)scale_stride] : 0.0f;
            o += att[t] * load1(vt, i, type, scale);
        }
        out[i] = o;
    }
}

#if !defined(LLMCU_NUMERICS_FAST) || !LLMCU_NUMERICS_FAST

void attention_head(float *out, float *att, const float *q, const float *k, const float *v, int stride,
                    int head_size, int n_pos) {
    scores(att, q, k, NULL, stride, 0, head_size, n_pos, CACHE_F32);
    softmax(att, n_pos);
    weighted_values(out, att, v, NULL, stride, 0, head_size, n_pos, CACHE_F32);
}

#else /* numerics=fast: FMA, and each score's sum in four partial sums (ops.c says what that means) */

/* q . k_t as a vector of four partial sums (head_size % 4 == 0), or its total when head_size is not. */
NEON_ALWAYS_INLINE float32x4_t score_parts(const float *q, const float *kt, int head_size) {
    float32x4_t a = vmulq_f32(vld1q_f32(q), vld1q_f32(kt));
    int i = 4;
    for (; i + 4 <= head_size; i += 4) {
        a = vfmaq_f32(a, vld1q_f32(q + i), vld1q_f32(kt + i));
    }
    if (i < head_size) {
        float tail = 0.0f;
        for (; i < head_size; i++) {
            tail = fmaf(q[i], kt[i], tail);
        }
        a = vsetq_lane_f32(vgetq_lane_f32(a, 0) + tail, a, 0);
    }
    return a;
}

NEON_ALWAYS_INLINE void attention_fast(float *out, float *att, const float *q, const float *k, const float *v,
                                       int stride, int head_size, int n_pos) {
    if (head_size < 4) {
        scores(att, q, k, NULL, stride, 0, head_size, n_pos, CACHE_F32);
        softmax(att, n_pos);
        weighted_values(out, att, v, NULL, stride, 0, head_size, n_pos, CACHE_F32);
        return;
    }
    float32x4_t inv_scale = vdupq_n_f32(1.0f / sqrtf((float)head_size));
    int t = 0;
    for (; t + 4 <= n_pos; t += 4) { /* four positions' partial sums, reduced pairwise into four lanes */
        const float *kt = k + (size_t)t * (size_t)stride;
        float32x4_t a0 = score_parts(q, kt, head_size), a1 = score_parts(q, kt + stride, head_size);
        float32x4_t a2 = score_parts(q, kt + 2 * stride, head_size), a3 = score_parts(q, kt + 3 * stride, head_size);
        vst1q_f32(att + t, vmulq_f32(vpaddq_f32(vpaddq_f32(a0, a1), vpaddq_f32(a2, a3)), inv_scale));
    }
    for (; t < n_pos; t++) {
        att[t] = vaddvq_f32(score_parts(q, k + (size_t)t * (size_t)stride, head_size)) * vgetq_lane_f32(inv_scale, 0);
    }

    softmax(att, n_pos);

    int i = 0;
    for (; i + 8 <= head_size; i += 8) {
        float32x4_t o0 = vdupq_n_f32(0.0f), o1 = o0;
        const float *vt = v + i;
        int p = 0;
        for (; p + 2 <= n_pos; p += 2, vt += 2 * stride) { /* two positions per turn: less loop overhead */
            float32x4_t a = vld1q_dup_f32(att + p), b = vld1q_dup_f32(att + p + 1);
            o0 = vfmaq_f32(o0, a, vld1q_f32(vt));
            o1 = vfmaq_f32(o1, a, vld1q_f32(vt + 4));
            o0 = vfmaq_f32(o0, b, vld1q_f32(vt + stride));
            o1 = vfmaq_f32(o1, b, vld1q_f32(vt + stride + 4));
        }
        if (p < n_pos) {
            float32x4_t a = vld1q_dup_f32(att + p);
            o0 = vfmaq_f32(o0, a, vld1q_f32(vt));
            o1 = vfmaq_f32(o1, a, vld1q_f32(vt + 4));
        }
        vst1q_f32(out + i, o0);
        vst1q_f32(out + i + 4, o1);
    }
    for (; i + 4 <= head_size; i += 4) {
        float32x4_t o0 = vdupq_n_f32(0.0f);
        const float *vt = v + i;
        for (int p = 0; p < n_pos; p++, vt += stride) {
            o0 = vfmaq_f32(o0, vld1q_dup_f32(att + p), vld1q_f32(vt));
        }
        vst1q_f32(out + i, o0);
    }
    for (; i < head_size; i++) {
        float o = 0.0f;
        for (int p = 0; p < n_pos; p++) {
            o = fmaf(att[p], v[(size_t)p * (size_t)stride + (size_t)i], o);
        }
        out[i] = o;
    }
}

/* The common head sizes get loops unrolled for them (stories260K's 8, stories15M's 48). */
void attention_head(float *out, float *att, const float *q, const float *k, const float *v, int stride,
                    int head_size, int n_pos) {
    switch (head_size) {
    case 8:
        attention_fast(out, att, q, k, v, stride, 8, n_pos);
        break;
    case 48:
        attention_fast(out, att, q, k, v, stride, 48, n_pos);
        break;
    default:
        attention_fast(out, att, q, k, v, stride, head_size, n_pos);
        break;
    }
}

#endif /* LLMCU_NUMERICS_FAST */

void attention_head_f16(float *out, float *att, const float *q, const uint16_t *k, const uint16_t *v, int stride,
                        int head_size, int n_pos) {
    scores(att, q, k, NULL, stride, 0, head_size, n_pos, CACHE_F16);
    softmax(att, n_pos);
    weighted_values(out, att, v, NULL, stride, 0, head_size, n_pos, CACHE_F16);
}

void attention_head_q8(float *out, float *att, const float *q, const int8_t *k, const float *ks, const int8_t *v,
                       const float *vs, int stride, int scale_stride, int head_size, int n_pos) {
    scores(att, q, k, ks, stride, scale_stride, head_size, n_pos, CACHE_Q8);
    softmax(att, n_pos);
    weighted_values(out, att, v, vs, stride, scale_stride, head_size, n_pos, CACHE_Q8);
}
