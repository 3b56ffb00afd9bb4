/*
 * q16 integer attention for x86-64 with AVX2 (see x86.h for how the ISA is chosen); bit-identical to the
 * reference, whose cache arrangement ([position][kv_dim]) and kv_store_q16 it keeps, so that a CPU without
 * AVX2 runs the reference's attention_q16 on the same cache.
 *
 * Up to the last multiply and divide everything is integer arithmetic, exact in any order:
 * - scores: eight positions a pass, PMADDWD of each key's eight-channel chunks with the query's, the four
 *   partial sums of each position added by two rounds of PHADDD;
 * - softmax: the distance from the maximum, its shift and the clamp four lanes at a time, the table read by
 *   VPGATHERDD (the 32 bits of the even entry at or below, which never reach past the table's end, then the
 *   half that holds the entry), the weights packed to 16 bits;
 * - weighted sum: two positions a step, their values interleaved channel by channel so that one VPMADDWD with
 *   the two weights gives each channel the sum of two products (at most 2 * 32679 * 32767, inside int32),
 *   widened to int64 and added.
 * Head sizes that are not a multiple of 8 take the reference.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/ref/ref.h"
#include "kernels/q16_exp2.h"
#include "kernels/x86/x86.h"

#define attention_q16 ref_attention_q16
#include "kernels/ref/attention_q16.c"
#undef attention_q16

#if X86_SIMD

/* The scores of positions t0..t0+7 (keys `stride` codes apart), as four int32 lanes twice. */
X86_AVX2_INLINE void scores8(__m128i *lo, __m128i *hi, const int16_t *a, const int16_t *key, size_t stride,
                             int head_size) {
    __m128i s[8];
    for (int r = 0; r < 8; r++) {
        s[r] = _mm_setzero_si128();
    }
    for (int c = 0; c < head_size; c += 8) {
        __m128i q = _mm_loadu_si128((const __m128i *)(a + c));
        for (int r = 0; r < 8; r++) {
            __m128i k = _mm_loadu_si128((const __m128i *)(key + (size_t)r * stride + (size_t)c));
            s[r] = _mm_add_epi32(s[r], _mm_madd_epi16(k, q));
        }
    }
    *lo = _mm_hadd_epi32(_mm_hadd_epi32(s[0], s[1]), _mm_hadd_epi32(s[2], s[3]));
    *hi = _mm_hadd_epi32(_mm_hadd_epi32(s[4], s[5]), _mm_hadd_epi32(s[6], s[7]));
}

/* q16_exp2[y] for four steps y (0..2047): a 32-bit gather of the even entry at or below y, shifted by 16 when y
 * is odd. */
X86_AVX2_INLINE __m128i exp2_lookup(__m128i y) {
    __m128i pair = _mm_i32gather_epi32((const int *)q16_exp2, _mm_srli_epi32(y, 1), 4);
    __m128i half = _mm_slli_epi32(_mm_and_si128(y, _mm_set1_epi32(1)), 4);
    return _mm_and_si128(_mm_srlv_epi32(pair, half), _mm_set1_epi32(0xFFFF));
}

