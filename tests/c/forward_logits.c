/*
 * Teacher-forced forward passes of a generated model: `forward_logits t0 t1 ...` runs llmcu_forward(t_i, i) for
 * every given token and prints each position's logits, one line per position, as the float bits in hex. Linked
 * with transformer.c, a kernel set and a build's gen/ (tests/device/test_rzv2l.py), so that a build's arithmetic, e.g.
 * numerics=fast, can be measured against the fp32 reference's logits.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmcu.h"
#include "model_config.h"

int main(int argc, char **argv) {
    for (int pos = 0; pos + 1 < argc; pos++) {
        const float *logits = llmcu_forward(atoi(argv[pos + 1]), pos);
        for (int i = 0; i < LLMCU_VOCAB_SIZE; i++) {
            uint32_t bits;
            memcpy(&bits, &logits[i], sizeof bits);
            printf(i ? " %08x" : "%08x", (unsigned)bits);
        }
        printf("\n");
    }
    return 0;
}
