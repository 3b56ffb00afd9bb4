/*
 * Runs every kernel of runtime_c/kernels/kernels.h on seeded random inputs and edge shapes and prints each
 * output as hex bit patterns, one line per case ("<case>: <hex> <hex> ...").
 *
 * tests/runtime/test_x86_kernels.py links this program once with the reference kernels and once with an optimised
 * set; the two outputs must be identical, bit for bit. Every input buffer is placed so that it ends right
 * before an inaccessible page, so a kernel that reads past the end of a tensor or vector crashes here.
 */
#define _DEFAULT_SOURCE /* mmap's MAP_ANONYMOUS under -std=c99 */

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels/kernels.h"

/* ---- a deterministic random source (xorshift64*) ---- */

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint32_t rand_u32(void) {
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (uint32_t)((rng * 0x2545F4914F6CDD1Dull) >> 32);
}

/* Uniform in [-1, 1). */
static float rand_unit(void) { return (float)(rand_u32() >> 8) / 8388608.0f - 1.0f; }

/* Mostly well-scaled values, with some exact zeros, negative zeros, ties and wide magnitudes mixed in. */
static float rand_value(void) {
    uint32_t kind = rand_u32() % 64;
    if (kind == 0) {
        return 0.0f;
    }
    if (kind == 1) {
        return -0.0f;
    }
    if (kind == 2) {
        return rand_unit() * 1e-30f;
    }
    if (kind == 3) {
        return rand_unit() * 1e6f;
    }
    return rand_unit() * 3.0f;
}

/* ---- buffers that end at a guard page ---- */

#define MAX_GUARDED 32

static struct {
    void *base;
    size_t size;
} guarded[MAX_GUARDED];
static int n_guarded;

/* `bytes` of memory whose last byte is the last one before a PROT_NONE page. */
static void *guarded_alloc(size_t bytes) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t data_pages = (bytes + page - 1) / page;
    size_t size = (data_pages + 1) * page;
    uint8_t *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED || mprotect(base + data_pages * page, page, PROT_NONE) != 0) {
        perror("mmap");
        exit(1);
    }
    if (n_guarded == MAX_GUARDED) {
        fprintf(stderr, "too many guarded buffers\n");
        exit(1);
    }
    guarded[n_guarded].base = base;
    guarded[n_guarded].size = size;
    n_guarded++;
    return base + data_pages * page - bytes;
}

static void guarded_free_all(void) {
    for (int i = 0; i < n_guarded; i++) {
        munmap(guarded[i].base, guarded[i].size);
    }
    n_guarded = 0;
}

/* The kernel set's weight layout, made from the row-major inputs: x86_panels (x86_layout.h) when built with
 * -DHARNESS_LAYOUT_X86_PANELS, else the reference's row-major matrices as they are. */
#if defined(HARNESS_LAYOUT_X86_PANELS)
#include "x86_layout.h"
#define LAYOUT_F32(w, rows, cols) x86_f32_panels((w), (rows), (cols))
#define LAYOUT_Q8(w, ws, rows, cols, group_size) x86_q8_panels(&(w), &(ws), (rows), (cols), (group_size))
#define LAYOUT_Q4(w, ws, rows, cols, group_size) x86_q4_panels(&(w), &(ws), (rows), (cols), (group_size))
#else
#define LAYOUT_F32(w, rows, cols) (w)
#define LAYOUT_Q8(w, ws, rows, cols, group_size) ((void)0)
#define LAYOUT_Q4(w, ws, rows, cols, group_size) ((void)0)
#endif

static float *rand_floats(int n) {
    float *p = guarded_alloc((size_t)n * sizeof(float));
    for (int i = 0; i < n; i++) {
        p[i] = rand_value();
    }
    return p;
}

/* Positive scales as the quantizer makes them (amax / QMAX), some of them 0 (an all-zero group). */
static float *rand_scales(int n) {
    float *p = guarded_alloc((size_t)n * sizeof(float));
    for (int i = 0; i < n; i++) {
        p[i] = rand_u32() % 16 == 0 ? 0.0f : fabsf(rand_unit()) / 127.0f + 1e-6f;
    }
    return p;
}

static int8_t *rand_int8(int n, int lo, int hi) {
    int8_t *p = guarded_alloc((size_t)n);
    for (int i = 0; i < n; i++) {
        p[i] = (int8_t)(lo + (int)(rand_u32() % (uint32_t)(hi - lo + 1)));
    }
    return p;
}

