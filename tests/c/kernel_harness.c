/*
 * Kernel test firmware for the QEMU twin, driven by tests/runtime/test_cortex_m7_kernels.py.
 *
 * It runs every kernel of kernels/kernels.h on deterministic pseudo-random inputs and edge shapes and
 * prints one line per case over the console:
 *
 *   case <kernel> <shape...> hash=<FNV-1a 64 of the output bytes> cost=<instructions of the kernel call>
 *
 * The test links it twice, once with kernels/ref and once with an optimised set (the same files replaced
 * by name, as the build does), and compares the lines but their cost: equal hashes are equal bits. The
 * inputs come from this file's own generator, so both images see the same ones. With HARNESS_EXP_SWEEP
 * (optimised image only) it also compares kernels/cortex_m7/exp_m7.h's m7_expf with the library's expf:
 *
 *   expf_sweep n=<values> mismatches=<count> first=<bits of the first mismatch or 0>
 *
 * and ends with "done", then exits QEMU through the board layer (semihosting).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "board.h"
#include "kernels/kernels.h"

#ifdef HARNESS_EXP_SWEEP
#include "kernels/cortex_m7/exp_m7.h"
#endif

/* ---- output ---- */

static void put_str(const char *s) { board_write(s, strlen(s)); }

static void put_u32(uint32_t v) {
    char buf[12];
    int n = 0;
    do {
        buf[sizeof buf - 1 - n++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v != 0);
    board_write(buf + sizeof buf - n, (size_t)n);
}

static void put_int(const char *key, int v) {
    put_str(" ");
    put_str(key);
    put_str("=");
    if (v < 0) {
        put_str("-");
        v = -v;
    }
    put_u32((uint32_t)v);
}

static void put_hex(uint64_t v, int digits) {
    char buf[16];
    for (int i = digits - 1; i >= 0; i--) {
        buf[i] = "0123456789abcdef"[v & 15u];
        v >>= 4;
    }
    board_write(buf, (size_t)digits);
}

/* ---- hashing the outputs ---- */

static uint64_t hash;

static void hash_begin(void) { hash = 0xcbf29ce484222325u; }

static void hash_bytes(const void *data, size_t n) {
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++) {
        hash = (hash ^ p[i]) * 0x100000001b3u;
    }
}

static uint64_t cost_start;

static void case_begin(const char *name) {
    put_str("case ");
    put_str(name);
    hash_begin();
}

static void case_end(void) {
    put_str(" hash=");
    put_hex(hash, 16);
    put_str("\n");
}

#define TIMED(call)                                                                                      \
    do {                                                                                                 \
        cost_start = board_counter();                                                                    \
        call;                                                                                            \
        uint64_t cost_ = board_counter() - cost_start;                                                   \
        put_str(" cost=");                                                                               \
        put_u32((uint32_t)cost_);                                                                        \
    } while (0)

/* ---- inputs: xorshift32, as the runtime's sampler ---- */

static uint32_t rng_state = 0x2545F491u;

static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

/* Uniform in [-scale, scale). */
static float rnd_float(float scale) { return ((float)(rnd() >> 8) * 0x1.0p-23f - 1.0f) * scale; }

static void fill(float *x, int n, float scale) {
    for (int i = 0; i < n; i++) {
        x[i] = rnd_float(scale);
    }
}

static void fill_bytes(void *dst, size_t n) {
    uint8_t *p = dst;
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)(rnd() >> 24);
    }
}

/* Random q8 weights: every int8 but -128, which the quantizer never makes (it clamps to [-127, 127]). */
static void fill_q8(void *dst, size_t n) {
    uint8_t *p = dst;
    fill_bytes(p, n);
    for (size_t i = 0; i < n; i++) {
        p[i] = p[i] == 0x80 ? 0x81 : p[i];
    }
}

/* ---- buffers ---- */

#define MAX_W 40000   /* weights (floats, or bytes) */
#define MAX_VEC 1024  /* a vector */
#define MAX_KV 33000  /* one cache: positions * stride */

static float w_f32[MAX_W];
static uint8_t w_bytes[MAX_W + 8];
static float w_scales[MAX_W / 2];
static float x_f32[MAX_VEC];
static int8_t x_q[MAX_VEC];
static float x_s[MAX_VEC];
static float out[MAX_VEC];
static float att[MAX_VEC];
static float k_f32[MAX_KV], v_f32[MAX_KV];
static uint16_t k_f16[MAX_KV], v_f16[MAX_KV];
static int8_t k_q8[MAX_KV], v_q8[MAX_KV];
static float k_s[MAX_KV / 2], v_s[MAX_KV / 2];

