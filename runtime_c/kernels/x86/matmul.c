/*
 * Matrix-vector products for x86-64 with AVX2 (see x86.h for how the ISA is chosen and the exactness rules).
 *
 * The build stores the matrices in "x86_panels" (x86.h, site_scons/llmcu/builder/layouts.py): rows in panels of
 * eight, the eight rows' values for a column (fp32), a pair of columns (q8) or a block of eight columns (q4, q4z)
 * side by side in 32 or 16 bytes, and each group's eight scales (or q4z words) side by side. A matmul then reads
 * each matrix front to back in one stream, a vector load holds a piece of eight rows, lane k of every
 * accumulator is row k (no horizontal sums, no gathered scales), and four panels share each activation load.
 * Rows are padded to a multiple of eight with zero rows and zero scales; only the matrix's rows are stored.
 *
 * fp32: per column, acc += w * x for eight rows at once, in column order from 0.0f, as the reference loop.
 * q8:   vpmaddwd of the sign-extended pair row by the broadcast activation pair (exact for every int8).
 * q4:   vpmaddubsw of the unsigned nibbles by the broadcast activation quads, the +8 offset taken off as
 *       8 * sum(x); q4z the same with its zero points per row, z * sum(x).
 * Per group, the float part ((float)isum * ws) * xs is added to each row's lane, group after group, as in the
 * reference. Without AVX2 the panels are read one value at a time in the reference's order.
 *
 * q8 matrices with an odd column count or group size, and 4-bit ones whose columns or group size are not a
 * multiple of eight, stay row-major; for them the row-major kernels below (eight rows per pass: per group the
 * eight rows' exact int32 sums, reduced to one vector, then the float part) or the reference code run. When rows
 * is not a multiple of 8 their last block overlaps the one before it (those rows are computed twice, the same
 * way); matrices of fewer than 8 rows, and group sizes that are not a multiple of 16, use the reference code.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/ref/ref.h"
#include "kernels/x86/x86.h"

#define matmul_f32 ref_matmul_f32
#define matmul_q8 ref_matmul_q8
#define matmul_q4 ref_matmul_q4
#include "kernels/ref/matmul.c"
#undef matmul_f32
#undef matmul_q8
#undef matmul_q4

#if X86_SIMD

#define BLOCK 8 /* rows per pass: one per float lane */

/* The first row of the block for rows i0..: i0, or rows - 8 when fewer than eight rows are left, so that
 * the last block overlaps the one before rather than running past the matrix (rows >= 8). */
static inline int block_start(int i0, int rows) { return i0 + BLOCK <= rows ? i0 : rows - BLOCK; }

/* ---- shared by q8 and q4 ---- */

#define EIGHT(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7)

/*
 * One group's float part for the block: lane k of val += ((float)isum[k] * ws_k) * xs, where ws_k =
 * scales[k * stride] (row k's scale of this group). vcvtdq2ps rounds to nearest even like the scalar cast
 * (float)isum, which is exact anyway for the group sizes the options allow (|isum| <= 256 * 128 * 128 < 2^24).
 * Eight scalar loads measure faster than vgatherdps here.
 */
X86_AVX2_INLINE __m256 group_float_part(__m256 val, __m256i isum, const float *scales, size_t stride, float xs) {
    __m256 ws = _mm256_setr_ps(scales[0], scales[stride], scales[2 * stride], scales[3 * stride], scales[4 * stride],
                               scales[5 * stride], scales[6 * stride], scales[7 * stride]);
    return _mm256_add_ps(val, _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(isum), ws), _mm256_set1_ps(xs)));
}

/* `want` bytes at p (want <= `size`, size 8 or 16) in the low bytes of a vector. The bytes after them are
 * whatever follows p when that is still inside the tensor (which ends at `end`), else zeros; the caller
 * multiplies them by zero activations. */
