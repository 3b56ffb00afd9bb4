/*
 * The compute kernels of the forward pass, in one place.
 *
 * kernels/ref/ is the portable definition of the arithmetic (runtime_c/README.md, "The numeric
 * contract"); an optimised set for an architecture lives in kernels/<arch>/ with these same signatures
 * and must give the same results. Kernels take plain pointers and sizes: they know nothing of the model,
 * the run state or the quantization plan, which transformer.c owns.
 *
 * Group-quantized data follows one layout everywhere: a vector (or each matrix row) of `n` values is cut
 * into groups of `group_size` consecutive values, the last one shorter when group_size does not divide n;
 * there is one float scale per group.
 */
#ifndef LLMCU_KERNELS_H
#define LLMCU_KERNELS_H

#include <math.h>
#include <stdint.h>

/* Number of groups covering `n` values. */
static inline int group_count(int n, int group_size) { return (n + group_size - 1) / group_size; }

/* ---- matmul.c: out[rows] = W[rows][cols] . x[cols] ---- */

void matmul_f32(float *out, const float *x, const float *w, int rows, int cols);
/* x given quantized (xq, xs) by quantize_activations; w int8, one byte per weight, row-major. */
void matmul_q8(float *out, const int8_t *xq, const float *xs, const int8_t *w, const float *ws, int rows,
               int cols, int group_size);
/* w int4 stored as q+8, two per byte, even column in the low nibble, each row ceil(cols/2) bytes;
 * group_size must be even (the code generator enforces it) so that no byte straddles two groups. */
void matmul_q4(float *out, const int8_t *xq, const float *xs, const uint8_t *w, const float *ws, int rows,
               int cols, int group_size);

/* ---- q4z.c: 4-bit codes with a zero point per group (runtime_c/README.md, "q4z") ---- */

/* A q4z group's 16-bit word: bits 3..0 the zero point z; with them cleared, the scale as a positive normal
 * IEEE binary16 number, i.e. the float32 whose bits are ((word & 0xFFF0) << 13) + 0x38000000 (what a hardware
 * half-to-single conversion gives for it). */
static inline float q4z_scale(uint16_t word) {
    union {
        uint32_t bits;
        float value;
    } scale = {((uint32_t)(word & 0xFFF0u) << 13) + 0x38000000u};
    return scale.value;
}
static inline int32_t q4z_zero(uint16_t word) { return (int32_t)(word & 15u); }

/* w: codes n in 0..15 packed as matmul_q4's (n in place of q + 8); wg: one word per group, row-major. The
 * weight is q4z_scale * (n - z); the group's integer sum is sum(n * x) - z * sum(x), exact in int32. */
void matmul_q4z(float *out, const int8_t *xq, const float *xs, const uint8_t *w, const uint16_t *wg, int rows,
                int cols, int group_size);
void embed_q4z(float *out, const uint8_t *table, const uint16_t *words, int row, int dim, int group_size);

/* ---- quant.c ---- */

/* Quantizes x[n] to int8 groups (QMAX 127) for matmul_q8/matmul_q4: xs needs group_count(n) floats. */
void quantize_activations(int8_t *xq, float *xs, const float *x, int n, int group_size);
/* Row `row` of an embedding table of `dim` columns, as float32. */
void embed_f32(float *out, const float *table, int row, int dim);
void embed_q8(float *out, const int8_t *table, const float *scales, int row, int dim, int group_size);
void embed_q4(float *out, const uint8_t *table, const float *scales, int row, int dim, int group_size);

/* ---- ops.c ---- */

/* out[n] = RMS-normalised x, times the weight w (out may be x); eps is added to the mean square (run.c's
 * 1e-5f; a model's own, e.g. GGUF's layer_norm_rms_epsilon, through LLMCU_NORM_EPS). */
