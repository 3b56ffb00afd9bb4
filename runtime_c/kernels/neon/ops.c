/*
 * The element-wise steps for AArch64 NEON. With the default numerics (numerics=exact) they are the reference's
 * own (kernels/ref/ops.c, included as it is): bit-identical, expf from the C library.
 *
 * With numerics=fast (LLMCU_NUMERICS_FAST, runtime_c/kernels/neon/README.md) softmax and SwiGLU run four lanes
 * at a time with neon_exp4 (neon_common.h: a degree-6 polynomial after range reduction, about 2 ulp where the
 * C library's expf is within 1), softmax multiplies by the sum's reciprocal instead of dividing, and its sum is
 * four interleaved partial sums. The model's output then differs from the reference's by float rounding only;
 * tests/device/test_rzv2l.py holds it to the quality bounds of tests/model/test_quality.py.
 *
 * argmax (greedy decoding over the vocabulary) is vectorised in either numerics, with the reference's result.
 */
#include <arm_neon.h>
#include <math.h>

#include "kernels/kernels.h"
#include "kernels/ref/ref.h"

#define argmax ref_argmax
#if !defined(LLMCU_NUMERICS_FAST) || !LLMCU_NUMERICS_FAST

#include "kernels/ref/ops.c"
#undef argmax

#else /* numerics=fast */

#include "neon_common.h"

/* rmsnorm and RoPE from the reference; its softmax and swiglu are replaced below. */
#define softmax ref_softmax
#define swiglu ref_swiglu
#include "kernels/ref/ops.c"
#undef softmax
#undef swiglu
#undef argmax

void softmax(float *x, int n) {
    float32x4_t m4 = vdupq_n_f32(-INFINITY);
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        m4 = vmaxq_f32(m4, vld1q_f32(x + i));
    }
    float max = vmaxvq_f32(m4);
    for (; i < n; i++) {
        max = x[i] > max ? x[i] : max;
    }
    float32x4_t mv = vdupq_n_f32(max), s4 = vdupq_n_f32(0.0f);
    i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t e = neon_exp4(vsubq_f32(vld1q_f32(x + i), mv));
        vst1q_f32(x + i, e);
        s4 = vaddq_f32(s4, e);
    }
    float sum = vaddvq_f32(s4);
    for (; i < n; i++) {
        x[i] = vgetq_lane_f32(neon_exp4(vdupq_n_f32(x[i] - max)), 0);
        sum += x[i];
    }
    float32x4_t inv = vdupq_n_f32(1.0f / sum);
    i = 0;
    for (; i + 4 <= n; i += 4) {
        vst1q_f32(x + i, vmulq_f32(vld1q_f32(x + i), inv));
    }
    for (; i < n; i++) {
        x[i] *= vgetq_lane_f32(inv, 0);
    }
}

/* silu(h) * hb2 = h / (1 + exp(-h)) * hb2, four lanes at a time (the last n % 4 through one padded vector). */
static inline float32x4_t swiglu4(float32x4_t h, float32x4_t h2) {
    float32x4_t gate = vdivq_f32(h, vaddq_f32(vdupq_n_f32(1.0f), neon_exp4(vnegq_f32(h))));
    return vmulq_f32(gate, h2);
}

void swiglu(float *hb, const float *hb2, int n) {
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        vst1q_f32(hb + i, swiglu4(vld1q_f32(hb + i), vld1q_f32(hb2 + i)));
    }
    for (; i < n; i++) {
        hb[i] = vgetq_lane_f32(swiglu4(vdupq_n_f32(hb[i]), vdupq_n_f32(hb2[i])), 0);
    }
}

#endif /* LLMCU_NUMERICS_FAST */

/*
 * Two passes, eight lanes at a time: the largest value m, then the first index holding a value equal to it. That
 * is the reference's answer: its strict > keeps the first index that reaches the maximum, and == takes +0 and -0
 * as equal where > lets neither replace the other. FMAXNM skips NaNs as the reference's comparisons do; x[0] a NaN
 * (which the reference keeps, nothing comparing larger) and short vectors go to the reference.
 */
int argmax(const float *x, int n) {
    if (n < 8 || isnan(x[0])) {
        return ref_argmax(x, n);
    }
    float32x4_t m0 = vld1q_f32(x), m1 = vld1q_f32(x + 4);
    int i = 8;
    for (; i + 8 <= n; i += 8) {
        m0 = vmaxnmq_f32(m0, vld1q_f32(x + i));
        m1 = vmaxnmq_f32(m1, vld1q_f32(x + i + 4));
    }
    float m = vmaxnmvq_f32(vmaxnmq_f32(m0, m1)); /* lane 0 holds x[0], a number: the result is one */
    for (; i < n; i++) {
        m = x[i] > m ? x[i] : m;
    }
    float32x4_t mv = vdupq_n_f32(m);
    i = 0;
    for (; i + 8 <= n; i += 8) {
        uint32x4_t hit = vorrq_u32(vceqq_f32(vld1q_f32(x + i), mv), vceqq_f32(vld1q_f32(x + i + 4), mv));
        if (vmaxvq_u32(hit) != 0) {
            break;
        }
    }
    for (; x[i] != m; i++) { /* m is in x: this stops */
    }
    return i;
}
