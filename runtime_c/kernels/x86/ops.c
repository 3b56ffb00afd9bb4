/*
 * Element-wise and normalisation steps for x86-64 (see x86.h for how the ISA is chosen and the exactness
 * rules). Everything libm computes (expf, powf, cosf, sinf) is still computed by libm from the same
 * arguments, so the results are the reference's bits:
 *  - softmax: the maximum and the final division eight lanes at a time; expf and the sequential sum
 *    stay scalar;
 *  - rmsnorm: the sequential sum of squares stays scalar; the scaling w[j] * (ss * x[j]) is vectorised;
 *  - rope: each pair's angle depends only on its position within the head, so it is computed once per
 *    head position (head_size / 2 times) and applied to every head, instead of once per pair;
 *  - swiglu: the reference's.
 */
#include <math.h>

#include "kernels/kernels.h"
#include "kernels/ref/ref.h"
#include "kernels/x86/x86.h"

#define rmsnorm ref_rmsnorm
#define softmax ref_softmax
#define rope ref_rope
#include "kernels/ref/ops.c"
#undef rmsnorm
#undef softmax
#undef rope

#if X86_SIMD

X86_AVX2 static void rmsnorm_avx2(float *out, const float *x, const float *w, int n, float eps) {
    float ss = 0.0f;
    for (int j = 0; j < n; j++) {
        ss += x[j] * x[j];
    }
    ss /= (float)n;
    ss += eps;
    ss = 1.0f / sqrtf(ss);
    __m256 ss8 = _mm256_set1_ps(ss);
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        _mm256_storeu_ps(out + j, _mm256_mul_ps(_mm256_loadu_ps(w + j), _mm256_mul_ps(ss8, _mm256_loadu_ps(x + j))));
    }
    for (; j < n; j++) {
        out[j] = w[j] * (ss * x[j]);
    }
}

/*
 * The reference's running maximum, `if (x[i] > max) max = x[i]`, is max_ps(x[i], max) lane by lane: that
 * instruction returns its second operand unless the first is greater, so a NaN is skipped and a tie keeps
 * the earlier value. The lanes then combine in another order than the reference's, which can only change
 * which of +0 and -0 is the maximum when both are; then x[i] - max differs only for x[i] = -0 (+0 or -0),
 * and expf gives 1 for both.
 */
X86_AVX2 static void softmax_avx2(float *x, int n) {
    __m256 m8 = _mm256_set1_ps(x[0]);
    int i = 1;
    for (; i + 8 <= n; i += 8) {
        m8 = _mm256_max_ps(_mm256_loadu_ps(x + i), m8);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, m8);
    float max = lanes[0];
    for (int k = 1; k < 8; k++) {
        if (lanes[k] > max) {
            max = lanes[k];
        }
    }
    for (; i < n; i++) {
        if (x[i] > max) {
            max = x[i];
        }
    }
    /* expf and the running sum stay one scalar loop, as in the reference: the sum's chain of adds then
     * overlaps the calls (measured faster than two separate loops). */
    float sum = 0.0f;
    for (i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    __m256 sum8 = _mm256_set1_ps(sum);
    for (i = 0; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(x + i, _mm256_div_ps(_mm256_loadu_ps(x + i), sum8));
    }
    for (; i < n; i++) {
        x[i] /= sum;
    }
}

#endif /* X86_SIMD */

void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
#if X86_SIMD
    if (x86_have_avx2()) {
        rmsnorm_avx2(out, x, w, n, eps);
        return;
    }
#endif
    ref_rmsnorm(out, x, w, n, eps);
}

void softmax(float *x, int n) {
#if X86_SIMD
    if (x86_have_avx2()) {
        softmax_avx2(x, n);
        return;
    }
#endif
    ref_softmax(x, n);
}

/* Plain C: the saving is in the libm calls (the reference file's rope_per_head_position). */
void rope(float *q, int q_dim, float *k, int k_dim, int head_size, int pos, float theta) {
    rope_per_head_position(q, q_dim, k, k_dim, head_size, pos, theta);
}
