/*
 * The NEON kernel set's weight layout ("neon_panels", site_scons/llmcu/builder/layouts.py, which codegen uses; the C
 * side in runtime_c/kernels/neon/matmul.c), remade here from the row-major reference layout so that
 * test_kernels.c can hand the NEON matmuls and embedding lookups what a build links in. Compiled in only when
 * the harness is built with -DHARNESS_LAYOUT_NEON_PANELS (tests/runtime/test_neon_kernels.py). The Python layout is
 * checked against this one by tests/runtime/test_neon_kernels.py on a whole model (opt and ref builds agree).
 */
#ifndef HARNESS_NEON_LAYOUT_H
#define HARNESS_NEON_LAYOUT_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

static int neon_panel_applies(int q4, int cols, int group_size) {
    int unit = q4 ? 8 : 4;
    return cols % unit == 0 && group_size % unit == 0;
}

/* q of row r, column c of a row-major q8 (int8) or q4 (q + 8 nibbles) matrix. */
static int neon_q_at(const uint8_t *w, int q4, int cols, int r, int c) {
    if (!q4) {
        return (int8_t)w[(size_t)r * (size_t)cols + (size_t)c];
    }
    uint8_t byte = w[(size_t)r * (((size_t)cols + 1) / 2) + (size_t)c / 2];
    return ((c % 2) ? (byte >> 4) : (byte & 0x0F)) - 8;
}

/*
 * Replaces *w and *ws (row-major, rows x cols, malloc'ed) by the panel layout when it applies; returns
 * 1 then (and the new byte and scale counts), 0 when the matrix stays row-major.
 */
static int neon_panels(int q4, uint8_t **w, float **ws, size_t *wbytes, size_t *nscales, int rows, int cols,
                       int group_size) {
    if (!neon_panel_applies(q4, cols, group_size)) {
        return 0;
    }
    int panels = (rows + 3) / 4, ngroups = group_count(cols, group_size);
    size_t panel_bytes = (size_t)(q4 ? 2 : 4) * (size_t)cols;
    uint8_t *pw = calloc((size_t)panels * panel_bytes + 1, 1);
    float *ps = calloc((size_t)panels * 4 * (size_t)ngroups + 1, sizeof(float));
    if (!pw || !ps) {
        abort();
    }
    for (int r = 0; r < rows; r++) {
        int p = r / 4, k = r % 4;
        uint8_t *panel = pw + (size_t)p * panel_bytes;
        for (int c = 0; c < cols; c++) {
            int q = neon_q_at(*w, q4, cols, r, c);
            if (!q4) {
                panel[(size_t)(c / 4) * 16 + (size_t)k * 4 + (size_t)(c % 4)] = (uint8_t)(int8_t)q;
            } else {
                uint8_t *byte = &panel[(size_t)(c / 8) * 16 + (size_t)k * 4 + (size_t)(c % 4)];
                *byte |= (uint8_t)(((unsigned)q & 0x0Fu) << ((c % 8) < 4 ? 0 : 4));
            }
        }
        for (int g = 0; g < ngroups; g++) {
            ps[((size_t)p * (size_t)ngroups + (size_t)g) * 4 + (size_t)k] = (*ws)[(size_t)r * (size_t)ngroups + (size_t)g];
        }
    }
    free(*w);
    free(*ws);
    *w = pw;
    *ws = ps;
    *wbytes = (size_t)panels * panel_bytes;
    *nscales = (size_t)panels * 4 * (size_t)ngroups;
    return 1;
}

/*
 * q4z: the codes n sit where q4 keeps q + 8, so neon_panels lays them out as q4's (n - 8 in two's complement);
 * the group words go per panel, per group, the four rows' side by side. Replaces *w and *words when the layout
 * applies (returns 1).
 */
