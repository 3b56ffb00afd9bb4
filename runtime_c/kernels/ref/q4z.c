/*
 * q4z: 4-bit weights with a zero point per group (runtime_c/README.md, "q4z").
 *
 * The codes are stored as q4's bytes (two per byte, even column in the low nibble), each the code n in 0..15;
 * a group's 16-bit word holds its zero point z and its scale, the weight being scale * (n - z). Against q4
 * (a fixed z = 8 and a float32 scale) it costs half the bytes per group and lets a group whose weights lean
 * to one side spend all 16 codes on them. The integer part stays exact: sum(n * x) - z * sum(x) is
 * sum((n - z) * x), at most 15 * 127 * group_size in magnitude. The float part is q4's, in its order.
 *
 * Each optimised set has its own q4z.c, which includes this one for the matrices its layout does not take
 * (kernels/ref/ref.h).
 */
#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"

void matmul_q4z(float *out, const int8_t *xq, const float *xs, const uint8_t *w, const uint16_t *wg, int rows,
                int cols, int group_size) {
    int ngroups = group_count(cols, group_size);
    size_t row_bytes = ((size_t)cols + 1) / 2; /* every row starts on a byte boundary */
    for (int i = 0; i < rows; i++) {
        const uint8_t *row = w + (size_t)i * row_bytes;
        const uint16_t *words = wg + (size_t)i * (size_t)ngroups;
        float val = 0.0f;
        for (int g = 0; g < ngroups; g++) {
            int start = g * group_size;
            int end = start + group_size < cols ? start + group_size : cols;
            int32_t nsum = 0, xsum = 0;
            int j = start;
            for (; j + 1 < end; j += 2) { /* start is even (group sizes are), so a byte never straddles */
                uint8_t byte = row[j >> 1];
                nsum += (int32_t)(byte & 0x0F) * (int32_t)xq[j] + (int32_t)(byte >> 4) * (int32_t)xq[j + 1];
                xsum += (int32_t)xq[j] + (int32_t)xq[j + 1];
            }
            if (j < end) { /* an odd-length row's last column: the low nibble of its last byte */
                nsum += (int32_t)(row[j >> 1] & 0x0F) * (int32_t)xq[j];
                xsum += (int32_t)xq[j];
            }
            int32_t isum = nsum - q4z_zero(words[g]) * xsum;
            val += ((float)isum * q4z_scale(words[g])) * xs[g];
        }
        out[i] = val;
    }
}

void embed_q4z(float *out, const uint8_t *table, const uint16_t *words, int row, int dim, int group_size) {
    const uint8_t *bytes = table + (size_t)row * (((size_t)dim + 1) / 2);
    const uint16_t *row_words = words + (size_t)row * (size_t)group_count(dim, group_size);
    for (int j = 0; j < dim; j++) {
        uint16_t word = row_words[j / group_size];
        int32_t n = (j & 1) ? (bytes[j >> 1] >> 4) : (bytes[j >> 1] & 0x0F);
        out[j] = (float)(n - q4z_zero(word)) * q4z_scale(word);
    }
}