X86_AVX2_INLINE __m128i load_partial(const void *p, int want, int size, const uint8_t *end) {
    if (end - (const uint8_t *)p >= size) {
        return size == 16 ? _mm_loadu_si128((const __m128i *)p) : _mm_loadl_epi64((const __m128i *)p);
    }
    uint8_t buf[16] = {0};
    memcpy(buf, p, (size_t)want);
    return _mm_loadu_si128((const __m128i *)buf);
}

X86_AVX2_INLINE __m256i zext128(__m128i v) { return _mm256_inserti128_si256(_mm256_setzero_si256(), v, 0); }

X86_AVX2_INLINE __m128i load16(const void *p) { return _mm_loadu_si128((const __m128i *)p); }

X86_AVX2_INLINE __m128i load8(const void *p) { return _mm_loadl_epi64((const __m128i *)p); }

/* ---- q8 ---- */

X86_AVX2_INLINE __m256i q8_dot16(__m128i w, __m256i xv) {
    return _mm256_madd_epi16(_mm256_cvtepi8_epi16(w), xv);
}

/* Rows p[0..8) (row k at p + k * cols, its scales at ws + k * ngroups) into out[0..8). */
X86_AVX2 static void q8_block(float *out, const int8_t *xq, const float *xs, const int8_t *p, const float *ws,
                              int cols, int group_size, const int8_t *xpad, const uint8_t *w_end) {
    size_t stride = (size_t)cols;
    int ngroups = group_count(cols, group_size);
    __m256 val = _mm256_setzero_ps();
    for (int g = 0; g < ngroups; g++) {
        int start = g * group_size;
        int end = start + group_size < cols ? start + group_size : cols;
#define Q8_ZERO(k) __m256i a##k = _mm256_setzero_si256();
        EIGHT(Q8_ZERO)
        int j = start;
        for (; j + 16 <= end; j += 16) {
            __m256i xv = _mm256_cvtepi8_epi16(load16(xq + j));
#define Q8_ROW(k) a##k = _mm256_add_epi32(a##k, q8_dot16(load16(p + k * stride + j), xv));
            EIGHT(Q8_ROW)
        }
        if (j < end) { /* the end of a row, fewer than 16 columns: activations zero-padded */
            __m256i xv = _mm256_cvtepi8_epi16(load16(xpad));
#define Q8_TAIL(k) a##k = _mm256_add_epi32(a##k, q8_dot16(load_partial(p + k * stride + j, end - j, 16, w_end), xv));
            EIGHT(Q8_TAIL)
        }
        __m256i isum = x86_hsum8_epi32(a0, a1, a2, a3, a4, a5, a6, a7);
        val = group_float_part(val, isum, ws + g, (size_t)ngroups, xs[g]);
    }
    _mm256_storeu_ps(out, val);
}

X86_AVX2 static void matmul_q8_avx2(float *out, const int8_t *xq, const float *xs, const int8_t *w, const float *ws,
                                    int rows, int cols, int group_size) {
    int ngroups = group_count(cols, group_size);
    const uint8_t *w_end = (const uint8_t *)w + (size_t)rows * (size_t)cols;
    /* The activations of the last group's partial chunk (if any), zero-padded to 16. */
    int tail = (cols - (ngroups - 1) * group_size) % 16;
    int8_t xpad[16] = {0};
    memcpy(xpad, xq + cols - tail, (size_t)tail);
    for (int i0 = 0; i0 < rows; i0 += BLOCK) {
        int first = block_start(i0, rows);
        q8_block(out + first, xq, xs, w + (size_t)first * (size_t)cols, ws + (size_t)first * (size_t)ngroups, cols,
                 group_size, xpad, w_end);
    }
}

/* ---- q4 ---- */

/*
 * A q4 byte holds column j (even) in its low nibble and j + 1 in its high nibble, as n = q + 8 in 0..15.
 * The nibbles are split into a vector of the even columns' n followed by the odd columns' n, and the
 * activations are put in the same order (evens, odds) by a byte shuffle, once per block. vpmaddubsw
 * multiplies unsigned n by signed x (pair sums <= 2 * 15 * 128: no saturation); the offset is taken off
 * through the accumulators' starting value, -8 * sum x: sum (n - 8) x = sum n x - 8 sum x.
 */