X86_AVX2 static void attend_avx2(float *out, const int16_t *a, const int16_t *keys, const int16_t *values,
                                 const float *value_scale, int32_t *scores, int16_t *weights, int kv_dim,
                                 int head_size, int g, int n_pos) {
    size_t stride = (size_t)kv_dim;
    int n8 = (n_pos + 7) & ~7;

    /* Scores, eight positions a pass (the last pass's extra lanes are never used), and their maximum. */
    __m128i max4 = _mm_set1_epi32(INT32_MIN);
    for (int t = 0; t < n8; t += 8) {
        __m128i lo, hi;
        scores8(&lo, &hi, a, keys + (size_t)t * stride, stride, head_size);
        _mm_storeu_si128((__m128i *)(scores + t), lo);
        _mm_storeu_si128((__m128i *)(scores + t + 4), hi);
        if (t + 8 <= n_pos) {
            max4 = _mm_max_epi32(max4, _mm_max_epi32(lo, hi));
        }
    }
    max4 = _mm_max_epi32(max4, _mm_shuffle_epi32(max4, 0x4E));
    max4 = _mm_max_epi32(max4, _mm_shuffle_epi32(max4, 0xB1));
    int32_t max = _mm_cvtsi128_si32(max4);
    for (int t = n_pos & ~7; t < n_pos; t++) {
        max = scores[t] > max ? scores[t] : max;
    }

    /* Softmax weights: EXP2[min((max - s) >> (g - 7), 2047)], four lanes a step; zero past n_pos. */
    __m128i top = _mm_set1_epi32(max), last = _mm_set1_epi32(Q16_EXP_TABLE - 1);
    __m128i shift = _mm_cvtsi32_si128(g - Q16_EXP_BITS);
    for (int t = 0; t < n8; t += 8) {
        __m128i d0 = _mm_srl_epi32(_mm_sub_epi32(top, _mm_loadu_si128((const __m128i *)(scores + t))), shift);
        __m128i d1 = _mm_srl_epi32(_mm_sub_epi32(top, _mm_loadu_si128((const __m128i *)(scores + t + 4))), shift);
        __m128i w = _mm_packus_epi32(exp2_lookup(_mm_min_epu32(d0, last)), exp2_lookup(_mm_min_epu32(d1, last)));
        _mm_storeu_si128((__m128i *)(weights + t), w);
    }
    for (int t = n_pos; t < n8; t++) {
        weights[t] = 0;
    }

    /* Weighted sum, eight channels a pass, two positions a step. */
    int32_t sum = 0;
    for (int t = 0; t < n_pos; t++) {
        sum += weights[t];
    }
    for (int c = 0; c < head_size; c += 8) {
        __m256i total_lo = _mm256_setzero_si256(), total_hi = _mm256_setzero_si256();
        const int16_t *v = values + c;
        for (int t = 0; t < n8; t += 2) {
            __m128i v0 = _mm_loadu_si128((const __m128i *)(v + (size_t)t * stride));
            __m128i v1 = _mm_loadu_si128((const __m128i *)(v + (size_t)(t + 1) * stride));
            __m256i pairs = _mm256_set_m128i(_mm_unpackhi_epi16(v0, v1), _mm_unpacklo_epi16(v0, v1));
            int32_t w2;
            memcpy(&w2, weights + t, sizeof w2);
            __m256i both = _mm256_madd_epi16(pairs, _mm256_set1_epi32(w2));
            total_lo = _mm256_add_epi64(total_lo, _mm256_cvtepi32_epi64(_mm256_castsi256_si128(both)));
            total_hi = _mm256_add_epi64(total_hi, _mm256_cvtepi32_epi64(_mm256_extracti128_si256(both, 1)));
        }
        int64_t totals[8];
        _mm256_storeu_si256((__m256i *)totals, total_lo);
        _mm256_storeu_si256((__m256i *)(totals + 4), total_hi);
        for (int i = 0; i < 8; i++) {
            out[c + i] = ((float)totals[i] * value_scale[c + i]) / (float)sum;
        }
    }
}

void attention_q16(float *out, const float *q, const int16_t *keys, const int16_t *values, const float *key_factor,
                   const float *value_scale, int16_t *query, int32_t *scores, int16_t *weights, int n_heads,
                   int n_kv_heads, int head_size, int positions, int n_pos) {
    if (head_size % 8 != 0 || !x86_have_avx2()) {
        ref_attention_q16(out, q, keys, values, key_factor, value_scale, query, scores, weights, n_heads,
                               n_kv_heads, head_size, positions, n_pos);
        return;
    }
    int kv_dim = n_kv_heads * head_size, kv_mul = n_heads / n_kv_heads;
    int bits = q16_query_bits(head_size);
    for (int h = 0; h < n_heads; h++) {
        int base = (h / kv_mul) * head_size;
        int g = q16_quantize_query(query, q + h * head_size, key_factor + base, head_size, bits);
        attend_avx2(out + h * head_size, query, keys + base, values + base, value_scale + base, scores, weights,
                    kv_dim, head_size, g, n_pos);
    }
}

#else /* no SIMD: the reference */

void attention_q16(float *out, const float *q, const int16_t *keys, const int16_t *values, const float *key_factor,
                   const float *value_scale, int16_t *query, int32_t *scores, int16_t *weights, int n_heads,
                   int n_kv_heads, int head_size, int positions, int n_pos) {
    ref_attention_q16(out, q, keys, values, key_factor, value_scale, query, scores, weights, n_heads,
                           n_kv_heads, head_size, positions, n_pos);
}

#endif
