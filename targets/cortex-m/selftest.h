/*
 * The bring-up self-test (selftest.c, build option selftest=1) and the region table it walks, which the build
 * generates from the image's memory plan (selftest_regions.c beside the image's linker script).
 */
#ifndef LLMCU_SELFTEST_H
#define LLMCU_SELFTEST_H

#include <stdint.h>

typedef struct {
    const char *name;  /* the memory plan's region name: flash, itcm, dtcm, axi_sram, sdram, qspi, ... */
    uint32_t origin;
    uint32_t size;
    uint8_t writable;  /* RAM */
    uint8_t external;  /* on the board, not in the chip: SDRAM (tested destructively), QSPI (checked by CRC) */
} selftest_region;

/* Answers a `run` command with the self-test's records and end line; 0 when every test passed. */
int selftest_run(void);

#endif /* LLMCU_SELFTEST_H */
