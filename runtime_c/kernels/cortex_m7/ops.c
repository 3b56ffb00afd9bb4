/*
 * The element-wise and normalisation steps for the Cortex-M7; bit-identical to kernels/ref/ops.c.
 *
 * What changes is how much work is done, not the arithmetic: expf is the C library's (exp_m7.h; an
 * approximation only with LLMCU_FAST_EXP); softmax takes its max with VMAXNM (see attention.c for why that cannot change a result);
 * RoPE computes each of the head_size / 2 distinct angles once instead of once per head; RMSNorm's
 * sequential sum is unrolled by four (still one term at a time, in order).
 */
#include <math.h>

#include "exp_m7.h"
#include "kernels/kernels.h"
#include "kernels/ref/ref.h"

/* From the reference file: its swiglu as it is, with M7_EXP for its exp (expf itself unless
 * LLMCU_FAST_EXP), and rope_per_head_position, whose fallback for odd head sizes is the reference's rope,
 * kept as ref_rope. Its rmsnorm and softmax come along as ref_rmsnorm and ref_softmax (kernels/ref/ref.h), left to
 * --gc-sections where nothing calls them. */
#define rmsnorm ref_rmsnorm
#define softmax ref_softmax
#define rope ref_rope
#define rope_rotate ref_rope_rotate
#define SWIGLU_EXP M7_EXP
#include "kernels/ref/ops.c"
#undef rmsnorm
#undef softmax
#undef rope
#undef rope_rotate

/* softmax's exp pass (shared with attention.c): x[i] = exp(x[i] - max) and their sum, added in order. */
float m7_exp_pass(float *x, int n, float max) {
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = M7_EXP(x[i] - max);
        sum += x[i];
    }
    return sum;
}

void rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    float ss = 0.0f;
    int j = 0;
    for (; j + 4 <= n; j += 4) {
        ss += x[j] * x[j];
        ss += x[j + 1] * x[j + 1];
        ss += x[j + 2] * x[j + 2];
        ss += x[j + 3] * x[j + 3];
    }
    for (; j < n; j++) {
        ss += x[j] * x[j];
    }
    ss /= (float)n;
    ss += eps;
    ss = 1.0f / sqrtf(ss);
    /* out may be x: each element is read before it is written. */
    for (j = 0; j + 4 <= n; j += 4) {
        float x0 = x[j], x1 = x[j + 1], x2 = x[j + 2], x3 = x[j + 3];
        out[j] = w[j] * (ss * x0);
        out[j + 1] = w[j + 1] * (ss * x1);
        out[j + 2] = w[j + 2] * (ss * x2);
        out[j + 3] = w[j + 3] * (ss * x3);
    }
    for (; j < n; j++) {
        out[j] = w[j] * (ss * x[j]);
    }
}

void softmax(float *x, int n) {
    float max = x[0];
    for (int i = 1; i < n; i++) {
        max = fmaxf(max, x[i]); /* VMAXNM */
    }
    float sum = m7_exp_pass(x, n, max);
    for (int i = 0; i < n; i++) {
        x[i] /= sum;
    }
}

/* powf, cosf and sinf head_size / 2 times per call rather than q_dim / 2 times: the reference file's
 * rope_per_head_position. */
void rope(float *q, int q_dim, float *k, int k_dim, int head_size, int pos, float theta) {
    rope_per_head_position(q, q_dim, k, k_dim, head_size, pos, theta);
}

/* One pair of a head: v0' = v0*c - v1*s, v1' = v0*s + v1*c, each product rounded, as rotate_pair does. */
#define ROTATE_PAIR(V0, V1, C, S)                                                                        \
    "vmul.f32 s8, " V0 ", " C "\n\t"                                                                     \
    "vmul.f32 s9, " V1 ", " S "\n\t"                                                                     \
    "vmul.f32 s10, " V0 ", " S "\n\t"                                                                    \
    "vmul.f32 s11, " V1 ", " C "\n\t"                                                                    \
    "vsub.f32 " V0 ", s8, s9\n\t"                                                                        \
    "vadd.f32 " V1 ", s10, s11\n\t"

/* The heads at P (a counter in N, at least 1), one VLDM, 24 FPU operations and one VSTM each. */
#define ROTATE_HEADS8(P, N, LABEL)                                                                       \
    LABEL ":\n\t"                                                                                        \
    "vldmia " P ", {s0-s7}\n\t" ROTATE_PAIR("s0", "s1", "s16", "s17") ROTATE_PAIR("s2", "s3", "s18", "s19") \
        ROTATE_PAIR("s4", "s5", "s20", "s21") ROTATE_PAIR("s6", "s7", "s22", "s23")                      \
    "vstmia " P "!, {s0-s7}\n\t"                                                                         \
    "subs " N ", " N ", #1\n\t"                                                                          \
    "bne " LABEL "b\n\t"

/* The reference's rope_rotate; for head_size 8 (stories260K) the row's four cosines and sines stay in
 * s16..s23 for every head of q and k. */
void rope_rotate(float *q, int q_dim, float *k, int k_dim, int head_size, const float *cs) {
    if (head_size != 8 || q_dim % 8 || k_dim % 8 || q_dim <= 0 || k_dim <= 0) {
        ref_rope_rotate(q, q_dim, k, k_dim, head_size, cs);
        return;
    }
    int qn = q_dim / 8, kn = k_dim / 8;
    __asm__ volatile("vldmia %[cs], {s16-s23}\n\t" ROTATE_HEADS8("%[q]", "%[qn]", "1") ROTATE_HEADS8("%[k]", "%[kn]", "2")
                     : [q] "+r"(q), [k] "+r"(k), [qn] "+r"(qn), [kn] "+r"(kn)
                     : [cs] "r"(cs)
                     : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s16", "s17", "s18",
                       "s19", "s20", "s21", "s22", "s23", "cc", "memory");
}