#ifdef HARNESS_LAYOUT_M7_PANELS
/*
 * The Cortex-M7 set's weight layout, m7_panels (runtime_c/kernels/cortex_m7/m7_layout.h, made at build time by
 * site_scons/llmcu/builder/layouts.py), rebuilt here from the row-major bytes block by block, the way the Python side
 * builds it, so that the optimised image gets what a build links; the reference image keeps the row-major
 * arrays. Matrices the layout does not cover, and the bytes at an offset, are passed as they are / at the same
 * offset (the kernels' fallbacks). Returns the weights to pass; *scales becomes the scales to pass.
 */
static uint8_t m7_bytes[MAX_W + 4096]; /* q8 values in [-127, 127], as the quantizer makes them */
static float m7_scales[MAX_W / 2 + 1024];

static const uint8_t *m7_panels(int q4, const uint8_t *w, const float **scales, int rows, int cols, int group_size,
                                int offset) {
    if (cols % 4 || group_size % (q4 ? 8 : 4)) {
        return w;
    }
    int panel_rows = q4 ? 2 : 4, ngroups = group_count(cols, group_size);
    int panels = (rows + panel_rows - 1) / panel_rows;
    size_t row_bytes = q4 ? (size_t)cols / 2 : (size_t)cols;
    size_t block = 4; /* a row's bytes in a block: 8 columns (q4) or 4 (q8) */
    uint8_t *d = m7_bytes + offset;
    float *ds = m7_scales;
    for (int p = 0; p < panels; p++) {
        for (size_t b = 0; b < row_bytes; b += block) {
            size_t n = b + block <= row_bytes ? block : row_bytes - b; /* q4: the last four columns, two bytes */
            for (int k = 0; k < panel_rows; k++) {
                int r = p * panel_rows + k;
                for (size_t m = 0; m < n; m++) {
                    d[m] = r < rows ? w[(size_t)r * row_bytes + b + m] : (q4 ? 0x88 : 0);
                    if (!q4 && (m & 1) && (int8_t)d[m - 1] < 0) { /* q8: halfwords q_even + 256 q_odd */
                        d[m]--;
                    }
                }
                d += n;
            }
        }
        for (int g = 0; g < ngroups; g++) {
            for (int k = 0; k < panel_rows; k++) {
                int r = p * panel_rows + k;
                *ds++ = r < rows ? (*scales)[(size_t)r * (size_t)ngroups + (size_t)g] : 0.0f;
            }
        }
    }
    *scales = m7_scales;
    return m7_bytes + offset;
}
#define KERNEL_LAYOUT(q4, w, scales, rows, cols, group_size, offset)                                     \
    m7_panels((q4), (w), (scales), (rows), (cols), (group_size), (offset))

/* q4z's group words in m7_panels: per panel of two rows, per group, the two rows' words side by side (the codes
 * take q4's panels: KERNEL_LAYOUT(1, ...)). */
static uint16_t m7_words[MAX_W / 2 + 1024];
static const uint16_t *m7_q4z_words(const uint16_t *words, int rows, int cols, int group_size) {
    if (cols % 4 || group_size % 8) {
        return words;
    }
    int ngroups = group_count(cols, group_size), panels = (rows + 1) / 2;
    uint16_t *d = m7_words;
    for (int p = 0; p < panels; p++) {
        for (int g = 0; g < ngroups; g++) {
            for (int k = 0; k < 2; k++) {
                int r = 2 * p + k;
                *d++ = r < rows ? words[(size_t)r * (size_t)ngroups + (size_t)g] : 0;
            }
        }
    }
    return m7_words;
}
#define KERNEL_WORDS(words, rows, cols, group_size) m7_q4z_words((words), (rows), (cols), (group_size))
#else /* the reference layout */
#define KERNEL_LAYOUT(q4, w, scales, rows, cols, group_size, offset) (w)
#define KERNEL_WORDS(words, rows, cols, group_size) (words)
#endif

/* q4z group words: a positive normal binary16 scale with 6 mantissa bits (exponent field 1..30, here 5..20)
 * and a zero point 0..15 in the low four bits. */
