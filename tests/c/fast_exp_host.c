/*
 * Host check of LLMCU_FAST_EXP's approximation (runtime_c/kernels/cortex_m7/exp_m7.h, m7_fast_expf),
 * run by tests/runtime/test_cortex_m7_kernels.py: every `stride`-th float of [-87, 88] (by bit pattern, both signs)
 * against exp in double precision, and the clamped ends.
 *
 *   fast_exp_host <stride>   prints "n=<count> max_ulp=<ulp of the float result> max_rel=<relative error>
 *                            clamped_ok=<1|0>"
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cortex_m7/exp_m7.h"

static double max_ulp, max_rel;
static long count;

static void check(float x) {
    double want = exp((double)x);
    double got = (double)m7_fast_expf(x);
    double ulp = ldexp(1.0, ilogb((float)want) - 23); /* one unit in the last place of the float result */
    double err = fabs(got - want);
    if (err / ulp > max_ulp) {
        max_ulp = err / ulp;
    }
    if (err / want > max_rel) {
        max_rel = err / want;
    }
    count++;
}

int main(int argc, char **argv) {
    uint32_t stride = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 1u;
    float lo = -87.0f, hi = 88.0f;
    uint32_t lo_bits, hi_bits;
    memcpy(&lo_bits, &lo, sizeof lo_bits);
    memcpy(&hi_bits, &hi, sizeof hi_bits);
    for (uint32_t u = 0x80000000u; u <= lo_bits; u += stride) { /* -0 down to -87 */
        float x;
        memcpy(&x, &u, sizeof x);
        check(x);
    }
    for (uint32_t u = 0; u <= hi_bits; u += stride) { /* +0 up to 88 */
        float x;
        memcpy(&x, &u, sizeof x);
        check(x);
    }
    check(lo);
    check(hi);
    /* Beyond the ends the argument is clamped: the results of -87 and 88, finite and positive. */
    int clamped_ok = m7_fast_expf(-1000.0f) == m7_fast_expf(-87.0f) && m7_fast_expf(-INFINITY) == m7_fast_expf(-87.0f) &&
                     m7_fast_expf(1000.0f) == m7_fast_expf(88.0f) && isfinite(m7_fast_expf(1000.0f)) &&
                     m7_fast_expf(-87.0f) > 0.0f;
    printf("n=%ld max_ulp=%.4f max_rel=%.4g clamped_ok=%d\n", count, max_ulp, max_rel, clamped_ok);
    return 0;
}
