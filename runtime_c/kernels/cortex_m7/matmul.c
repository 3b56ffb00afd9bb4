/*
 * Matrix-vector products for the Cortex-M7 (ARMv7E-M with FPv5-D16), bit-identical to kernels/ref/matmul.c.
 *
 * fp32: four rows per pass share each load of x, and a load is a VLDM of eight floats (one instruction).
 * Every row still accumulates in its own register, left to right over j, with a separate VMUL and VADD
 * per term: the contract's sequential sum, so the result is the reference's to the bit.
 *
 * q8/q4: the integer group sums are exact, so any order of the products gives the same int32. They use
 * SMLAD (two 16x16 products added to an accumulator in one instruction) on weights widened from 8 or 4
 * bits to 16 on the fly, against activations widened once per matmul, on weights stored at build time in
 * panels of four (q8) or two (q4) rows that share each activation load. After each group, the float part is
 * the reference's, in its order:
 * out[i] = sum_g ((float)isum * ws[g]) * xs[g], sequential over g from 0.0f.
 *
 * The hot loops are inline assembly because GCC neither folds the rotation into SXTB16 nor emits LDM/VLDM
 * for C loads, and runs out of registers around such loops; each asm block says what it computes. Shapes
 * the fast paths do not cover (see each function) take a plain loop that is the reference's arithmetic.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arm_acle.h>

#include "kernels/cortex_m7/m7_layout.h"
#include "kernels/kernels.h"
#include "kernels/ref/ref.h"

/* ---- fp32 ---- */

/* Two rows' terms for one x value X: the products of X with weights WA and WB, each added to its row's sum
 * (A, B) with its own VADD -- no fused multiply-add, so each term rounds as in the reference. */
#define F32_TERMS(WA, WB, X, A, B)                                                                       \
    "vmul.f32 s24, " WA ", " X "\n\t"                                                                    \
    "vmul.f32 s25, " WB ", " X "\n\t"                                                                    \
    "vadd.f32 " A ", " A ", s24\n\t"                                                                     \
    "vadd.f32 " B ", " B ", s25\n\t"

/* Eight x values (s0..s7) against two rows' weights (s8..s15, s16..s23), in column order. */
#define F32_ROWS_X8(A, B)                                                                                \
    F32_TERMS("s8", "s16", "s0", A, B)                                                                   \
    F32_TERMS("s9", "s17", "s1", A, B)                                                                   \
    F32_TERMS("s10", "s18", "s2", A, B)                                                                  \
    F32_TERMS("s11", "s19", "s3", A, B)                                                                  \
    F32_TERMS("s12", "s20", "s4", A, B)                                                                  \
    F32_TERMS("s13", "s21", "s5", A, B)                                                                  \
    F32_TERMS("s14", "s22", "s6", A, B)                                                                  \
    F32_TERMS("s15", "s23", "s7", A, B)

/*
 * `quads` passes of four consecutive rows, each row `stride` bytes after the previous (0: the same row four
 * times), of cols >= 8 columns: eight-column steps, then the last cols % 8 columns one at a time. The four
 * sums (s26..s29) start at 0.0f and are stored to out[0..4) of each pass.
 */