static uint16_t w_words[MAX_W / 2];
static void fill_q4z_words(uint16_t *words, int n) {
    for (int i = 0; i < n; i++) {
        uint32_t r = rnd();
        words[i] = (uint16_t)(((5u + (r >> 28)) << 10) | (((r >> 8) & 63u) << 4) | (r & 15u));
    }
}

/* Activations with some structure: ordinary values, now and then a zero run, a -0, a large value. */
static void fill_activations(float *x, int n, float scale) {
    fill(x, n, scale);
    for (int i = 0; i < n; i++) {
        uint32_t r = rnd() >> 24;
        if (r < 8) {
            x[i] = 0.0f;
        } else if (r < 12) {
            x[i] = -0.0f;
        } else if (r < 14) {
            x[i] *= 100.0f;
        }
    }
}

/* ---- matmuls ---- */

static void case_matmul_f32(int rows, int cols) {
    fill(w_f32, rows * cols, 1.0f);
    fill_activations(x_f32, cols, 2.0f);
    if (rows > 2) { /* a zero row: its sum is 0.0f plus zeros */
        memset(w_f32 + cols, 0, (size_t)cols * sizeof(float));
    }
    case_begin("matmul_f32");
    put_int("rows", rows);
    put_int("cols", cols);
    TIMED(matmul_f32(out, x_f32, w_f32, rows, cols));
    hash_bytes(out, (size_t)rows * sizeof(float));
    case_end();
}

/* q8 (q4 = 0) or q4: `offset` shifts the weights off word alignment; `extreme` uses the largest values. */
static void case_matmul_q(int q4, int rows, int cols, int group_size, int offset, int extreme) {
    int ngroups = group_count(cols, group_size);
    size_t row_bytes = q4 ? ((size_t)cols + 1) / 2 : (size_t)cols;
    uint8_t *w = w_bytes + offset;
    if (q4) {
        fill_bytes(w, row_bytes * (size_t)rows);
    } else {
        fill_q8(w, row_bytes * (size_t)rows);
    }
    fill(w_scales, rows * ngroups, 0.02f);
    fill_activations(x_f32, cols, 3.0f);
    if (extreme) {
        memset(w, q4 ? 0xFF : 0x81, row_bytes * (size_t)rows); /* nibble 15 (q = 7) / -127 */
        for (int j = 0; j < cols; j++) {
            x_f32[j] = (j & 1) ? -1.0f : 1.0f; /* every activation integer is +-127 */
        }
    }
    quantize_activations(x_q, x_s, x_f32, cols, group_size);
    case_begin(q4 ? "matmul_q4" : "matmul_q8");
    put_int("rows", rows);
    put_int("cols", cols);
    put_int("group", group_size);
    put_int("offset", offset);
    put_int("extreme", extreme);
    const float *scales = w_scales;
    const uint8_t *lw = KERNEL_LAYOUT(q4, w, &scales, rows, cols, group_size, offset); /* what a build links */
    if (q4) {
        TIMED(matmul_q4(out, x_q, x_s, lw, scales, rows, cols, group_size));
    } else {
        TIMED(matmul_q8(out, x_q, x_s, (const int8_t *)lw, scales, rows, cols, group_size));
    }
    hash_bytes(out, (size_t)rows * sizeof(float));
    case_end();
}

/* q4z: random codes and group words; `offset` shifts the codes off word alignment. */
static void case_matmul_q4z(int rows, int cols, int group_size, int offset) {
    int ngroups = group_count(cols, group_size);
    size_t row_bytes = ((size_t)cols + 1) / 2;
    uint8_t *w = w_bytes + offset;
    fill_bytes(w, row_bytes * (size_t)rows);
    fill_q4z_words(w_words, rows * ngroups);
    fill_activations(x_f32, cols, 3.0f);
    quantize_activations(x_q, x_s, x_f32, cols, group_size);
    case_begin("matmul_q4z");
    put_int("rows", rows);
    put_int("cols", cols);
    put_int("group", group_size);
    put_int("offset", offset);
    const float *unused = w_scales;
    const uint8_t *lw = KERNEL_LAYOUT(1, w, &unused, rows, cols, group_size, offset);
    const uint16_t *words = KERNEL_WORDS(w_words, rows, cols, group_size);
    TIMED(matmul_q4z(out, x_q, x_s, lw, words, rows, cols, group_size));
    hash_bytes(out, (size_t)rows * sizeof(float));
    case_end();
}

/* ---- quant.c ---- */

