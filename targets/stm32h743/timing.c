/*
 * Time in the board layer: the DWT cycle counter (ARMv7-M DWT_CYCCNT), which times the delays of early init
 * and bounds every wait for the hardware, so that a part that never answers is a report, not a hang; and the
 * 64-bit counter (board_counter) that the runtime and the console read after init. Before .data and .bss exist
 * only dwt_start, delay_cycles and wait_bits_for run, and they touch no static data.
 */
#include "armv7m.h"
#include "board.h"
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

/*
 * 64-bit cycle count. DWT_CYCCNT is 32 bits and wraps every 2^32 / 480 MHz = 8.9 s, less than one token
 * of a big model takes. board_counter() extends it: a reading below the previous one means one wrap.
 * That only works if readings are less than one wrap apart, so SysTick (24 bits, on the CPU clock)
 * reads the counter every 2^24 cycles (35 ms): 256 readings per wrap, whoever else asks or not.
 */
static uint32_t counter_last;
static uint32_t counter_high;

static inline uint32_t irq_save(void)
{
    uint32_t primask;
    __asm volatile("mrs %0, primask\n\tcpsid i" : "=r"(primask)::"memory");
    return primask;
}

static inline void irq_restore(uint32_t primask)
{
    __asm volatile("msr primask, %0" ::"r"(primask) : "memory");
}

uint64_t board_counter(void)
{
    /* Interrupts off: SysTick between the read and the update would count the same wrap twice. */
    uint32_t primask = irq_save();
    uint32_t now = DWT_CYCCNT;
    if (now < counter_last) {
        counter_high++;
    }
    counter_last = now;
    uint32_t high = counter_high;
    irq_restore(primask);
    return ((uint64_t)high << 32) | now;
}

void SysTick_Handler(void)
{
    (void)board_counter();
}

void counter_start(void)
{
    dwt_start();
    counter_last = DWT_CYCCNT;
    counter_high = 0u;
    SYST_RVR = SYST_RVR_MAX;
    SYST_CVR = 0u;
    SYST_CSR = SYST_CSR_CLKSOURCE | SYST_CSR_TICKINT | SYST_CSR_ENABLE;
}

uint64_t board_counter_hz(void)
{
    return board_plan()->cpu_hz; /* the clock this chip's revision runs (clock.c) */
}
