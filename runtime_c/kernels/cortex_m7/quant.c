/*
 * Group quantization at run time for the Cortex-M7; bit-identical to kernels/ref/quant.c.
 *
 * quantize_activations uses FPv5 instructions for what the reference spells with library calls and
 * compares: VMAXNM for the running max of |x| (it ignores a NaN, as "a > amax" does), and VCVTA, which
 * converts to an integer rounding half away from zero, i.e. roundf and the conversion in one instruction
 * (a NaN gives 0, as the reference's conversion of roundf(NaN) does on this core); the clamp to
 * [-127, 127] is then done on the integer, which is the same as clamping the rounded float.
 * The embedding lookups are the reference's arithmetic; a quantized table in the build-time layout m7_panels
 * (m7_layout.h: the table doubles as the classifier, which matmul.c reads that way) is read through it.
 */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include <arm_acle.h>

#include "kernels/cortex_m7/m7_layout.h"
#include "kernels/kernels.h"
#include "kernels/ref/ref.h"

/* The reference file provides embed_f32 and the row-major lookups; the rest is replaced below. */
#define quantize_activations ref_quantize_activations
#define embed_q8 ref_embed_q8
#define embed_q4 ref_embed_q4
#include "kernels/ref/quant.c"
#undef quantize_activations
#undef embed_q8
#undef embed_q4

void embed_q8(float *out, const int8_t *table, const float *scales, int row, int dim, int group_size) {
    if (!m7_panel_layout(dim, group_size, 0)) {
        ref_embed_q8(out, table, scales, row, dim, group_size);
        return;
    }
    int ngroups = group_count(dim, group_size);
    for (int j = 0; j < dim; j++) {
        out[j] = (float)m7_q8_at(table, dim, row, j) * m7_scale_at(scales, ngroups, 4, row, j / group_size);
    }
}

void embed_q4(float *out, const uint8_t *table, const float *scales, int row, int dim, int group_size) {
    if (!m7_panel_layout(dim, group_size, 1)) {
        ref_embed_q4(out, table, scales, row, dim, group_size);
        return;
    }
    int ngroups = group_count(dim, group_size);
    for (int j = 0; j < dim; j++) {
        out[j] = (float)m7_q4_at(table, dim, row, j) * m7_scale_at(scales, ngroups, 2, row, j / group_size);
    }
}

/* roundf(r) converted to int32 (saturating), in one instruction. */
static inline int32_t round_away(float r) {
    float converted;
    __asm__("vcvta.s32.f32 %0, %1" : "=t"(converted) : "t"(r));
    int32_t q;
    memcpy(&q, &converted, sizeof q);
    return q;
}

void quantize_activations(int8_t *xq, float *xs, const float *x, int n, int group_size) {
    for (int start = 0, g = 0; start < n; start += group_size, g++) {
        int end = start + group_size < n ? start + group_size : n;
        float amax = 0.0f;
        int j = start;
        for (; j + 4 <= end; j += 4) {
            amax = fmaxf(amax, fabsf(x[j]));
            amax = fmaxf(amax, fabsf(x[j + 1]));
            amax = fmaxf(amax, fabsf(x[j + 2]));
            amax = fmaxf(amax, fabsf(x[j + 3]));
        }
        for (; j < end; j++) {
            amax = fmaxf(amax, fabsf(x[j]));
        }
        float scale = amax / ACT_QMAX;
        xs[g] = scale;
        if (scale == 0.0f) { /* an all-zero group: its integers are 0 rather than 0/0 */
            memset(xq + start, 0, (size_t)(end - start));
            continue;
        }
        j = start;
        if (scale >= 0x1p-126f) {
            /* A normal scale is amax / 127 to within half an ulp, so |x / scale| <= 127.00002 and the
             * rounded value is within [-127, 127]: no clamp (a NaN quotient converts to 0, as above). */
            for (; j + 4 <= end; j += 4) {
                int32_t q0 = round_away(x[j] / scale), q1 = round_away(x[j + 1] / scale);
                int32_t q2 = round_away(x[j + 2] / scale), q3 = round_away(x[j + 3] / scale);
                xq[j] = (int8_t)q0;
                xq[j + 1] = (int8_t)q1;
                xq[j + 2] = (int8_t)q2;
                xq[j + 3] = (int8_t)q3;
            }
        }
        for (; j < end; j++) {
            /* Otherwise x/scale can land far above 127 (a subnormal scale is amax / 127 only roughly):
             * SSAT to [-128, 127], then -128 to -127. */
            int32_t q = __ssat(round_away(x[j] / scale), 8);
            xq[j] = (int8_t)(q < -127 ? -127 : q);
        }
    }
}
