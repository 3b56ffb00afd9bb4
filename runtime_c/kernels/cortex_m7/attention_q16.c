/*
 * q16 integer attention for the Cortex-M7 (runtime_c/README.md, "q16"); bit-identical to
 * kernels/ref/attention_q16.c, because every step before the last multiply and divide is integer arithmetic,
 * which gives the same result in any order.
 *
 * The cache is arranged for the DSP extension's dual 16-bit multiply-accumulates:
 * - keys: [kv head][position][head_size], one head's key a run of head_size/2 words, so a score is
 *   head_size/2 SMLADs (two products each) against the quantized query kept in registers;
 * - values: [kv head][position pair][head_size][2], the values of one channel at two consecutive positions in
 *   one word, so the weighted sum is SMLALD (two products into a 64-bit sum) against a word holding those
 *   two positions' weights.
 * The softmax pass is six instructions a position: the distance from the maximum, one shift, USAT to the
 * table's end, one LDRH from the table. For head_size 8 (stories260K) the three passes are asm; other even
 * head sizes run the same passes in C with the same instructions as intrinsics.
 */
#include <arm_acle.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/q16_exp2.h"

void kv_store_q16(int16_t *keys, int16_t *values, const float *k, const float *v, const float *key_scale,
                  const float *value_scale, int pos, int positions, int kv_dim, int head_size) {
    int n_kv_heads = kv_dim / head_size;
    for (int kvh = 0; kvh < n_kv_heads; kvh++) {
        size_t head = (size_t)kvh * (size_t)positions * (size_t)head_size;
        int16_t *key = keys + head + (size_t)pos * (size_t)head_size;
        int16_t *value = values + head + (size_t)(pos >> 1) * 2u * (size_t)head_size + (size_t)(pos & 1);
        for (int i = 0; i < head_size; i++) {
            int c = kvh * head_size + i;
            key[i] = q16_code(k[c], key_scale[c]);
            value[2 * i] = q16_code(v[c], value_scale[c]);
        }
    }
}

static inline uint32_t load_word(const int16_t *p) {
    uint32_t w;
    memcpy(&w, p, sizeof w);
    return w;
}

/* ---- the query ---- */

/* roundf(x) as int32, saturated (VCVTA: to nearest, halves away from zero; NaN gives 0), as the contract's
 * roundf followed by its clamp, whose bounds are far inside int32. */
static inline int32_t round_to_int(float x) {
    float r;
    __asm__("vcvta.s32.f32 %0, %1" : "=t"(r) : "t"(x));
    int32_t i;
    memcpy(&i, &r, sizeof i);
    return i;
}

/* q16_quantize_query for head_size 8 (query bits 13): VABS/VMAXNM for the largest magnitude (a NaN is ignored by
 * VMAXNM as by the reference's comparison), VCVTA and SSAT for the codes, one compare for the -8191 bound. */
static int quantize_query8(int16_t *a, const float *q, const float *factor) {
    float p[8];
    float amax = 0.0f;
    for (int i = 0; i < 8; i++) {
        p[i] = q[i] * factor[i];
        amax = __builtin_fmaxf(amax, __builtin_fabsf(p[i]));
    }
    uint32_t field = (q16_float_bits(amax) >> 23) & 0xffu;
    if (field == 0) {
        memset(a, 0, 8 * sizeof *a);
        return Q16_MAX_G;
    }
    int g = 13 - ((int)field - 126);
    g = g < Q16_MIN_G ? Q16_MIN_G : g > Q16_MAX_G ? Q16_MAX_G : g;
    union {
        uint32_t bits;
        float value;
    } power = {(uint32_t)(127 + g) << 23};
    for (int i = 0; i < 8; i++) {
        int32_t code = __ssat(round_to_int(p[i] * power.value), 14); /* -8192..8191 */
        a[i] = (int16_t)(code < -8191 ? -8191 : code);
    }
    return g;
}

/* ---- scores ---- */