static void case_quantize(int n, int group_size) {
    fill_activations(x_f32, n, 5.0f);
    if (n > group_size) { /* an all-zero group, and one of subnormals (its scale rounds to a tiny value) */
        memset(x_f32, 0, (size_t)group_size * sizeof(float));
        for (int j = group_size; j < 2 * group_size && j < n; j++) {
            x_f32[j] = rnd_float(1.0f) * 0x1.0p-140f;
        }
    }
    case_begin("quantize_activations");
    put_int("n", n);
    put_int("group", group_size);
    TIMED(quantize_activations(x_q, x_s, x_f32, n, group_size));
    hash_bytes(x_q, (size_t)n);
    hash_bytes(x_s, (size_t)group_count(n, group_size) * sizeof(float));
    case_end();
}

static void case_embed(int dim, int group_size) {
    int rows = 5;
    fill(w_f32, rows * dim, 1.0f);
    fill_q8(w_bytes, (size_t)rows * (size_t)dim);
    fill(w_scales, rows * group_count(dim, group_size), 0.1f);
    fill_q4z_words(w_words, rows * group_count(dim, group_size));
    case_begin("embed");
    put_int("dim", dim);
    put_int("group", group_size);
    hash_begin();
    for (int row = 0; row < rows; row++) {
        embed_f32(out, w_f32, row, dim);
        hash_bytes(out, (size_t)dim * sizeof(float));
        const float *scales = w_scales;
        const uint8_t *table = KERNEL_LAYOUT(0, w_bytes, &scales, rows, dim, group_size, 0);
        embed_q8(out, (const int8_t *)table, scales, row, dim, group_size);
        hash_bytes(out, (size_t)dim * sizeof(float));
        scales = w_scales;
        table = KERNEL_LAYOUT(1, w_bytes, &scales, rows, dim, group_size, 0);
        embed_q4(out, table, scales, row, dim, group_size);
        hash_bytes(out, (size_t)dim * sizeof(float));
        embed_q4z(out, table, KERNEL_WORDS(w_words, rows, dim, group_size), row, dim, group_size);
        hash_bytes(out, (size_t)dim * sizeof(float));
    }
    case_end();
}

/* ---- ops.c ---- */

static void case_rmsnorm(int n, int in_place) {
    fill_activations(x_f32, n, 4.0f);
    fill(w_f32, n, 1.5f);
    case_begin("rmsnorm");
    put_int("n", n);
    put_int("in_place", in_place);
    float *dst = in_place ? x_f32 : out;
    TIMED(rmsnorm(dst, x_f32, w_f32, n, 1e-5f));
    hash_bytes(dst, (size_t)n * sizeof(float));
    case_end();
}

/* kind 0: ordinary logits; 1: spread wider than expf's range (|x - max| >= 88); 2: with -inf entries. */
static void case_softmax(int n, int kind) {
    fill(x_f32, n, kind == 1 ? 300.0f : 8.0f);
    if (kind == 2) {
        for (int i = 0; i < n; i += 3) {
            x_f32[i] = -INFINITY;
        }
        x_f32[n - 1] = 1.0f;
    }
    case_begin("softmax");
    put_int("n", n);
    put_int("kind", kind);
    TIMED(softmax(x_f32, n));
    hash_bytes(x_f32, (size_t)n * sizeof(float));
    case_end();
}

static void case_swiglu(int n, float scale) {
    fill_activations(x_f32, n, scale);
    fill(w_f32, n, 2.0f);
    case_begin("swiglu");
    put_int("n", n);
    put_int("scale", (int)scale);
    TIMED(swiglu(x_f32, w_f32, n));
    hash_bytes(x_f32, (size_t)n * sizeof(float));
    case_end();
}

/* RoPE's cosines and sines at `pos` computed as rope computes them, with this image's C library: one row of
 * the build-time table (codegen.rope_table), cs[hd] = cosf and cs[hd + 1] = sinf for each even hd. */
static void rope_row(float *cs, int head_size, int pos) {
    for (int hd = 0; hd < head_size; hd += 2) {
        float freq = 1.0f / powf(10000.0f, (float)hd / (float)head_size);
        float val = (float)pos * freq;
        cs[hd] = cosf(val);
        cs[hd + 1] = sinf(val);
    }
}

