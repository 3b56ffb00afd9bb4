/*
 * q4z on the A55. The matmul is in matmul.c beside q4's, whose panel dot products it shares; here is the
 * embedding lookup, which reads neon_panels as quant.c's embed_q4 does (codes as n - 8 in 4-bit two's
 * complement, four rows' group words side by side), and the reference's functions under other names for the
 * row-major tables, so that this file replaces kernels/ref/q4z.c as a whole.
 */
#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"
#include "kernels/ref/ref.h"
#include "neon_common.h"

#define matmul_q4z ref_matmul_q4z
#define embed_q4z ref_embed_q4z
#include "kernels/ref/q4z.c"
#undef matmul_q4z
#undef embed_q4z

void embed_q4z(float *out, const uint8_t *table, const uint16_t *words, int row, int dim, int group_size) {
    if (!panel_layout(dim, group_size, 1)) {
        ref_embed_q4z(out, table, words, row, dim, group_size);
        return;
    }
    int ngroups = group_count(dim, group_size);
    const uint8_t *panel = table + (size_t)(row / 4) * 2 * (size_t)dim + (size_t)(row % 4) * 4;
    const uint16_t *w = words + (size_t)(row / 4) * 4 * (size_t)ngroups + (size_t)(row % 4);
    for (int j = 0; j < dim; j++) { /* column j: block j / 8; low nibble for j % 8 < 4, else high */
        uint8_t byte = panel[(size_t)(j / 8) * 16 + (size_t)(j % 4)];
        int nibble = (j % 8 < 4) ? (byte & 0x0F) : (byte >> 4);
        uint16_t word = w[4 * (j / group_size)];
        out[j] = (float)((nibble >= 8 ? nibble - 16 : nibble) + 8 - q4z_zero(word)) * q4z_scale(word);
    }
}