/* 32 activations as their 16 even-index bytes, then their 16 odd-index bytes. */
X86_AVX2_INLINE __m256i q4_x32(const int8_t *x) {
    const __m256i split = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, /* each lane */
                                           0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    __m256i v = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)x), split);
    /* per lane [evens 8, odds 8] -> [evens of lane 0, evens of lane 1, odds of lane 0, odds of lane 1] */
    return _mm256_permute4x64_epi64(v, 0xD8);
}

/* 16 activations as [evens 8, odds 8], zero-extended to 256 bits. */
X86_AVX2_INLINE __m256i q4_x16(const int8_t *x) {
    const __m128i split = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    return zext128(_mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)x), split));
}

/* sum n * x over 32 columns (16 bytes b) -> int32 partial sums. */
X86_AVX2_INLINE __m256i q4_dot32(__m128i b, __m256i xv) {
    __m256i n = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(b, 4), b), _mm256_set1_epi8(0x0F));
    return _mm256_madd_epi16(_mm256_maddubs_epi16(n, xv), _mm256_set1_epi16(1));
}

/* sum n * x over 16 columns (8 bytes, the low half of b) -> int32 partial sums. */
X86_AVX2_INLINE __m256i q4_dot16(__m128i b, __m256i xv) {
    __m128i n = _mm_and_si128(_mm_unpacklo_epi64(b, _mm_srli_epi16(b, 4)), _mm_set1_epi8(0x0F));
    return _mm256_madd_epi16(_mm256_maddubs_epi16(zext128(n), xv), _mm256_set1_epi16(1));
}

/* -8 * the sum of the activations in xv, as int32 partial sums. */
X86_AVX2_INLINE __m256i q4_offset(__m256i xv) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), xv), _mm256_set1_epi16(-8));
}

/*
 * q4z (`words` not NULL: its group words, row k's at words + k * ngroups) has its codes n where q4 has q + 8:
 * the block's sums start at 0 instead of -8 * sum x, and after them each row's z * sum x comes off (exact
 * int32); the scales are the words' binary16 values, decoded by the contract's bit formula.
 */