static void f32_quads(float *out, const float *x, const float *w, int quads, int cols, int stride) {
    const float *xp, *w1, *w2, *w3;
    int n;
    __asm__ volatile("vmov s30, s31, %[steps], %[tail]\n\t"
                     "10:\n\t" /* four rows */
                     "add %[w1], %[w0], %[st]\n\t"
                     "add %[w2], %[w1], %[st]\n\t"
                     "add %[w3], %[w2], %[st]\n\t"
                     "vmov s26, s27, %[zero], %[zero]\n\t"
                     "vmov s28, s29, %[zero], %[zero]\n\t"
                     "mov %[xp], %[x]\n\t"
                     "vmov %[n], s30\n\t"
                     "11:\n\t" /* eight columns */
                     "vldmia %[xp]!, {s0-s7}\n\t"
                     "vldmia %[w0]!, {s8-s15}\n\t"
                     "vldmia %[w1]!, {s16-s23}\n\t" F32_ROWS_X8("s26", "s27")
                     "vldmia %[w2]!, {s8-s15}\n\t"
                     "vldmia %[w3]!, {s16-s23}\n\t" F32_ROWS_X8("s28", "s29")
                     "subs %[n], %[n], #1\n\t"
                     "bne 11b\n\t"
                     "vmov %[n], s31\n\t"
                     "cmp %[n], #0\n\t"
                     "beq 13f\n\t"
                     "12:\n\t" /* one column */
                     "vldmia %[xp]!, {s0}\n\t"
                     "vldmia %[w0]!, {s8}\n\t"
                     "vldmia %[w1]!, {s16}\n\t"
                     "vmul.f32 s24, s8, s0\n\t"
                     "vmul.f32 s25, s16, s0\n\t"
                     "vadd.f32 s26, s26, s24\n\t"
                     "vadd.f32 s27, s27, s25\n\t"
                     "vldmia %[w2]!, {s8}\n\t"
                     "vldmia %[w3]!, {s16}\n\t"
                     "vmul.f32 s24, s8, s0\n\t"
                     "vmul.f32 s25, s16, s0\n\t"
                     "vadd.f32 s28, s28, s24\n\t"
                     "vadd.f32 s29, s29, s25\n\t"
                     "subs %[n], %[n], #1\n\t"
                     "bne 12b\n\t"
                     "13:\n\t"
                     "vstmia %[out]!, {s26-s29}\n\t"
                     "mov %[w0], %[w3]\n\t" /* the end of the pass's last row: the next pass's first */
                     "subs %[q], %[q], #1\n\t"
                     "bne 10b\n\t"
                     : [out] "+r"(out), [w0] "+r"(w), [q] "+r"(quads), [xp] "=&r"(xp), [w1] "=&r"(w1),
                       [w2] "=&r"(w2), [w3] "=&r"(w3), [n] "=&r"(n)
                     : [x] "r"(x), [st] "r"(stride), [steps] "r"(cols >> 3), [tail] "r"(cols & 7), [zero] "r"(0)
                     : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13", "s14",
                       "s15", "s16", "s17", "s18", "s19", "s20", "s21", "s22", "s23", "s24", "s25", "s26", "s27",
                       "s28", "s29", "s30", "s31", "cc", "memory");
}

void matmul_f32(float *out, const float *x, const float *w, int rows, int cols) {
    if (cols < 8) { /* the reference's loop */
        for (int i = 0; i < rows; i++) {
            float val = 0.0f;
            for (int j = 0; j < cols; j++) {
                val += w[(size_t)i * (size_t)cols + (size_t)j] * x[j];
            }
            out[i] = val;
        }
        return;
    }
    int quads = rows / 4;
    if (quads > 0) {
        f32_quads(out, x, w, quads, cols, cols * (int)sizeof(float));
    }
    /* The last 1..3 rows: a pass over the first of them four times (its sums dropped) for each. */
    for (int i = quads * 4; i < rows; i++) {
        float sums[4];
        f32_quads(sums, x, w + (size_t)i * (size_t)cols, 1, cols, 0);
        out[i] = sums[0];
    }
}

/* ---- group-quantized ---- */

/*
 * The weights come in the build-time layout m7_panels (m7_layout.h; site_scons/llmcu/builder/layouts.py makes it),
 * shaped for these loops:
 *
 * q8, panels of four rows: a block of four columns is four words, one per row (one LDM). The layout stores
 * a weight word so that its halfwords, read as int16, are h0 = w0 + 256 w1 and h1 = w2 + 256 w3 (the odd byte
 * is w1 - 1 where w0 < 0). SMLAD of the word as it is against [x1|x3], plus SMLAD of its SXTB16 ([w0|w2])
 * against [256 x0 - x1 | 256 x2 - x3], is (w0 + 256 w1) x1 + w0 (256 x0 - x1) + ... = 256 (w0 x0 + w1 x1 +
 * w2 x2 + w3 x3): four products in three instructions instead of four (no second SXTB16). |256 x - x'| <=
 * 32639 fits a halfword (|x| <= 127), and 256 * isum fits int32 for groups up to 512 columns. The float part
 * converts it with VCVT's 8 fraction bits: (float)(256 isum / 256), exactly the rounding of (float)isum.
 * Sixteen products per LDM of weights, the activations' two words loaded once for the four rows.
 * q4, panels of two rows: a block of eight columns is two words (one LDRD), the reference's bytes; a word of
 * eight q+8 nibbles ANDed with 0x000F000F after shifts by 0, 4, 8 and 12 gives [n0|n4], [n1|n5], [n2|n6],
 * [n3|n7] against [x0|x4] ... [x3|x7]. The +8 comes out per group: the sum starts at -8 * sum(x) of the group.
 * A panel's scales for a group are side by side (one VLDM).
 *
 * The activations are prepared once per matmul into a small program (`xe`, built by q8_program/q4_program)
 * that the asm walks for each panel: per group the activation words, then the group's xs, and in the words
 * the loop needs where it needs them (so no register holds a counter): a group of 32 columns -- the build's
 * default group size -- is a fully unrolled block with a word saying whether another such group follows;
 * other groups (the short last group of a row, other group sizes) run a loop of 4- (q8) or 8-column (q4)
 * steps, each step carrying its own "more follows" word. The condition flags carry that answer across the
 * block: nothing between the compare and the branch sets them (SXTB16, SMLAD, AND without S and the FPU's
 * arithmetic do not).
 *
 * Integer sums are exact in any order. After each group the float part is the reference's, in its order:
 * out[i] = sum_g ((float)isum * ws[g]) * xs[g], sequential over g from 0.0f.
 *
 * Matrices not in the layout (other shapes) take the reference's loops; so do weights that are not word
 * aligned (LDM/LDRD need it; codegen aligns every blob to 16) and rows too long for the program's buffer, which
 * then read the layout element by element.
 */
