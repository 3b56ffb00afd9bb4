/*
 * Matrix-vector products for x86-64 with AVX2, eight rows per pass (see x86.h for how the ISA is chosen
 * and the exactness rules).
 *
 * fp32: each lane of an accumulator is one row, summed over j in order from 0.0f, one multiply and one
 *       add per column, exactly as the reference loop; eight columns of eight rows are multiplied by x
 *       row-wise, then an 8x8 transpose gives one vector of products per column (x86_dot8x8). Two blocks of
 *       eight rows are interleaved to hide the add latency.
 * q8/q4: per group, the exact int32 dot products of eight rows (vpmaddwd on sign-extended int8 for q8;
 *       vpmaddubsw on the unsigned nibbles for q4, whose +8 offset is taken off as 8 * sum(x), and for q4z,
 *       whose zero points are taken off as z * sum(x) per row), reduced
 *       to one vector of eight row sums; then the float part ((float)isum * ws) * xs is added to each
 *       row's lane, group after group, as in the reference.
 * When rows is not a multiple of 8 the last block overlaps the one before it (those rows are computed
 * twice, the same way). Matrices of fewer than 8 rows, and group sizes that are not a multiple of 16,
 * use the reference code.
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

/* ---- fp32 ---- */

X86_AVX2 static void matmul_f32_avx2(float *out, const float *x, const float *w, int rows, int cols) {
    size_t stride = (size_t)cols;
    int cols8 = cols & ~7;
    int i0 = 0;
    /* Sixteen rows per pass: two independent chains of `cols` dependent adds. */
    for (; i0 + 2 * BLOCK <= rows; i0 += 2 * BLOCK) {
        const float *a = w + (size_t)i0 * stride;
        const float *b = a + BLOCK * stride;
        __m256 acc_a = _mm256_setzero_ps();
        __m256 acc_b = _mm256_setzero_ps();
        int j = 0;
        for (; j < cols8; j += 8) {
            acc_a = x86_dot8x8(acc_a, a + j, stride, x + j);
            acc_b = x86_dot8x8(acc_b, b + j, stride, x + j);
        }
        for (; j < cols; j++) {
            acc_a = x86_dot8x1(acc_a, a + j, stride, x + j);
            acc_b = x86_dot8x1(acc_b, b + j, stride, x + j);
        }
        _mm256_storeu_ps(out + i0, acc_a);
        _mm256_storeu_ps(out + i0 + BLOCK, acc_b);
    }
    /* The rest, eight rows at a time, the last block overlapping. */
    for (; i0 < rows; i0 += BLOCK) {
        int first = block_start(i0, rows);
        const float *a = w + (size_t)first * stride;
        __m256 acc = _mm256_setzero_ps();
        int j = 0;
        for (; j < cols8; j += 8) {
            acc = x86_dot8x8(acc, a + j, stride, x + j);
        }
        for (; j < cols; j++) {
            acc = x86_dot8x1(acc, a + j, stride, x + j);
        }
        _mm256_storeu_ps(out + first, acc);
    }
}

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

#endif /* X86_SIMD */

void matmul_f32(float *out, const float *x, const float *w, int rows, int cols) {
#if X86_SIMD
    if (rows >= BLOCK && x86_have_avx2()) {
        matmul_f32_avx2(out, x, w, rows, cols);
        return;
    }
#endif
    ref_matmul_f32(out, x, w, rows, cols);
}

void matmul_q8(float *out, const int8_t *xq, const float *xs, const int8_t *w, const float *ws, int rows, int cols,
               int group_size) {
#if X86_SIMD
    if (rows >= BLOCK && group_size % 16 == 0 && x86_have_avx2()) {
        matmul_q8_avx2(out, xq, xs, w, ws, rows, cols, group_size);
        return;
    }
#endif
    ref_matmul_q8(out, xq, xs, w, ws, rows, cols, group_size);
}

void matmul_q4(float *out, const int8_t *xq, const float *xs, const uint8_t *w, const float *ws, int rows, int cols,
               int group_size) {
#if X86_SIMD
    if (rows >= BLOCK && group_size % 16 == 0 && x86_have_avx2()) {
        matmul_q4_avx2(out, xq, xs, w, ws, NULL, rows, cols, group_size);
        return;
    }
#endif
    ref_matmul_q4(out, xq, xs, w, ws, rows, cols, group_size);
}

/* q4z: q4's kernel with the group words (q4z.c compiles the reference's as ref_matmul_q4z). */
void matmul_q4z(float *out, const int8_t *xq, const float *xs, const uint8_t *w, const uint16_t *wg, int rows,
                int cols, int group_size) {
#if X86_SIMD
    if (rows >= BLOCK && group_size % 16 == 0 && x86_have_avx2()) {
        matmul_q4_avx2(out, xq, xs, w, NULL, wg, rows, cols, group_size);
        return;
    }
#endif
    ref_matmul_q4z(out, xq, xs, w, wg, rows, cols, group_size);
}