X86_AVX2 static void q4_block(float *out, const int8_t *xq, const float *xs, const uint8_t *p, const float *ws,
                              const uint16_t *words, int cols, int group_size, const int8_t *xpad,
                              const uint8_t *w_end) {
    size_t stride = ((size_t)cols + 1) / 2;
    int ngroups = group_count(cols, group_size);
    __m256 val = _mm256_setzero_ps();
    for (int g = 0; g < ngroups; g++) {
        int start = g * group_size;
        int end = start + group_size < cols ? start + group_size : cols;
        /* The offset first: every row starts from -8 * sum x over the group (q4z: from 0). */
        __m256i offset = _mm256_setzero_si256();
        int j = start;
        for (; words == NULL && j + 32 <= end; j += 32) {
            offset = _mm256_add_epi32(offset, q4_offset(_mm256_loadu_si256((const __m256i *)(xq + j))));
        }
        for (; words == NULL && j < end; j += 16) {
            offset = _mm256_add_epi32(offset, q4_offset(zext128(load16(j + 16 <= end ? xq + j : xpad))));
        }
#define Q4_START(k) __m256i a##k = offset;
        EIGHT(Q4_START)
        j = start; /* even, as the group size is */
        for (; j + 32 <= end; j += 32) {
            __m256i xv = q4_x32(xq + j);
#define Q4_ROW32(k) a##k = _mm256_add_epi32(a##k, q4_dot32(load16(p + k * stride + j / 2), xv));
            EIGHT(Q4_ROW32)
        }
        /* Fewer than 32 columns left: 16 at a time, the last chunk of a row perhaps partial (activations
         * zero-padded, its bytes loaded without reading past the tensor). */
        for (; j < end; j += 16) {
            if (j + 16 <= end) {
                __m256i xv = q4_x16(xq + j);
#define Q4_ROW16(k) a##k = _mm256_add_epi32(a##k, q4_dot16(load8(p + k * stride + j / 2), xv));
                EIGHT(Q4_ROW16)
            } else {
                __m256i xv = q4_x16(xpad);
                int want = (end - j + 1) / 2;
#define Q4_TAIL(k) a##k = _mm256_add_epi32(a##k, q4_dot16(load_partial(p + k * stride + j / 2, want, 8, w_end), xv));
                EIGHT(Q4_TAIL)
            }
        }
        __m256i isum = x86_hsum8_epi32(a0, a1, a2, a3, a4, a5, a6, a7);
        if (words == NULL) {
            val = group_float_part(val, isum, ws + g, (size_t)ngroups, xs[g]);
            continue;
        }
        int32_t xsum = 0;
        for (j = start; j < end; j++) {
            xsum += xq[j];
        }
        const uint16_t *w = words + g;
        size_t n = (size_t)ngroups;
        __m256i word = _mm256_setr_epi32(w[0], w[n], w[2 * n], w[3 * n], w[4 * n], w[5 * n], w[6 * n], w[7 * n]);
        __m256i zero = _mm256_and_si256(word, _mm256_set1_epi32(15));
        isum = _mm256_sub_epi32(isum, _mm256_mullo_epi32(zero, _mm256_set1_epi32(xsum)));
        __m256i bits = _mm256_add_epi32(_mm256_slli_epi32(_mm256_and_si256(word, _mm256_set1_epi32(0xFFF0)), 13),
                                        _mm256_set1_epi32(0x38000000));
        __m256 scale = _mm256_castsi256_ps(bits);
        val = _mm256_add_ps(val, _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(isum), scale), _mm256_set1_ps(xs[g])));
    }
    _mm256_storeu_ps(out, val);
}

X86_AVX2 static void matmul_q4_avx2(float *out, const int8_t *xq, const float *xs, const uint8_t *w, const float *ws,
                                    const uint16_t *words, int rows, int cols, int group_size) {
    int ngroups = group_count(cols, group_size);
    size_t row_bytes = ((size_t)cols + 1) / 2;
    const uint8_t *w_end = w + (size_t)rows * row_bytes;
    int tail = (cols - (ngroups - 1) * group_size) % 16;
    int8_t xpad[16] = {0};
    memcpy(xpad, xq + cols - tail, (size_t)tail);
    for (int i0 = 0; i0 < rows; i0 += BLOCK) {
        int first = block_start(i0, rows);
        size_t first_group = (size_t)first * (size_t)ngroups;
        q4_block(out + first, xq, xs, w + (size_t)first * row_bytes, words ? NULL : ws + first_group,
                 words ? words + first_group : NULL, cols, group_size, xpad, w_end);
    }
}

/* ---- x86_panels: rows in panels of eight (x86.h; layouts.py makes them) ---- */

/*
 * One panel per pass, the matrix read front to back as a single stream. Passes over four panels at once, which
 * share each activation load, measured faster with the weights in cache but 25-40% slower once they come from
 * memory (four streams), which is where a model of any size runs (bench/README.md, "The peer").
 */

/* Rows of output panel `panel` that exist: eight, or what the matrix has left in its last panel. */
static inline int panel_rows(int panel, int rows) {
    int left = rows - panel * X86_PANEL_ROWS;
    return left < X86_PANEL_ROWS ? left : X86_PANEL_ROWS;
}

/* Stores the first n (1..8) lanes of v at dst. */
X86_AVX2_INLINE void store_rows(float *dst, __m256 v, int n) {
    if (n == X86_PANEL_ROWS) {
        _mm256_storeu_ps(dst, v);
        return;
    }
    float lanes[X86_PANEL_ROWS];
    _mm256_storeu_ps(lanes, v);
    memcpy(dst, lanes, (size_t)n * sizeof(float));
}