static uint8_t *rand_bytes(size_t n) {
    uint8_t *p = guarded_alloc(n);
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)rand_u32();
    }
    return p;
}

/* ---- output ---- */

static void begin(const char *fmt, int a, int b, int c, int d) {
    printf(fmt, a, b, c, d);
    putchar(':');
}

static void dump_floats(const float *p, int n) {
    for (int i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &p[i], sizeof bits);
        printf(" %08x", bits);
    }
}

static void dump_int8(const int8_t *p, int n) {
    for (int i = 0; i < n; i++) {
        printf(" %02x", (unsigned)(uint8_t)p[i]);
    }
}

static void dump_u16(const uint16_t *p, int n) {
    for (int i = 0; i < n; i++) {
        printf(" %04x", (unsigned)p[i]);
    }
}

static void end(void) {
    putchar('\n');
    guarded_free_all();
}

/* ---- cases ---- */

static const int COLS[] = {1, 2, 3, 8, 12, 16, 31, 33, 48, 64, 100, 172, 288, 768};
static const int ROWS[] = {1, 3, 7, 8, 9, 15, 16, 17, 24, 32, 64, 172, 512};
static const int GROUPS[] = {2, 4, 8, 16, 32, 64, 128, 256};
#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static void matmul_cases(void) {
    for (int ci = 0; ci < COUNT(COLS); ci++) {
        for (int ri = 0; ri < COUNT(ROWS); ri++) {
            int rows = ROWS[ri];
            int cols = COLS[ci];
            if ((size_t)rows * (size_t)cols > 512 * 288) {
                continue;
            }
            float *x = rand_floats(cols);
            float *w = rand_floats(rows * cols);
            float *out = guarded_alloc((size_t)rows * sizeof(float));
            begin("matmul_f32 rows=%d cols=%d", rows, cols, 0, 0);
            matmul_f32(out, x, LAYOUT_F32(w, rows, cols), rows, cols);
            dump_floats(out, rows);
            end();

            for (int gi = 0; gi < COUNT(GROUPS); gi++) {
                int g = GROUPS[gi];
                if (g > 2 * cols && g != 32) {
                    continue; /* one group per row already covered by the smaller sizes */
                }
                int ng = group_count(cols, g);
                /* Full int8 range, including the -128 the quantizer never makes; extremes often. */
                int8_t *xq = rand_int8(cols, -128, 127);
                for (int j = 0; j < cols; j += 3) {
                    xq[j] = (int8_t)(rand_u32() % 2 ? 127 : -127);
                }
                float *xs = rand_scales(ng);
                float *ws = rand_scales(rows * ng);
                int8_t *w8 = rand_int8(rows * cols, -128, 127);
                float *o8 = guarded_alloc((size_t)rows * sizeof(float));
                float *ws8 = ws;
                LAYOUT_Q8(w8, ws8, rows, cols, g);
                begin("matmul_q8 rows=%d cols=%d group=%d", rows, cols, g, 0);
                matmul_q8(o8, xq, xs, w8, ws8, rows, cols, g);
                dump_floats(o8, rows);
                putchar('\n');

                size_t row_bytes = ((size_t)cols + 1) / 2;
                uint8_t *w4 = rand_bytes((size_t)rows * row_bytes);
                float *o4 = guarded_alloc((size_t)rows * sizeof(float));
                LAYOUT_Q4(w4, ws, rows, cols, g);
                begin("matmul_q4 rows=%d cols=%d group=%d", rows, cols, g, 0);
                matmul_q4(o4, xq, xs, w4, ws, rows, cols, g);
                dump_floats(o4, rows);
                end();
            }
        }
    }
    /* Integer sums at their extremes: every product 127 * 127 or -128 * -128 over the largest group. */
    for (int sign = 0; sign < 2; sign++) {
        int rows = 9;
        int cols = 512;
        int g = 256;
        int8_t *xq = rand_int8(cols, sign ? -128 : 127, sign ? -128 : 127);
        int8_t *w8 = rand_int8(rows * cols, sign ? -128 : 127, sign ? -128 : 127);
        uint8_t *w4 = rand_bytes((size_t)rows * (size_t)cols / 2);
        memset(w4, sign ? 0x00 : 0xFF, (size_t)rows * (size_t)cols / 2);
        float *xs = rand_scales(2);
        float *ws = rand_scales(rows * 2);
        xs[0] = xs[1] = 1.0f;
        float *o = guarded_alloc((size_t)rows * sizeof(float));
        float *ws8 = ws;
        LAYOUT_Q8(w8, ws8, rows, cols, g);
        begin("matmul_q8 extreme=%d", sign, 0, 0, 0);
        matmul_q8(o, xq, xs, w8, ws8, rows, cols, g);
        dump_floats(o, rows);
        putchar('\n');
        LAYOUT_Q4(w4, ws, rows, cols, g);
        begin("matmul_q4 extreme=%d", sign, 0, 0, 0);
        matmul_q4(o, xq, xs, w4, ws, rows, cols, g);
        dump_floats(o, rows);
        end();
    }
}

