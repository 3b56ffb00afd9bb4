/*
 * The x86 kernel set's weight layout ("x86_panels", site_scons/llmcu/builder/layouts.py, which codegen uses; the C
 * side in runtime_c/kernels/x86/matmul.c), remade here from the row-major reference layout so that
 * test_kernels_dump.c hands the x86 matmuls and embedding lookups what a build links in. Included by that file only
 * when it is built with -DHARNESS_LAYOUT_X86_PANELS (tests/runtime/test_x86_kernels.py), after its guarded_alloc():
 * the panels, too, end right at a guard page, so a kernel reading past the padded panels crashes. The Python layout
 * is checked against this one by the whole-model tests there (opt and ref builds agree) and tests/builder/test_layouts.py.
 */
#ifndef HARNESS_X86_LAYOUT_H
#define HARNESS_X86_LAYOUT_H

#include <stdint.h>
#include <string.h>

#include "kernels/kernels.h"

#define X86_ROWS 8 /* rows per panel */

static int x86_panels(int rows) { return (rows + X86_ROWS - 1) / X86_ROWS; }

/* fp32 (always in panels): per panel, per column, the eight rows' values side by side (zero for the padding rows).
 * Scales and group words are laid out the same way, a group in place of a column. */
static float *x86_f32_panels(const float *w, int rows, int cols) {
    size_t n = (size_t)x86_panels(rows) * X86_ROWS * (size_t)cols;
    float *pw = guarded_alloc(n * sizeof(float));
    memset(pw, 0, n * sizeof(float));
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) {
            pw[((size_t)(r / X86_ROWS) * (size_t)cols + (size_t)c) * X86_ROWS + (size_t)(r % X86_ROWS)] =
                w[(size_t)r * (size_t)cols + (size_t)c];
        }
    }
    return pw;
}

/* q8 when cols and the group size are even: per panel, per pair of columns, the eight rows' two bytes. */
static void x86_q8_panels(int8_t **w, float **ws, int rows, int cols, int group_size) {
    if (cols % 2 != 0 || group_size % 2 != 0) {
        return;
    }
    size_t n = (size_t)x86_panels(rows) * X86_ROWS * (size_t)cols;
    int8_t *pw = guarded_alloc(n);
    memset(pw, 0, n);
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) {
            size_t at = (size_t)(r / X86_ROWS) * X86_ROWS * (size_t)cols + (size_t)(c / 2) * 2 * X86_ROWS +
                        (size_t)(r % X86_ROWS) * 2 + (size_t)(c % 2);
            pw[at] = (*w)[(size_t)r * (size_t)cols + (size_t)c];
        }
    }
    *ws = x86_f32_panels(*ws, rows, group_count(cols, group_size));
    *w = pw;
}

/*
 * q4 (q + 8 nibbles, even column low) when cols and the group size are multiples of 8: per panel, per block of
 * eight columns, byte 4k + m holding row k's column 8b + m (low nibble) and 8b + 4 + m (high nibble).
 */
static void x86_q4_panels(uint8_t **w, float **ws, int rows, int cols, int group_size) {
    if (cols % 8 != 0 || group_size % 8 != 0) {
        return;
    }
    size_t n = (size_t)x86_panels(rows) * X86_ROWS * (size_t)cols / 2;
    uint8_t *pw = guarded_alloc(n);
    memset(pw, 0, n);
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) {
            uint8_t byte = (*w)[(size_t)r * (size_t)cols / 2 + (size_t)c / 2];
            unsigned code = (c % 2) ? (unsigned)(byte >> 4) : (unsigned)(byte & 0x0F);
            size_t at = (size_t)(r / X86_ROWS) * X86_ROWS * (size_t)cols / 2 + (size_t)(c / 8) * 32 +
                        (size_t)(r % X86_ROWS) * 4 + (size_t)(c % 4);
            pw[at] = (uint8_t)(pw[at] | (code << ((c % 8) < 4 ? 0 : 4)));
        }
    }
    *ws = x86_f32_panels(*ws, rows, group_count(cols, group_size));
    *w = pw;
}

#endif /* HARNESS_X86_LAYOUT_H */
