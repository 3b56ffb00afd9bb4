/*
 * A generic driver for one kernel set (runtime_c/kernels/kernels.h): it calls every kernel with
 * pseudo-random inputs over many shapes, edge shapes included, and prints each result's bits, one value
 * per line. It is linked once with the reference kernels and once with an optimised set;
 * tests/runtime/test_neon_kernels.py compares the two outputs (bit for bit, or within a stated tolerance for a
 * fast float variant).
 *
 *   test_kernels check                                   every test case, one line per output value
 *   test_kernels bench <f32|q8|q4> <rows> <cols> <group> <calls>
 *   test_kernels bench <att_f32|att_f16|att_q8> <positions> <head_size> <kv_heads> <calls>
 *                                                        one kernel shape called `calls` times; under
 *                                                        QEMU with the llmcu_insn plugin it also prints
 *                                                        the instructions per call
 *
 * Output lines are "<kernel> <case> <index> <value bits in hex> [extra]". matmul_f32 lines carry, as the
 * extra fields, sum_j |W[i][j] * x[j]| (computed in double, printed with %a) and cols, which a tolerance needs.
 *
 * Every input buffer is placed flush against an inaccessible page, once after its end and once before
 * its start, so that a kernel reading even one byte outside its arguments crashes instead of passing.
 */
#define _DEFAULT_SOURCE /* mmap's MAP_ANONYMOUS under -std=c99 */

#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels/kernels.h"

#if defined(HARNESS_LAYOUT_NEON_PANELS) /* the kernel set reads the NEON panel layout (neon_layout.h) */
#include "neon_layout.h"
#define KERNEL_LAYOUT(q4, w, ws, wbytes, nscales, rows, cols, group_size)                                              \
    ((q4) ? neon_q4_pairs((w), (ws), (wbytes), (nscales), (rows), (cols), (group_size))                                \
          : neon_panels(0, (w), (ws), (wbytes), (nscales), (rows), (cols), (group_size)))
#define KERNEL_Q4Z_LAYOUT(w, words, wbytes, nwords, rows, cols, group_size)                                            \
    neon_q4z_panels((w), (words), (wbytes), (nwords), (rows), (cols), (group_size))
#define KERNEL_F32_LAYOUT(w, count, rows, cols) neon_f32_panels((w), (count), (rows), (cols))
#else /* the reference layout */
#define KERNEL_F32_LAYOUT(w, count, rows, cols) ((void)(w), (void)(count), (void)(rows), (void)(cols), (float *)NULL)
#define KERNEL_Q4Z_LAYOUT(w, words, wbytes, nwords, rows, cols, group_size)                                            \
    ((void)(w), (void)(words), (void)(wbytes), (void)(nwords), (void)(rows), (void)(cols), (void)(group_size), 0)
#define KERNEL_LAYOUT(q4, w, ws, wbytes, nscales, rows, cols, group_size)                                              \
    ((void)(q4), (void)(w), (void)(ws), (void)(wbytes), (void)(nscales), (void)(rows), (void)(cols),               \
     (void)(group_size), 0)
#endif

/* ---- deterministic pseudo-random numbers (xorshift64*) ---- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rng_next(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

static uint32_t rng_below(uint32_t n) { return (uint32_t)((rng_next() >> 32) % n); }

/* Uniform in [-1, 1), on a grid of 2^-23 so every value is an exact float. */
static float rng_unit(void) { return (float)(int32_t)(rng_next() >> 40) / 8388608.0f - 1.0f; }