/* rope_rotate with a row of the library's values: its hash, and whether it gave rope's bits. */
static void case_rope_rotate(int q_dim, int k_dim, int head_size, int pos) {
    static float q2[MAX_VEC], k2[MAX_VEC], cs[MAX_VEC];
    fill(x_f32, q_dim, 2.0f);
    fill(out, k_dim, 2.0f);
    memcpy(q2, x_f32, (size_t)q_dim * sizeof(float));
    memcpy(k2, out, (size_t)k_dim * sizeof(float));
    rope(q2, q_dim, k2, k_dim, head_size, pos, 10000.0f);
    rope_row(cs, head_size, pos);
    case_begin("rope_rotate");
    put_int("q_dim", q_dim);
    put_int("k_dim", k_dim);
    put_int("head_size", head_size);
    put_int("pos", pos);
    TIMED(rope_rotate(x_f32, q_dim, out, k_dim, head_size, cs));
    put_int("same_as_rope", !memcmp(q2, x_f32, (size_t)q_dim * sizeof(float)) &&
                                !memcmp(k2, out, (size_t)k_dim * sizeof(float)));
    hash_bytes(x_f32, (size_t)q_dim * sizeof(float));
    hash_bytes(out, (size_t)k_dim * sizeof(float));
    case_end();
}

/* The whole table for positions 0..seq_len-1 with this image's C library, as one hash over its float32
 * bytes in the table's order (tests/runtime/test_cortex_m7_kernels.py hashes codegen.rope_table the same way). */
static void rope_table_hash(int head_size, int seq_len) {
    static float cs[MAX_VEC];
    hash_begin();
    for (int pos = 0; pos < seq_len; pos++) {
        rope_row(cs, head_size, pos);
        hash_bytes(cs, (size_t)head_size * sizeof(float));
    }
    put_str("rope_table");
    put_int("head_size", head_size);
    put_int("seq_len", seq_len);
    put_str(" hash=");
    put_hex(hash, 16);
    put_str("\n");
}

static void case_rope(int q_dim, int k_dim, int head_size, int pos) {
    fill(x_f32, q_dim, 2.0f);
    fill(out, k_dim, 2.0f);
    case_begin("rope");
    put_int("q_dim", q_dim);
    put_int("k_dim", k_dim);
    put_int("head_size", head_size);
    put_int("pos", pos);
    TIMED(rope(x_f32, q_dim, out, k_dim, head_size, pos, 10000.0f));
    hash_bytes(x_f32, (size_t)q_dim * sizeof(float));
    hash_bytes(out, (size_t)k_dim * sizeof(float));
    case_end();
}

/* ---- attention.c ---- */

/* One head over n_pos positions of a cache with `stride` values a position; `qscale` large spreads the
 * scores beyond expf's range. Runs the float32, binary16 and int8 caches with the same keys and values. */
static void case_attention(int head_size, int n_pos, int stride, float qscale) {
    int n_values = n_pos * stride;
    int n_heads = stride / head_size;
    fill(x_f32, head_size, qscale);
    fill(k_f32, n_values, 1.0f);
    fill(v_f32, n_values, 1.0f);
    kv_store_f16(k_f16, k_f32, n_values);
    kv_store_f16(v_f16, v_f32, n_values);
    for (int t = 0; t < n_pos; t++) {
        quantize_activations(k_q8 + t * stride, k_s + t * n_heads, k_f32 + t * stride, stride, head_size);
        quantize_activations(v_q8 + t * stride, v_s + t * n_heads, v_f32 + t * stride, stride, head_size);
    }
    int h = n_heads - 1; /* the last kv head of each position: an offset into the rows */
    int offset = h * head_size;

    case_begin("attention_f32");
    put_int("head_size", head_size);
    put_int("n_pos", n_pos);
    put_int("stride", stride);
    put_int("qscale", (int)qscale);
    TIMED(attention_head(out, att, x_f32, k_f32 + offset, v_f32 + offset, stride, head_size, n_pos));
    hash_bytes(out, (size_t)head_size * sizeof(float));
    case_end();

    case_begin("attention_f16");
    put_int("head_size", head_size);
    put_int("n_pos", n_pos);
    put_int("stride", stride);
    put_int("qscale", (int)qscale);
    TIMED(attention_head_f16(out, att, x_f32, k_f16 + offset, v_f16 + offset, stride, head_size, n_pos));
    hash_bytes(out, (size_t)head_size * sizeof(float));
    case_end();

    case_begin("attention_q8");
    put_int("head_size", head_size);
    put_int("n_pos", n_pos);
    put_int("stride", stride);
    put_int("qscale", (int)qscale);
    TIMED(attention_head_q8(out, att, x_f32, k_q8 + offset, k_s + h, v_q8 + offset, v_s + h, stride, n_heads,
                            head_size, n_pos));
    hash_bytes(out, (size_t)head_size * sizeof(float));
    case_end();
}

