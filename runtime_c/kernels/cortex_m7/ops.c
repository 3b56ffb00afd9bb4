/*
 * The element-wise and normalisation steps for the Cortex-M7; bit-identical to kernels/ref/ops.c.
 *
 * What changes is how much work is done, not the arithmetic: expf is inlined (exp_m7.h: the library's
 * own evaluation, same bits), softmax takes its max with VMAXNM (see attention.c for why that cannot change
 * a result), RoPE computes each of the head_size / 2 distinct angles once instead of once per head, and the
 * sequential sums are unrolled by four (still one term at a time, in order).
 */
#include <math.h>

#define M7_EXP_DEFINE_TABLE
#include "exp_m7.h"
#include "kernels/kernels.h"

#ifdef LLMCU_FAST_EXP
float m7_exp_pass(float *x, int n, float max, float min) {
    (void)min;
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = m7_fast_expf(x[i] - max);
        sum += x[i];
    }
    return sum;
}
#else
/* m7_expf's operations (see there), in registers: d8..d13 hold its constants for the whole loop. */
static const double exp_consts[6] = {M7_EXP_SHIFT, M7_EXP_INVLN2N, M7_EXP_C0, M7_EXP_C1, M7_EXP_C2, 1.0};

/* From x - max in s0 to e in s0, added to sum and stored; then the next element. */
#define EXP_STEP                                                                                         \
    "vcvt.f64.f32 d1, s0\n\t"               /* xd */                                                    \
    "vmov.f64 d2, d8\n\t"                                                                                \
    "vfma.f64 d2, d9, d1\n\t"               /* kd = SHIFT + INVLN2N xd, rounded once */                 \
    "vmov %[w], s4\n\t"                     /* ki, low word */                                          \
    "vsub.f64 d3, d2, d8\n\t"               /* kd - SHIFT */                                            \
    "vfnms.f64 d3, d9, d1\n\t"              /* r = INVLN2N xd - kd, rounded once */                     \
    "and %[i], %[w], #31\n\t"                                                                            \
    "add %[i], %[tab], %[i], lsl #3\n\t"                                                                 \
    "ldrd %[lo], %[hi], [%[i]]\n\t"         /* tab[ki % 32] */                                          \
    "add %[hi], %[hi], %[w], lsl #15\n\t"   /* + ki << 47 */                                            \
    "vmov.f64 d4, d11\n\t"                                                                               \
    "vfma.f64 d4, d10, d3\n\t"              /* z = C1 + C0 r */                                         \
    "vmul.f64 d5, d3, d3\n\t"               /* r2 */                                                    \
    "vmov.f64 d6, d13\n\t"                                                                               \
    "vfma.f64 d6, d12, d3\n\t"              /* y = 1 + C2 r */                                          \
    "vfma.f64 d6, d4, d5\n\t"               /* y += z r2 */                                             \
    "vmov d7, %[lo], %[hi]\n\t"             /* s = 2^(k/32) */                                          \
    "vmul.f64 d6, d6, d7\n\t"                                                                            \
    "vcvt.f32.f64 s0, d6\n\t"                                                                            \
    "vadd.f32 %[sum], %[sum], s0\n\t"                                                                    \
    "vstmia %[p]!, {s0}\n\t"                                                                             \
    "subs %[n], %[n], #1\n\t"                                                                            \
    "bne 1b\n\t"

#define EXP_OPERANDS                                                                                     \
    : [p] "+r"(x), [n] "+r"(n), [sum] "+t"(sum), [w] "=&r"(w), [i] "=&r"(i), [lo] "=&r"(lo), [hi] "=&r"(hi) \
    : [c] "r"(exp_consts), [tab] "r"(m7_exp_tab), [max] "t"(max), [lim] "r"(0x42au)                      \
    : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13", "s14", "s15", \
      "s16", "s17", "s18", "s19", "s20", "s21", "s22", "s23", "s24", "s25", "s26", "s27", "cc", "memory"

