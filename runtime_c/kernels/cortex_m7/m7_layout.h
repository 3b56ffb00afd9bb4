/*
 * The Cortex-M7 set's weight layout, "m7_panels" (site_scons/llmcu/builder/layouts.py makes it at build time for
 * kernels=opt on the M7 targets; matmul.c says why it is shaped so). Which matrices it covers depends on the
 * columns and the group size only, so the embedding lookup (quant.c) and the matmul agree on every table.
 *
 * q8 (cols and group_size multiples of 4): rows in panels of four (the last padded with zero rows); per panel,
 * per block of four columns, row 0's four bytes, then row 1's, row 2's, row 3's; an odd column's byte holds
 * q - 1 where the even column before it is negative, so that each halfword read as int16 is q_even + 256 q_odd.
 * q4 (cols a multiple of 4, group_size of 8): rows in panels of two (padded with a row of q = 0); per panel,
 * per block of eight columns, row 0's four bytes then row 1's (the reference's bytes: q + 8, even column in
 * the low nibble); when cols % 8 == 4, the last four columns as row 0's two bytes then row 1's.
 * q4z (as q4): the codes n as q4's panels hold q + 8, and per panel, per group, the two rows' 16-bit group
 * words side by side (one 32-bit word per panel and group).
 * Scales: per panel, per group, the panel's rows' scales side by side.
 * A panel is 4 * cols (q8) or cols (q4) bytes, so the rows keep their row-major offsets in whole panels.
 */
#ifndef LLMCU_KERNELS_M7_LAYOUT_H
#define LLMCU_KERNELS_M7_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

/* Whether codegen stored a q8 (q4 = 0) or q4 matrix of `cols` columns in m7_panels. */
static inline int m7_panel_layout(int cols, int group_size, int q4) {
    return cols % 4 == 0 && group_size % (q4 ? 8 : 4) == 0;
}

/* q of row r, column c of a q8 matrix in m7_panels. */
static inline int32_t m7_q8_at(const int8_t *w, int cols, int r, int c) {
    const int8_t *at = w + (size_t)(r / 4) * 4 * (size_t)cols + (size_t)(c / 4) * 16 + (size_t)(r % 4) * 4 + (size_t)(c % 4);
    return (c & 1) ? at[0] + (at[-1] < 0) : at[0];
}

/* q of row r, column c of a q4 matrix in m7_panels (the stored nibble minus 8). */
static inline int32_t m7_q4_at(const uint8_t *w, int cols, int r, int c) {
    int full = cols / 8 * 8;
    size_t at = (size_t)(r / 2) * (size_t)cols + (size_t)((c % 8) / 2);
    at += c < full ? (size_t)(c / 8) * 8 + (size_t)(r % 2) * 4 : (size_t)full + (size_t)(r % 2) * 2;
    return (int32_t)((c & 1) ? (w[at] >> 4) : (w[at] & 0x0F)) - 8;
}

/* The scale of row r, group g in m7_panels (panel_rows: 4 for q8, 2 for q4). */
static inline float m7_scale_at(const float *ws, int ngroups, int panel_rows, int r, int g) {
    return ws[((size_t)(r / panel_rows) * (size_t)ngroups + (size_t)g) * (size_t)panel_rows + (size_t)(r % panel_rows)];
}

/* The group word of row r, group g of a q4z matrix in m7_panels. */
static inline uint16_t m7_word_at(const uint16_t *words, int ngroups, int r, int g) {
    return words[((size_t)(r / 2) * (size_t)ngroups + (size_t)g) * 2 + (size_t)(r % 2)];
}

#endif /* LLMCU_KERNELS_M7_LAYOUT_H */
