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

static inline void rotate_pair(float *v, float fcr, float fci) {
    float v0 = v[0];
    float v1 = v[1];
    v[0] = v0 * fcr - v1 * fci;
    v[1] = v0 * fci + v1 * fcr;
}

/* The angle of a pair depends only on its place in the head (i % head_size), so powf, cosf and sinf run
 * head_size / 2 times per call rather than q_dim / 2 times; the values are the reference's. */
void rope(float *q, int q_dim, float *k, int k_dim, int head_size, int pos) {
    if (head_size & 1) { /* pairs would straddle heads: the reference's loop as it is */
        for (int i = 0; i < q_dim; i += 2) {
            int head_dim = i % head_size;
            float freq = 1.0f / powf(10000.0f, (float)head_dim / (float)head_size);
            float val = (float)pos * freq;
            float fcr = cosf(val);
            float fci = sinf(val);
            rotate_pair(q + i, fcr, fci);
            if (i < k_dim) {
                rotate_pair(k + i, fcr, fci);
            }
        }
        return;
    }
    for (int head_dim = 0; head_dim < head_size; head_dim += 2) {
        float freq = 1.0f / powf(10000.0f, (float)head_dim / (float)head_size);
        float val = (float)pos * freq;
        float fcr = cosf(val);
        float fci = sinf(val);
        for (int i = head_dim; i < q_dim; i += head_size) {
            rotate_pair(q + i, fcr, fci);
            if (i < k_dim) {
                rotate_pair(k + i, fcr, fci);
            }
        }
    }
}

void swiglu(float *hb, const float *hb2, int n) {
    for (int i = 0; i < n; i++) {
        float h = hb[i];
        h *= 1.0f / (1.0f + M7_EXP(-h)); /* silu(h) = h * sigmoid(h) */
        h *= hb2[i];
        hb[i] = h;
    }
}