/*
 * fp32: a panel is, per column j, the eight rows' values side by side (32 bytes). Lane k of the accumulator is
 * row k: acc += w[j] * x[j] for j in order from 0.0f, one multiply and one add, as the reference loop does.
 */
X86_AVX2 static void matmul_f32_panels(float *out, const float *x, const float *w, int rows, int cols) {
    int panels = (rows + X86_PANEL_ROWS - 1) / X86_PANEL_ROWS;
    const float *p = w;
    for (int panel = 0; panel < panels; panel++) {
        __m256 acc = _mm256_setzero_ps();
        for (int j = 0; j < cols; j++, p += X86_PANEL_ROWS) {
            acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(p), _mm256_broadcast_ss(x + j)));
        }
        store_rows(out + panel * X86_PANEL_ROWS, acc, panel_rows(panel, rows));
    }
}

/* One group's float part for a panel: lane k of val += ((float)isum[k] * scale_k) * xs, the eight rows' scales
 * side by side at `scales`. */
X86_AVX2_INLINE __m256 panel_float_part(__m256 val, __m256i isum, const float *scales, float xs) {
    __m256 product = _mm256_mul_ps(_mm256_cvtepi32_ps(isum), _mm256_loadu_ps(scales));
    return _mm256_add_ps(val, _mm256_mul_ps(product, _mm256_set1_ps(xs)));
}

/*
 * q8: a panel is, per pair of columns (2c, 2c + 1), the eight rows' two bytes side by side (16 bytes); scales per
 * group, the eight rows' side by side. Sign-extended to int16, a pair row is what vpmaddwd multiplies by the
 * activation pair broadcast to every lane: lane k gets row k's two products summed, exact for every int8 (the
 * int32 lanes cannot overflow: |sum| <= 2 * 128 * 128). The activations are sign-extended 32 at a time into xw,
 * whose pairs are then broadcast; two accumulators (even and odd pairs) keep two chains of adds in flight.
 */
/* Pair c of xw (the activations as int16) broadcast as a 32-bit word, times the pair row at p. */
X86_AVX2_INLINE __m256i q8_pair(const int8_t *p, const int16_t *xw) {
    int32_t word;
    memcpy(&word, xw, sizeof word);
    return _mm256_madd_epi16(_mm256_cvtepi8_epi16(load16(p)), _mm256_set1_epi32(word));
}

#define CHUNK 32 /* activations sign-extended to int16 at a time */

X86_AVX2 static void matmul_q8_panels(float *out, const int8_t *xq, const float *xs, const int8_t *w, const float *ws,
                                      int rows, int cols, int group_size) {
    int ngroups = group_count(cols, group_size);
    int panels = (rows + X86_PANEL_ROWS - 1) / X86_PANEL_ROWS;
    const int8_t *p = w;
    const float *s = ws;
    int16_t xw[CHUNK];
    for (int panel = 0; panel < panels; panel++) {
        __m256 val = _mm256_setzero_ps();
        for (int g = 0; g < ngroups; g++, s += X86_PANEL_ROWS) {
            int start = g * group_size;
            int end = start + group_size < cols ? start + group_size : cols; /* even: cols and the group size are */
            __m256i even = _mm256_setzero_si256(), odd = _mm256_setzero_si256();
            for (int j = start; j < end; j += CHUNK) {
                int n = end - j < CHUNK ? end - j : CHUNK;
                if (n == CHUNK) {
                    _mm256_storeu_si256((__m256i *)xw, _mm256_cvtepi8_epi16(load16(xq + j)));
                    _mm256_storeu_si256((__m256i *)(xw + 16), _mm256_cvtepi8_epi16(load16(xq + j + 16)));
                } else {
                    for (int t = 0; t < n; t++) {
                        xw[t] = xq[j + t];
                    }
                }
                int c = 0;
                for (; c + 4 <= n; c += 4, p += 32) {
                    even = _mm256_add_epi32(even, q8_pair(p, xw + c));
                    odd = _mm256_add_epi32(odd, q8_pair(p + 16, xw + c + 2));
                }
                if (c < n) {
                    even = _mm256_add_epi32(even, q8_pair(p, xw + c));
                    p += 16;
                }
            }
            val = panel_float_part(val, _mm256_add_epi32(even, odd), s, xs[g]);
        }
        store_rows(out + panel * X86_PANEL_ROWS, val, panel_rows(panel, rows));
    }
}

