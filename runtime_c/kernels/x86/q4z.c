/*
 * q4z on x86: the matmul is in matmul.c, q4's kernels with the group words; here the embedding lookup, which
 * reads x86_panels where the build stored them (codes n as q4's q + 8, the eight rows' group words side by side),
 * and the reference's functions under other names for the row-major tables, so that this file replaces
 * kernels/ref/q4z.c as a whole.
 */
#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"
#include "kernels/ref/ref.h"
#include "kernels/x86/x86.h"

#define matmul_q4z ref_matmul_q4z
#define embed_q4z ref_embed_q4z
#include "kernels/ref/q4z.c"
#undef matmul_q4z
#undef embed_q4z

void embed_q4z(float *out, const uint8_t *table, const uint16_t *words, int row, int dim, int group_size) {
    if (!x86_panel_layout(dim, group_size, 1)) {
        ref_embed_q4z(out, table, words, row, dim, group_size);
        return;
    }
    int ngroups = group_count(dim, group_size);
    const uint8_t *panel = table + (size_t)(row / X86_PANEL_ROWS) * 4 * X86_PANEL_ROWS * (size_t)dim / 8 +
                           (size_t)(row % X86_PANEL_ROWS) * 4;
    const uint16_t *w = words + (size_t)(row / X86_PANEL_ROWS) * X86_PANEL_ROWS * (size_t)ngroups +
                        (size_t)(row % X86_PANEL_ROWS);
    for (int j = 0; j < dim; j++) { /* column j: block j / 8 (32 bytes); low nibble for j % 8 < 4, else high */
        uint8_t byte = panel[(size_t)(j / 8) * 32 + (size_t)(j % 4)];
        int32_t n = (j % 8 < 4) ? (byte & 0x0F) : (byte >> 4);
        uint16_t word = w[X86_PANEL_ROWS * (j / group_size)];
        out[j] = (float)(n - q4z_zero(word)) * q4z_scale(word);
    }
}
