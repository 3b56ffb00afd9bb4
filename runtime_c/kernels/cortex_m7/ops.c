/*
 * The element-wise and normalisation steps for the Cortex-M7; bit-identical to kernels/ref/ops.c.
 *
 * What changes is how much work is done, not the arithmetic: expf is the C library's (exp_m7.h; an
 * approximation only with LLMCU_FAST_EXP); softmax takes its max with VMAXNM (see attention.c for why that cannot change a result);
 * RoPE computes each of the head_size / 2 distinct angles once instead of once per head; RMSNorm's
 * sequential sum is unrolled by four (still one term at a time, in order).
 */
#include <math.h>

#include "exp_m7.h"
#include "kernels/kernels.h"

/* From the reference file: its swiglu as it is, with M7_EXP for its exp (expf itself unless
 * LLMCU_FAST_EXP), and rope_per_head_position, whose fallback for odd head sizes is the reference's rope,
 * kept as portable_rope. Its rmsnorm and softmax come along as portable_*, left to --gc-sections. */
#define rmsnorm portable_rmsnorm
#define softmax portable_softmax
#define rope portable_rope
#define SWIGLU_EXP M7_EXP
#include "kernels/ref/ops.c"
#undef rmsnorm
#undef softmax
#undef rope

/* softmax's exp pass (shared with attention.c): x[i] = exp(x[i] - max) and their sum, added in order. */
float m7_exp_pass(float *x, int n, float max, float min) {
    (void)min; /* the range is what an inlined approximation would need; expf handles every input */
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = M7_EXP(x[i] - max);
        sum += x[i];
    }
    return sum;
}

void rmsnorm(float *out, const float *x, const float *w, int n) {
    float ss = 0.0f;
    int j = 0;
    for (; j + 4 <= n; j += 4) {
        ss += x[j] * x[j];
        ss += x[j + 1] * x[j + 1];
        ss += x[j + 2] * x[j + 2];
        ss += x[j + 3] * x[j + 3];
    }
    for (; j < n; j++) {
        ss += x[j] * x[j];
    }
    ss /= (float)n;
    ss += 1e-5f;
    ss = 1.0f / sqrtf(ss);
    /* out may be x: each element is read before it is written. */
    for (j = 0; j + 4 <= n; j += 4) {
        float x0 = x[j], x1 = x[j + 1], x2 = x[j + 2], x3 = x[j + 3];
        out[j] = w[j] * (ss * x0);
        out[j + 1] = w[j + 1] * (ss * x1);
        out[j + 2] = w[j + 2] * (ss * x2);
        out[j + 3] = w[j + 3] * (ss * x3);
    }
    for (; j < n; j++) {
        out[j] = w[j] * (ss * x[j]);
    }
}

void softmax(float *x, int n) {
    float max = x[0], min = x[0];
    for (int i = 1; i < n; i++) {
        max = fmaxf(max, x[i]); /* VMAXNM */
        min = fminf(min, x[i]);
    }
    float sum = m7_exp_pass(x, n, max, min);
    for (int i = 0; i < n; i++) {
        x[i] /= sum;
    }
}

/* powf, cosf and sinf head_size / 2 times per call rather than q_dim / 2 times: the reference file's
 * rope_per_head_position. */
void rope(float *q, int q_dim, float *k, int k_dim, int head_size, int pos) {
    rope_per_head_position(q, q_dim, k, k_dim, head_size, pos);
}
