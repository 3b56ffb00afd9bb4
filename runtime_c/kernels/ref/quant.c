/*
 * Group quantization at run time: activations to int8 for the integer matmuls, and embedding rows back
 * to float32 for the token lookup.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "kernels/kernels.h"

#define ACT_QMAX 127.0f

void quantize_activations(int8_t *xq, float *xs, const float *x, int n, int group_size) {
    for (int start = 0, g = 0; start < n; start += group_size, g++) {
        int end = start + group_size < n ? start + group_size : n;
        float amax = 0.0f;
        for (int j = start; j < end; j++) {
            float a = fabsf(x[j]);
            if (a > amax) {
                amax = a;
            }
        }
        float scale = amax / ACT_QMAX;
        xs[g] = scale;
        for (int j = start; j < end; j++) {
            /* An all-zero group has scale 0: its integers are 0 rather than 0/0. */
            float r = scale == 0.0f ? 0.0f : roundf(x[j] / scale);
            /* x/scale can land a hair above 127 when x is the group's maximum; never wrap. */
            if (r > ACT_QMAX) {
                r = ACT_QMAX;
            } else if (r < -ACT_QMAX) {
                r = -ACT_QMAX;
            }
            xq[j] = (int8_t)r;
        }
    }
}

void embed_f32(float *out, const float *table, int row, int dim) {
    memcpy(out, table + (size_t)row * (size_t)dim, (size_t)dim * sizeof(float));
}

void embed_q8(float *out, const int8_t *table, const float *scales, int row, int dim, int group_size) {
    const int8_t *q = table + (size_t)row * (size_t)dim;
    const float *s = scales + (size_t)row * (size_t)group_count(dim, group_size);
    for (int j = 0; j < dim; j++) {
        out[j] = (float)q[j] * s[j / group_size];
    }
}

void embed_q4(float *out, const uint8_t *table, const float *scales, int row, int dim, int group_size) {
    const uint8_t *q = table + (size_t)row * (((size_t)dim + 1) / 2);
    const float *s = scales + (size_t)row * (size_t)group_count(dim, group_size);
    for (int j = 0; j < dim; j++) {
        uint8_t byte = q[j >> 1];
        int nibble = (j & 1) ? (byte >> 4) : (byte & 0x0F);
        out[j] = (float)(nibble - 8) * s[j / group_size];
    }
}