/* ---- attention_q16.c ---- */

static int16_t k_q16[MAX_KV + 64] __attribute__((aligned(8)));
static int16_t v_q16[MAX_KV + 64] __attribute__((aligned(8)));
static int32_t q16_scores[MAX_VEC];
static int16_t q16_weights[MAX_VEC] __attribute__((aligned(8)));
static int16_t q16_query[256] __attribute__((aligned(4)));
static float q16_scales[3][MAX_VEC];

/* Every head of a layer over n_pos positions stored by kv_store_q16 (the kernel set's own arrangement), keys
 * and values of magnitude about kvscale with scales that make some of them saturate (every seventh position
 * is 8x larger); qscale spreads the softmax from flat (0: a zero query) to one-hot. */
static void case_attention_q16(int n_heads, int n_kv_heads, int head_size, int n_pos, float qscale, float kvscale) {
    int kv_dim = n_kv_heads * head_size;
    int positions = (n_pos + 7) & ~7;
    for (int c = 0; c < kv_dim; c++) {
        q16_scales[0][c] = (1.5f + rnd_float(1.0f)) * kvscale * 0x1.0p-14f;
        q16_scales[1][c] = (1.5f + rnd_float(1.0f)) * kvscale * 0x1.0p-14f;
        q16_scales[2][c] = q16_scales[0][c] * 0.5100697f; /* log2(e) / sqrt(8) */
    }
    for (int t = 0; t < n_pos; t++) {
        fill(k_f32, kv_dim, t % 7 == 3 ? 8.0f * kvscale : kvscale);
        fill(v_f32, kv_dim, t % 7 == 5 ? 8.0f * kvscale : kvscale);
        kv_store_q16(k_q16, v_q16, k_f32, v_f32, q16_scales[0], q16_scales[1], t, positions, kv_dim, head_size);
    }
    fill(x_f32, n_heads * head_size, qscale);
    case_begin("attention_q16");
    put_int("n_heads", n_heads);
    put_int("n_kv_heads", n_kv_heads);
    put_int("head_size", head_size);
    put_int("n_pos", n_pos);
    put_int("qscale", (int)qscale);
    TIMED(attention_q16(out, x_f32, k_q16, v_q16, q16_scales[2], q16_scales[1], q16_query, q16_scores, q16_weights,
                        n_heads, n_kv_heads, head_size, positions, n_pos));
    hash_bytes(out, (size_t)(n_heads * head_size) * sizeof(float));
    case_end();
}

static uint32_t f32_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float bits_f32(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* binary16: every binary16 to float32, and a sweep of float32 bit patterns (plus the edges) to binary16. */
static void case_f16(void) {
    case_begin("f16_to_f32");
    put_str(" all");
    for (uint32_t h = 0; h < 0x10000u; h++) {
        float f = f16_to_f32((uint16_t)h);
        hash_bytes(&f, sizeof f);
    }
    case_end();

    static const uint32_t edges[] = {
        0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7fa00000u,
        0x477fe000u, 0x477fefffu, 0x477ff000u, 0x477ff001u, 0x38800000u, 0x387fe000u, 0x33800000u, 0x33800001u,
        0x33000000u, 0x33000001u, 0x32ffffffu, 0x00000001u, 0x3f800000u, 0x3f801000u, 0x3f803000u, 0xb3c00000u,
    };
    case_begin("f32_to_f16");
    put_str(" sweep");
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) {
        uint16_t h = f32_to_f16(bits_f32(edges[i]));
        hash_bytes(&h, sizeof h);
    }
    for (uint32_t u = 0x1234u; u < 0xfffff000u; u += 4099u) {
        uint16_t h = f32_to_f16(bits_f32(u));
        hash_bytes(&h, sizeof h);
    }
    case_end();
}

#ifdef HARNESS_EXP_SWEEP
/* m7_expf against expf, bit for bit, over every 1021st float bit pattern (all signs, magnitudes, infinities
 * and NaNs) and every 1024th float of [-1, -0]; then the asm exp pass against expf on vectors. */
