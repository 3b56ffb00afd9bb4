/*
 * q16 integer attention for AArch64 NEON (runtime_c/README.md, "q16"); bit-identical to
 * kernels/ref/attention_q16.c: up to the last multiply and divide everything is integer arithmetic, whose
 * result does not depend on the order of its sums. Plain ARMv8.0-A Advanced SIMD (no SDOT: the codes are 16-bit).
 *
 * Keys and values are stored in blocks of eight positions, channel by channel: [kv head][position / 8]
 * [head_size][8], so that one vector holds one channel at eight consecutive positions and the lanes are the
 * positions:
 * - scores: per channel one SMLAL and one SMLAL2 by the query's element, eight scores in two int32x4 sums;
 * - softmax: the distance from the maximum, its shift and the clamp to the table four lanes at a time; the
 *   table lookups themselves are scalar loads (NEON has no 16-bit gather);
 * - weighted sum: per channel SMULL (positions 0..3) and SMLAL2 (4..7): each lane is the sum of two products,
 *   which stays inside int32 (two of at most 32679 * 32767), then SADALP adds the lanes in pairs into an
 *   int64x2 sum.
 */
#include <arm_neon.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"
#include "kernels/q16_exp2.h"

#define BLOCK 8 /* positions a block */

/* Element (t, i) of one kv head's block layout. */
static inline size_t block_index(int t, int i, int head_size) {
    return (size_t)(t / BLOCK) * (size_t)BLOCK * (size_t)head_size + (size_t)i * BLOCK + (size_t)(t % BLOCK);
}

/* Four codes as q16_code makes them: x / scale (IEEE division, as the scalar one), rounded half away from zero
 * (FRINTA, roundf's rule), clamped to +-Q16_MAX; NaN stores 0 (the clamp passes NaN on, the mask clears it). */
static inline int32x4_t q16_codes4(float32x4_t x, float32x4_t scale) {
    float32x4_t r = vrndaq_f32(vdivq_f32(x, scale));
    uint32x4_t is_number = vceqq_f32(r, r);
    r = vminq_f32(vmaxq_f32(r, vdupq_n_f32(-(float)Q16_MAX)), vdupq_n_f32((float)Q16_MAX));
    return vandq_s32(vcvtq_s32_f32(r), vreinterpretq_s32_u32(is_number));
}

/* Eight channels' codes (c..c+7) into their places in the block layout: one channel every BLOCK codes. */
static inline void store_codes8(int16_t *dst, const float *x, const float *scale) {
    int16x8_t codes = vcombine_s16(vmovn_s32(q16_codes4(vld1q_f32(x), vld1q_f32(scale))),
                                   vmovn_s32(q16_codes4(vld1q_f32(x + 4), vld1q_f32(scale + 4))));
    vst1q_lane_s16(dst, codes, 0);
    vst1q_lane_s16(dst + BLOCK, codes, 1);
    vst1q_lane_s16(dst + 2 * BLOCK, codes, 2);
    vst1q_lane_s16(dst + 3 * BLOCK, codes, 3);
    vst1q_lane_s16(dst + 4 * BLOCK, codes, 4);
    vst1q_lane_s16(dst + 5 * BLOCK, codes, 5);
    vst1q_lane_s16(dst + 6 * BLOCK, codes, 6);
    vst1q_lane_s16(dst + 7 * BLOCK, codes, 7);
}

void kv_store_q16(int16_t *keys, int16_t *values, const float *k, const float *v, const float *key_scale,
                  const float *value_scale, int pos, int positions, int kv_dim, int head_size) {
    int n_kv_heads = kv_dim / head_size;
    for (int kvh = 0; kvh < n_kv_heads; kvh++) {
        size_t head = (size_t)kvh * (size_t)positions * (size_t)head_size;
        int i = 0;
        for (; i + 8 <= head_size; i += 8) {
            int c = kvh * head_size + i;
            size_t at = head + block_index(pos, i, head_size);
            store_codes8(keys + at, k + c, key_scale + c);
            store_codes8(values + at, v + c, value_scale + c);
        }
        for (; i < head_size; i++) {
            int c = kvh * head_size + i;
            size_t at = head + block_index(pos, i, head_size);
            keys[at] = q16_code(k[c], key_scale[c]);
            values[at] = q16_code(v[c], value_scale[c]);
        }
    }
}