#define XE_WORDS 640 /* 2.5 KB: 768 columns in groups of 32 (q8 433 words, q4 458) or of 64 (613, 542) */

static inline uint32_t load_u32(const void *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v); /* LDR: unaligned addresses are fine on the M7 (CCR.UNALIGN_TRP is off) */
    return v;
}

/* SXTB16 of the word rotated right by 8: bytes 1 and 3 sign-extended to the two halfwords. */
static inline uint32_t sxtb16_ror8(uint32_t v) {
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}

/* PKHBT / PKHTB: the low halfword of lo with that of hi above it; the high halfword of lo below that of hi. */
static inline uint32_t pack_low(uint32_t lo, uint32_t hi) {
    uint32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(lo), "r"(hi));
    return r;
}

static inline uint32_t pack_high(uint32_t lo, uint32_t hi) {
    uint32_t r;
    __asm__("pkhtb %0, %1, %2, asr #16" : "=r"(r) : "r"(hi), "r"(lo));
    return r;
}

static inline uint32_t float_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* End (exclusive) of the group that starts at column `start`. */
static inline int group_end(int start, int group_size, int cols) {
    return start + group_size < cols ? start + group_size : cols;
}

/* What the asm reads at its start: s8-s11, then lr and r0. */
typedef struct {
    const uint32_t *xe; /* the activation program */
    float *out;         /* the panels' outputs, panel_rows each */
    int32_t panels;     /* >= 1 */
    int32_t full;       /* whether the program starts with unrolled groups of 32 */
    const float *ws;    /* the first panel's scales */
    const void *w;      /* the first panel's weights, word aligned */
} panel_args;

/*
 * The q8 program. Unrolled group (32 columns): [x1|x3] [256 x0 - x1 | 256 x2 - x3] of columns 0..3, "another
 * unrolled group follows", then the pairs of columns 4..31, then xs. Other group: 1, then per four columns
 * the pair and "another step follows", then xs. Then 0. Returns whether it fitted.
 */
static int q8_program(uint32_t *xe, const int8_t *xq, const float *xs, int cols, int group_size, int32_t *full) {
    int ngroups = group_count(cols, group_size);
    int nfull = group_size == 32 ? cols / 32 : 0;
    int tail_cols = cols - nfull * 32;
    int words = nfull * 18 + (ngroups - nfull) * 2 + tail_cols / 4 * 3 + 1;
    if (words > XE_WORDS || group_size > 512) { /* 256 * isum must fit int32 */
        return 0;
    }
    uint32_t *p = xe;
    for (int g = 0; g < ngroups; g++) {
        int start = g * group_size, end = group_end(start, group_size, cols);
        if (g >= nfull) {
            *p++ = 1;
        }
        for (int j = start; j < end; j += 4) {
            uint32_t v = load_u32(xq + j);
            uint32_t odd = sxtb16_ror8(v);                        /* [x1|x3] */
            *p++ = odd;
            *p++ = __ssub16((v << 8) & 0xFF00FF00u, odd);         /* [256 x0 - x1 | 256 x2 - x3] */
            if (g >= nfull) {
                *p++ = j + 4 < end;
            } else if (j == start) {
                *p++ = g + 1 < nfull;
            }
        }
        *p++ = float_bits(xs[g]);
    }
    *p = 0;
    *full = nfull > 0;
    return 1;
}

