/*
 * NEON run-time quantization for AArch64 (Cortex-A55): activations to int8 groups for the integer matmuls
 * (once per matmul input, which becomes a noticeable share of a q8/q4 forward pass once the matmuls use
 * SDOT), and embedding rows back to float32. Replaces kernels/ref/quant.c, so it defines the same functions.
 *
 * Bit-identical to the reference (runtime_c/README.md, "Group quantization"): every step is an exact or
 * correctly rounded operation that the lanes perform independently.
 * - amax: each lane keeps the maximum of its elements with the reference's test `a > m`, which never
 *   picks a NaN, and the four lane maxima are then combined; a maximum does not depend on the order.
 * - xq = roundf(x / scale): an IEEE division (FDIV), then FRINTA, which rounds half away from zero exactly
 *   as roundf does; then the reference's clamp to [-127, 127] and a conversion of an integral value.
 */
#include <arm_neon.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "kernels/kernels.h"
#include "neon_common.h"

#define ACT_QMAX 127.0f

/* One element the scalar way (the group's last n % 8 elements); scale is not 0. */
static inline int8_t quantize_one(float x, float scale) {
    float r = roundf(x / scale);
    if (r > ACT_QMAX) { /* x / scale can land a hair above 127 at the group's maximum */
        r = ACT_QMAX;
    } else if (r < -ACT_QMAX) {
        r = -ACT_QMAX;
    }
    return (int8_t)r;
}

/* Four elements: divide, round half away from zero, clamp, convert (exact: the values are integers). */
static inline int32x4_t quantize4(float32x4_t x, float32x4_t scale) {
    float32x4_t r = vrndaq_f32(vdivq_f32(x, scale));
    r = vmaxq_f32(vminq_f32(r, vdupq_n_f32(ACT_QMAX)), vdupq_n_f32(-ACT_QMAX));
    return vcvtq_s32_f32(r);
}

void quantize_activations(int8_t *xq, float *xs, const float *x, int n, int group_size) {
    for (int start = 0, g = 0; start < n; start += group_size, g++) {
        int end = start + group_size < n ? start + group_size : n;

        float32x4_t lane_max = vdupq_n_f32(0.0f);
        int j = start;
        for (; j + 4 <= end; j += 4) {
            float32x4_t a = vabsq_f32(vld1q_f32(x + j));
            lane_max = vbslq_f32(vcgtq_f32(a, lane_max), a, lane_max); /* a > m is false for a NaN */
        }
        float amax = vmaxvq_f32(lane_max); /* lanes hold no NaN, so FMAXV's NaN rule never applies */
        for (; j < end; j++) {
            float a = fabsf(x[j]);
            if (a > amax) {
                amax = a;
            }
        }

        float scale = amax / ACT_QMAX;
        xs[g] = scale;
        if (scale == 0.0f) { /* an all-zero group: its integers are 0 rather than 0/0 */
            memset(xq + start, 0, (size_t)(end - start));
            continue;
        }
        float32x4_t sv = vdupq_n_f32(scale);
        j = start;
        for (; j + 8 <= end; j += 8) {
            int16x8_t wide = vcombine_s16(vmovn_s32(quantize4(vld1q_f32(x + j), sv)),
                                          vmovn_s32(quantize4(vld1q_f32(x + j + 4), sv)));
            vst1_s8(xq + j, vmovn_s16(wide)); /* |q| <= 127: the narrowing loses nothing */
        }
        for (; j < end; j++) {
            xq[j] = quantize_one(x[j], scale);
        }
    }
}

/*
 * The embedding lookups run once per token over `dim` values: not worth vectorising, written plainly. An fp32
 * table is always in the panel layout, a quantized one when panel_layout() says so (matmul.c): the table doubles
 * as the classifier, which matmul reads that way.
 */

void embed_f32(float *out, const float *table, int row, int dim) {
    const float *panel = table + (size_t)(row / 4) * 4 * (size_t)dim + (size_t)(row % 4);
    for (int j = 0; j < dim; j++) { /* fp32 tables are always in panels: column j is four floats */
        out[j] = panel[4 * (size_t)j];
    }
}

void embed_q8(float *out, const int8_t *table, const float *scales, int row, int dim, int group_size) {
    int ngroups = group_count(dim, group_size);
    if (panel_layout(dim, group_size, 0)) {
        const int8_t *panel = table + (size_t)(row / 4) * 4 * (size_t)dim + (size_t)(row % 4) * 4;
        const float *s = scales + (size_t)(row / 4) * 4 * (size_t)ngroups + (size_t)(row % 4);
        for (int j = 0; j < dim; j++) { /* column j: quad j / 4, byte j % 4 of this row's four */
            out[j] = (float)panel[(size_t)(j / 4) * 16 + (size_t)(j % 4)] * s[4 * (j / group_size)];
        }
        return;
    }
    const int8_t *q = table + (size_t)row * (size_t)dim;
    const float *s = scales + (size_t)row * (size_t)ngroups;
    for (int start = 0, g = 0; start < dim; start += group_size, g++) {
        int end = start + group_size < dim ? start + group_size : dim;
        for (int j = start; j < end; j++) {
            out[j] = (float)q[j] * s[g];
        }
    }
}

void embed_q4(float *out, const uint8_t *table, const float *scales, int row, int dim, int group_size) {
    int ngroups = group_count(dim, group_size);
    if (q4_pair_layout(dim, group_size)) {
        int k = row % 8; /* rows 0-3 of a pair panel in the high nibbles, rows 4-7 in the low ones */
        const uint8_t *panel = table + (size_t)(row / 8) * 4 * (size_t)dim + (size_t)(k % 4) * 4;
        const float *s = scales + (size_t)(row / 8) * 8 * (size_t)ngroups + (size_t)k;
        for (int j = 0; j < dim; j++) { /* column j: quad j / 4, byte j % 4 of this row's four */
            uint8_t byte = panel[(size_t)(j / 4) * 16 + (size_t)(j % 4)];
            int q = k < 4 ? (byte >> 4) - ((byte >> 7) << 4) : (byte & 0x0F) - 8;
            out[j] = (float)q * s[8 * (j / group_size)];
        }
        return;
    }
    if (panel_layout(dim, group_size, 1)) {
        const uint8_t *panel = table + (size_t)(row / 4) * 2 * (size_t)dim + (size_t)(row % 4) * 4;
        const float *s = scales + (size_t)(row / 4) * 4 * (size_t)ngroups + (size_t)(row % 4);
        for (int j = 0; j < dim; j++) { /* column j: block j / 8; low nibble for j % 8 < 4, else high */
            uint8_t byte = panel[(size_t)(j / 8) * 16 + (size_t)(j % 4)];
            int nibble = (j % 8 < 4) ? (byte & 0x0F) : (byte >> 4);
            out[j] = (float)(nibble >= 8 ? nibble - 16 : nibble) * s[4 * (j / group_size)];
        }
        return;
    }
    const uint8_t *q = table + (size_t)row * (((size_t)dim + 1) / 2);
    const float *s = scales + (size_t)row * (size_t)ngroups;
    for (int j = 0; j < dim; j++) {
        int stored = (j % 2 == 0) ? (q[j / 2] & 0x0F) : (q[j / 2] >> 4); /* q + 8, even column low */
        out[j] = (float)(stored - 8) * s[j / group_size];
    }
}
