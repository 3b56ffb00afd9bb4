/*
 * Time in the board layer: the DWT cycle counter (ARMv7-M DWT_CYCCNT), which times the delays of early init
 * and bounds every wait for the hardware, so that a part that never answers is a report, not a hang.
 * Nothing here touches static data: this runs before .data and .bss exist.
 */
#include "armv7m.h"
#include "h7board.h"

void dwt_start(void)
{
    DEMCR |= DEMCR_TRCENA;  /* powers the DWT (and ITM) */
    DWT_LAR = DWT_LAR_KEY;  /* Cortex-M7: the DWT ignores software writes until unlocked */
    DWT_CTRL |= DWT_CTRL_CYCCNTENA;
}

void delay_cycles(uint32_t cycles)
{
    uint32_t start = DWT_CYCCNT;
    while ((uint32_t)(DWT_CYCCNT - start) < cycles) {
    }
}

int wait_bits_for(volatile uint32_t *reg, uint32_t mask, uint32_t want, uint32_t cycles)
{
    uint32_t start = DWT_CYCCNT;
    while ((*reg & mask) != want) {
        if ((uint32_t)(DWT_CYCCNT - start) > cycles) {
            return 0;
        }
    }
    return 1;
}