/*
 * q4 and q4z: a panel is, per block of eight columns 8b..8b+7, 32 bytes: byte 4k + m holds row k's column 8b + m in
 * its low nibble and column 8b + 4 + m in its high nibble, each as the unsigned code n (q + 8 for q4; q4z's n).
 * The two nibble vectors are multiplied by vpmaddubsw (unsigned n by signed x) against the block's two activation
 * quads broadcast to every lane: lane k's 16-bit pairs hold row k's sums of two products. Sums of at most eight
 * such vectors fit int16 (8 * 2 * 15 * 128 = 30720), so they are widened to int32 every 32 columns. The offset
 * comes off through the group's activation sum: q4 sum (n - 8) x = sum n x - 8 sum x; q4z sum (n - z) x per row.
 */
X86_AVX2_INLINE __m256i broadcast4(const int8_t *x) {
    int32_t quad;
    memcpy(&quad, x, sizeof quad);
    return _mm256_set1_epi32(quad);
}

X86_AVX2_INLINE __m256i q4_panel_block(__m256i sum16, const uint8_t *p, const int8_t *xq) {
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    __m256i bytes = _mm256_loadu_si256((const __m256i *)p);
    __m256i lo = _mm256_and_si256(bytes, nibble);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), nibble);
    sum16 = _mm256_add_epi16(sum16, _mm256_maddubs_epi16(lo, broadcast4(xq)));
    return _mm256_add_epi16(sum16, _mm256_maddubs_epi16(hi, broadcast4(xq + 4)));
}

