/*
 * m7_fast_expf (runtime_c/kernels/cortex_m7/exp_m7.h) on the host, for tests/runtime/test_cortex_m7_fast.py: reads
 * float32 bit patterns (one hex word a line) from stdin and prints the result's bits, one hex word a line.
 * The function is plain C99 with fmaf, which glibc rounds once, as the M7's VFMA does.
 */
#include <stdint.h>
#include <stdio.h>

#include "kernels/cortex_m7/exp_m7.h"

int main(void) {
    unsigned long bits;
    while (scanf("%lx", &bits) == 1) {
        printf("%08lx\n", (unsigned long)m7_f32_bits(m7_fast_expf(m7_bits_f32((uint32_t)bits))));
    }
    return 0;
}
