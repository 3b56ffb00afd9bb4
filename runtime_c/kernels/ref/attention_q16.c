/*
 * The q16 KV cache and its integer attention (runtime_c/README.md, "q16"): the definition of the arithmetic.
 *
 * Keys and values are int16 codes with a fixed scale per (layer, channel), so every position's key is in the
 * same units and a score is an exact integer dot product with the quantized query. Softmax works on the
 * scores' distances from their maximum, looked up in a table of 2^-x; the weighted sum of the values is an
 * exact int64 sum. Integer arithmetic is the same on every core, which is what lets the optimised kernel sets
 * reorder it freely and still give these bits.
 *
 * The cache is natural here, [position][kv_dim] per layer; optimised sets arrange it for their loops.
 */
#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"
#include "kernels/q16_exp2.h"

void kv_store_q16(int16_t *keys, int16_t *values, const float *k, const float *v, const float *key_scale,
                  const float *value_scale, int pos, int positions, int kv_dim, int head_size) {
    (void)positions;
    (void)head_size;
    int16_t *key_row = keys + (size_t)pos * (size_t)kv_dim;
    int16_t *value_row = values + (size_t)pos * (size_t)kv_dim;
    for (int c = 0; c < kv_dim; c++) {
        key_row[c] = q16_code(k[c], key_scale[c]);
        value_row[c] = q16_code(v[c], value_scale[c]);
    }
}

/* Softmax's weight of each score: EXP2 of its distance from the maximum, in steps of 2^(shift) score units
 * (every step is 1/128 octave); returns their sum. */
static int32_t softmax_weights(int16_t *weights, const int32_t *scores, int n_pos, int shift) {
    int32_t max = scores[0];
    for (int t = 1; t < n_pos; t++) {
        max = scores[t] > max ? scores[t] : max;
    }
    int32_t sum = 0;
    for (int t = 0; t < n_pos; t++) {
        uint32_t steps = ((uint32_t)max - (uint32_t)scores[t]) >> shift; /* the distance fits uint32 */
        int16_t w = (int16_t)q16_exp2[steps < Q16_EXP_TABLE - 1 ? steps : Q16_EXP_TABLE - 1];
        weights[t] = w;
        sum += w;
    }
    return sum;
}

void attention_q16(float *out, const float *q, const int16_t *keys, const int16_t *values, const float *key_factor,
                   const float *value_scale, int16_t *query, int32_t *scores, int16_t *weights, int n_heads,
                   int n_kv_heads, int head_size, int positions, int n_pos) {
    (void)positions;
    int kv_dim = n_kv_heads * head_size;
    int kv_mul = n_heads / n_kv_heads;
    int bits = q16_query_bits(head_size);
    for (int h = 0; h < n_heads; h++) {
        int base = (h / kv_mul) * head_size; /* the kv head's first channel */
        int16_t *a = query;
        int g = q16_quantize_query(a, q + h * head_size, key_factor + base, head_size, bits);

        for (int t = 0; t < n_pos; t++) {
            const int16_t *key = keys + (size_t)t * (size_t)kv_dim + base;
            int32_t score = 0;
            for (int i = 0; i < head_size; i++) {
                score += (int32_t)a[i] * key[i]; /* |score| < 2^31 by the choice of bits */
            }
            scores[t] = score;
        }
        int32_t sum = softmax_weights(weights, scores, n_pos, g - Q16_EXP_BITS);

        float *o = out + h * head_size;
        for (int i = 0; i < head_size; i++) {
            int64_t total = 0;
            for (int t = 0; t < n_pos; t++) {
                total += (int64_t)weights[t] * values[(size_t)t * (size_t)kv_dim + (size_t)(base + i)];
            }
            o[i] = ((float)total * value_scale[base + i]) / (float)sum;
        }
    }
}
