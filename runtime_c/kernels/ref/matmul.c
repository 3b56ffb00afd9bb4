/*
 * Matrix-vector products, out[i] = sum_j W[i][j] * x[j], for fp32 and group-quantized weights.
 *
 * The float sums run left to right from 0.0f, one term at a time: that order is part of the numeric
 * contract (run.c's matmul), so do not split or reorder the accumulations here.
 */
#include <stddef.h>

#include "kernels/kernels.h"

void matmul_f32(float *out, const float *x, const float *w, int rows, int cols) {
    for (int i = 0; i < rows; i++) {
        const float *row = w + (size_t)i * (size_t)cols;
        float val = 0.0f;
        for (int j = 0; j < cols; j++) {
            val += row[j] * x[j];
        }
        out[i] = val;
    }
}

/* End (exclusive) of the group that starts at column `start`: groups never run past the row. */
static int group_end(int start, int group_size, int cols) {
    return start + group_size < cols ? start + group_size : cols;
}

void matmul_q8(float *out, const int8_t *xq, const float *xs, const int8_t *w, const float *ws, int rows,
               int cols, int group_size) {
    int ngroups = group_count(cols, group_size);
    for (int i = 0; i < rows; i++) {
        const int8_t *row = w + (size_t)i * (size_t)cols;
        const float *row_scales = ws + (size_t)i * (size_t)ngroups;
        float val = 0.0f;
        for (int g = 0; g < ngroups; g++) {
            int start = g * group_size;
            int end = group_end(start, group_size, cols);
            int32_t isum = 0; /* exact: at most group_size * 127 * 127 */
            for (int j = start; j < end; j++) {
                isum += (int32_t)row[j] * (int32_t)xq[j];
            }
            val += ((float)isum * row_scales[g]) * xs[g];
        }
        out[i] = val;
    }
}

/* The dot product of q4 weights row[start..end) with xq[start..end); start is even (the group size is
 * even), so each byte holds the weights of columns j (low nibble) and j + 1 (high nibble). */
static int32_t q4_group_dot(const uint8_t *row, const int8_t *xq, int start, int end) {
    int32_t isum = 0;
    int j = start;
    for (; j + 1 < end; j += 2) {
        uint8_t byte = row[j >> 1];
        isum += ((int32_t)(byte & 0x0F) - 8) * (int32_t)xq[j];
        isum += ((int32_t)(byte >> 4) - 8) * (int32_t)xq[j + 1];
    }
    if (j < end) { /* an odd-length row's last column: the low nibble of its last byte */
        isum += ((int32_t)(row[j >> 1] & 0x0F) - 8) * (int32_t)xq[j];
    }
    return isum;
}

void matmul_q4(float *out, const int8_t *xq, const float *xs, const uint8_t *w, const float *ws, int rows,
               int cols, int group_size) {
    int ngroups = group_count(cols, group_size);
    size_t row_bytes = ((size_t)cols + 1) / 2; /* every row starts on a byte boundary */
    for (int i = 0; i < rows; i++) {
        const uint8_t *row = w + (size_t)i * row_bytes;
        const float *row_scales = ws + (size_t)i * (size_t)ngroups;
        float val = 0.0f;
        for (int g = 0; g < ngroups; g++) {
            int start = g * group_size;
            int end = group_end(start, group_size, cols);
            int32_t isum = q4_group_dot(row, xq, start, end);
            val += ((float)isum * row_scales[g]) * xs[g];
        }
        out[i] = val;
    }
}