/*
 * The q4 program: per eight columns [x0|x4] [x1|x5] [x2|x6] [x3|x7] (the last four columns of a row whose
 * length is 4 mod 8: [x0|0] ... [x3|0]). Unrolled group: columns 0..7's words, "another unrolled group
 * follows", -offset * (the group's sum of x), columns 8..31's words, xs. Other group: 1, -offset * sum, then
 * per step its words and a word (bit 0: a four-column step, bit 1: the group's last step), then xs. Then 0, 0.
 * offset: q4's 8 (the nibbles are q + 8), or 1 for q4z, whose asm multiplies -sum by each row's zero point.
 */
static inline __attribute__((always_inline)) int q4_program(uint32_t *xe, const int8_t *xq, const float *xs,
                                                            int cols, int group_size, int32_t *full, int32_t offset) {
    int ngroups = group_count(cols, group_size);
    int nfull = group_size == 32 ? cols / 32 : 0;
    int tail_steps = (cols - nfull * 32 + 7) / 8;
    int words = nfull * 19 + (ngroups - nfull) * 3 + tail_steps * 5 + 2;
    if (words > XE_WORDS) {
        return 0;
    }
    uint32_t *p = xe;
    for (int g = 0; g < ngroups; g++) {
        int start = g * group_size, end = group_end(start, group_size, cols);
        int32_t sum = 0;
        for (int j = start; j < end; j++) {
            sum += xq[j];
        }
        if (g >= nfull) {
            *p++ = 1;
            *p++ = (uint32_t)(-offset * sum);
        }
        for (int j = start; j < end; j += 8) {
            int half = j + 8 > end; /* four columns */
            uint32_t lo = load_u32(xq + j), hi = half ? 0 : load_u32(xq + j + 4);
            uint32_t e0 = __sxtb16(lo), e1 = __sxtb16(hi);       /* [x0|x2], [x4|x6] */
            uint32_t o0 = sxtb16_ror8(lo), o1 = sxtb16_ror8(hi); /* [x1|x3], [x5|x7] */
            *p++ = pack_low(e0, e1);                             /* [x0|x4] */
            *p++ = pack_low(o0, o1);                             /* [x1|x5] */
            *p++ = pack_high(e0, e1);                            /* [x2|x6] */
            *p++ = pack_high(o0, o1);                            /* [x3|x7] */
            if (g >= nfull) {
                *p++ = (uint32_t)half | (j + 8 >= end ? 2u : 0u);
            } else if (j == start) {
                *p++ = g + 1 < nfull;
                *p++ = (uint32_t)(-offset * sum);
            }
        }
        *p++ = float_bits(xs[g]);
    }
    p[0] = 0;
    p[1] = 0;
    *full = nfull > 0;
    return 1;
}

/*
 * q8 asm. Registers: r0 weights, r1 the program, r2-r5 the four rows' 256 * int32 sums, r6/r7 activation
 * words, r8-r11 the four rows' weight words, r12 the program's "more follows", lr scales; s0-s3 the float
 * terms, s4-s7 scales then xs, s8-s11 panel_args, s12-s15 the four rows' float sums. Per group:
 * v += ((float)isum * ws[g]) * xs[g].
 */
#define Q8_ROW(W, ACC, FIRST)                                                                            \
    FIRST(W, ACC)                                                                                        \
    "sxtb16 " W ", " W "\n\t"                                                                            \
    "smlad " ACC ", " W ", r7, " ACC "\n\t"
#define Q8_START(W, ACC) "smuad " ACC ", " W ", r6\n\t"
#define Q8_ADD(W, ACC) "smlad " ACC ", " W ", r6, " ACC "\n\t"
#define Q8_ROWS(FIRST) Q8_ROW("r8", "r2", FIRST) Q8_ROW("r9", "r3", FIRST) Q8_ROW("r10", "r4", FIRST) Q8_ROW("r11", "r5", FIRST)
#define Q8_STEP "ldmia r1!, {r6, r7}\n\t" "ldmia r0!, {r8-r11}\n\t" Q8_ROWS(Q8_ADD)
#define Q8_FLOAT                                                                                         \
    "vmov s0, s1, r2, r3\n\t"                                                                            \
    "vmov s2, s3, r4, r5\n\t"                                                                            \
    "vcvt.f32.s32 s0, s0, #8\n\t" /* (float)isum: the sums are 256 * isum */                            \
    "vcvt.f32.s32 s1, s1, #8\n\t"                                                                        \
    "vcvt.f32.s32 s2, s2, #8\n\t"                                                                        \
    "vcvt.f32.s32 s3, s3, #8\n\t"                                                                        \
    "vldmia lr!, {s4-s7}\n\t"                                                                            \
    "vmul.f32 s0, s0, s4\n\t"                                                                            \
    "vmul.f32 s1, s1, s5\n\t"                                                                            \
    "vmul.f32 s2, s2, s6\n\t"                                                                            \
    "vmul.f32 s3, s3, s7\n\t"                                                                            \
    "vldmia r1!, {s4}\n\t"                                                                               \
    "vmul.f32 s0, s0, s4\n\t"                                                                            \
    "vmul.f32 s1, s1, s4\n\t"                                                                            \
    "vmul.f32 s2, s2, s4\n\t"                                                                            \
    "vmul.f32 s3, s3, s4\n\t"                                                                            \
    "vadd.f32 s12, s12, s0\n\t"                                                                          \
    "vadd.f32 s13, s13, s1\n\t"                                                                          \
    "vadd.f32 s14, s14, s2\n\t"                                                                          \
    "vadd.f32 s15, s15, s3\n\t"

