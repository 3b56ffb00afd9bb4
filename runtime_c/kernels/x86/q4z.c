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
    for (int j = 0; j < dim; j++) {
        uint16_t word = words[x86_panel_group_index(row, j / group_size, ngroups)];
        out[j] = (float)(x86_panel_code(table, row, j, dim) - q4z_zero(word)) * q4z_scale(word);
    }
}
