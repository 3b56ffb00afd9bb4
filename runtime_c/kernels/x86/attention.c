/*
 * Attention for x86-64 with AVX2 (see x86.h for how the ISA is chosen and the exactness rules).
 *
 * attention_head (the float32 cache):
 *  - scores: one lane per position, eight positions per pass (x86_dot8x8: eight keys times q, transposed);
 *    each lane sums q[i] * k_t[i] over i in order from 0.0f, then divides by sqrt(head_size), as the
 *    reference does;
 *  - softmax: ops.c's;
 *  - output: one lane per output element i, summing a_t * v_t[i] over t in order (the reference's own
 *    loop order, t outer).
 * The binary16 and int8 caches use the reference code.
 */
#include <math.h>
#include <stddef.h>

#include "kernels/kernels.h"
#include "kernels/ref/ref.h"
#include "kernels/x86/x86.h"

#define attention_head ref_attention_head
#include "kernels/ref/attention.c"
#undef attention_head

#if X86_SIMD

/* The scores of positions t0..t0+7, before the division: lane r sums q[i] * k_{t0+r}[i] over i in order. */
X86_AVX2_INLINE __m256 scores8(const float *q, const float *k, size_t stride, int head_size, int t0) {
    const float *kt = k + (size_t)t0 * stride;
    __m256 score = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= head_size; i += 8) {
        score = x86_dot8x8(score, kt + i, stride, q + i);
    }
    for (; i < head_size; i++) {
        score = x86_dot8x1(score, kt + i, stride, q + i);
    }
    return score;
}

X86_AVX2 static void attention_head_avx2(float *out, float *att, const float *q, const float *k, const float *v,
                                         int stride, int head_size, int n_pos) {
    float scale = sqrtf((float)head_size);
    __m256 scale8 = _mm256_set1_ps(scale);
    int t = 0;
    for (; t + 8 <= n_pos; t += 8) {
        _mm256_storeu_ps(att + t, _mm256_div_ps(scores8(q, k, (size_t)stride, head_size, t), scale8));
    }
    for (; t < n_pos; t++) {
        const float *kt = k + (size_t)t * (size_t)stride;
        float score = 0.0f;
        for (int i = 0; i < head_size; i++) {
            score += q[i] * kt[i];
        }
        att[t] = score / scale;
    }

    softmax(att, n_pos);

    int i = 0;
    /* Two vectors of output elements per pass when there are 16: two independent chains of adds. */
    for (; i + 16 <= head_size; i += 16) {
        __m256 acc0 = _mm256_setzero_ps();
        __m256 acc1 = _mm256_setzero_ps();
        const float *vt = v + i;
        for (int p = 0; p < n_pos; p++, vt += stride) {
            __m256 a = _mm256_broadcast_ss(att + p);
            acc0 = _mm256_add_ps(acc0, _mm256_mul_ps(a, _mm256_loadu_ps(vt)));
            acc1 = _mm256_add_ps(acc1, _mm256_mul_ps(a, _mm256_loadu_ps(vt + 8)));
        }
        _mm256_storeu_ps(out + i, acc0);
        _mm256_storeu_ps(out + i + 8, acc1);
    }
    for (; i + 8 <= head_size; i += 8) {
        __m256 acc = _mm256_setzero_ps();
        const float *vt = v + i;
        for (int p = 0; p < n_pos; p++, vt += stride) {
            acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_broadcast_ss(att + p), _mm256_loadu_ps(vt)));
        }
        _mm256_storeu_ps(out + i, acc);
    }
    for (; i < head_size; i++) {
        float acc = 0.0f;
        for (int p = 0; p < n_pos; p++) {
            acc += att[p] * v[(size_t)p * (size_t)stride + (size_t)i];
        }
        out[i] = acc;
    }
}

#endif /* X86_SIMD */

void attention_head(float *out, float *att, const float *q, const float *k, const float *v, int stride,
                    int head_size, int n_pos) {
#if X86_SIMD
    if (x86_have_avx2()) {
        attention_head_avx2(out, att, q, k, v, stride, head_size, n_pos);
        return;
    }
#endif
    ref_attention_head(out, att, q, k, v, stride, head_size, n_pos);
}
