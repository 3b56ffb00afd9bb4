/*
 * The reference kernels under the names an optimised set calls them by: ref_<kernel>.
 *
 * kernels/ref/X.c defines the portable kernels under their public names (kernels/kernels.h); a build with an
 * optimised set compiles kernels/<set>/X.c instead, which takes the reference's code for what it does not do
 * faster by including kernels/ref/X.c with each kernel it replaces renamed to ref_<kernel>:
 *
 *     #define rmsnorm ref_rmsnorm
 *     #include "kernels/ref/ops.c"
 *     #undef rmsnorm
 *
 * and calls ref_rmsnorm where its own path does not apply (as TFLM's optimised kernels call reference_ops::).
 * Including it, rather than linking the reference object, keeps the fallback in the same translation unit, where
 * the compiler may inline it. The kernels it does not replace keep their public names. One prefix, one header:
 * a set declares nothing of its own for a fallback, and a call to a ref_ kernel that its file did not rename is a
 * link error.
 */
#ifndef LLMCU_KERNELS_REF_H
#define LLMCU_KERNELS_REF_H

#include <stdint.h>

void ref_matmul_f32(float *out, const float *x, const float *w, int rows, int cols);
void ref_matmul_q8(float *out, const int8_t *xq, const float *xs, const int8_t *w, const float *ws, int rows, int cols,
                   int group_size);
void ref_matmul_q4(float *out, const int8_t *xq, const float *xs, const uint8_t *w, const float *ws, int rows,
                   int cols, int group_size);
void ref_matmul_q4z(float *out, const int8_t *xq, const float *xs, const uint8_t *w, const uint16_t *wg, int rows,
                    int cols, int group_size);
void ref_embed_q4z(float *out, const uint8_t *table, const uint16_t *words, int row, int dim, int group_size);
void ref_quantize_activations(int8_t *xq, float *xs, const float *x, int n, int group_size);
void ref_embed_f32(float *out, const float *table, int row, int dim);
void ref_embed_q8(float *out, const int8_t *table, const float *scales, int row, int dim, int group_size);
void ref_embed_q4(float *out, const uint8_t *table, const float *scales, int row, int dim, int group_size);
void ref_rmsnorm(float *out, const float *x, const float *w, int n, float eps);
void ref_softmax(float *x, int n);
void ref_rope(float *q, int q_dim, float *k, int k_dim, int head_size, int pos, float theta);
void ref_rope_rotate(float *q, int q_dim, float *k, int k_dim, int head_size, const float *cs);
void ref_rope_angles(float *cs, int head_size, int pos, float theta);
void ref_swiglu(float *hb, const float *hb2, int n);
int ref_argmax(const float *x, int n);
void ref_attention_head(float *out, float *att, const float *q, const float *k, const float *v, int stride,
                        int head_size, int n_pos);
uint16_t ref_f32_to_f16(float x);
float ref_f16_to_f32(uint16_t h);
void ref_kv_store_f16(uint16_t *dst, const float *src, int n);
void ref_attention_head_f16(float *out, float *att, const float *q, const uint16_t *k, const uint16_t *v, int stride,
                            int head_size, int n_pos);
void ref_attention_head_q8(float *out, float *att, const float *q, const int8_t *k, const float *ks, const int8_t *v,
                           const float *vs, int stride, int scale_stride, int head_size, int n_pos);
void ref_kv_store_q16(int16_t *keys, int16_t *values, const float *k, const float *v, const float *key_scale,
                      const float *value_scale, int pos, int positions, int kv_dim, int head_size);
void ref_attention_q16(float *out, const float *q, const int16_t *keys, const int16_t *values, const float *key_factor,
                       const float *value_scale, int16_t *query, int32_t *scores, int16_t *weights, int n_heads,
                       int n_kv_heads, int head_size, int positions, int n_pos);

#endif /* LLMCU_KERNELS_REF_H */