/* scores[t] = the query a[head_size] . key t, for t in [0, n_pos); returns the largest. */
static int32_t scores_c(int32_t *scores, const int16_t *a, const int16_t *keys, int head_size, int n_pos) {
    int words = head_size / 2;
    int32_t max = INT32_MIN;
    for (int t = 0; t < n_pos; t++) {
        const int16_t *key = keys + (size_t)t * (size_t)head_size;
        int32_t s = 0;
        for (int j = 0; j < words; j++) {
            s = __smlad((int16x2_t)load_word(a + 2 * j), (int16x2_t)load_word(key + 2 * j), s);
        }
        scores[t] = s;
        max = s > max ? s : max;
    }
    return max;
}

/* One position's score for head_size 8: a key per LDM, four dual multiply-accumulates against the query's
 * words, the score stored, and the running maximum. */
#define SCORE8                                                                                           \
    "ldmia %[key]!, {%[k0], %[k1], %[k2], %[k3]}\n\t"                                                      \
    "smuad %[s], %[a0], %[k0]\n\t"                                                                       \
    "smlad %[s], %[a1], %[k1], %[s]\n\t"                                                                 \
    "smlad %[s], %[a2], %[k2], %[s]\n\t"                                                                 \
    "smlad %[s], %[a3], %[k3], %[s]\n\t"                                                                 \
    "str %[s], [%[out]], #4\n\t"                                                                         \
    "cmp %[s], %[max]\n\t"                                                                               \
    "it gt\n\t"                                                                                          \
    "movgt %[max], %[s]\n\t"

/* head_size 8: the query in four registers, a key per LDM, four positions a loop (the last n_pos % 4 in C). */
static int32_t scores8(int32_t *scores, const int16_t *a, const int16_t *keys, int n_pos) {
    int32_t max = INT32_MIN;
    int32_t *out = scores;
    int32_t *end = scores + (n_pos & ~3);
    const int16_t *key = keys;
    if (out != end) {
        register uint32_t k0 __asm__("r8");
        register uint32_t k1 __asm__("r9");
        register uint32_t k2 __asm__("r10");
        register uint32_t k3 __asm__("r11");
        uint32_t a0 = load_word(a), a1 = load_word(a + 2), a2 = load_word(a + 4), a3 = load_word(a + 6);
        int32_t s;
        __asm__ volatile("1:\n\t"
                         SCORE8 SCORE8 SCORE8 SCORE8
                         "cmp %[out], %[end]\n\t"
                         "bne 1b\n\t"
                         : [key] "+r"(key), [out] "+r"(out), [max] "+r"(max), [s] "=&r"(s), [k0] "=&r"(k0),
                           [k1] "=&r"(k1), [k2] "=&r"(k2), [k3] "=&r"(k3)
                         : [a0] "r"(a0), [a1] "r"(a1), [a2] "r"(a2), [a3] "r"(a3), [end] "r"(end)
                         : "cc", "memory");
    }
    for (; out != scores + n_pos; out++, key += 8) {
        int32_t s = 0;
        for (int j = 0; j < 4; j++) {
            s = __smlad((int16x2_t)load_word(a + 2 * j), (int16x2_t)load_word(key + 2 * j), s);
        }
        *out = s;
        max = s > max ? s : max;
    }
    return max;
}

/* ---- softmax weights ---- */

/* weights[t] = q16_exp2[min((max - scores[t]) >> shift, 2047)] for t < n_pos, then zeros up to a multiple of 8
 * (the weighted sum reads eight positions at a time); returns their sum. Four positions a loop: two LDRDs of
 * scores, per score SUB, LSR, USAT and LDRH, the weights packed in pairs (PKHBT), summed two at a time by
 * SMLAD with 1:1 and stored by one STRD; the last n_pos % 4 in C. */
