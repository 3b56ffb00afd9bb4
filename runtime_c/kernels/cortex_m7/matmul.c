/*
 * Matrix-vector products for the Cortex-M7 (ARMv7E-M with FPv5-D16), bit-identical to kernels/ref/matmul.c.
 *
 * fp32: four rows per pass share each load of x, and a load is a VLDM of eight floats (one instruction).
 * Every row still accumulates in its own register, left to right over j, with a separate VMUL and VADD
 * per term: the contract's sequential sum, so the result is the reference's to the bit.
 *
 * q8/q4: the integer group sums are exact, so any order of the products gives the same int32. They use
 * SMLAD (two 16x16 products added to an accumulator in one instruction) on weights widened from 8 or 4
 * bits to 16 on the fly, against activations widened into a stack buffer once per matmul (per 256
 * columns), laid out so that each weight word needs no shuffling but its widening. Two rows per pass share
 * the activation loads. After each group, the float part is the reference's, in its order:
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

#include "kernels/kernels.h"

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
 * The fast path widens the activations XE_COLS columns at a time (a block of whole groups; a row's float
 * sum carries on from out[i] to the next block exactly as in one loop) and then runs one asm loop over all
 * row pairs of the block. A group is a number of 16-column steps: the block's last group, when shorter, is
 * padded with zero activations to a multiple of 16, so its weight loads run past the row's end into the
 * next row (multiplied by 0); the last row pair reads from a padded copy instead, never past the tensor.
 * It takes group sizes that are multiples of 16 up to XE_COLS (the build allows 2..256); other group sizes
 * and misaligned q8 rows take the plain loop, which is the reference's.
 */
#define XE_COLS 256
#define XE_STEP 16 /* columns per step of the asm loops */

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

/* End (exclusive) of the group that starts at column `start`. */
static inline int group_end(int start, int group_size, int cols) {
    return start + group_size < cols ? start + group_size : cols;
}

/*
 * What the asm row loops read. The first eight words are loaded into s8..s15 and stay there, the next seven
 * into s20..s26 (the loop's state, kept in FPU registers because the integer ones are all taken), the last
 * two into r2/r3.
 */
typedef struct {
    int32_t steps;        /* s8: 16-column steps in a group */
    int32_t nfull;        /* s9: groups of `steps` steps in the block */
    const float *xs;      /* s10: the block's activation scales */
    const uint32_t *xe;   /* s11: the widened activations */
    int32_t row_adv;      /* s12: bytes from where a pair's row pointers end to the next pair's rows */
    int32_t scale_adv;    /* s13: the same for the scale pointers */
    const int32_t *start; /* s14: q4: each group's initial sum (-8 * the sum of its activations) */
    int32_t last_steps;   /* s15: steps of the block's last group when it is shorter, else 0 */
    const float *s0;      /* s20, s21: the pair's row scales at the block's first group */
    const float *s1;
    const float *xsp;     /* s22, s23: scratch */
    const int32_t *stp;
    float *out;           /* s24: the pair's two outputs, written (and read first when `carry`) */
    int32_t npairs;       /* s25 */
    int32_t carry;        /* s26: 0 in the first block (the sums start at 0.0f), else 1 (from out) */
    const void *p0;       /* r2, r3: the pair's rows at the block's first column */
    const void *p1;
} row_loop;

/*
 * The asm row loops, one per weight type (their step and group start differ). Registers: r0 step counter,
 * r1 activation pointer, r2/r3 row pointers, r4-r7 four activation words, r8-r10 weight words and scratch,
 * r11/r12 the two rows' int32 sums, lr group counter; s28/s29 the two rows' float sums, s27 the steps of
 * a pending short group. Per group, after the integer sums: v += ((float)isum * ws[g]) * xs[g], the
 * contract's operations in its order.
 */
#define ROWS_START                                                                                       \
    "vldmia r0!, {s8-s15}\n\t"                                                                           \
    "vldmia r0!, {s20-s26}\n\t"                                                                          \
    "ldmia r0, {r2, r3}\n\t"                                                                             \
    "10:\n\t"                          /* a row pair */                                                  \
    "vmov r11, s24\n\t"                                                                                  \
    "vmov r0, s26\n\t"                                                                                   \
    "cbz r0, 14f\n\t"                                                                                    \
    "vldmia r11, {s28, s29}\n\t"       /* the sums so far */                                            \
    "b 15f\n\t"                                                                                          \
    "14:\n\t"                                                                                            \
    "vmov s28, s29, r0, r0\n\t"        /* 0.0f */                                                       \
    "15:\n\t"                                                                                            \
    "vmov r1, s11\n\t"                 /* activations from the block's start */                         \
    "vmov.f32 s22, s10\n\t"                                                                              \
    "vmov.f32 s23, s14\n\t"                                                                              \
    "vmov.f32 s27, s15\n\t"                                                                              \
    "vmov lr, s9\n\t"                                                                                    \
    "cmp lr, #0\n\t"                                                                                     \
    "beq 17f\n\t"                                                                                        \
    "11:\n\t"                          /* a group of `steps` steps */                                   \
    "vmov r0, s8\n\t"                                                                                    \
    "13:\n\t"                          /* a group of r0 steps */