static void exp_sweep(void) {
    uint32_t n = 0, mismatches = 0, first = 0;
    for (uint64_t u = 0; u <= 0xffffffffu; u += 1021u) {
        float x = bits_f32((uint32_t)u);
        uint32_t a = f32_bits(m7_expf(x)), b = f32_bits(expf(x));
        n++;
        if (a != b && mismatches++ == 0) {
            first = (uint32_t)u;
        }
    }
    for (uint32_t u = 0xbf800000u; u >= 0x80000000u; u -= 1024u) {
        float x = bits_f32(u);
        n++;
        if (f32_bits(m7_expf(x)) != f32_bits(expf(x))) {
            if (mismatches++ == 0) {
                first = u;
            }
        }
    }
    put_str("expf_sweep");
    put_int("n", (int)n);
    put_int("mismatches", (int)mismatches);
    put_str(" first=");
    put_hex(first, 8);
    put_str("\n");
    /* and the asm exp pass over a vector against expf one by one */
    uint32_t pass_mismatch = 0;
    for (int round = 0; round < 64; round++) {
        fill(x_f32, MAX_VEC, round < 32 ? 30.0f : 200.0f);
        memcpy(out, x_f32, sizeof out);
        float max = x_f32[0];
        for (int i = 0; i < MAX_VEC; i++) {
            max = fmaxf(max, x_f32[i]);
        }
        /* spread 60 and 400: the latter with results that underflow to 0 */
        float sum = m7_exp_pass(out, MAX_VEC, max);
        float ref_sum = 0.0f;
        for (int i = 0; i < MAX_VEC; i++) {
            float e = expf(x_f32[i] - max);
            ref_sum += e;
            pass_mismatch += f32_bits(e) != f32_bits(out[i]);
        }
        pass_mismatch += f32_bits(sum) != f32_bits(ref_sum);
    }
    put_str("exp_pass");
    put_int("mismatches", (int)pass_mismatch);
    put_str("\n");
}
#endif

