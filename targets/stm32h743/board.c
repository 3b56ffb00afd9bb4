/*
 * The STM32H743 board layer: what ../cortex-m/board.h asks of a board.
 *   board_early_init: cycle counter (it times the delays), clocks, MPU and caches, then each external
 *                     memory and its MPU region, so the copy table can fill SDRAM and read QSPI.
 *   board_init:       64-bit cycle counter with SysTick, console UART.
 */
#include "board.h"

#include "armv7m.h"
#include "h7board.h"
#include "stm32h7.h"

/* SCB_AIRCR PRIGROUP, kept across the reset request (armv7m.h has no mask for it). */
#define AIRCR_PRIGROUP_MASK (7u << 8)

void board_early_init(void)
{
    dwt_start();
    clock_init();
    mpu_init();
    cache_enable();
    /* Allocate the D2 SRAMs (SRAM1-3) to the CPU (RM0433 RCC_AHB2ENR SRAMxEN), so the D2 domain stays
     * running with the CPU; the memory plan may put data there. */
    RCC_AHB2ENR |= RCC_AHB2ENR_SRAM1EN | RCC_AHB2ENR_SRAM2EN | RCC_AHB2ENR_SRAM3EN;
    (void)RCC_AHB2ENR;
#if BOARD_HAS_SDRAM
    sdram_init();
    mpu_enable_sdram();
#endif
#if BOARD_HAS_QSPI
    const char *failed = qspi_init();
    if (failed != NULL) {
        boot_fail(failed);
    }
    mpu_enable_qspi();
#endif
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

void board_init(void)
{
    dwt_start();
    counter_last = DWT_CYCCNT;
    counter_high = 0u;
    SYST_RVR = SYST_RVR_MAX;
    SYST_CVR = 0u;
    SYST_CSR = SYST_CSR_CLKSOURCE | SYST_CSR_TICKINT | SYST_CSR_ENABLE;
    uart_init();
}

void board_write(const void *data, size_t len)
{
    uart_write(data, len);
}

int board_read_byte(uint32_t timeout_ms)
{
    return uart_read_byte(timeout_ms);
}

const char *board_counter_unit(void)
{
    return "cycles";
}

uint64_t board_counter_hz(void)
{
    return board_plan()->cpu_hz; /* the clock this chip's revision runs (clock.c) */
}

const char *board_clock_description(void)
{
    return board_plan()->revision == 'V' ? BOARD_READY_CLOCK_V : BOARD_READY_CLOCK_Y;
}

void board_after_run(int status)
{
    (void)status; /* the console loop serves the next command */
}

void board_fatal(int code)
{
    (void)code;
    uart_drain();
    dsb();
    SCB_AIRCR = SCB_AIRCR_VECTKEY | (SCB_AIRCR & AIRCR_PRIGROUP_MASK) | SCB_AIRCR_SYSRESETREQ;
    dsb();
    for (;;) {
    }
}
