/*
 * The element-wise and normalisation steps of the forward pass. Each follows run.c's arithmetic to the
 * operation (see runtime_c/README.md): e.g. softmax divides by the sum rather than multiplying by its
 * reciprocal, because the two round differently.
 */
#include <math.h>

#include "kernels/kernels.h"

void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    float ss = 0.0f;
    for (int j = 0; j < n; j++) {
        ss += x[j] * x[j];
    }
    ss /= (float)n;
    ss += eps;
    ss = 1.0f / sqrtf(ss);
    for (int j = 0; j < n; j++) {
        out[j] = w[j] * (ss * x[j]);
    }
}

void softmax(float *x, int n) {
    /* Subtracting the maximum keeps expf from overflowing; it does not change the result. */
    float max = x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] > max) {
            max = x[i];
        }
    }
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    for (int i = 0; i < n; i++) {
        x[i] /= sum;
    }
}

static void rotate_pair(float *v, float fcr, float fci) {
    float v0 = v[0];
    float v1 = v[1];
    v[0] = v0 * fcr - v1 * fci;
    v[1] = v0 * fci + v1 * fcr;
}

/* k_dim <= q_dim (kv_dim <= dim): each pair's angle is computed once and applied to q and to k. */
void rope(float *q, int q_dim, float *k, int k_dim, int head_size, int pos, float theta) {
    for (int i = 0; i < q_dim; i += 2) {
        int head_dim = i % head_size;
        float freq = 1.0f / powf(theta, (float)head_dim / (float)head_size);
        float val = (float)pos * freq;
        float fcr = cosf(val);
        float fci = sinf(val);
        rotate_pair(q + i, fcr, fci);
        if (i < k_dim) {
            rotate_pair(k + i, fcr, fci);
        }
    }
}

/*
 * rope with the same values in another order, for the kernel sets that include this file (x86, cortex_m7):
 * a pair's angle depends only on its place in the head (i % head_size), so powf, cosf and sinf run
 * head_size / 2 times per call rather than q_dim / 2 times. For an odd head_size pairs would straddle
 * heads, and this file's rope runs as it is.
 */
static inline void rope_per_head_position(float *q, int q_dim, float *k, int k_dim, int head_size, int pos,
                                          float theta) {
    if (head_size % 2 != 0) {
        rope(q, q_dim, k, k_dim, head_size, pos, theta);
        return;
    }
    /* Pair i (even) has head position i % head_size, so the pairs sharing one are hd, hd + head_size, ... */
    for (int head_dim = 0; head_dim < head_size; head_dim += 2) {
        float freq = 1.0f / powf(theta, (float)head_dim / (float)head_size);
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

void rope_angles(float *cs, int head_size, int pos, float theta) {
    for (int head_dim = 0; head_dim < head_size; head_dim += 2) {
        float freq = 1.0f / powf(theta, (float)head_dim / (float)head_size);
        float val = (float)pos * freq;
        cs[head_dim] = cosf(val);
        cs[head_dim + 1] = sinf(val);
    }
}

/* rope with each angle's cosine and sine read from a table row instead of computed (the same rotate_pair). */
void rope_rotate(float *q, int q_dim, float *k, int k_dim, int head_size, const float *cs) {
    for (int head_dim = 0; head_dim < head_size; head_dim += 2) {
        float fcr = cs[head_dim];
        float fci = cs[head_dim + 1];
        for (int i = head_dim; i < q_dim; i += head_size) {
            rotate_pair(q + i, fcr, fci);
            if (i < k_dim) {
                rotate_pair(k + i, fcr, fci);
            }
        }
    }
}

/* A kernel set that includes this file may give swiglu another exp (cortex_m7/ops.c: its M7_EXP). */
#ifndef SWIGLU_EXP
#define SWIGLU_EXP expf
#endif

void swiglu(float *hb, const float *hb2, int n) {
    for (int i = 0; i < n; i++) {
        float h = hb[i];
        h *= 1.0f / (1.0f + SWIGLU_EXP(-h)); /* silu(h) = h * sigmoid(h) */
        h *= hb2[i];
        hb[i] = h;
    }
}

int argmax(const float *x, int n) {
    int best = 0;
    float best_value = x[0]; /* held, not reloaded through x[best]: a chain through memory costs every step */
    for (int i = 1; i < n; i++) {
        if (x[i] > best_value) {
            best = i;
            best_value = x[i];
        }
    }
    return best;
}