static int32_t softmax_weights(int16_t *weights, const int32_t *scores, int32_t max, int shift, int n_pos) {
    const uint16_t *table = q16_exp2;
    int32_t sum = 0;
    int quads = n_pos & ~3;
    if (quads) {
        const int32_t *in = scores;
        int16_t *out = weights;
        int16_t *end = weights + quads;
        uint32_t ones = 0x00010001u;
        int32_t y0, y1, y2, y3;
        __asm__ volatile("1:\n\t"
                         "ldrd %[y0], %[y1], [%[in]], #8\n\t"
                         "ldrd %[y2], %[y3], [%[in]], #8\n\t"
                         "sub %[y0], %[max], %[y0]\n\t"
                         "sub %[y1], %[max], %[y1]\n\t"
                         "sub %[y2], %[max], %[y2]\n\t"
                         "sub %[y3], %[max], %[y3]\n\t"
                         "lsr %[y0], %[y0], %[shift]\n\t"
                         "lsr %[y1], %[y1], %[shift]\n\t"
                         "lsr %[y2], %[y2], %[shift]\n\t"
                         "lsr %[y3], %[y3], %[shift]\n\t"
                         "usat %[y0], #11, %[y0]\n\t"
                         "usat %[y1], #11, %[y1]\n\t"
                         "usat %[y2], #11, %[y2]\n\t"
                         "usat %[y3], #11, %[y3]\n\t"
                         "ldrh %[y0], [%[table], %[y0], lsl #1]\n\t"
                         "ldrh %[y1], [%[table], %[y1], lsl #1]\n\t"
                         "ldrh %[y2], [%[table], %[y2], lsl #1]\n\t"
                         "ldrh %[y3], [%[table], %[y3], lsl #1]\n\t"
                         "pkhbt %[y0], %[y0], %[y1], lsl #16\n\t"
                         "pkhbt %[y2], %[y2], %[y3], lsl #16\n\t"
                         "smlad %[sum], %[y0], %[ones], %[sum]\n\t"
                         "smlad %[sum], %[y2], %[ones], %[sum]\n\t"
                         "strd %[y0], %[y2], [%[out]], #8\n\t"
                         "cmp %[out], %[end]\n\t"
                         "bne 1b\n\t"
                         : [in] "+r"(in), [out] "+r"(out), [sum] "+r"(sum), [y0] "=&r"(y0), [y1] "=&r"(y1),
                           [y2] "=&r"(y2), [y3] "=&r"(y3)
                         : [max] "r"(max), [shift] "r"(shift), [table] "r"(table), [end] "r"(end), [ones] "r"(ones)
                         : "cc", "memory");
    }
    for (int t = quads; t < n_pos; t++) {
        uint32_t y = ((uint32_t)max - (uint32_t)scores[t]) >> shift;
        int32_t w = table[__usat((int32_t)y, 11)];
        weights[t] = (int16_t)w;
        sum += w;
    }
    for (int t = n_pos; t & 7; t++) {
        weights[t] = 0;
    }
    return sum;
}

/* ---- the weighted sum of the values ---- */

/* (float)total, rounded to nearest even: a total that fits int32 (the usual case) by one VCVT, the same value. */
static inline float total_to_float(int64_t total) {
    return total == (int32_t)total ? (float)(int32_t)total : (float)total;
}

/* The contract's output element from channel i's exact sum. */
static inline float output(int64_t total, float value_scale, int32_t sum) {
    return (total_to_float(total) * value_scale) / (float)sum;
}

/* out[i] from the sum over t of weights[t] * value t channel i, for i < head_size; n8 positions (a multiple of
 * 8, the weights past n_pos zero). values: this kv head's [position pair][head_size][2] codes. */
static void weighted_sum_c(float *out, const int16_t *weights, const int16_t *values, const float *value_scale,
                           int32_t sum, int head_size, int n8) {
    for (int i = 0; i < head_size; i++) {
        int64_t total = 0;
        for (int j = 0; j < n8 / 2; j++) {
            uint32_t w = load_word(weights + 2 * j);
            uint32_t v = load_word(values + (size_t)j * 2u * (size_t)head_size + 2u * (size_t)i);
            total = __smlald((int16x2_t)w, (int16x2_t)v, total);
        }
        out[i] = output(total, value_scale[i], sum);
    }
}