#define ROWS_END                                                                                         \
    "subs r0, r0, #1\n\t"                                                                                \
    "bne 12b\n\t"                                                                                        \
    "vmov s16, s17, r11, r12\n\t"                                                                        \
    "vcvt.f32.s32 s16, s16\n\t"                                                                          \
    "vcvt.f32.s32 s17, s17\n\t"                                                                          \
    "vmov r4, r5, s20, s21\n\t"                                                                          \
    "vldmia r4!, {s18}\n\t"                                                                              \
    "vldmia r5!, {s19}\n\t"                                                                              \
    "vmov s20, s21, r4, r5\n\t"                                                                          \
    "vmov r6, s22\n\t"                                                                                   \
    "vldmia r6!, {s30}\n\t"                                                                              \
    "vmov s22, r6\n\t"                                                                                   \
    "vmul.f32 s16, s16, s18\n\t"                                                                         \
    "vmul.f32 s17, s17, s19\n\t"                                                                         \
    "vmul.f32 s16, s16, s30\n\t"                                                                         \
    "vmul.f32 s17, s17, s30\n\t"                                                                         \
    "vadd.f32 s28, s28, s16\n\t"                                                                         \
    "vadd.f32 s29, s29, s17\n\t"                                                                         \
    "subs lr, lr, #1\n\t"                                                                                \
    "bne 11b\n\t"                                                                                        \
    "17:\n\t"                          /* then the short group, if there is one */                      \
    "vmov r0, s27\n\t"                                                                                   \
    "cbz r0, 16f\n\t"                                                                                    \
    "movs lr, #0\n\t"                                                                                    \
    "vmov s27, lr\n\t"                                                                                   \
    "movs lr, #1\n\t"                                                                                    \
    "b 13b\n\t"                                                                                          \
    "16:\n\t"                          /* the pair is done */                                           \
    "vmov r11, s24\n\t"                                                                                  \
    "vstmia r11!, {s28, s29}\n\t"                                                                        \
    "vmov s24, r11\n\t"                                                                                  \
    "vmov r4, r5, s12, s13\n\t"                                                                          \
    "add r2, r2, r4\n\t"                                                                                 \
    "add r3, r3, r4\n\t"                                                                                 \
    "vmov r6, r7, s20, s21\n\t"                                                                          \
    "add r6, r6, r5\n\t"                                                                                 \
    "add r7, r7, r5\n\t"                                                                                 \
    "vmov s20, s21, r6, r7\n\t"                                                                          \
    "vmov r0, s25\n\t"                                                                                   \
    "subs r0, r0, #1\n\t"                                                                                \
    "vmov s25, r0\n\t"                                                                                   \
    "bne 10b\n\t"

/* Steps of sixteen columns of both rows (ROW8: Q8_ROW8 or Q4_ROW8, eight columns of one row), then ROWS_END. */
#define ROWS_LOOP(ROW8)                                                                                  \
    "12:\n\t"                                                                                            \
    "ldmia r1!, {r4, r5, r6, r7}\n\t" ROW8("r2", "r11") ROW8("r3", "r12")                                \
    "ldmia r1!, {r4, r5, r6, r7}\n\t" ROW8("r2", "r11") ROW8("r3", "r12")                                \
    ROWS_END

#define ROWS_CLOBBERS                                                                                    \
    "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "lr", "s8", "s9", "s10",  \
        "s11", "s12", "s13", "s14", "s15", "s16", "s17", "s18", "s19", "s20", "s21", "s22", "s23", "s24", \
        "s25", "s26", "s27", "s28", "s29", "s30", "cc", "memory"

/* q8, eight columns of one row: two weight words (LDRD), SXTB16 of each (even bytes) and of each rotated
 * (odd bytes) against the activation words in r4..r7, into the sum ACC. */
#define Q8_ROW8(P, ACC)                                                                                  \
    "ldrd r8, r9, [" P "], #8\n\t"                                                                       \
    "sxtb16 r10, r8\n\t"                                                                                 \
    "smlad " ACC ", r10, r4, " ACC "\n\t"                                                                \
    "sxtb16 r10, r8, ror #8\n\t"                                                                         \
    "smlad " ACC ", r10, r5, " ACC "\n\t"                                                                \
    "sxtb16 r10, r9\n\t"                                                                                 \
    "smlad " ACC ", r10, r6, " ACC "\n\t"                                                                \
    "sxtb16 r10, r9, ror #8\n\t"                                                                         \
    "smlad " ACC ", r10, r7, " ACC "\n\t"