/* The sum of xq[start..end) (end - start a multiple of 8), exact. */
X86_AVX2_INLINE int32_t activation_sum(const int8_t *xq, int start, int end) {
    __m256i acc = _mm256_setzero_si256();
    int j = start;
    for (; j + 32 <= end; j += 32) {
        __m256i pairs = _mm256_maddubs_epi16(_mm256_set1_epi8(1), _mm256_loadu_si256((const __m256i *)(xq + j)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
    }
    int32_t lanes[8];
    _mm256_storeu_si256((__m256i *)lanes, acc);
    int32_t sum = lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
    for (; j < end; j++) {
        sum += xq[j];
    }
    return sum;
}

/* q4z's group float part for a panel: the eight rows' words (side by side at `words`) give each row's zero point,
 * taken off as z * xsum, and scale (the contract's bit formula). */
X86_AVX2_INLINE __m256 q4z_float_part(__m256 val, __m256i nsum, const uint16_t *words, int32_t xsum, float xs) {
    __m256i word = _mm256_cvtepu16_epi32(load16(words));
    __m256i zero = _mm256_and_si256(word, _mm256_set1_epi32(15));
    __m256i isum = _mm256_sub_epi32(nsum, _mm256_mullo_epi32(zero, _mm256_set1_epi32(xsum)));
    __m256i bits = _mm256_add_epi32(_mm256_slli_epi32(_mm256_and_si256(word, _mm256_set1_epi32(0xFFF0)), 13),
                                    _mm256_set1_epi32(0x38000000));
    __m256 product = _mm256_mul_ps(_mm256_cvtepi32_ps(isum), _mm256_castsi256_ps(bits));
    return _mm256_add_ps(val, _mm256_mul_ps(product, _mm256_set1_ps(xs)));
}

/* The groups whose activation sums are computed once per matmul (a stack array; more groups than this, e.g. 16384
 * columns in groups of 32, compute them per panel). */
#define Q4_SUMS_MAX 512

/* q4 (ws, words NULL) or q4z (words, ws NULL) in panels. */
X86_AVX2 static void matmul_q4_panels(float *out, const int8_t *xq, const float *xs, const uint8_t *w, const float *ws,
                                      const uint16_t *words, int rows, int cols, int group_size) {
    int ngroups = group_count(cols, group_size);
    int panels = (rows + X86_PANEL_ROWS - 1) / X86_PANEL_ROWS;
    const __m256i ones = _mm256_set1_epi16(1);
    int32_t sums[Q4_SUMS_MAX];
    int summed = ngroups <= Q4_SUMS_MAX;
    for (int g = 0; summed && g < ngroups; g++) {
        int start = g * group_size;
        sums[g] = activation_sum(xq, start, start + group_size < cols ? start + group_size : cols);
    }
    const uint8_t *p = w;
    size_t at = 0; /* the panel's group entries: scales or words */
    for (int panel = 0; panel < panels; panel++) {
        __m256 val = _mm256_setzero_ps();
        for (int g = 0; g < ngroups; g++, at += X86_PANEL_ROWS) {
            int start = g * group_size;
            int end = start + group_size < cols ? start + group_size : cols; /* a multiple of 8 columns */
            int32_t xsum = summed ? sums[g] : activation_sum(xq, start, end);
            /* q4: the row sums start from -8 * sum x; q4z: from 0, its zero points come off per row after. */
            __m256i isum = _mm256_set1_epi32(words == NULL ? -8 * xsum : 0);
            int j = start;
            for (; j + 32 <= end; j += 32, p += 128) {
                __m256i a = q4_panel_block(_mm256_setzero_si256(), p, xq + j);
                __m256i b = q4_panel_block(_mm256_setzero_si256(), p + 32, xq + j + 8);
                a = q4_panel_block(a, p + 64, xq + j + 16);
                b = q4_panel_block(b, p + 96, xq + j + 24);
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_add_epi16(a, b), ones));
            }
            for (; j < end; j += 8, p += 32) { /* fewer than 32 columns left in the group */
                __m256i block = q4_panel_block(_mm256_setzero_si256(), p, xq + j);
                isum = _mm256_add_epi32(isum, _mm256_madd_epi16(block, ones));
            }
            val = words == NULL ? panel_float_part(val, isum, ws + at, xs[g])
                                : q4z_float_part(val, isum, words + at, xsum, xs[g]);
        }
        store_rows(out + panel * X86_PANEL_ROWS, val, panel_rows(panel, rows));
    }
}

#endif /* X86_SIMD */

/*
 * The same panels read one value at a time, for a CPU without AVX2 (and a compiler or host without the SIMD
 * code): each row summed in the reference's order, so the results are the reference's bit for bit.
 */

static void matmul_f32_panels_scalar(float *out, const float *x, const float *w, int rows, int cols) {
    for (int r = 0; r < rows; r++) {
        float val = 0.0f;
        for (int j = 0; j < cols; j++) {
            val += w[x86_panel_index(r, j, cols, 1)] * x[j];
        }
        out[r] = val;
    }
}

static void matmul_q8_panels_scalar(float *out, const int8_t *xq, const float *xs, const int8_t *w, const float *ws,
                                    int rows, int cols, int group_size) {
    int ngroups = group_count(cols, group_size);
    for (int r = 0; r < rows; r++) {
        float val = 0.0f;
        for (int g = 0; g < ngroups; g++) {
            int start = g * group_size;
            int end = start + group_size < cols ? start + group_size : cols;
            int32_t isum = 0;
            for (int j = start; j < end; j++) {
                isum += (int32_t)w[x86_panel_index(r, j, cols, 2)] * (int32_t)xq[j];
            }
            val += ((float)isum * ws[x86_panel_group_index(r, g, ngroups)]) * xs[g];
        }
        out[r] = val;
    }
}