/* Four positions of two channels: the four weights (two words), each channel's two words of position pairs
 * (a pair's eight channels are 32 bytes), four dual multiply-accumulates into 64-bit sums. */
#define VALUES4                                                                                          \
    "ldrd %[w0], %[w1], [%[w]], #8\n\t"                                                                  \
    "ldrd %[v2], %[v3], [%[v], #32]\n\t"                                                                 \
    "ldrd %[v0], %[v1], [%[v]], #64\n\t"                                                                 \
    "smlald %[lo0], %[hi0], %[w0], %[v0]\n\t"                                                            \
    "smlald %[lo1], %[hi1], %[w0], %[v1]\n\t"                                                            \
    "smlald %[lo0], %[hi0], %[w1], %[v2]\n\t"                                                            \
    "smlald %[lo1], %[hi1], %[w1], %[v3]\n\t"

/* head_size 8: two channels a pass (four 32-bit halves of two 64-bit sums), eight positions a loop. */
static void weighted_sum8(float *out, const int16_t *weights, const int16_t *values, const float *value_scale,
                          int32_t sum, int n8) {
    for (int i = 0; i < 8; i += 2) {
        const int16_t *w = weights;
        const int16_t *end = weights + n8;
        const int16_t *v = values + 2 * i;
        uint32_t lo0 = 0, hi0 = 0, lo1 = 0, hi1 = 0;
        uint32_t w0, w1, v0, v1, v2, v3;
        __asm__ volatile("1:\n\t"
                         VALUES4 VALUES4
                         "cmp %[w], %[end]\n\t"
                         "bne 1b\n\t"
                         : [w] "+r"(w), [v] "+r"(v), [lo0] "+r"(lo0), [hi0] "+r"(hi0), [lo1] "+r"(lo1),
                           [hi1] "+r"(hi1), [w0] "=&r"(w0), [w1] "=&r"(w1), [v0] "=&r"(v0), [v1] "=&r"(v1),
                           [v2] "=&r"(v2), [v3] "=&r"(v3)
                         : [end] "r"(end)
                         : "cc", "memory");
        out[i] = output((int64_t)(((uint64_t)hi0 << 32) | lo0), value_scale[i], sum);
        out[i + 1] = output((int64_t)(((uint64_t)hi1 << 32) | lo1), value_scale[i + 1], sum);
    }
}

void attention_q16(float *out, const float *q, const int16_t *keys, const int16_t *values, const float *key_factor,
                   const float *value_scale, int16_t *query, int32_t *scores, int16_t *weights, int n_heads,
                   int n_kv_heads, int head_size, int positions, int n_pos) {
    int kv_mul = n_heads / n_kv_heads;
    int bits = q16_query_bits(head_size);
    int n8 = (n_pos + 7) & ~7;
    for (int h = 0; h < n_heads; h++) {
        int kvh = h / kv_mul;
        int base = kvh * head_size;
        size_t head = (size_t)kvh * (size_t)positions * (size_t)head_size;
        int g = head_size == 8 ? quantize_query8(query, q + h * head_size, key_factor + base)
                               : q16_quantize_query(query, q + h * head_size, key_factor + base, head_size, bits);

        int32_t max = head_size == 8 ? scores8(scores, query, keys + head, n_pos)
                                     : scores_c(scores, query, keys + head, head_size, n_pos);
        int32_t sum = softmax_weights(weights, scores, max, g - Q16_EXP_BITS, n_pos);
        if (head_size == 8) {
            weighted_sum8(out + h * head_size, weights, values + head, value_scale + base, sum, n8);
        } else {
            weighted_sum_c(out + h * head_size, weights, values + head, value_scale + base, sum, head_size, n8);
        }
    }
}