/*
 * When every x - max lies in (-88, 0] -- fl(min - max) > -88, and x - max >= min - max since rounding is
 * monotonic -- no element reaches the library's special cases and the loop leaves the test out. Otherwise
 * each element is tested (the top 12 bits but the sign, against 88.0f's) and a special one goes to expf.
 * A NaN among the x is ignored by min and max and then gives a NaN either way (in the sum too).
 */
float m7_exp_pass(float *x, int n, float max, float min) {
    float sum = 0.0f;
    uint32_t w, i, lo, hi;
    if (n > 0 && min - max > -88.0f) {
        __asm__ volatile("vldmia %[c], {d8-d13}\n\t"
                         "1:\n\t"
                         "vldr s0, [%[p]]\n\t"
                         "vsub.f32 s0, s0, %[max]\n\t" EXP_STEP EXP_OPERANDS);
        return sum;
    }
    while (n > 0) {
        __asm__ volatile("vldmia %[c], {d8-d13}\n\t"
                         "1:\n\t"
                         "vldr s0, [%[p]]\n\t"
                         "vsub.f32 s0, s0, %[max]\n\t"
                         "vmov %[w], s0\n\t"
                         "ubfx %[i], %[w], #20, #11\n\t"
                         "cmp %[i], %[lim]\n\t"
                         "bhi 2f\n\t" EXP_STEP "2:\n\t" EXP_OPERANDS);
        if (n == 0) {
            break;
        }
        float e = expf(*x - max);
        *x++ = e;
        sum += e;
        n--;
    }
    return sum;
}
#endif

void rmsnorm(float *out, const float *x, const float *w, int n) {
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
    ss += 1e-5f;
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
    float max = x[0], min = x[0];
    for (int i = 1; i < n; i++) {
        max = fmaxf(max, x[i]); /* VMAXNM */
        min = fminf(min, x[i]);
    }
    float sum = m7_exp_pass(x, n, max, min);
    for (int i = 0; i < n; i++) {
        x[i] /= sum;
    }
}

static inline void rotate_pair(float *v, float fcr, float fci) {
    float v0 = v[0];
    float v1 = v[1];
    v[0] = v0 * fcr - v1 * fci;
    v[1] = v0 * fci + v1 * fcr;
}

/* The angle of a pair depends only on its place in the head (i % head_size), so powf, cosf and sinf run
 * head_size / 2 times per call rather than q_dim / 2 times; the values are the reference's. */
void rope(float *q, int q_dim, float *k, int k_dim, int head_size, int pos) {
    if (head_size & 1) { /* pairs would straddle heads: the reference's loop as it is */
        for (int i = 0; i < q_dim; i += 2) {
            int head_dim = i % head_size;
            float freq = 1.0f / powf(10000.0f, (float)head_dim / (float)head_size);
            float val = (float)pos * freq;
            float fcr = cosf(val);
            float fci = sinf(val);
            rotate_pair(q + i, fcr, fci);
            if (i < k_dim) {
                rotate_pair(k + i, fcr, fci);
            }
        }
        return;
    }
    for (int head_dim = 0; head_dim < head_size; head_dim += 2) {
        float freq = 1.0f / powf(10000.0f, (float)head_dim / (float)head_size);
        float val = (float)pos * freq;
        float fcr = cosf(val);
        float fci = sinf(val);
        for (int i = head_dim; i < q_dim; i += head_size) {
            rotate_pair(q + i, fcr, fci);
            if (i < k_dim) {
                rotate_pair(k + i, fcr, fci);
            }
        }
    }
}

void swiglu(float *hb, const float *hb2, int n) {
    for (int i = 0; i < n; i++) {
        float h = hb[i];
        h *= 1.0f / (1.0f + M7_EXP(-h)); /* silu(h) = h * sigmoid(h) */
        h *= hb2[i];
        hb[i] = h;
    }
}