static void quant_cases(void) {
    static const int N[] = {1, 2, 5, 16, 17, 31, 64, 100, 172, 288, 768};
    for (int ni = 0; ni < COUNT(N); ni++) {
        for (int gi = 0; gi < COUNT(GROUPS); gi++) {
            int n = N[ni];
            int g = GROUPS[gi];
            int ng = group_count(n, g);
            float *x = rand_floats(n);
            /* Some groups all zero, some with exact .5 ties (amax 127 gives the scale 1.0). */
            for (int gr = 0; gr < ng; gr++) {
                int start = gr * g;
                int stop = start + g < n ? start + g : n;
                uint32_t kind = rand_u32() % 4;
                for (int j = start; j < stop; j++) {
                    if (kind == 0) {
                        x[j] = j % 2 ? 0.0f : -0.0f;
                    } else if (kind == 1) {
                        x[j] = j == start ? 127.0f : (float)((int)(rand_u32() % 254) - 127) + 0.5f;
                    }
                }
            }
            int8_t *xq = guarded_alloc((size_t)n);
            float *xs = guarded_alloc((size_t)ng * sizeof(float));
            begin("quantize_activations n=%d group=%d", n, g, 0, 0);
            quantize_activations(xq, xs, x, n, g);
            dump_int8(xq, n);
            dump_floats(xs, ng);
            end();
        }
    }
    for (int g = 8; g <= 32; g *= 4) {
        int dim = 64;
        int vocab = 5;
        int ng = group_count(dim, g);
        float *table = rand_floats(vocab * dim);
        int8_t *t8 = rand_int8(vocab * dim, -127, 127);
        uint8_t *t4 = rand_bytes((size_t)vocab * (size_t)dim / 2);
        float *scales = rand_scales(vocab * ng);
        float *out = guarded_alloc((size_t)dim * sizeof(float));
        float *laid_f32 = LAYOUT_F32(table, vocab, dim);
        float *s8 = scales, *s4 = scales;
        LAYOUT_Q8(t8, s8, vocab, dim, g);
        LAYOUT_Q4(t4, s4, vocab, dim, g);
        for (int row = 0; row < vocab; row += 2) {
            begin("embed row=%d group=%d", row, g, 0, 0);
            embed_f32(out, laid_f32, row, dim);
            dump_floats(out, dim);
            embed_q8(out, t8, s8, row, dim, g);
            dump_floats(out, dim);
            embed_q4(out, t4, s4, row, dim, g);
            dump_floats(out, dim);
            putchar('\n');
        }
        end();
    }
}