static void q8_rows(row_loop *args) {
    register row_loop *r0 __asm__("r0") = args;
    __asm__ volatile(ROWS_START
                     "movs r11, #0\n\t"
                     "movs r12, #0\n\t"
                     ROWS_LOOP(Q8_ROW8)
                     : "+r"(r0)
                     :
                     : ROWS_CLOBBERS);
}

/* q4, eight columns of one row: one word of eight nibbles, ANDed with 0x000F000F (r9) shifted by 0, 4, 8
 * and 12, each [n_k | n_k+4] against the activation words in r4..r7, into the sum ACC. */
#define Q4_ROW8(P, ACC)                                                                                  \
    "ldr r8, [" P "], #4\n\t"                                                                            \
    "and r10, r8, #0x000F000F\n\t"                                                                       \
    "smlad " ACC ", r10, r4, " ACC "\n\t"                                                                \
    "and r10, r9, r8, lsr #4\n\t"                                                                        \
    "smlad " ACC ", r10, r5, " ACC "\n\t"                                                                \
    "and r10, r9, r8, lsr #8\n\t"                                                                        \
    "smlad " ACC ", r10, r6, " ACC "\n\t"                                                                \
    "and r10, r9, r8, lsr #12\n\t"                                                                       \
    "smlad " ACC ", r10, r7, " ACC "\n\t"

static void q4_rows(row_loop *args) {
    register row_loop *r0 __asm__("r0") = args;
    __asm__ volatile("mov r9, #0x000F000F\n\t" ROWS_START
                     "vmov r8, s23\n\t"
                     "ldr r11, [r8], #4\n\t"
                     "vmov s23, r8\n\t"
                     "mov r12, r11\n\t"
                     ROWS_LOOP(Q4_ROW8)
                     : "+r"(r0)
                     :
                     : ROWS_CLOBBERS);
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

/*
 * Activations widened to int16 pairs. q8, per four columns: [x0|x2], [x1|x3] -- SXTB16 of the int8 word and
 * of it rotated by 8, the split the weights get. q4, per eight columns: [x0|x4], [x1|x5], [x2|x6], [x3|x7]
 * -- a q4 weight word holds columns 0..7 at bits 0, 4, ..., 28, so (word >> 4k) & 0x000F000F is
 * [n_k | n_k+4]. Columns from n up to a multiple of 16 are zeros. Returns the number of words written.
 */
static inline __attribute__((always_inline)) int widen(uint32_t *xe, const int8_t *xq, int n, int q4) {
    int padded = (n + XE_STEP - 1) & ~(XE_STEP - 1);
    uint32_t *p = xe;
    for (int j = 0; j < padded; j += 8) {
        const int8_t *src = xq + j;
        int8_t x[8];
        if (j + 8 > n) { /* the padding */
            for (int k = 0; k < 8; k++) {
                x[k] = j + k < n ? xq[j + k] : 0;
            }
            src = x;
        }
        uint32_t lo = load_u32(src), hi = load_u32(src + 4);
        uint32_t e0 = __sxtb16(lo), e1 = __sxtb16(hi);       /* [x0|x2], [x4|x6] */
        uint32_t o0 = sxtb16_ror8(lo), o1 = sxtb16_ror8(hi); /* [x1|x3], [x5|x7] */
        if (q4) {
            p[0] = pack_low(e0, e1);  /* [x0|x4] */
            p[1] = pack_low(o0, o1);  /* [x1|x5] */
            p[2] = pack_high(e0, e1); /* [x2|x6] */
            p[3] = pack_high(o0, o1); /* [x3|x7] */
        } else {
            p[0] = e0;
            p[1] = o0;
            p[2] = e1;
            p[3] = o1;
        }
        p += 4;
    }
    return (int)(p - xe);
}

/* The weight of column j of a q4 row, still offset by 8 (1..15). */
static inline int32_t q4_nibble(const uint8_t *row, int j) {
    uint8_t byte = row[j >> 1];
    return (j & 1) ? (byte >> 4) : (byte & 0x0F);
}

/* The reference's loops, for the shapes the fast path does not take. */
static void matmul_plain(float *out, const int8_t *xq, const float *xs, const void *w, const float *ws, int rows,
                         int cols, int group_size, int q4) {
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
                int32_t q = q4 ? q4_nibble(row, j) - 8 : (int32_t)(int8_t)row[j];
                isum += q * (int32_t)xq[j];
            }
            val += ((float)isum * ws[(size_t)i * (size_t)ngroups + (size_t)g]) * xs[g];
        }
        out[i] = val;
    }
}

