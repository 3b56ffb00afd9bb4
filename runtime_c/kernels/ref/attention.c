/* Scaled dot-product attention for one query head against the cached keys and values. */
#include <math.h>
#include <stddef.h>

#include "kernels/kernels.h"

void attention_head(float *out, float *att, const float *q, const float *k, const float *v, int stride,
                    int head_size, int n_pos) {
    float scale = sqrtf((float)head_size);
    for (int t = 0; t < n_pos; t++) {
        const float *kt = k + (size_t)t * (size_t)stride;
        float score = 0.0f;
        for (int i = 0; i < head_size; i++) {
            score += q[i] * kt[i];
        }
        att[t] = score / scale;
    }

    softmax(att, n_pos);

    /* Weighted sum of the values, accumulated position by position (t outer) as run.c does. */
    for (int i = 0; i < head_size; i++) {
        out[i] = 0.0f;
    }
    for (int t = 0; t < n_pos; t++) {
        const float *vt = v + (size_t)t * (size_t)stride;
        float a = att[t];
        for (int i = 0; i < head_size; i++) {
            out[i] += a * vt[i];
        }
    }
}