#define PANEL_CLOBBERS                                                                                   \
    "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "lr", "s0", "s1", "s2", "s3", \
        "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13", "s14", "s15", "cc", "memory"

static void q8_panels(const panel_args *args) {
    register const panel_args *r0 __asm__("r0") = args;
    __asm__ volatile("vldmia r0, {s8-s11}\n\t"
                     "ldr lr, [r0, #16]\n\t"
                     "ldr r0, [r0, #20]\n\t"
                     "10:\n\t" /* a panel: sums from 0.0f, the program from its start */
                     "vmov r1, s8\n\t"
                     "movs r2, #0\n\t"
                     "vmov s12, s13, r2, r2\n\t"
                     "vmov s14, s15, r2, r2\n\t"
                     "vmov r2, s11\n\t"
                     "cmp r2, #0\n\t"
                     "beq 12f\n\t"
                     "11:\n\t" /* an unrolled group of 32 columns */
                     "ldmia r1!, {r6, r7, r12}\n\t"
                     "cmp r12, #0\n\t" /* Z: the last one */
                     "ldmia r0!, {r8-r11}\n\t" Q8_ROWS(Q8_START)
                     Q8_STEP Q8_STEP Q8_STEP Q8_STEP Q8_STEP Q8_STEP Q8_STEP
                     Q8_FLOAT
                     "bne 11b\n\t"
                     "12:\n\t" /* other groups */
                     "ldr r2, [r1], #4\n\t"
                     "cmp r2, #0\n\t"
                     "beq 19f\n\t"
                     "movs r2, #0\n\t"
                     "movs r3, #0\n\t"
                     "movs r4, #0\n\t"
                     "movs r5, #0\n\t"
                     "13:\n\t" /* four columns */
                     "ldmia r1!, {r6, r7, r12}\n\t"
                     "cmp r12, #0\n\t"
                     "ldmia r0!, {r8-r11}\n\t" Q8_ROWS(Q8_ADD)
                     "bne 13b\n\t"
                     Q8_FLOAT
                     "b 12b\n\t"
                     "19:\n\t" /* the panel's four outputs */
                     "vmov r12, s9\n\t"
                     "vstmia r12!, {s12-s15}\n\t"
                     "vmov s9, r12\n\t"
                     "vmov r12, s10\n\t"
                     "subs r12, r12, #1\n\t"
                     "vmov s10, r12\n\t"
                     "bne 10b\n\t"
                     : "+r"(r0)
                     :
                     : PANEL_CLOBBERS);
}

/*
 * q4 asm. Registers: r0 weights, r1 the program, r2/r3 the two rows' int32 sums, r4-r7 activation words,
 * r8/r9 the two rows' weight words, r10 scratch, r11 0x000F000F, r12 the group's -8 * sum(x), then a step's
 * word, lr scales; s0/s1 float terms, s4/s5 scales then xs, s8-s11 panel_args, s12/s13 the float sums.
 */
#define Q4_ROW(W, ACC, IN)                                                                               \
    "and r10, " W ", #0x000F000F\n\t"                                                                    \
    "smlad " ACC ", r10, r4, " IN "\n\t"                                                                 \
    "and r10, r11, " W ", lsr #4\n\t"                                                                    \
    "smlad " ACC ", r10, r5, " ACC "\n\t"                                                                \
    "and r10, r11, " W ", lsr #8\n\t"                                                                    \
    "smlad " ACC ", r10, r6, " ACC "\n\t"                                                                \
    "and r10, r11, " W ", lsr #12\n\t"                                                                   \
    "smlad " ACC ", r10, r7, " ACC "\n\t"