void rmsnorm(float *out, const float *x, const float *w, int n, float eps);
/* In place: x[n] becomes its softmax. */
void softmax(float *x, int n);
/* Rotary position embedding at `pos`, in place, on q[q_dim] and k[k_dim] (both multiples of head_size), with
 * frequencies theta^(-hd / head_size) (run.c's theta 10000; a model's rope_theta through LLMCU_ROPE_THETA). */
void rope(float *q, int q_dim, float *k, int k_dim, int head_size, int pos, float theta);
/* The same rotation with the angles' cosines and sines given: cs[2 * (hd / 2)] = cosf and cs[2 * (hd / 2) + 1]
 * = sinf of pos * freq(hd) for each even head position hd (one row of the build-time table, LLMCU_ROPE_TABLE);
 * with the values rope computes, the results are rope's to the bit. head_size must be even. */
void rope_rotate(float *q, int q_dim, float *k, int k_dim, int head_size, const float *cs);
/* One row of those angles at `pos`, computed as rope computes them (cosf and sinf of (float)pos * freq):
 * cs[hd] = cos and cs[hd + 1] = sin for each even head position hd. head_size must be even. */
void rope_angles(float *cs, int head_size, int pos, float theta);
/* In place: hb[i] = silu(hb[i]) * hb2[i]. */
void swiglu(float *hb, const float *hb2, int n);
/* The index of the largest of x[0..n) (n >= 1), the first one on a tie; NaNs are never larger (a NaN at x[0] is
 * kept): greedy decoding's choice. */
int argmax(const float *x, int n);

/* ---- attention.c ---- */

/*
 * One attention head over positions 0..n_pos-1: out[head_size] = softmax(q . k_t / sqrt(head_size)) . v_t.
 * k and v point at this head's slice of the cache at position 0; consecutive positions are `stride`
 * floats apart. att needs n_pos floats of scratch. The caller maps query heads to kv heads (GQA).
 */
void attention_head(float *out, float *att, const float *q, const float *k, const float *v, int stride,
                    int head_size, int n_pos);

/*
 * The KV cache in a smaller element type (runtime_c/README.md, "KV cache types"). A key or value vector is
 * computed in float32 and stored converted; attention reads it converted back and is otherwise the fp32
 * arithmetic above, so these variants differ from attention_head only in how they load k and v.
 */

/* float32 -> IEEE binary16 bits, round to nearest even (overflow to +-inf, subnormals, NaN stays NaN). */
uint16_t f32_to_f16(float x);
/* IEEE binary16 bits -> float32 (exact). */
float f16_to_f32(uint16_t h);
/* dst[n] = f32_to_f16(src[n]). q8 stores use quantize_activations with group_size = head_size: one
 * scale per kv head (a cache row of kv_dim values is n_kv_heads groups). */
void kv_store_f16(uint16_t *dst, const float *src, int n);
/* attention_head over a binary16 cache: k and v point at this head's slice at position 0, `stride`
 * elements (kv_dim) between positions. */
void attention_head_f16(float *out, float *att, const float *q, const uint16_t *k, const uint16_t *v, int stride,
                        int head_size, int n_pos);
/* attention_head over an int8 cache: position t's key is (float)k[t*stride + i] * ks[t*scale_stride], the
 * same for v with vs (ks and vs point at this kv head's scale at position 0; scale_stride is n_kv_heads). */
void attention_head_q8(float *out, float *att, const float *q, const int8_t *k, const float *ks, const int8_t *v,
                       const float *vs, int stride, int scale_stride, int head_size, int n_pos);

/* ---- attention_q16.c: the q16 KV cache and integer attention (runtime_c/README.md, "q16") ---- */

#define Q16_MAX 32767       /* stored codes are -32767..32767 */
#define Q16_EXP_BITS 7      /* softmax's exponent is looked up in steps of 1/128 octave */
#define Q16_EXP_TABLE 2048  /* q16_exp2[2048] (kernels/q16_exp2.h); a distance of 2047 steps or more weighs 0 */
#define Q16_MIN_G 8         /* the query's scale is 2^-G with Q16_MIN_G <= G <= Q16_MAX_G ... */
#define Q16_MAX_G 38        /* ... so that the distance shift G - Q16_EXP_BITS is 1..31 */