static void ops_cases(void) {
    static const int N[] = {1, 2, 7, 8, 9, 17, 64, 100, 172, 288, 512, 768};
    for (int ni = 0; ni < COUNT(N); ni++) {
        int n = N[ni];
        for (int scale = 1; scale <= 100; scale *= 10) {
            float *x = rand_floats(n);
            for (int i = 0; i < n; i++) {
                x[i] *= (float)scale;
            }
            float *w = rand_floats(n);
            float *out = guarded_alloc((size_t)n * sizeof(float));
            begin("rmsnorm n=%d scale=%d", n, scale, 0, 0);
            rmsnorm(out, x, w, n, 1e-5f);
            dump_floats(out, n);
            rmsnorm(x, x, w, n, 1e-5f); /* in place */
            dump_floats(x, n);
            putchar('\n');
            begin("softmax n=%d scale=%d", n, scale, 0, 0);
            softmax(x, n);
            dump_floats(x, n);
            putchar('\n');
            float *hb = rand_floats(n);
            float *hb2 = rand_floats(n);
            begin("swiglu n=%d scale=%d", n, scale, 0, 0);
            swiglu(hb, hb2, n);
            dump_floats(hb, n);
            end();
        }
    }
    /* softmax of values with ties at the maximum and signed zeros */
    {
        float *x = guarded_alloc(12 * sizeof(float));
        float values[12] = {0.0f, -0.0f, -1.0f, 0.0f, -0.0f, -3.5f, -0.0f, 0.0f, -2.0f, 0.0f, -0.0f, -7.0f};
        memcpy(x, values, sizeof values);
        begin("softmax zeros%c", ' ', 0, 0, 0);
        softmax(x, 12);
        dump_floats(x, 12);
        end();
    }
    static const int ROPE[][3] = {{64, 32, 8}, {64, 64, 8}, {288, 288, 48}, {16, 16, 16}, {48, 16, 8}, {12, 4, 4},
                                  {96, 32, 32}};
    static const int POS[] = {0, 1, 17, 255, 511, 4095};
    for (int ri = 0; ri < COUNT(ROPE); ri++) {
        for (int pi = 0; pi < COUNT(POS); pi++) {
            int q_dim = ROPE[ri][0];
            int k_dim = ROPE[ri][1];
            float *q = rand_floats(q_dim);
            float *k = rand_floats(k_dim);
            begin("rope q=%d k=%d head=%d pos=%d", q_dim, k_dim, ROPE[ri][2], POS[pi]);
            rope(q, q_dim, k, k_dim, ROPE[ri][2], POS[pi], 10000.0f);
            dump_floats(q, q_dim);
            dump_floats(k, k_dim);
            end();
        }
    }
}

static void attention_cases(void) {
    static const int HEAD[][2] = {{8, 32}, {8, 8}, {16, 64}, {48, 288}, {6, 24}, {4, 4}, {12, 36}, {64, 128}};
    static const int NPOS[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 33, 128, 255, 512};
    for (int hi = 0; hi < COUNT(HEAD); hi++) {
        for (int pi = 0; pi < COUNT(NPOS); pi++) {
            int head_size = HEAD[hi][0];
            int stride = HEAD[hi][1];
            int n_pos = NPOS[pi];
            /* k and v of one head: the slice starts at some offset of the row; the last position's row
             * ends right at the guard page. */
            int offset = stride - head_size;
            size_t n = (size_t)(n_pos - 1) * (size_t)stride + (size_t)head_size;
            float *q = rand_floats(head_size);
            float *k = rand_floats((int)n + offset) + offset;
            float *v = rand_floats((int)n + offset) + offset;
            float *att = guarded_alloc((size_t)n_pos * sizeof(float));
            float *out = guarded_alloc((size_t)head_size * sizeof(float));
            begin("attention_head head=%d stride=%d n_pos=%d", head_size, stride, n_pos, 0);
            attention_head(out, att, q, k, v, stride, head_size, n_pos);
            dump_floats(out, head_size);
            dump_floats(att, n_pos);
            putchar('\n');

            uint16_t *k16 = guarded_alloc(n * sizeof(uint16_t));
            uint16_t *v16 = guarded_alloc(n * sizeof(uint16_t));
            kv_store_f16(k16, k, (int)n);
            kv_store_f16(v16, v, (int)n);
            begin("kv_store_f16 head=%d stride=%d n_pos=%d", head_size, stride, n_pos, 0);
            dump_u16(k16, (int)n);
            putchar('\n');
            begin("attention_head_f16 head=%d stride=%d n_pos=%d", head_size, stride, n_pos, 0);
            attention_head_f16(out, att, q, k16, v16, stride, head_size, n_pos);
            dump_floats(out, head_size);
            dump_floats(att, n_pos);
            putchar('\n');

            /* q8 cache: one scale per position (scale_stride 1 here). */
            int8_t *k8 = rand_int8((int)n, -127, 127);
            int8_t *v8 = rand_int8((int)n, -127, 127);
            float *ks = rand_scales(n_pos);
            float *vs = rand_scales(n_pos);
            begin("attention_head_q8 head=%d stride=%d n_pos=%d", head_size, stride, n_pos, 0);
            attention_head_q8(out, att, q, k8, ks, v8, vs, stride, 1, head_size, n_pos);
            dump_floats(out, head_size);
            dump_floats(att, n_pos);
            end();
        }
    }
}

int main(void) {
    matmul_cases();
    quant_cases();
    ops_cases();
    attention_cases();
    return 0;
}
