/*
 * The STM32H743 board layer: what ../cortex-m/board.h asks of a board.
 *   board_early_init: silicon errata, cycle counter (it times the delays), the part check, clocks, MPU and caches,
 *                     then each external memory and its MPU region, so the copy table can fill SDRAM and read QSPI.
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
    errata_apply(); /* before anything reads AXI SRAM */
    dwt_start();    /* it times the waits, the failed boot's among them */
    part_check();
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
    qspi_result qspi = qspi_init();
    if (qspi.reason != NULL) {
        if (qspi.expected != 0u || qspi.found != 0u) {
            boot_fail_values(qspi.reason, qspi.expected, qspi.found);
        }
        boot_fail(qspi.reason);
    }
    mpu_enable_qspi();
#endif
}

void board_init(void)
{
    counter_start();
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

int board_poll_byte(void)
{
    return uart_poll_byte();
}

const char *board_counter_unit(void)
{
    return "cycles";
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