static inline uint32_t q16_float_bits(float x) {
    union {
        float value;
        uint32_t bits;
    } u = {x};
    return u.bits;
}

/* A stored code: roundf(x / scale) saturated to +-Q16_MAX (halves away from zero); NaN stores 0. */
static inline int16_t q16_code(float x, float scale) {
    float r = roundf(x / scale);
    if (r != r) {
        return 0;
    }
    return (int16_t)(r >= (float)Q16_MAX ? Q16_MAX : r <= -(float)Q16_MAX ? -Q16_MAX : (int32_t)r);
}

/* The quantized queries' bound: the largest b <= 15 with head_size * (2^b - 1) * Q16_MAX < 2^31. */
static inline int q16_query_bits(int head_size) {
    int bits = 15;
    while (bits > 2 && (int64_t)head_size * ((1 << bits) - 1) * Q16_MAX > 2147483647) {
        bits--;
    }
    return bits;
}

/* One head's query as integers: a[i] = roundf(q[i] * factor[i] * 2^G), saturated at +-(2^bits - 1), with G
 * from the largest |q[i] * factor[i]| = f * 2^e (f in [0.5, 1)): G = bits - e kept in [Q16_MIN_G, Q16_MAX_G].
 * Returns G; a zero (or subnormal) largest product gives all zeros and Q16_MAX_G. NaN products count as 0. */
static inline int q16_quantize_query(int16_t *a, const float *q, const float *factor, int head_size, int bits) {
    float amax = 0.0f;
    for (int i = 0; i < head_size; i++) {
        float p = q[i] * factor[i];
        float m = p < 0.0f ? -p : p;
        if (m > amax) {
            amax = m;
        }
    }
    int field = (int)((q16_float_bits(amax) >> 23) & 0xffu);
    if (field == 0) {
        for (int i = 0; i < head_size; i++) {
            a[i] = 0;
        }
        return Q16_MAX_G;
    }
    int g = bits - (field - 126);
    g = g < Q16_MIN_G ? Q16_MIN_G : g > Q16_MAX_G ? Q16_MAX_G : g;
    union {
        uint32_t bits;
        float value;
    } power = {(uint32_t)(127 + g) << 23}; /* 2^G, exactly */
    float limit = (float)((1 << bits) - 1);
    for (int i = 0; i < head_size; i++) {
        float r = roundf((q[i] * factor[i]) * power.value);
        a[i] = (int16_t)(r != r ? 0 : r >= limit ? (int32_t)limit : r <= -limit ? -(int32_t)limit : (int32_t)r);
    }
    return g;
}

/* Stores position pos's key k[kv_dim] and value v[kv_dim] into one layer's caches, `positions` (a multiple of 8)
 * x kv_dim codes each, arranged as the kernel set's attention_q16 reads them; key_scale/value_scale[kv_dim]. */
void kv_store_q16(int16_t *keys, int16_t *values, const float *k, const float *v, const float *key_scale,
                  const float *value_scale, int pos, int positions, int kv_dim, int head_size);
/* Every query head of one layer over positions 0..n_pos-1 (head h reads kv head h / (n_heads / n_kv_heads)):
 * q[n_heads * head_size] in, out[n_heads * head_size] out; key_factor/value_scale[kv_dim] this layer's. Scratch:
 * query (int16, head_size), scores (int32) and weights (int16), `positions` each. */
void attention_q16(float *out, const float *q, const int16_t *keys, const int16_t *values, const float *key_factor,
                   const float *value_scale, int16_t *query, int32_t *scores, int16_t *weights, int n_heads,
                   int n_kv_heads, int head_size, int positions, int n_pos);

#endif /* LLMCU_KERNELS_H */