/* Adds channels [c, c + 8) of one block to its eight scores (lo: positions 0..3, hi: 4..7): the query's eight
 * codes in one vector, each multiplied by lane (SMLAL/SMLAL2 by element, the lane a constant). */
#define SCORE_LANE(j)                                                                                           \
    do {                                                                                                        \
        int16x8_t k = vld1q_s16(block + (c + (j)) * BLOCK);                                                     \
        lo = vmlal_laneq_s16(lo, vget_low_s16(k), a8, (j));                                                     \
        hi = vmlal_high_laneq_s16(hi, k, a8, (j));                                                              \
    } while (0)

/* scores[t] = a . key t for the blocks covering n_pos positions (the last block's extra lanes are scores of
 * whatever the cache holds there: they are never used); returns the largest of the first n_pos. */
static inline __attribute__((always_inline)) int32_t scores_blocks(int32_t *scores, const int16_t *a,
                                                                     const int16_t *keys, int head_size, int n_pos) {
    int blocks = (n_pos + BLOCK - 1) / BLOCK;
    int32x4_t max_lo = vdupq_n_s32(INT32_MIN), max_hi = max_lo;
    const int16_t *block = keys;
    for (int b = 0; b < blocks; b++, block += BLOCK * head_size) {
        int32x4_t lo = vdupq_n_s32(0), hi = lo;
        int c = 0;
        for (; c + 8 <= head_size; c += 8) {
            int16x8_t a8 = vld1q_s16(a + c);
            SCORE_LANE(0);
            SCORE_LANE(1);
            SCORE_LANE(2);
            SCORE_LANE(3);
            SCORE_LANE(4);
            SCORE_LANE(5);
            SCORE_LANE(6);
            SCORE_LANE(7);
        }
        for (; c < head_size; c++) {
            int16x8_t k = vld1q_s16(block + c * BLOCK);
            lo = vmlal_n_s16(lo, vget_low_s16(k), a[c]);
            hi = vmlal_high_n_s16(hi, k, a[c]);
        }
        vst1q_s32(scores + b * BLOCK, lo);
        vst1q_s32(scores + b * BLOCK + 4, hi);
        if (b + 1 < blocks) {
            max_lo = vmaxq_s32(max_lo, lo);
            max_hi = vmaxq_s32(max_hi, hi);
        }
    }
    int32_t max = vmaxvq_s32(vmaxq_s32(max_lo, max_hi));
    for (int t = (blocks - 1) * BLOCK; t < n_pos; t++) { /* the last block's real lanes */
        max = scores[t] > max ? scores[t] : max;
    }
    return max;
}

/* weights[t] for t < n_pos, zeros to the end of the last block. The steps (distance >> shift, at most 2047) are
 * made four lanes at a time, over the scores; the lookups are scalar. The weights' sum is taken by
 * weighted_sum. */
static void softmax_weights(int16_t *weights, int32_t *scores, int32_t max, int shift, int n_pos) {
    int n8 = (n_pos + BLOCK - 1) / BLOCK * BLOCK;
    uint32x4_t top = vdupq_n_u32((uint32_t)max);
    int32x4_t right = vdupq_n_s32(-shift);
    uint32x4_t last = vdupq_n_u32(Q16_EXP_TABLE - 1);
    uint32_t *steps = (uint32_t *)scores;
    for (int t = 0; t < n8; t += 4) {
        uint32x4_t d = vsubq_u32(top, vreinterpretq_u32_s32(vld1q_s32(scores + t)));
        vst1q_u32(steps + t, vminq_u32(vshlq_u32(d, right), last));
    }
    int t = 0;
    for (; t + 4 <= n_pos; t += 4) {
        weights[t] = (int16_t)q16_exp2[steps[t]];
        weights[t + 1] = (int16_t)q16_exp2[steps[t + 1]];
        weights[t + 2] = (int16_t)q16_exp2[steps[t + 2]];
        weights[t + 3] = (int16_t)q16_exp2[steps[t + 3]];
    }
    for (; t < n_pos; t++) {
        weights[t] = (int16_t)q16_exp2[steps[t]];
    }
    for (; t < n8; t++) {
        weights[t] = 0;
    }
}

/* One channel of a block into its int64x2 sum: SMULL (positions 0..3) + SMLAL2 (4..7), then pairwise. */
#define VALUE_LANE(j)                                                                                           \
    do {                                                                                                        \
        int16x8_t v = vld1q_s16(block + (j) * BLOCK);                                                           \
        t##j = vpadalq_s32(t##j, vmlal_high_s16(vmull_s16(vget_low_s16(v), vget_low_s16(w)), v, w));           \
    } while (0)