#define Q4_STEP "ldmia r1!, {r4-r7}\n\t" "ldrd r8, r9, [r0], #8\n\t" Q4_ROW("r8", "r2", "r2") Q4_ROW("r9", "r3", "r3")
#define Q4_FLOAT                                                                                         \
    "vmov s0, s1, r2, r3\n\t"                                                                            \
    "vcvt.f32.s32 s0, s0\n\t"                                                                            \
    "vcvt.f32.s32 s1, s1\n\t"                                                                            \
    "vldmia lr!, {s4, s5}\n\t"                                                                           \
    "vmul.f32 s0, s0, s4\n\t"                                                                            \
    "vmul.f32 s1, s1, s5\n\t"                                                                            \
    "vldmia r1!, {s4}\n\t"                                                                               \
    "vmul.f32 s0, s0, s4\n\t"                                                                            \
    "vmul.f32 s1, s1, s4\n\t"                                                                            \
    "vadd.f32 s12, s12, s0\n\t"                                                                          \
    "vadd.f32 s13, s13, s1\n\t"

/* What q4_panels and q4z_panels share: the panel loop's start (arguments, the nibble mask, a panel's float sums
 * cleared, whether the program starts with unrolled groups), the steps of a group that is not unrolled (eight
 * columns, or a row's last four: one word, row 0's two bytes then row 1's; the upper halves meet activations
 * of 0), and the panel loop's end (the two outputs stored, the panel count down). */
#define Q4_PANEL_BEGIN                                                                                   \
    "vldmia r0, {s8-s11}\n\t"                                                                            \
    "ldr lr, [r0, #16]\n\t"                                                                              \
    "ldr r0, [r0, #20]\n\t"                                                                              \
    "mov r11, #0x000F000F\n\t"                                                                           \
    "10:\n\t"                                                                                            \
    "vmov r1, s8\n\t"                                                                                    \
    "movs r2, #0\n\t"                                                                                    \
    "vmov s12, s13, r2, r2\n\t"                                                                          \
    "vmov r2, s11\n\t"                                                                                   \
    "cmp r2, #0\n\t"                                                                                     \
    "beq 12f\n\t"
#define Q4_STEPS                                                                                         \
    "13:\n\t"                                                                                            \
    "ldmia r1!, {r4-r7, r12}\n\t"                                                                        \
    "tst r12, #1\n\t"                                                                                    \
    "itee eq\n\t"                                                                                        \
    "ldrdeq r8, r9, [r0], #8\n\t"                                                                        \
    "ldrne r8, [r0], #4\n\t"                                                                             \
    "lsrne r9, r8, #16\n\t" Q4_ROW("r8", "r2", "r2") Q4_ROW("r9", "r3", "r3")                            \
    "tst r12, #2\n\t"                                                                                    \
    "beq 13b\n\t"
#define Q4_PANEL_END                                                                                     \
    "19:\n\t"                                                                                            \
    "vmov r12, s9\n\t"                                                                                   \
    "vstmia r12!, {s12, s13}\n\t"                                                                        \
    "vmov s9, r12\n\t"                                                                                   \
    "vmov r12, s10\n\t"                                                                                  \
    "subs r12, r12, #1\n\t"                                                                              \
    "vmov s10, r12\n\t"                                                                                  \
    "bne 10b\n\t"

static void q4_panels(const panel_args *args) {
    register const panel_args *r0 __asm__("r0") = args;
    __asm__ volatile(Q4_PANEL_BEGIN
                     "11:\n\t" /* an unrolled group of 32 columns */
                     "ldmia r1!, {r4-r8, r12}\n\t"
                     "cmp r8, #0\n\t" /* Z: the last one */
                     "ldrd r8, r9, [r0], #8\n\t" Q4_ROW("r8", "r2", "r12") Q4_ROW("r9", "r3", "r12")
                     Q4_STEP Q4_STEP Q4_STEP
                     Q4_FLOAT
                     "bne 11b\n\t"
                     "12:\n\t" /* other groups */
                     "ldmia r1!, {r2, r12}\n\t"
                     "cmp r2, #0\n\t"
                     "beq 19f\n\t"
                     "mov r2, r12\n\t"
                     "mov r3, r12\n\t"
                     Q4_STEPS
                     Q4_FLOAT
                     "b 12b\n\t"
                     Q4_PANEL_END
                     : "+r"(r0)
                     :
                     : PANEL_CLOBBERS);
}