/* Inlined into matmul_q8 and matmul_q4 with q4 a constant, so a build links only the row loop it uses. */
static inline __attribute__((always_inline)) void matmul_quant(float *out, const int8_t *xq, const float *xs,
                                                               const uint8_t *w, const float *ws, int rows,
                                                               int cols, int group_size, int q4) {
    size_t row_bytes = q4 ? ((size_t)cols + 1) / 2 : (size_t)cols;
    if ((group_size % XE_STEP) || group_size > XE_COLS || (!q4 && ((cols & 3) || ((uintptr_t)w & 3u)))) {
        matmul_plain(out, xq, xs, w, ws, rows, cols, group_size, q4);
        return;
    }
    uint32_t xe[XE_COLS / 2];
    int32_t start[XE_COLS / XE_STEP];
    uint32_t last_rows[2][XE_COLS / 4]; /* the last pair's rows when the block's end is padded */
    int ngroups = group_count(cols, group_size);
    int block_cols = (XE_COLS / group_size) * group_size;
    int steps = group_size / XE_STEP;
    for (int b0 = 0; b0 < cols; b0 += block_cols) {
        int n = (b0 + block_cols < cols ? b0 + block_cols : cols) - b0;
        int nblock = group_count(n, group_size);
        int last_len = n - (nblock - 1) * group_size;
        int last_steps = (last_len + XE_STEP - 1) / XE_STEP;
        int used = ((nblock - 1) * steps + last_steps) * XE_STEP; /* columns a row pass consumes */
        size_t used_bytes = q4 ? (size_t)used / 2 : (size_t)used;
        size_t block_bytes = q4 ? (size_t)(n + 1) / 2 : (size_t)n;
        int words = widen(xe, xq + b0, n, q4);
        if (q4) { /* each group's sum of activations, from the widened pairs (padding is zeros) */
            for (int k = 0; k < nblock; k++) {
                int32_t sum = 0;
                for (int i = k * group_size / 2, end = i + group_size / 2; i < end && i < words; i++) {
                    sum = __smlad(xe[i], 0x00010001u, sum);
                }
                start[k] = -8 * sum;
            }
        }
        row_loop a;
        a.steps = steps;
        a.nfull = last_len < group_size ? nblock - 1 : nblock;
        a.xs = xs + b0 / group_size;
        a.xe = xe;
        a.row_adv = (int32_t)(2 * row_bytes - used_bytes);
        a.scale_adv = (int32_t)((2 * (size_t)ngroups - (size_t)nblock) * sizeof(float));
        a.start = start;
        a.last_steps = last_len < group_size ? last_steps : 0;
        a.s0 = ws + b0 / group_size;
        a.s1 = a.s0 + ngroups;
        a.out = out;
        a.carry = b0 > 0;
        a.p0 = w + b0 / (q4 ? 2 : 1);
        a.p1 = (const uint8_t *)a.p0 + row_bytes;
        /* Pairs that may read past their rows' end (into the next row) run from the tensor; the last pair
         * (or the odd last row, paired with itself) from a copy when the block's end is padded: the copy's
         * bytes past the row meet zero activations, whatever they are. */
        int pairs = rows / 2;
        int tail_rows = rows & 1;
        if (used_bytes > block_bytes && pairs > 0 && !tail_rows) {
            pairs--;
            tail_rows = 2;
        }
        if (pairs > 0) {
            a.npairs = pairs;
            if (q4) {
                q4_rows(&a);
            } else {
                q8_rows(&a);
            }
        }
        if (tail_rows) {
            int i = rows - tail_rows;
            float sums[2] = {0.0f, 0.0f};
            if (b0 > 0) {
                sums[0] = out[i];
                sums[1] = out[rows - 1];
            }
            const uint8_t *r0 = w + (size_t)i * row_bytes + b0 / (q4 ? 2 : 1);
            const uint8_t *r1 = tail_rows == 2 ? r0 + row_bytes : r0;
            if (used_bytes > block_bytes) {
                memcpy(last_rows[0], r0, block_bytes);
                memcpy(last_rows[1], r1, block_bytes);
                r0 = (const uint8_t *)last_rows[0];
                r1 = (const uint8_t *)last_rows[1];
            }
            a.s0 = ws + (size_t)i * (size_t)ngroups + b0 / group_size;
            a.s1 = tail_rows == 2 ? a.s0 + ngroups : a.s0;
            a.out = sums;
            a.npairs = 1;
            a.p0 = r0;
            a.p1 = r1;
            if (q4) {
                q4_rows(&a);
            } else {
                q8_rows(&a);
            }
            out[i] = sums[0];
            out[rows - 1] = sums[tail_rows - 1];
        }
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