static float f32_from_bits(uint32_t bits) {
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

static uint32_t f32_bits(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return bits;
}

/* ---- buffers flush against a guard page ---- */

static size_t page_size;

typedef struct {
    void *map;
    size_t map_len;
    void *ptr;
} guarded;

/* `bytes` of storage holding a copy of src; after_end: the guard page follows the last byte, otherwise it
 * precedes the first one. */
static guarded guard_copy(const void *src, size_t bytes, int after_end) {
    size_t data_pages = (bytes + page_size - 1) / page_size;
    if (data_pages == 0) {
        data_pages = 1;
    }
    guarded g;
    g.map_len = (data_pages + 1) * page_size;
    g.map = mmap(NULL, g.map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g.map == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    char *base = g.map;
    if (after_end) {
        mprotect(base + data_pages * page_size, page_size, PROT_NONE);
        g.ptr = base + data_pages * page_size - bytes;
    } else {
        mprotect(base, page_size, PROT_NONE);
        g.ptr = base + page_size;
    }
    if (bytes) {
        memcpy(g.ptr, src, bytes);
    }
    return g;
}

static void guard_free(guarded *g) { munmap(g->map, g->map_len); }

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* ---- inputs ---- */

/* n floats: uniform in [-scale, scale), and with `specials` some zeros, signed zeros, denormals, and one
 * large magnitude (never inf or NaN: those are tested where the reference defines them). */
static void fill_floats(float *x, size_t n, float scale, int specials) {
    for (size_t i = 0; i < n; i++) {
        x[i] = rng_unit() * scale;
        if (specials) {
            switch (rng_below(16)) {
            case 0:
                x[i] = 0.0f;
                break;
            case 1:
                x[i] = -0.0f;
                break;
            case 2:
                x[i] = f32_from_bits(rng_below(0x800000u) | (rng_below(2) << 31)); /* denormal */
                break;
            case 3:
                x[i] = f32_from_bits(0x00800000u | rng_below(0x100000u)); /* tiny normal */
                break;
            default:
                break;
            }
        }
    }
}

/* A float scale as a quantizer produces one: positive (or zero), spread over a few binades. */
static float random_scale(void) {
    switch (rng_below(12)) {
    case 0:
        return 0.0f;
    case 1:
        return f32_from_bits(1u + rng_below(0x7fffffu)); /* denormal */
    default:
        return (rng_unit() + 1.0f) * ldexpf(1.0f, (int)rng_below(24) - 20);
    }
}

static void fill_int8(int8_t *q, size_t n, int lo, int hi) {
    for (size_t i = 0; i < n; i++) {
        q[i] = (int8_t)(lo + (int)rng_below((uint32_t)(hi - lo + 1)));
    }
}

static void fill_bytes(uint8_t *q, size_t n) {
    for (size_t i = 0; i < n; i++) {
        q[i] = (uint8_t)rng_below(256);
    }
}

static void print_f32(const char *kernel, int id, size_t index, float value) {
    printf("%s %d %zu %08" PRIx32 "\n", kernel, id, index, f32_bits(value));
}

/* ---- matmul ---- */

static int case_id;

/* W[rows][cols] . x, with every buffer guarded after and then before; prints out[] once (both placements
 * must agree) with each row's sum of |products|. */
static void run_matmul_f32(const float *w, const float *x, int rows, int cols) {
    int id = case_id++;
    size_t wn = (size_t)rows * (size_t)cols;
    float *laid_out = KERNEL_F32_LAYOUT(w, &wn, rows, cols); /* the kernel set's layout, or NULL: row-major */
    const float *kw = laid_out ? laid_out : w;
    float *outs[2];
    for (int side = 0; side < 2; side++) {
        guarded gw = guard_copy(kw, wn * sizeof(float), side == 0);
        guarded gx = guard_copy(x, (size_t)cols * sizeof(float), side == 0);
        outs[side] = xmalloc((size_t)rows * sizeof(float));
        matmul_f32(outs[side], gx.ptr, gw.ptr, rows, cols);
        guard_free(&gw);
        guard_free(&gx);
    }
    for (int i = 0; i < rows; i++) {
        double abs_sum = 0.0;
        for (int j = 0; j < cols; j++) {
            abs_sum += fabs((double)w[(size_t)i * (size_t)cols + (size_t)j] * (double)x[j]);
        }
        if (f32_bits(outs[0][i]) != f32_bits(outs[1][i])) {
            printf("PLACEMENT-MISMATCH matmul_f32 %d %d\n", id, i);
        }
        printf("matmul_f32 %d %d %08" PRIx32 " %a %d\n", id, i, f32_bits(outs[0][i]), abs_sum, cols);
    }
    free(laid_out);
    free(outs[0]);
    free(outs[1]);
}

static void case_matmul_f32(int rows, int cols, float wscale, float xscale, int specials) {
    size_t wn = (size_t)rows * (size_t)cols;
    float *w = xmalloc(wn * sizeof(float));
    float *x = xmalloc((size_t)cols * sizeof(float));
    fill_floats(w, wn, wscale, specials);
    fill_floats(x, (size_t)cols, xscale, specials);
    run_matmul_f32(w, x, rows, cols);
    free(w);
    free(x);
}

/* Inf and NaN inputs: the reference defines what comes out (IEEE arithmetic in its order). Only the
 * default quiet NaN is used, so that which operand's NaN propagates cannot matter. */
static void case_matmul_f32_nonfinite(int rows, int cols) {
    size_t wn = (size_t)rows * (size_t)cols;
    float *w = xmalloc(wn * sizeof(float));
    float *x = xmalloc((size_t)cols * sizeof(float));
    fill_floats(w, wn, 4.0f, 1);
    fill_floats(x, (size_t)cols, 4.0f, 1);
    for (size_t k = 0; k < wn; k++) {
        uint32_t pick = rng_below(24);
        if (pick == 0) {
            w[k] = INFINITY;
        } else if (pick == 1) {
            w[k] = -INFINITY;
        } else if (pick == 2) {
            w[k] = f32_from_bits(0x7fc00000u);
        } else if (pick == 3) {
            w[k] = 3.0e38f; /* overflows to inf when summed */
        }
    }
    run_matmul_f32(w, x, rows, cols);
    free(w);
    free(x);
}

/* Quantized activations and weights: xq and the weights over the full int8 range (the kernels must be
 * exact for any int8, not only the contract's [-127, 127]), q4 bytes over all 256 values. */
static void case_matmul_q(int q4, int rows, int cols, int group_size, int extreme) {
    int id = case_id++;
    int ngroups = group_count(cols, group_size);
    size_t row_bytes = q4 ? ((size_t)cols + 1) / 2 : (size_t)cols;
    size_t wbytes = (size_t)rows * row_bytes;
    size_t nscales = (size_t)rows * (size_t)ngroups;
    uint8_t *w = xmalloc(wbytes);
    int8_t *xq = xmalloc((size_t)cols);
    float *ws = xmalloc(nscales * sizeof(float));
    float *xs = xmalloc((size_t)ngroups * sizeof(float));
    if (extreme) { /* the largest products everywhere: integer sums at their largest magnitude */
        memset(w, q4 ? 0x00 : 0x80, wbytes); /* q8: -128; q4: nibble 0, i.e. -8 */
        memset(xq, 0x80, (size_t)cols);      /* -128 */
    } else {
        fill_bytes(w, wbytes);
        fill_int8(xq, (size_t)cols, -128, 127);
    }
    for (size_t k = 0; k < nscales; k++) {
        ws[k] = random_scale();
    }
    for (int g = 0; g < ngroups; g++) {
        xs[g] = random_scale();
    }
    (void)KERNEL_LAYOUT(q4, &w, &ws, &wbytes, &nscales, rows, cols, group_size); /* the layout a build links */
    float *outs[2];
    for (int side = 0; side < 2; side++) {
        guarded gw = guard_copy(w, wbytes, side == 0);
        guarded gx = guard_copy(xq, (size_t)cols, side == 0);
        guarded gws = guard_copy(ws, nscales * sizeof(float), side == 0);
        guarded gxs = guard_copy(xs, (size_t)ngroups * sizeof(float), side == 0);
        outs[side] = xmalloc((size_t)rows * sizeof(float));
        if (q4) {
            matmul_q4(outs[side], gx.ptr, gxs.ptr, gw.ptr, gws.ptr, rows, cols, group_size);
        } else {
            matmul_q8(outs[side], gx.ptr, gxs.ptr, gw.ptr, gws.ptr, rows, cols, group_size);
        }
        guard_free(&gw);
        guard_free(&gx);
        guard_free(&gws);
        guard_free(&gxs);
    }
    const char *name = q4 ? "matmul_q4" : "matmul_q8";
    for (int i = 0; i < rows; i++) {
        if (f32_bits(outs[0][i]) != f32_bits(outs[1][i])) {
            printf("PLACEMENT-MISMATCH %s %d %d\n", name, id, i);
        }
        print_f32(name, id, (size_t)i, outs[0][i]);
    }
    free(outs[0]);
    free(outs[1]);
    free(w);
    free(xq);
    free(ws);
    free(xs);
}

/* ---- quant ---- */

/* q4z group words: a positive normal binary16 scale with 6 mantissa bits (exponent field 1..30) and a zero
 * point 0..15 in the low four bits; `extreme`: the largest scale and zero point 0 or 15. */
static uint16_t random_q4z_word(int extreme) {
    uint32_t r = (uint32_t)(rng_next() >> 32);
    if (extreme) {
        return (uint16_t)((30u << 10) | (63u << 4) | ((r & 1u) ? 15u : 0u));
    }
    return (uint16_t)(((1u + r % 30u) << 10) | (((r >> 8) & 63u) << 4) | ((r >> 16) & 15u));
}

/* q4z: codes over all 256 byte values, activations over the full int8 range, random group words. */
static void case_matmul_q4z(int rows, int cols, int group_size, int extreme) {
    int id = case_id++;
    int ngroups = group_count(cols, group_size);
    size_t wbytes = (size_t)rows * (((size_t)cols + 1) / 2), nwords = (size_t)rows * (size_t)ngroups;
    uint8_t *w = xmalloc(wbytes);
    int8_t *xq = xmalloc((size_t)cols);
    uint16_t *words = xmalloc(nwords * sizeof(uint16_t));
    float *xs = xmalloc((size_t)ngroups * sizeof(float));
    if (extreme) { /* codes 0 or 15 against -128: the integer sums at their largest */
        memset(w, (rng_next() & 1) ? 0xFF : 0x00, wbytes);
        memset(xq, 0x80, (size_t)cols);
    } else {
        fill_bytes(w, wbytes);
        fill_int8(xq, (size_t)cols, -128, 127);
    }
    for (size_t k = 0; k < nwords; k++) {
        words[k] = random_q4z_word(extreme);
    }
    for (int g = 0; g < ngroups; g++) {
        xs[g] = random_scale();
    }
    (void)KERNEL_Q4Z_LAYOUT(&w, &words, &wbytes, &nwords, rows, cols, group_size); /* what a build links */
    float *outs[2];
    for (int side = 0; side < 2; side++) {
        guarded gw = guard_copy(w, wbytes, side == 0);
        guarded gx = guard_copy(xq, (size_t)cols, side == 0);
        guarded gwords = guard_copy(words, nwords * sizeof(uint16_t), side == 0);
        guarded gxs = guard_copy(xs, (size_t)ngroups * sizeof(float), side == 0);
        outs[side] = xmalloc((size_t)rows * sizeof(float));
        matmul_q4z(outs[side], gx.ptr, gxs.ptr, gw.ptr, gwords.ptr, rows, cols, group_size);
        guard_free(&gw);
        guard_free(&gx);
        guard_free(&gwords);
        guard_free(&gxs);
    }
    for (int i = 0; i < rows; i++) {
        if (f32_bits(outs[0][i]) != f32_bits(outs[1][i])) {
            printf("PLACEMENT-MISMATCH matmul_q4z %d %d\n", id, i);
        }
        print_f32("matmul_q4z", id, (size_t)i, outs[0][i]);
    }
    free(outs[0]);
    free(outs[1]);
    free(w);
    free(xq);
    free(words);
    free(xs);
}

static void case_quantize(int n, int group_size, int kind) {
    int id = case_id++;
    int ngroups = group_count(n, group_size);
    float *x = xmalloc((size_t)n * sizeof(float));
    if (kind == 0) {
        fill_floats(x, (size_t)n, ldexpf(1.0f, (int)rng_below(16) - 8), 1);
        for (int g = 0; g < ngroups; g++) { /* some all-zero groups: scale 0 */
            if (rng_below(4) == 0) {
                int end = (g + 1) * group_size < n ? (g + 1) * group_size : n;
                for (int j = g * group_size; j < end; j++) {
                    x[j] = rng_below(2) ? 0.0f : -0.0f;
                }
            }
        }
    } else {
        /* Halves: with a group maximum of 127 the scale is exactly 1, so x / scale = k + 0.5 exercises
         * roundf's ties (away from zero). */
        for (int j = 0; j < n; j++) {
            x[j] = (float)((int)rng_below(253) - 126) + (rng_below(2) ? 0.5f : 0.0f);
        }
        for (int g = 0; g < ngroups; g++) {
            x[g * group_size] = rng_below(2) ? 127.0f : -127.0f;
        }
    }
    int8_t *xqs[2];
    float *xss[2];
    for (int side = 0; side < 2; side++) {
        guarded gx = guard_copy(x, (size_t)n * sizeof(float), side == 0);
        xqs[side] = xmalloc((size_t)n);
        xss[side] = xmalloc((size_t)ngroups * sizeof(float));
        quantize_activations(xqs[side], xss[side], gx.ptr, n, group_size);
        guard_free(&gx);
    }
    if (memcmp(xqs[0], xqs[1], (size_t)n) || memcmp(xss[0], xss[1], (size_t)ngroups * sizeof(float))) {
        printf("PLACEMENT-MISMATCH quantize %d\n", id);
    }
    for (int j = 0; j < n; j++) {
        printf("quantize_xq %d %d %02x\n", id, j, (unsigned)(uint8_t)xqs[0][j]);
    }
    for (int g = 0; g < ngroups; g++) {
        print_f32("quantize_xs", id, (size_t)g, xss[0][g]);
    }
    free(x);
    for (int side = 0; side < 2; side++) {
        free(xqs[side]);
        free(xss[side]);
    }
}

/* argmax over n values of one kind: 0 random, 1 ties at the maximum (integers in a small range), 2 signed zeros and
 * negatives only, 3 NaNs and infinities mixed in, 4 a NaN first. */
static void case_argmax(int n, int kind) {
    int id = case_id++;
    float *x = xmalloc((size_t)n * sizeof(float));
    fill_floats(x, (size_t)n, 4.0f, 1);
    for (int i = 0; i < n; i++) {
        if (kind == 1) {
            x[i] = (float)((int)rng_below(7) - 3);
        } else if (kind == 2) {
            x[i] = rng_below(3) == 0 ? -1.0f - (float)rng_below(5) : (rng_below(2) ? 0.0f : -0.0f);
        } else if (kind >= 3 && rng_below(5) == 0) {
            x[i] = rng_below(3) == 0 ? -INFINITY : NAN;
        }
    }
    if (kind == 4) {
        x[0] = NAN;
    }
    int result[2];
    for (int side = 0; side < 2; side++) {
        guarded gx = guard_copy(x, (size_t)n * sizeof(float), side == 0);
        result[side] = argmax(gx.ptr, n);
        guard_free(&gx);
    }
    if (result[0] != result[1]) {
        printf("PLACEMENT-MISMATCH argmax %d\n", id);
    }
    printf("argmax %d 0 %d\n", id, result[0]);
    free(x);
}

static void case_embed(int n_rows, int dim, int group_size) {
    int id = case_id++;
    int ngroups = group_count(dim, group_size);
    size_t fn = (size_t)n_rows * (size_t)dim;
    float *tf = xmalloc(fn * sizeof(float));
    int8_t *t8 = xmalloc(fn);
    size_t q4_row = ((size_t)dim + 1) / 2;
    uint8_t *t4 = xmalloc((size_t)n_rows * q4_row);
    float *scales = xmalloc((size_t)n_rows * (size_t)ngroups * sizeof(float));
    fill_floats(tf, fn, 1.0f, 1);
    float *tf_laid_out = KERNEL_F32_LAYOUT(tf, &fn, n_rows, dim);
    if (tf_laid_out) {
        free(tf);
        tf = tf_laid_out;
    }
    fill_int8(t8, (size_t)n_rows * (size_t)dim, -127, 127);
    fill_bytes(t4, (size_t)n_rows * q4_row);
    for (size_t k = 0; k < (size_t)n_rows * (size_t)ngroups; k++) {
        scales[k] = random_scale();
    }
    /* The tables in the layout a build links (the same scales, each copy arranged for its table). */
    size_t nscales = (size_t)n_rows * (size_t)ngroups, t8_bytes = (size_t)n_rows * (size_t)dim;
    size_t t4_bytes = (size_t)n_rows * q4_row;
    size_t s8_n = nscales, s4_n = nscales;
    float *s8 = xmalloc(nscales * sizeof(float)), *s4 = xmalloc(nscales * sizeof(float));
    memcpy(s8, scales, nscales * sizeof(float));
    memcpy(s4, scales, nscales * sizeof(float));
    (void)KERNEL_LAYOUT(0, (uint8_t **)&t8, &s8, &t8_bytes, &s8_n, n_rows, dim, group_size);
    (void)KERNEL_LAYOUT(1, &t4, &s4, &t4_bytes, &s4_n, n_rows, dim, group_size);
    /* q4z: the q4 codes as its codes n, with random group words */
    size_t tz_bytes = (size_t)n_rows * q4_row, zw_n = nscales;
    uint8_t *tz = xmalloc(tz_bytes);
    uint16_t *zw = xmalloc(zw_n * sizeof(uint16_t));
    fill_bytes(tz, tz_bytes);
    for (size_t k = 0; k < zw_n; k++) {
        zw[k] = random_q4z_word(0);
    }
    (void)KERNEL_Q4Z_LAYOUT(&tz, &zw, &tz_bytes, &zw_n, n_rows, dim, group_size);
    float *out = xmalloc((size_t)dim * sizeof(float));
    for (int row = 0; row < n_rows; row++) {
        guarded gf = guard_copy(tf, fn * sizeof(float), row % 2);
        guarded g8 = guard_copy(t8, t8_bytes, row % 2);
        guarded g4 = guard_copy(t4, t4_bytes, row % 2);
        guarded gs8 = guard_copy(s8, s8_n * sizeof(float), row % 2);
        guarded gs4 = guard_copy(s4, s4_n * sizeof(float), row % 2);
        embed_f32(out, gf.ptr, row, dim);
        for (int j = 0; j < dim; j++) {
            print_f32("embed_f32", id, (size_t)(row * dim + j), out[j]);
        }
        embed_q8(out, g8.ptr, gs8.ptr, row, dim, group_size);
        for (int j = 0; j < dim; j++) {
            print_f32("embed_q8", id, (size_t)(row * dim + j), out[j]);
        }
        embed_q4(out, g4.ptr, gs4.ptr, row, dim, group_size);
        for (int j = 0; j < dim; j++) {
            print_f32("embed_q4", id, (size_t)(row * dim + j), out[j]);
        }
        guarded gz = guard_copy(tz, tz_bytes, row % 2);
        guarded gzw = guard_copy(zw, zw_n * sizeof(uint16_t), row % 2);
        embed_q4z(out, gz.ptr, gzw.ptr, row, dim, group_size);
        for (int j = 0; j < dim; j++) {
            print_f32("embed_q4z", id, (size_t)(row * dim + j), out[j]);
        }
        guard_free(&gz);
        guard_free(&gzw);
        guard_free(&gf);
        guard_free(&g8);
        guard_free(&g4);
        guard_free(&gs8);
        guard_free(&gs4);
    }
    free(s8);
    free(s4);
    free(tf);
    free(t8);
    free(t4);
    free(tz);
    free(zw);
    free(scales);
    free(out);
}

/* ---- q16 attention ---- */

/* kv_store_q16's codes of values at the edges: NaN, infinities, past the saturation on both sides, halves (which
 * round away from zero), signed zeros, subnormals; two kv heads of head_size 12, so that both the eight-channel
 * and the single-channel code paths of a kernel set see them. Prints every code of the cache. */
static void case_kv_store_q16_edges(void) {
    int id = case_id++;
    enum { HEAD = 12, KV_DIM = 24, POSITIONS = 16 };
    static const float edges[] = {NAN, INFINITY, -INFINITY, 1.0e30f, -1.0e30f, 32767.0f, -32767.0f, 32767.5f,
                                  -32768.0f, 2.5f, -2.5f, 0.5f, -0.5f, 0.0f, -0.0f, 1.0e-40f, 3.5f, -1.5f, 7.0f};
    int n_edges = (int)(sizeof edges / sizeof edges[0]);
    float k[KV_DIM], v[KV_DIM], scales[2 * KV_DIM];
    int16_t *keys = calloc(POSITIONS * KV_DIM, sizeof(int16_t)), *values = calloc(POSITIONS * KV_DIM, sizeof(int16_t));
    if (!keys || !values) {
        abort();
    }
    for (int t = 0; t < POSITIONS; t++) {
        for (int c = 0; c < KV_DIM; c++) {
            k[c] = edges[(t * KV_DIM + c) % n_edges];
            v[c] = edges[(t * KV_DIM + c + 5) % n_edges] * 3.0f;
            scales[c] = (c % 3 == 0) ? 1.0f : 0.5f; /* powers of two: the halves stay halves */
            scales[KV_DIM + c] = (c % 2 == 0) ? 0.25f : 3.0f;
        }
        kv_store_q16(keys, values, k, v, scales, scales + KV_DIM, t, POSITIONS, KV_DIM, HEAD);
    }
    for (int t = 0; t < POSITIONS; t++) {
        for (int c = 0; c < KV_DIM; c++) {
#if defined(HARNESS_LAYOUT_NEON_PANELS) /* the NEON set's cache: [kv head][t / 8][head_size][8] */
            size_t at = (size_t)(c / HEAD) * POSITIONS * HEAD + (size_t)(t / 8) * 8 * HEAD + (size_t)(c % HEAD) * 8 +
                        (size_t)(t % 8);
#else /* the reference's: [t][kv_dim] */
            size_t at = (size_t)t * KV_DIM + (size_t)c;
#endif
            printf("kv_store_q16 %d %d %d %04x %04x\n", id, t, c, (unsigned)(uint16_t)keys[at],
                   (unsigned)(uint16_t)values[at]);
        }
    }
    free(keys);
    free(values);
}

/* Every head of a layer over n_pos positions stored by kv_store_q16 into guarded caches (the kernel set's own
 * arrangement), keys and values of magnitude about kvscale, every seventh position 8x larger (so that some
 * codes saturate); qscale spreads the softmax from flat (0: a zero query) to one-hot. */
static void case_attention_q16(int n_heads, int n_kv_heads, int head_size, int n_pos, float qscale, float kvscale) {
    int id = case_id++;
    int kv_dim = n_kv_heads * head_size, dim = n_heads * head_size;
    int positions = (n_pos + 7) & ~7;
    size_t cache_bytes = (size_t)positions * (size_t)kv_dim * sizeof(int16_t);
    float *scales = xmalloc(3 * (size_t)kv_dim * sizeof(float));
    float *k = xmalloc((size_t)kv_dim * sizeof(float)), *v = xmalloc((size_t)kv_dim * sizeof(float));
    float *q = xmalloc((size_t)dim * sizeof(float)), *out = xmalloc((size_t)dim * sizeof(float));
    for (int c = 0; c < kv_dim; c++) {
        scales[c] = (1.5f + rng_unit()) * kvscale * 0x1.0p-14f;
        scales[kv_dim + c] = (1.5f + rng_unit()) * kvscale * 0x1.0p-14f;
        scales[2 * kv_dim + c] = scales[c] * 0.5100697f; /* log2(e) / sqrt(8) */
    }
    int after_end = id % 2;
    int16_t *zeros = calloc(cache_bytes, 1);
    guarded keys = guard_copy(zeros, cache_bytes, after_end), values = guard_copy(zeros, cache_bytes, after_end);
    for (int t = 0; t < n_pos; t++) {
        fill_floats(k, (size_t)kv_dim, t % 7 == 3 ? 8.0f * kvscale : kvscale, 0);
        fill_floats(v, (size_t)kv_dim, t % 7 == 5 ? 8.0f * kvscale : kvscale, 0);
        kv_store_q16(keys.ptr, values.ptr, k, v, scales, scales + kv_dim, t, positions, kv_dim, head_size);
    }
    fill_floats(q, (size_t)dim, qscale, 0);
    int16_t *query = xmalloc((size_t)head_size * sizeof(int16_t));
    int32_t *scores = xmalloc((size_t)positions * sizeof(int32_t));
    int16_t *weights = xmalloc((size_t)positions * sizeof(int16_t));
    attention_q16(out, q, keys.ptr, values.ptr, scales + 2 * kv_dim, scales + kv_dim, query, scores, weights, n_heads,
                  n_kv_heads, head_size, positions, n_pos);
    for (int i = 0; i < dim; i++) {
        print_f32("attention_q16", id, (size_t)i, out[i]);
    }
    guard_free(&keys);
    guard_free(&values);
    free(zeros);
    free(scales);
    free(k);
    free(v);
    free(q);
    free(out);
    free(query);
    free(scores);
    free(weights);
}

/* ---- attention ---- */

static void print_attention(const char *kernel, int id, const float *out, const float *att, int head_size,
                            int n_pos) {
    char name[64];
    for (int i = 0; i < head_size; i++) {
        print_f32(kernel, id, (size_t)i, out[i]);
    }
    snprintf(name, sizeof name, "%s_att", kernel);
    for (int t = 0; t < n_pos; t++) {
        print_f32(name, id, (size_t)t, att[t]);
    }
}

/* One head at kv head `kvh` of a cache with n_kv_heads heads (stride = n_kv_heads * head_size), the query
 * scaled so that the softmax ranges from flat to peaked. */
static void case_attention(int head_size, int n_pos, int n_kv_heads, int kvh, float qscale) {
    int id = case_id++;
    int stride = n_kv_heads * head_size;
    size_t cache_n = (size_t)n_pos * (size_t)stride;
    size_t scales_n = (size_t)n_pos * (size_t)n_kv_heads;
    float *q = xmalloc((size_t)head_size * sizeof(float));
    float *kf = xmalloc(cache_n * sizeof(float)), *vf = xmalloc(cache_n * sizeof(float));
    uint16_t *kh = xmalloc(cache_n * sizeof(uint16_t)), *vh = xmalloc(cache_n * sizeof(uint16_t));
    int8_t *k8 = xmalloc(cache_n), *v8 = xmalloc(cache_n);
    float *ks = xmalloc(scales_n * sizeof(float)), *vs = xmalloc(scales_n * sizeof(float));
    float *out = xmalloc((size_t)head_size * sizeof(float));
    float *att = xmalloc((size_t)n_pos * sizeof(float));

    fill_floats(q, (size_t)head_size, qscale, 0);
    fill_floats(kf, cache_n, 1.0f, 1);
    fill_floats(vf, cache_n, 1.0f, 1);
    for (size_t k = 0; k < cache_n; k++) {
        /* binary16 bits of finite values only (exponent field < 31), subnormals included, keys kept
         * small enough that the scores stay finite */
        kh[k] = (uint16_t)(rng_below(2) << 15 | rng_below(16) << 10 | rng_below(1024));
        vh[k] = (uint16_t)(rng_below(2) << 15 | rng_below(31) << 10 | rng_below(1024));
    }
    fill_int8(k8, cache_n, -127, 127);
    fill_int8(v8, cache_n, -127, 127);
    for (size_t k = 0; k < scales_n; k++) {
        ks[k] = random_scale() * 0.01f;
        vs[k] = random_scale();
    }
    size_t off = (size_t)kvh * (size_t)head_size;
    int after_end = id % 2;
    /* the cache slice starts `off` elements into the buffer; guard the buffer as a whole */
    guarded gq = guard_copy(q, (size_t)head_size * sizeof(float), after_end);
    guarded gkf = guard_copy(kf, cache_n * sizeof(float), after_end);
    guarded gvf = guard_copy(vf, cache_n * sizeof(float), after_end);
    guarded gkh = guard_copy(kh, cache_n * sizeof(uint16_t), after_end);
    guarded gvh = guard_copy(vh, cache_n * sizeof(uint16_t), after_end);
    guarded gk8 = guard_copy(k8, cache_n, after_end);
    guarded gv8 = guard_copy(v8, cache_n, after_end);
    guarded gks = guard_copy(ks, scales_n * sizeof(float), after_end);
    guarded gvs = guard_copy(vs, scales_n * sizeof(float), after_end);

    attention_head(out, att, gq.ptr, (const float *)gkf.ptr + off, (const float *)gvf.ptr + off, stride,
                   head_size, n_pos);
    print_attention("attention_f32", id, out, att, head_size, n_pos);
    attention_head_f16(out, att, gq.ptr, (const uint16_t *)gkh.ptr + off, (const uint16_t *)gvh.ptr + off, stride,
                       head_size, n_pos);
    print_attention("attention_f16", id, out, att, head_size, n_pos);
    attention_head_q8(out, att, gq.ptr, (const int8_t *)gk8.ptr + off, (const float *)gks.ptr + kvh,
                      (const int8_t *)gv8.ptr + off, (const float *)gvs.ptr + kvh, stride, n_kv_heads, head_size,
                      n_pos);
    print_attention("attention_q8", id, out, att, head_size, n_pos);

    guarded *all[] = {&gq, &gkf, &gvf, &gkh, &gvh, &gk8, &gv8, &gks, &gvs};
    for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) {
        guard_free(all[k]);
    }
    free(q);
    free(kf);
    free(vf);
    free(kh);
    free(vh);
    free(k8);
    free(v8);
    free(ks);
    free(vs);
    free(out);
    free(att);
}

/* ---- binary16 conversions ---- */

static uint64_t fnv_add(uint64_t hash, uint32_t value) {
    for (int b = 0; b < 4; b++) {
        hash ^= (value >> (8 * b)) & 0xffu;
        hash *= 0x100000001B3ull;
    }
    return hash;
}

static void check_f16(void) {
    /* binary16 -> float32: every value. */
    for (uint32_t h = 0; h < 65536; h++) {
        printf("f16_to_f32 0 %" PRIu32 " %08" PRIx32 "\n", h, f32_bits(f16_to_f32((uint16_t)h)));
    }
    /* float32 -> binary16: for every sign and exponent, a stride through the mantissas plus the rounding
     * boundaries of every shift (just below, at and above each halfway point), hashed per exponent. */
    for (uint32_t se = 0; se < 512; se++) {
        uint64_t hash = 0xcbf29ce484222325ull;
        uint32_t high = se << 23;
        for (uint32_t m = 0; m < 0x800000u; m += 997) {
            hash = fnv_add(hash, f32_to_f16(f32_from_bits(high | m)));
        }
        for (int shift = 1; shift <= 23; shift++) {
            uint32_t half = 1u << (shift - 1);
            uint32_t bases[6] = {0, 1, 2, 3, 0x7fffffu >> shift, rng_below(0x800000u) >> shift};
            for (int b = 0; b < 6; b++) {
                for (int d = -1; d <= 1; d++) {
                    uint32_t m = ((bases[b] << shift) + half + (uint32_t)d) & 0x7fffffu;
                    hash = fnv_add(hash, f32_to_f16(f32_from_bits(high | m)));
                }
            }
        }
        for (uint32_t m = 0x7fff00u; m < 0x800000u; m++) {
            hash = fnv_add(hash, f32_to_f16(f32_from_bits(high | m)));
        }
        printf("f32_to_f16 0 %" PRIu32 " %016" PRIx64 "\n", se, hash);
    }
    /* kv_store_f16 over arrays of every short length (vector bodies and tails), special values included. */
    for (int n = 0; n <= 40; n++) {
        float *src = xmalloc((size_t)n * sizeof(float) + 1);
        for (int i = 0; i < n; i++) {
            switch (rng_below(8)) {
            case 0:
                src[i] = f32_from_bits((uint32_t)(rng_next() >> 32)); /* any bits: NaNs, infs, denormals */
                break;
            case 1:
                src[i] = rng_unit() * 70000.0f; /* around the overflow threshold */
                break;
            case 2:
                src[i] = rng_unit() * 1.0e-6f; /* binary16 subnormals */
                break;
            default:
                src[i] = rng_unit() * 4.0f;
                break;
            }
        }
        guarded gs = guard_copy(src, (size_t)n * sizeof(float), n % 2);
        uint16_t *dst = xmalloc((size_t)n * sizeof(uint16_t) + 2);
        kv_store_f16(dst, gs.ptr, n);
        for (int i = 0; i < n; i++) {
            printf("kv_store_f16 %d %d %04x\n", n, i, (unsigned)dst[i]);
        }
        guard_free(&gs);
        free(src);
        free(dst);
    }
}

/* ---- the test cases ---- */

static void check(void) {
    /* matmul_f32: small and odd shapes around the vector width, then the models' shapes
     * (stories260K: dim 64, kv_dim 32, hidden 172, vocab 512; stories15M: dim 288, hidden 768, vocab 32000). */
    static const int f32_shapes[][2] = {
        {1, 1},   {1, 2},   {2, 3},    {3, 4},    {4, 1},     {4, 4},    {5, 5},    {6, 7},   {7, 8},
        {8, 9},   {9, 15},  {3, 16},   {13, 17},  {16, 31},   {17, 33},  {5, 63},   {11, 100}, {64, 64},
        {32, 64}, {172, 64}, {64, 172}, {512, 64}, {288, 288}, {768, 288}, {288, 768}, {32000, 288},
    };
    for (size_t s = 0; s < sizeof f32_shapes / sizeof f32_shapes[0]; s++) {
        case_matmul_f32(f32_shapes[s][0], f32_shapes[s][1], 1.0f, 1.0f, 0);
    }
    for (size_t s = 0; s < 17; s++) { /* denormals and signed zeros in the small shapes */
        case_matmul_f32(f32_shapes[s][0], f32_shapes[s][1], 1.0e-19f, 1.0e-19f, 1);
    }
    printf("fp32-nonfinite-begin\n");
    for (size_t s = 0; s < 17; s++) {
        case_matmul_f32_nonfinite(f32_shapes[s][0], f32_shapes[s][1]);
    }
    printf("fp32-nonfinite-end\n");

    /* q8/q4: every combination of a few row counts, column counts around 16/32-byte blocks, and group
     * sizes below, at and above the vector widths (q4 needs an even group size). */
    static const int q_rows[] = {1, 2, 3, 4, 5, 9};
    static const int q_cols[] = {1, 2, 3, 7, 8, 15, 16, 17, 24, 31, 32, 33, 47, 48, 63, 64, 65, 100, 172};
    static const int q_groups[] = {1, 2, 3, 4, 8, 12, 16, 17, 18, 30, 32, 34, 64, 256};
    for (size_t r = 0; r < sizeof q_rows / sizeof q_rows[0]; r++) {
        for (size_t c = 0; c < sizeof q_cols / sizeof q_cols[0]; c++) {
            for (size_t g = 0; g < sizeof q_groups / sizeof q_groups[0]; g++) {
                case_matmul_q(0, q_rows[r], q_cols[c], q_groups[g], 0);
                if (q_groups[g] % 2 == 0) {
                    case_matmul_q(1, q_rows[r], q_cols[c], q_groups[g], 0);
                }
            }
        }
    }
    static const int q_models[][2] = {{64, 64},   {32, 64},   {172, 64},  {64, 172},
                                      {512, 64},  {288, 288}, {768, 288}, {288, 768}, {32000, 288}};
    for (size_t s = 0; s < sizeof q_models / sizeof q_models[0]; s++) {
        for (int group_size = 32; group_size <= 64; group_size *= 2) {
            case_matmul_q(0, q_models[s][0], q_models[s][1], group_size, 0);
            case_matmul_q(1, q_models[s][0], q_models[s][1], group_size, 0);
        }
    }
    for (int q4 = 0; q4 < 2; q4++) {
        case_matmul_q(q4, 7, 1000, 256, 1);
        case_matmul_q(q4, 5, 77, 32, 1);
    }
    /* q4z: the same shapes as q4, the model shapes, and the largest sums */
    for (size_t r = 0; r < sizeof q_rows / sizeof q_rows[0]; r++) {
        for (size_t c = 0; c < sizeof q_cols / sizeof q_cols[0]; c++) {
            for (size_t g = 0; g < sizeof q_groups / sizeof q_groups[0]; g++) {
                if (q_groups[g] % 2 == 0) {
                    case_matmul_q4z(q_rows[r], q_cols[c], q_groups[g], 0);
                }
            }
        }
    }
    for (size_t s = 0; s < sizeof q_models / sizeof q_models[0]; s++) {
        case_matmul_q4z(q_models[s][0], q_models[s][1], 32, 0);
    }
    case_matmul_q4z(7, 1000, 256, 1);
    case_matmul_q4z(5, 77, 32, 1);

    /* quantize_activations and the embedding lookups */
    static const int quant_groups[] = {1, 2, 3, 4, 5, 7, 8, 9, 12, 16, 17, 32, 33, 64};
    for (int n = 1; n <= 40; n++) {
        for (size_t g = 0; g < sizeof quant_groups / sizeof quant_groups[0]; g++) {
            case_quantize(n, quant_groups[g], n % 3 == 0);
        }
    }
    static const int quant_long[] = {64, 172, 288, 768};
    for (size_t s = 0; s < 4; s++) {
        for (size_t g = 0; g < sizeof quant_groups / sizeof quant_groups[0]; g++) {
            case_quantize(quant_long[s], quant_groups[g], 0);
            case_quantize(quant_long[s], quant_groups[g], 1);
        }
    }
    /* argmax: every length up to 40 (the vector loops' edges) and a vocabulary's, each kind of value */
    static const int argmax_long[] = {64, 100, 512, 32000};
    for (int kind = 0; kind < 5; kind++) {
        for (int n = 1; n <= 40; n++) {
            case_argmax(n, kind);
        }
        for (size_t s = 0; s < 4; s++) {
            case_argmax(argmax_long[s], kind);
        }
    }
    case_embed(3, 64, 32);
    case_embed(4, 33, 8);
    case_embed(2, 172, 32);
    case_embed(3, 7, 4);

    /* attention: head sizes around 4 and 16, position counts around 4, GQA strides */
    static const int heads[] = {1, 2, 3, 4, 5, 7, 8, 12, 16, 17, 20, 48, 64};
    static const int positions[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 31, 100};
    for (size_t h = 0; h < sizeof heads / sizeof heads[0]; h++) {
        for (size_t p = 0; p < sizeof positions / sizeof positions[0]; p++) {
            int n_kv = 1 + (int)((h + p) % 3);
            case_attention(heads[h], positions[p], n_kv, n_kv - 1, (p % 2) ? 1.0f : 8.0f);
        }
    }
    case_attention(8, 512, 4, 2, 4.0f);  /* stories260K at its full context */
    case_attention(48, 256, 6, 5, 4.0f); /* a stories15M-sized head */
    /* q16: stories260K's layer at lengths around the unrolled loops' steps and its full context, 15M's, others */
    static const int q16_lengths[] = {1, 2, 3, 4, 5, 7, 8, 9, 12, 16, 17, 31, 33, 64, 129, 512};
    for (size_t i = 0; i < sizeof q16_lengths / sizeof q16_lengths[0]; i++) {
        case_attention_q16(8, 4, 8, q16_lengths[i], 3.0f, 2.0f);
    }
    case_attention_q16(8, 4, 8, 100, 300.0f, 2.0f);  /* one-hot: most weights 0 */
    case_attention_q16(8, 4, 8, 50, 0.0f, 2.0f);     /* a zero query: every weight equal */
    case_attention_q16(8, 4, 8, 50, 1.0e-30f, 1.0f); /* a tiny query: the largest exponent G */
    case_attention_q16(8, 4, 8, 50, 1.0e30f, 1.0f);  /* a huge one: the smallest G, saturated codes */
    case_attention_q16(6, 6, 48, 33, 2.0f, 1.0f);
    case_attention_q16(6, 6, 48, 256, 2.0f, 1.0f);
    case_attention_q16(4, 2, 64, 7, 1.0f, 4.0f);
    case_attention_q16(8, 8, 64, 100, 1.0f, 4.0f);
    case_attention_q16(2, 1, 16, 40, 5.0f, 1.0f);
    case_attention_q16(4, 4, 6, 9, 5.0f, 1.0f);
    case_kv_store_q16_edges();

    check_f16();
    printf("done\n");
}

/* ---- bench ---- */

/*
 * The instruction counter of QEMU's llmcu_insn plugin (tools/qemu-plugin/llmcu_insn.c): a read(2) of 8 bytes
 * on the descriptor named by LLMCU_COUNTER_FD returns the number of guest instructions executed so far.
 * Returns 0 when there is no counter.
 */
static int counter_fd = -1;

static uint64_t counter_read(void) {
    uint64_t count = 0;
    if (counter_fd < 0 || read(counter_fd, &count, sizeof count) != (ssize_t)sizeof count) {
        return 0;
    }
    return count;
}

static int bench(const char *kind, int rows, int cols, int group_size, int calls) {
    int ngroups = group_count(cols, group_size);
    size_t wn = (size_t)rows * (size_t)cols;
    float *out = xmalloc((size_t)(rows > cols ? rows : cols) * sizeof(float));
    /* Two back-to-back reads measure what the reads themselves cost, to subtract it. */
    uint64_t idle_start = counter_read();
    uint64_t idle = counter_read() - idle_start;
    uint64_t start = 0, stop = 0;
    if (strcmp(kind, "f32") == 0) {
        float *w = xmalloc(wn * sizeof(float));
        float *x = xmalloc((size_t)cols * sizeof(float));
        fill_floats(w, wn, 1.0f, 0);
        fill_floats(x, (size_t)cols, 1.0f, 0);
        start = counter_read();
        for (int c = 0; c < calls; c++) {
            matmul_f32(out, x, w, rows, cols);
        }
        stop = counter_read();
    } else if (strcmp(kind, "q8") == 0 || strcmp(kind, "q4") == 0) {
        int q4 = kind[1] == '4';
        size_t wbytes = q4 ? (size_t)rows * (((size_t)cols + 1) / 2) : wn;
        uint8_t *w = xmalloc(wbytes);
        int8_t *xq = xmalloc((size_t)cols);
        float *ws = xmalloc((size_t)rows * (size_t)ngroups * sizeof(float));
        float *xs = xmalloc((size_t)ngroups * sizeof(float));
        fill_bytes(w, wbytes);
        fill_int8(xq, (size_t)cols, -127, 127);
        for (size_t k = 0; k < (size_t)rows * (size_t)ngroups; k++) {
            ws[k] = random_scale();
        }
        for (int g = 0; g < ngroups; g++) {
            xs[g] = random_scale();
        }
        size_t nscales = (size_t)rows * (size_t)ngroups;
        (void)KERNEL_LAYOUT(q4, &w, &ws, &wbytes, &nscales, rows, cols, group_size);
        start = counter_read();
        for (int c = 0; c < calls; c++) {
            if (q4) {
                matmul_q4(out, xq, xs, w, ws, rows, cols, group_size);
            } else {
                matmul_q8(out, xq, xs, (const int8_t *)w, ws, rows, cols, group_size);
            }
        }
        stop = counter_read();
    } else if (strncmp(kind, "att_", 4) == 0) {
        /* attention_head*: rows = positions, cols = head_size, group = kv heads (the cache's stride) */
        int n_pos = rows, head_size = cols, n_kv = group_size, stride = n_kv * head_size;
        size_t cache_n = (size_t)n_pos * (size_t)stride, scales_n = (size_t)n_pos * (size_t)n_kv;
        float *q = xmalloc((size_t)head_size * sizeof(float));
        float *att = xmalloc((size_t)n_pos * sizeof(float));
        float *kf = xmalloc(cache_n * sizeof(float)), *vf = xmalloc(cache_n * sizeof(float));
        uint16_t *kh = xmalloc(cache_n * sizeof(uint16_t)), *vh = xmalloc(cache_n * sizeof(uint16_t));
        int8_t *k8 = xmalloc(cache_n), *v8 = xmalloc(cache_n);
        float *ks = xmalloc(scales_n * sizeof(float)), *vs = xmalloc(scales_n * sizeof(float));
        fill_floats(q, (size_t)head_size, 1.0f, 0);
        fill_floats(kf, cache_n, 1.0f, 0);
        fill_floats(vf, cache_n, 1.0f, 0);
        kv_store_f16(kh, kf, (int)cache_n);
        kv_store_f16(vh, vf, (int)cache_n);
        fill_int8(k8, cache_n, -127, 127);
        fill_int8(v8, cache_n, -127, 127);
        for (size_t k = 0; k < scales_n; k++) {
            ks[k] = random_scale() * 0.01f;
            vs[k] = random_scale();
        }
        start = counter_read();
        for (int c = 0; c < calls; c++) {
            if (strcmp(kind, "att_f16") == 0) {
                attention_head_f16(out, att, q, kh, vh, stride, head_size, n_pos);
            } else if (strcmp(kind, "att_q8") == 0) {
                attention_head_q8(out, att, q, k8, ks, v8, vs, stride, n_kv, head_size, n_pos);
            } else {
                attention_head(out, att, q, kf, vf, stride, head_size, n_pos);
            }
        }
        stop = counter_read();
        rows = head_size; /* what the hash below reads */
    } else {
        fprintf(stderr, "bench: unknown kernel %s\n", kind);
        return 2;
    }
    uint64_t hash = 0xcbf29ce484222325ull;
    for (int i = 0; i < rows && calls > 0; i++) {
        hash = fnv_add(hash, f32_bits(out[i]));
    }
    printf("bench %s %d %d %d %d %016" PRIx64 "\n", kind, rows, cols, group_size, calls, hash);
    if (counter_fd >= 0 && calls > 0) {
        /* the kernel, its call and the loop around it (a few instructions) */
        printf("instructions_per_call %" PRIu64 "\n", (stop - start - idle) / (uint64_t)calls);
    }
    return 0;
}

int main(int argc, char **argv) {
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    const char *fd = getenv("LLMCU_COUNTER_FD");
    if (fd != NULL && *fd != '\0') {
        counter_fd = atoi(fd);
    }
    if (argc == 2 && strcmp(argv[1], "check") == 0) {
        check();
        return 0;
    }
    if (argc == 7 && strcmp(argv[1], "bench") == 0) {
        return bench(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), atoi(argv[6]));
    }
    fprintf(stderr, "usage: %s check | bench <f32|q8|q4|att_f32|att_f16|att_q8> <rows> <cols> <group> <calls>\n",
            argv[0]);
    return 2;
}