/*
 * q4z asm: q4's, with each row's integer sum starting at z * (-sum x) instead of the shared -8 * sum x, and
 * the scales decoded from the panel's pair of group words [w0|w1] (one LDR): AND with 0x000F000F gives
 * [z0|z1], SMULBB/SMULTB multiply them by the program's -sum (|sum| <= 127 * group_size fits a halfword), BIC
 * leaves the two binary16 scales, which VCVTB/VCVTT convert exactly. Seven instructions more per group of a
 * panel than q4. The scales wait in s6 (r12 is the step word in the loop for other groups).
 */
#define Q4Z_START                                                                                        \
    "ldr r10, [lr], #4\n\t"                                                                              \
    "and r9, r10, #0x000F000F\n\t"                                                                       \
    "smulbb r2, r9, r12\n\t"                                                                             \
    "smultb r3, r9, r12\n\t"                                                                             \
    "bic r10, r10, #0x000F000F\n\t"                                                                      \
    "vmov s6, r10\n\t"
#define Q4Z_FLOAT                                                                                        \
    "vmov s0, s1, r2, r3\n\t"                                                                            \
    "vcvt.f32.s32 s0, s0\n\t"                                                                            \
    "vcvt.f32.s32 s1, s1\n\t"                                                                            \
    "vcvtt.f32.f16 s5, s6\n\t"                                                                           \
    "vcvtb.f32.f16 s4, s6\n\t"                                                                           \
    "vmul.f32 s0, s0, s4\n\t"                                                                            \
    "vmul.f32 s1, s1, s5\n\t"                                                                            \
    "vldmia r1!, {s4}\n\t"                                                                               \
    "vmul.f32 s0, s0, s4\n\t"                                                                            \
    "vmul.f32 s1, s1, s4\n\t"                                                                            \
    "vadd.f32 s12, s12, s0\n\t"                                                                          \
    "vadd.f32 s13, s13, s1\n\t"

static void q4z_panels(const panel_args *args) {
    register const panel_args *r0 __asm__("r0") = args;
    __asm__ volatile(Q4_PANEL_BEGIN
                     "11:\n\t" /* an unrolled group of 32 columns */
                     "ldmia r1!, {r4-r8, r12}\n\t"
                     "cmp r8, #0\n\t" /* Z: the last one (nothing below sets the flags) */
                     Q4Z_START
                     "ldrd r8, r9, [r0], #8\n\t" Q4_ROW("r8", "r2", "r2") Q4_ROW("r9", "r3", "r3")
                     Q4_STEP Q4_STEP Q4_STEP
                     Q4Z_FLOAT
                     "bne 11b\n\t"
                     "12:\n\t" /* other groups */
                     "ldmia r1!, {r2, r12}\n\t"
                     "cmp r2, #0\n\t"
                     "beq 19f\n\t"
                     Q4Z_START
                     Q4_STEPS
                     Q4Z_FLOAT
                     "b 12b\n\t"
                     Q4_PANEL_END
                     : "+r"(r0)
                     :
                     : PANEL_CLOBBERS);
}

/* The reference's loops, on the row-major layout (panels = 0) or on m7_panels element by element. */
static void matmul_plain(float *out, const int8_t *xq, const float *xs, const void *w, const float *ws, int rows,
                         int cols, int group_size, int q4, int panels) {
    int ngroups = group_count(cols, group_size);
    size_t row_bytes = q4 ? ((size_t)cols + 1) / 2 : (size_t)cols;
    for (int i = 0; i < rows; i++) {
        const uint8_t *row = (const uint8_t *)w + (size_t)i * row_bytes;
        float val = 0.0f;
        for (int g = 0; g < ngroups; g++) {
            int start = g * group_size;
            int end = group_end(start, group_size, cols);
            int32_t isum = 0;
            for (int j = start; j < end; j++) {
                int32_t q;
                if (panels) {
                    q = q4 ? m7_q4_at(w, cols, i, j) : m7_q8_at(w, cols, i, j);
                } else {
                    q = q4 ? ((j & 1) ? (row[j >> 1] >> 4) : (row[j >> 1] & 0x0F)) - 8 : (int32_t)(int8_t)row[j];
                }
                isum += q * (int32_t)xq[j];
            }
            float scale = panels ? m7_scale_at(ws, ngroups, q4 ? 2 : 4, i, g) : ws[(size_t)i * (size_t)ngroups + (size_t)g];
            val += ((float)isum * scale) * xs[g];
        }
        out[i] = val;
    }
}