static inline float output(int64x2_t total, float value_scale, float sum) {
    return ((float)vaddvq_s64(total) * value_scale) / sum;
}

/* out[i] = ((float)sum_t weights[t] * value t channel i * value_scale[i]) / sum of the weights, for the blocks
 * covering n_pos: eight channels a pass with their sums in registers, the rest one by one. */
static inline __attribute__((always_inline)) void weighted_sum(float *out, const int16_t *weights,
                                                                const int16_t *values, const float *value_scale,
                                                                int head_size, int n_pos) {
    int blocks = (n_pos + BLOCK - 1) / BLOCK;
    int32x4_t sums = vdupq_n_s32(0);
    for (int b = 0; b < blocks; b++) {
        sums = vpadalq_s16(sums, vld1q_s16(weights + b * BLOCK));
    }
    float sum = (float)vaddvq_s32(sums);
    int i = 0;
    for (; i + 8 <= head_size; i += 8) {
        int64x2_t t0 = vdupq_n_s64(0), t1 = t0, t2 = t0, t3 = t0, t4 = t0, t5 = t0, t6 = t0, t7 = t0;
        const int16_t *block = values + (size_t)i * BLOCK;
        for (int b = 0; b < blocks; b++, block += BLOCK * head_size) {
            int16x8_t w = vld1q_s16(weights + b * BLOCK);
            VALUE_LANE(0);
            VALUE_LANE(1);
            VALUE_LANE(2);
            VALUE_LANE(3);
            VALUE_LANE(4);
            VALUE_LANE(5);
            VALUE_LANE(6);
            VALUE_LANE(7);
        }
        const float *vs = value_scale + i;
        out[i] = output(t0, vs[0], sum);
        out[i + 1] = output(t1, vs[1], sum);
        out[i + 2] = output(t2, vs[2], sum);
        out[i + 3] = output(t3, vs[3], sum);
        out[i + 4] = output(t4, vs[4], sum);
        out[i + 5] = output(t5, vs[5], sum);
        out[i + 6] = output(t6, vs[6], sum);
        out[i + 7] = output(t7, vs[7], sum);
    }
    for (; i < head_size; i++) {
        int64x2_t t0 = vdupq_n_s64(0);
        const int16_t *block = values + (size_t)i * BLOCK;
        for (int b = 0; b < blocks; b++, block += BLOCK * head_size) {
            int16x8_t w = vld1q_s16(weights + b * BLOCK);
            VALUE_LANE(0);
        }
        out[i] = output(t0, value_scale[i], sum);
    }
}

static inline __attribute__((always_inline)) void attend(float *out, const float *q, const int16_t *keys,
                                                          const int16_t *values, const float *key_factor,
                                                          const float *value_scale, int16_t *query,
                                                          int32_t *scores, int16_t *weights, int head_size,
                                                          int bits, int n_pos) {
    int g = q16_quantize_query(query, q, key_factor, head_size, bits);
    int32_t max = scores_blocks(scores, query, keys, head_size, n_pos);
    softmax_weights(weights, scores, max, g - Q16_EXP_BITS, n_pos);
    weighted_sum(out, weights, values, value_scale, head_size, n_pos);
}

void attention_q16(float *out, const float *q, const int16_t *keys, const int16_t *values, const float *key_factor,
                   const float *value_scale, int16_t *query, int32_t *scores, int16_t *weights, int n_heads,
                   int n_kv_heads, int head_size, int positions, int n_pos) {
    int kv_mul = n_heads / n_kv_heads;
    int bits = q16_query_bits(head_size);
    for (int h = 0; h < n_heads; h++) {
        int kvh = h / kv_mul;
        size_t head = (size_t)kvh * (size_t)positions * (size_t)head_size;
        const float *kf = key_factor + kvh * head_size, *vs = value_scale + kvh * head_size;
        float *o = out + h * head_size;
        const float *qh = q + h * head_size;
        if (head_size == 8) { /* stories260K: one pass of eight channels */
            attend(o, qh, keys + head, values + head, kf, vs, query, scores, weights, 8, bits, n_pos);
        } else {
            attend(o, qh, keys + head, values + head, kf, vs, query, scores, weights, head_size, bits, n_pos);
        }
    }
}
