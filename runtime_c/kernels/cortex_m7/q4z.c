/*
 * q4z on the Cortex-M7. The matmul is in matmul.c beside q4's, whose program and asm it shares; here are the
 * reference's q4z functions under row-major names (for matrices not in m7_panels) and the embedding lookup,
 * which reads m7_panels element by element as quant.c's embed_q4 does.
 */
#include <stddef.h>
#include <stdint.h>

#include "kernels/cortex_m7/m7_layout.h"
#include "kernels/kernels.h"
#include "kernels/ref/ref.h"

#define matmul_q4z ref_matmul_q4z
#define embed_q4z ref_embed_q4z
#include "kernels/ref/q4z.c"
#undef matmul_q4z
#undef embed_q4z

void embed_q4z(float *out, const uint8_t *table, const uint16_t *words, int row, int dim, int group_size) {
    if (!m7_panel_layout(dim, group_size, 1)) {
        ref_embed_q4z(out, table, words, row, dim, group_size);
        return;
    }
    int ngroups = group_count(dim, group_size);
    for (int j = 0; j < dim; j++) {
        uint16_t word = m7_word_at(words, ngroups, row, j / group_size);
        out[j] = (float)(m7_q4_at(table, dim, row, j) + 8 - q4z_zero(word)) * q4z_scale(word);
    }
}