static void matmul_q4_panels_scalar(float *out, const int8_t *xq, const float *xs, const uint8_t *w, const float *ws,
                                    const uint16_t *words, int rows, int cols, int group_size) {
    int ngroups = group_count(cols, group_size);
    for (int r = 0; r < rows; r++) {
        float val = 0.0f;
        for (int g = 0; g < ngroups; g++) {
            int start = g * group_size;
            int end = start + group_size < cols ? start + group_size : cols;
            int32_t nsum = 0, xsum = 0;
            for (int j = start; j < end; j++) {
                nsum += x86_panel_code(w, r, j, cols) * (int32_t)xq[j];
                xsum += xq[j];
            }
            size_t at = x86_panel_group_index(r, g, ngroups);
            if (words == NULL) {
                val += ((float)(nsum - 8 * xsum) * ws[at]) * xs[g];
            } else {
                val += ((float)(nsum - q4z_zero(words[at]) * xsum) * q4z_scale(words[at])) * xs[g];
            }
        }
        out[r] = val;
    }
}

void matmul_f32(float *out, const float *x, const float *w, int rows, int cols) {
#if X86_SIMD
    if (x86_have_avx2()) {
        matmul_f32_panels(out, x, w, rows, cols);
        return;
    }
#endif
    matmul_f32_panels_scalar(out, x, w, rows, cols); /* fp32 matrices are always in panels */
}

void matmul_q8(float *out, const int8_t *xq, const float *xs, const int8_t *w, const float *ws, int rows, int cols,
               int group_size) {
    if (x86_panel_layout(cols, group_size, 0)) {
#if X86_SIMD
        if (x86_have_avx2()) {
            matmul_q8_panels(out, xq, xs, w, ws, rows, cols, group_size);
            return;
        }
#endif
        matmul_q8_panels_scalar(out, xq, xs, w, ws, rows, cols, group_size);
        return;
    }
#if X86_SIMD
    if (rows >= BLOCK && group_size % 16 == 0 && x86_have_avx2()) {
        matmul_q8_avx2(out, xq, xs, w, ws, rows, cols, group_size);
        return;
    }
#endif
    ref_matmul_q8(out, xq, xs, w, ws, rows, cols, group_size);
}

/* q4 (ws) or q4z (words): the panel kernels when the layout applies, else the row-major ones. */
static void matmul_4bit(float *out, const int8_t *xq, const float *xs, const uint8_t *w, const float *ws,
                        const uint16_t *words, int rows, int cols, int group_size) {
    if (x86_panel_layout(cols, group_size, 1)) {
#if X86_SIMD
        if (x86_have_avx2()) {
            matmul_q4_panels(out, xq, xs, w, ws, words, rows, cols, group_size);
            return;
        }
#endif
        matmul_q4_panels_scalar(out, xq, xs, w, ws, words, rows, cols, group_size);
        return;
    }
#if X86_SIMD
    if (rows >= BLOCK && group_size % 16 == 0 && x86_have_avx2()) {
        matmul_q4_avx2(out, xq, xs, w, ws, words, rows, cols, group_size);
        return;
    }
#endif
    if (words == NULL) {
        ref_matmul_q4(out, xq, xs, w, ws, rows, cols, group_size);
    } else {
        ref_matmul_q4z(out, xq, xs, w, words, rows, cols, group_size);
    }
}

void matmul_q4(float *out, const int8_t *xq, const float *xs, const uint8_t *w, const float *ws, int rows, int cols,
               int group_size) {
    matmul_4bit(out, xq, xs, w, ws, NULL, rows, cols, group_size);
}

/* q4z: q4's kernels with the group words (q4z.c compiles the reference's as ref_matmul_q4z). */
void matmul_q4z(float *out, const int8_t *xq, const float *xs, const uint8_t *w, const uint16_t *wg, int rows,
                int cols, int group_size) {
    matmul_4bit(out, xq, xs, w, NULL, wg, rows, cols, group_size);
}