/* q4z's plain loops on m7_panels, element by element (matrices not in the layout take kernels/ref/q4z.c's). */
static void q4z_plain_panels(float *out, const int8_t *xq, const float *xs, const uint8_t *w, const uint16_t *wg,
                             int rows, int cols, int group_size) {
    int ngroups = group_count(cols, group_size);
    for (int i = 0; i < rows; i++) {
        float val = 0.0f;
        for (int g = 0; g < ngroups; g++) {
            uint16_t word = m7_word_at(wg, ngroups, i, g);
            int32_t isum = 0;
            for (int j = g * group_size; j < group_end(g * group_size, group_size, cols); j++) {
                isum += (m7_q4_at(w, cols, i, j) + 8 - q4z_zero(word)) * (int32_t)xq[j];
            }
            val += ((float)isum * q4z_scale(word)) * xs[g];
        }
        out[i] = val;
    }
}

/* Inlined into matmul_q8, matmul_q4 and matmul_q4z with `kind` a constant (0 q8, 1 q4, 2 q4z), so a build
 * links only the asm it uses. For q4z, ws points at the group words. */
static inline __attribute__((always_inline)) void matmul_quant(float *out, const int8_t *xq, const float *xs,
                                                               const uint8_t *w, const float *ws, int rows,
                                                               int cols, int group_size, int kind) {
    int q4 = kind != 0;
    if (!m7_panel_layout(cols, group_size, q4)) {
        if (kind == 2) {
            ref_matmul_q4z(out, xq, xs, w, (const uint16_t *)(const void *)ws, rows, cols, group_size);
        } else {
            matmul_plain(out, xq, xs, w, ws, rows, cols, group_size, q4, 0);
        }
        return;
    }
    /* Static, not on the stack: a 2.5 KB frame would be larger than the MPU guard below the stack (memplan's
     * STACK_GUARD_BYTES) and could step over it. One matmul runs at a time on the M7 (one core, no threads,
     * never from an interrupt), so one buffer serves every call. */
    static uint32_t xe[XE_WORDS];
    int32_t full;
    int fits = q4 ? q4_program(xe, xq, xs, cols, group_size, &full, kind == 2 ? 1 : 8)
                  : q8_program(xe, xq, xs, cols, group_size, &full);
    if (!fits || ((uintptr_t)w & 3u) || (kind == 2 && ((uintptr_t)ws & 3u))) { /* q4z's words: LDR reads pairs */
        if (kind == 2) {
            q4z_plain_panels(out, xq, xs, w, (const uint16_t *)(const void *)ws, rows, cols, group_size);
        } else {
            matmul_plain(out, xq, xs, w, ws, rows, cols, group_size, q4, 1);
        }
        return;
    }
    int panel_rows = q4 ? 2 : 4;
    panel_args a = {xe, out, rows / panel_rows, full, ws, w};
    if (a.panels > 0) {
        if (kind == 2) {
            q4z_panels(&a);
        } else if (q4) {
            q4_panels(&a);
        } else {
            q8_panels(&a);
        }
    }
    int done = a.panels * panel_rows;
    if (done < rows) { /* the last panel's padding rows are computed, not stored */
        float sums[4];
        a.out = sums;
        a.panels = 1;
        size_t first_group = (size_t)done * (size_t)group_count(cols, group_size);
        a.ws = kind == 2 ? (const float *)(const void *)((const uint16_t *)(const void *)ws + first_group)
                         : ws + first_group;
        a.w = w + (size_t)(done / panel_rows) * (size_t)cols * (q4 ? 1u : 4u);
        if (kind == 2) {
            q4z_panels(&a);
        } else if (q4) {
            q4_panels(&a);
        } else {
            q8_panels(&a);
        }
        memcpy(out + done, sums, (size_t)(rows - done) * sizeof(float));
    }
}

void matmul_q8(float *out, const int8_t *xq, const float *xs, const int8_t *w, const float *ws, int rows,
               int cols, int group_size) {
    matmul_quant(out, xq, xs, (const uint8_t *)w, ws, rows, cols, group_size, 0);
}

void matmul_q4(float *out, const int8_t *xq, const float *xs, const uint8_t *w, const float *ws, int rows,
               int cols, int group_size) {
    matmul_quant(out, xq, xs, w, ws, rows, cols, group_size, 1);
}

void matmul_q4z(float *out, const int8_t *xq, const float *xs, const uint8_t *w, const uint16_t *wg, int rows,
                int cols, int group_size) {
    matmul_quant(out, xq, xs, w, (const float *)(const void *)wg, rows, cols, group_size, 2);
}
