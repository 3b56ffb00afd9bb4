/*
 * Activation quantization for x86-64 with AVX2 (see x86.h for how the ISA is chosen and the exactness
 * rules), and the embedding lookups, which read the x86_panels layout (matmul.c) where the build stored it: the
 * table doubles as the classifier, which matmul reads that way.
 *
 * Per group, eight values at a time: amax (the order of a maximum does not matter; max_ps(|x|, amax)
 * skips a NaN as the reference's `if (a > amax)` does), the float32 division x / scale, roundf and the
 * clamp. roundf (half away from zero) is built from exact steps: t = trunc(v), and v - t is exact, so
 * adding copysign(1, v) when |v - t| >= 0.5 gives roundf(v) for every float.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/ref/ref.h"
#include "kernels/x86/x86.h"

#define quantize_activations ref_quantize_activations
#define embed_f32 ref_embed_f32
#define embed_q8 ref_embed_q8
#define embed_q4 ref_embed_q4
#include "kernels/ref/quant.c"
#undef quantize_activations
#undef embed_f32
#undef embed_q8
#undef embed_q4

#if X86_SIMD

/* roundf(x[j] / scale) clamped to [-127, 127], for eight values, as int8 in the low 8 bytes. */
X86_AVX2_INLINE __m128i quantize8(const float *x, __m256 scale) {
    const __m256 sign_bit = _mm256_set1_ps(-0.0f);
    const __m256 half = _mm256_set1_ps(0.5f);
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 qmax = _mm256_set1_ps(ACT_QMAX);
    __m256 v = _mm256_div_ps(_mm256_loadu_ps(x), scale);
    __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256 frac = _mm256_andnot_ps(sign_bit, _mm256_sub_ps(v, t));
    __m256 step = _mm256_and_ps(_mm256_cmp_ps(frac, half, _CMP_GE_OQ), _mm256_or_ps(one, _mm256_and_ps(v, sign_bit)));
    __m256 r = _mm256_add_ps(t, step);
    r = _mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(-ACT_QMAX)), qmax);
    __m256i i32 = _mm256_cvtps_epi32(r); /* integers already: exact */
    __m128i i16 = _mm_packs_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
    return _mm_packs_epi16(i16, i16);
}

X86_AVX2 static void quantize_activations_avx2(int8_t *xq, float *xs, const float *x, int n, int group_size) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    for (int start = 0, g = 0; start < n; start += group_size, g++) {
        int end = start + group_size < n ? start + group_size : n;
        __m256 amax8 = _mm256_setzero_ps();
        int j = start;
        for (; j + 8 <= end; j += 8) {
            amax8 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + j), abs_mask), amax8);
        }
        float lanes[8];
        _mm256_storeu_ps(lanes, amax8);
        float amax = 0.0f;
        for (int k = 0; k < 8; k++) {
            if (lanes[k] > amax) {
                amax = lanes[k];
            }
        }
        for (; j < end; j++) {
            float a = fabsf(x[j]);
            if (a > amax) {
                amax = a;
            }
        }
        float scale = amax / ACT_QMAX;
        xs[g] = scale;
        if (scale == 0.0f) { /* an all-zero group: integers 0 rather than 0/0 */
            memset(xq + start, 0, (size_t)(end - start));
            continue;
        }
        __m256 scale8 = _mm256_set1_ps(scale);
        j = start;
        for (; j + 8 <= end; j += 8) {
            _mm_storel_epi64((__m128i *)(xq + j), quantize8(x + j, scale8));
        }
        for (; j < end; j++) {
            float r = roundf(x[j] / scale);
            if (r > ACT_QMAX) {
                r = ACT_QMAX;
            } else if (r < -ACT_QMAX) {
                r = -ACT_QMAX;
            }
            xq[j] = (int8_t)r;
        }
    }
}

#endif /* X86_SIMD */

void quantize_activations(int8_t *xq, float *xs, const float *x, int n, int group_size) {
#if X86_SIMD
    if (x86_have_avx2()) {
        quantize_activations_avx2(xq, xs, x, n, group_size);
        return;
    }
#endif
    ref_quantize_activations(xq, xs, x, n, group_size);
}

void embed_f32(float *out, const float *table, int row, int dim) {
    for (int j = 0; j < dim; j++) { /* fp32 tables are always in panels */
        out[j] = table[x86_panel_index(row, j, dim, 1)];
    }
}

void embed_q8(float *out, const int8_t *table, const float *scales, int row, int dim, int group_size) {
    if (!x86_panel_layout(dim, group_size, 0)) {
        ref_embed_q8(out, table, scales, row, dim, group_size);
        return;
    }
    int ngroups = group_count(dim, group_size);
    for (int j = 0; j < dim; j++) {
        float scale = scales[x86_panel_group_index(row, j / group_size, ngroups)];
        out[j] = (float)table[x86_panel_index(row, j, dim, 2)] * scale;
    }
}

void embed_q4(float *out, const uint8_t *table, const float *scales, int row, int dim, int group_size) {
    if (!x86_panel_layout(dim, group_size, 1)) {
        ref_embed_q4(out, table, scales, row, dim, group_size);
        return;
    }
    int ngroups = group_count(dim, group_size);
    for (int j = 0; j < dim; j++) {
        float scale = scales[x86_panel_group_index(row, j / group_size, ngroups)];
        out[j] = (float)(x86_panel_code(table, row, j, dim) - 8) * scale;
    }
}