int main(void) {
    static const int f32_shapes[][2] = {{1, 1}, {3, 7}, {5, 8},   {7, 9},    {4, 64},  {6, 17},  {64, 64},
                                        {32, 64}, {172, 64}, {64, 172}, {33, 288}, {9, 768}, {512, 64}};
    for (size_t i = 0; i < sizeof f32_shapes / sizeof f32_shapes[0]; i++) {
        case_matmul_f32(f32_shapes[i][0], f32_shapes[i][1]);
    }

    /* rows, cols, group size: the shapes of stories260K and 15M, tail groups, groups longer than a block,
     * odd rows, group sizes the fast paths do not take (2, 8), and a row shorter than a group */
    static const int q_shapes[][3] = {
        {64, 64, 32},  {32, 64, 32}, {172, 64, 32}, {64, 172, 32}, {64, 172, 16}, {3, 172, 16},  {5, 288, 32},
        {7, 768, 32},  {2, 768, 64}, {9, 768, 256}, {4, 288, 256}, {3, 64, 8},    {3, 66, 2},    {1, 12, 16},
        {2, 20, 16},   {64, 64, 64}, {5, 40, 16},   {3, 30, 16},   {512, 64, 32}, {1, 172, 32},  {6, 600, 128},
        {11, 48, 16},
    };
    for (int q4 = 0; q4 <= 1; q4++) {
        for (size_t i = 0; i < sizeof q_shapes / sizeof q_shapes[0]; i++) {
            case_matmul_q(q4, q_shapes[i][0], q_shapes[i][1], q_shapes[i][2], 0, 0);
        }
        case_matmul_q(q4, 5, 172, 32, 1, 0); /* misaligned weights */
        case_matmul_q(q4, 4, 64, 32, 2, 0);
        case_matmul_q(q4, 6, 768, 256, 0, 1); /* the largest sums */
        case_matmul_q(q4, 3, 172, 16, 0, 1);
    }
    case_matmul_q(1, 3, 33, 16, 0, 0); /* q4, odd columns: half a byte at each row's end */
    case_matmul_q(1, 4, 171, 32, 0, 0);
    case_matmul_q(1, 5, 17, 16, 3, 0);
    for (size_t i = 0; i < sizeof q_shapes / sizeof q_shapes[0]; i++) {
        case_matmul_q4z(q_shapes[i][0], q_shapes[i][1], q_shapes[i][2], 0);
    }
    case_matmul_q4z(5, 172, 32, 1); /* misaligned codes */
    case_matmul_q4z(3, 33, 16, 0);  /* odd columns */
    case_matmul_q4z(4, 171, 32, 2);

    static const int quant_shapes[][2] = {{64, 32}, {172, 32}, {172, 16}, {768, 256}, {7, 2}, {13, 8}, {32, 8}};
    for (size_t i = 0; i < sizeof quant_shapes / sizeof quant_shapes[0]; i++) {
        case_quantize(quant_shapes[i][0], quant_shapes[i][1]);
    }
    case_embed(64, 32);
    case_embed(172, 16);

    static const int norm_sizes[] = {1, 3, 7, 64, 288};
    for (size_t i = 0; i < sizeof norm_sizes / sizeof norm_sizes[0]; i++) {
        case_rmsnorm(norm_sizes[i], 0);
        case_rmsnorm(norm_sizes[i], 1);
    }
    static const int softmax_sizes[] = {1, 2, 7, 100, 512};
    for (size_t i = 0; i < sizeof softmax_sizes / sizeof softmax_sizes[0]; i++) {
        for (int kind = 0; kind < 3; kind++) {
            case_softmax(softmax_sizes[i], kind);
        }
    }
    case_swiglu(1, 5.0f);
    case_swiglu(7, 5.0f);
    case_swiglu(172, 5.0f);
    case_swiglu(768, 120.0f);
    case_rope(64, 32, 8, 0);
    case_rope(64, 32, 8, 1);
    case_rope(64, 32, 8, 255);
    case_rope(64, 64, 8, 511);
    case_rope(288, 288, 48, 100);
    case_rope(64, 64, 64, 3);
    case_rope(12, 6, 6, 7);
    case_rope_rotate(64, 32, 8, 0);
    case_rope_rotate(64, 32, 8, 1);
    case_rope_rotate(64, 32, 8, 255);
    case_rope_rotate(64, 64, 8, 511);
    case_rope_rotate(288, 288, 48, 100);
    case_rope_rotate(64, 64, 64, 3);
    case_rope_rotate(12, 6, 6, 7);
    /* stories260K/15M/42M/110M head sizes and contexts, and a long one */
    static const int tables[][2] = {{8, 512}, {48, 256}, {64, 1024}, {16, 2048}};
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        rope_table_hash(tables[i][0], tables[i][1]);
    }

    static const int attn[][3] = {{8, 1, 32},  {8, 2, 32},  {8, 3, 8},   {8, 17, 32}, {8, 128, 32}, {8, 512, 32},
                                  {16, 5, 32}, {16, 64, 64}, {48, 33, 48}, {64, 7, 128}, {6, 9, 12}};
    for (size_t i = 0; i < sizeof attn / sizeof attn[0]; i++) {
        case_attention(attn[i][0], attn[i][1], attn[i][2], 1.0f);
    }
    case_attention(8, 64, 32, 200.0f); /* scores spread past expf's range */
    case_attention(16, 40, 16, 200.0f);
    /* q16: stories260K's heads at lengths around the unrolled loops' steps and its full context, 15M's, others */
    static const int q16_lengths[] = {1, 2, 3, 4, 5, 7, 8, 9, 12, 17, 64, 129, 512};
    for (size_t i = 0; i < sizeof q16_lengths / sizeof q16_lengths[0]; i++) {
        case_attention_q16(8, 4, 8, q16_lengths[i], 3.0f, 2.0f);
    }
    case_attention_q16(8, 4, 8, 100, 300.0f, 2.0f); /* one-hot: most weights 0 */
    case_attention_q16(8, 4, 8, 50, 0.0f, 2.0f);    /* a zero query: every weight equal */
    case_attention_q16(8, 4, 8, 50, 1.0e-30f, 1.0f); /* a tiny query: the largest exponent G */
    case_attention_q16(8, 4, 8, 50, 1.0e30f, 1.0f);  /* a huge one: the smallest G, saturated codes */
    case_attention_q16(6, 6, 48, 33, 2.0f, 1.0f);
    case_attention_q16(2, 2, 48, 256, 2.0f, 1.0f);
    case_attention_q16(4, 2, 64, 7, 1.0f, 4.0f);
    case_attention_q16(2, 1, 16, 40, 5.0f, 1.0f);
    case_attention_q16(4, 4, 6, 9, 5.0f, 1.0f);
    case_f16();

#ifdef HARNESS_EXP_SWEEP
    exp_sweep();
#endif
    put_str("done\n");
    board_after_run(0);
    return 0;
}