static int neon_q4z_panels(uint8_t **w, uint16_t **words, size_t *wbytes, size_t *nwords, int rows, int cols,
                           int group_size) {
    int ngroups = group_count(cols, group_size);
    float *unused = calloc((size_t)rows * (size_t)ngroups + 1, sizeof(float));
    size_t unused_n = (size_t)rows * (size_t)ngroups;
    if (!unused) {
        abort();
    }
    if (!neon_panels(1, w, &unused, wbytes, &unused_n, rows, cols, group_size)) {
        free(unused);
        return 0;
    }
    free(unused);
    int panels = (rows + 3) / 4;
    uint16_t *pw = calloc((size_t)panels * 4 * (size_t)ngroups + 1, sizeof(uint16_t));
    if (!pw) {
        abort();
    }
    for (int r = 0; r < rows; r++) {
        for (int g = 0; g < ngroups; g++) {
            pw[((size_t)(r / 4) * (size_t)ngroups + (size_t)g) * 4 + (size_t)(r % 4)] =
                (*words)[(size_t)r * (size_t)ngroups + (size_t)g];
        }
    }
    free(*words);
    *words = pw;
    *nwords = (size_t)panels * 4 * (size_t)ngroups;
    return 1;
}

/*
 * q4 in pair panels (cols and group_size multiples of 4): rows in panels of eight; per quad of columns, byte
 * 4k + m holds row k's column 4c + m in its high nibble (two's complement of q) and row k + 4's in its low nibble
 * (q + 8); scales per panel, per group, the eight rows' side by side. Replaces *w and *ws (returns 1) when it
 * applies.
 */
static int neon_q4_pairs(uint8_t **w, float **ws, size_t *wbytes, size_t *nscales, int rows, int cols,
                         int group_size) {
    if (cols % 4 != 0 || group_size % 4 != 0) {
        return 0;
    }
    int panels = (rows + 7) / 8, ngroups = group_count(cols, group_size);
    size_t panel_bytes = 4 * (size_t)cols;
    uint8_t *pw = calloc((size_t)panels * panel_bytes + 1, 1);
    float *ps = calloc((size_t)panels * 8 * (size_t)ngroups + 1, sizeof(float));
    if (!pw || !ps) {
        abort();
    }
    for (int p = 0; p < panels; p++) { /* padding rows: q = 0, so their low nibbles hold 8 */
        for (size_t b = 0; b < panel_bytes; b++) {
            pw[(size_t)p * panel_bytes + b] = 0x08;
        }
    }
    for (int r = 0; r < rows; r++) {
        int p = r / 8, k = r % 8;
        uint8_t *panel = pw + (size_t)p * panel_bytes;
        for (int c = 0; c < cols; c++) {
            int q = neon_q_at(*w, 1, cols, r, c);
            uint8_t *byte = &panel[(size_t)(c / 4) * 16 + (size_t)(k % 4) * 4 + (size_t)(c % 4)];
            if (k < 4) {
                *byte = (uint8_t)((*byte & 0x0F) | (((unsigned)q & 0x0Fu) << 4));
            } else {
                *byte = (uint8_t)((*byte & 0xF0) | (unsigned)(q + 8));
            }
        }
        for (int g = 0; g < ngroups; g++) {
            ps[((size_t)p * (size_t)ngroups + (size_t)g) * 8 + (size_t)k] = (*ws)[(size_t)r * (size_t)ngroups + (size_t)g];
        }
    }
    free(*w);
    free(*ws);
    *w = pw;
    *ws = ps;
    *wbytes = (size_t)panels * panel_bytes;
    *nscales = (size_t)panels * 8 * (size_t)ngroups;
    return 1;
}

/*
 * An fp32 matrix (row-major, rows x cols) in the panel layout, which applies to every fp32 matrix: rows in panels
 * of four (zero rows pad the last), per column the four rows' values side by side. Returns a new malloc'ed array
 * and its float count in *count.
 */
static float *neon_f32_panels(const float *w, size_t *count, int rows, int cols) {
    int panels = (rows + 3) / 4;
    float *pw = calloc((size_t)panels * 4 * (size_t)cols + 1, sizeof(float));
    if (!pw) {
        abort();
    }
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) {
            pw[((size_t)(r / 4) * (size_t)cols + (size_t)c) * 4 + (size_t)(r % 4)] = w[(size_t)r * (size_t)cols + (size_t)c];
        }
    }
    *count = (size_t)panels * 4 * (size_t)cols;
    return pw;
}

#endif /* HARNESS_NEON_LAYOUT_H */
