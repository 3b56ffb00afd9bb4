/*
 * The pieces of the STM32H7 board layer and how they call each other. board.c implements the shared
 * Cortex-M interface (../cortex-m/board.h) from these.
 */
#ifndef LLMCU_H7BOARD_H
#define LLMCU_H7BOARD_H

#include <stddef.h>
#include <stdint.h>

#include "board_config.h"

/*
 * A clock plan: what differs between silicon revisions (board_config.h BOARD_PLAN_V, BOARD_PLAN_Y; computed
 * and checked against limits.toml by llmcu/platform/stm32h7.py). Revision V runs 480 MHz at VOS0; revision Y at most
 * 400 MHz at VOS1 (DS12110).
 */
typedef struct {
    uint32_t rev_id;          /* DBGMCU_IDCODE REV_ID of the revision */
    char revision;            /* 'V' or 'Y' */
    uint32_t vos;             /* voltage scale: 0 or 1 */
    uint32_t pll1_n;          /* PLL1 DIVN factor */
    uint32_t flash_latency;   /* FLASH_ACR LATENCY ... */
    uint32_t flash_wrhighfreq; /* ... and WRHIGHFREQ for the plan's HCLK */
    uint32_t cpu_hz;
    uint32_t hclk_hz;
    uint32_t uart_brr;        /* the console's USART_BRR at the plan's APB clock */
    uint32_t qspi_prescaler;  /* QUADSPI_CR PRESCALER and QUADSPI_DCR CSHT at the plan's HCLK */
    uint32_t qspi_csht;
} board_clock_plan;

/* plan.c: the plan of this chip's revision (DBGMCU_IDCODE REV_ID; revision Y's for an unknown one). Reads
 * flash and a register only, so it works before .data exists and whenever asked. */
const board_clock_plan *board_plan(void);

/* clock.c: supply, voltage scale, HSE, PLL1 (and PLL2), flash wait states, bus dividers, SYSCLK = PLL1 P,
 * all from board_plan(). Every wait for the hardware is bounded (timing.h). */
void clock_init(void);

/* mpu_cache.c: MPU regions (external-memory guard, peripherals), then the L1 caches. The regions of the
 * external memories are added once each memory answers. */
void mpu_init(void);
void cache_enable(void);
void mpu_enable_sdram(void);
void mpu_enable_qspi(void);

/* gpio.c */
void gpio_enable_ports(uint32_t port_mask);
void gpio_set_af(uint32_t port, uint32_t pin, uint32_t af, uint32_t speed, uint32_t pull);

/* sdram.c and qspi.c: bring the external memories up (memory-mapped QSPI included). qspi_init returns a NULL
 * reason, or the step that failed with what was expected and found where that says more (the JEDEC ID of a wrong
 * chip): the board fails its boot with it; the flash algorithm reports an error. */
typedef struct {
    const char *reason;
    uint32_t expected;
    uint32_t found;
} qspi_result;
void sdram_init(void);
qspi_result qspi_init(void);

/* part.c: the chip-level fixes and checks that come before anything else (no clock change, no RAM use):
 * part_check stops the boot with reason=wrong_part when the DEV_ID or the flash-size word is not the part the image
 * was built for; errata_apply applies the ES0392 workarounds this silicon revision needs. */
void part_check(void);
void errata_apply(void);

/* uart.c: the console. uart_start configures it for a USART_BRR (no static data: a failed boot uses it
 * before .data exists); uart_init starts it at the plan's clock. */
void uart_start(uint32_t brr);
void uart_init(void);
void uart_write(const void *data, size_t len);
int uart_read_byte(uint32_t timeout_ms);
int uart_poll_byte(void); /* a byte that has arrived, or -1 at once */
void uart_drain(void);

/* timing.c: the DWT cycle counter, which times the delays and bounds the waits of early init. */
void dwt_start(void);
void delay_cycles(uint32_t cycles);
/* Waits until (*reg & mask) == want, at most `cycles` CPU cycles: 1 when it came, 0 when it did not. */
int wait_bits_for(volatile uint32_t *reg, uint32_t mask, uint32_t want, uint32_t cycles);
/* timing.c: board_counter's 64-bit extension starts (SysTick reads the counter every 2^24 cycles). */
void counter_start(void);
/* Microseconds as CPU cycles at the clock that runs now: the reset clock (HSI) before the switch to PLL1,
 * the plan's after it (a longer wait is never wrong, so the faster of the two is assumed: BOARD_CPU_HZ_MAX). */
#define US_CYCLES(us) ((uint32_t)(((uint64_t)(us) * BOARD_CPU_HZ_MAX) / 1000000u))

/* boot_fail.c: wait_bits_for, and a boot that cannot go on without the bits fails with `reason`. */
void wait_bits(volatile uint32_t *reg, uint32_t mask, uint32_t want, uint32_t cycles, const char *reason);
/* boot_fail.c: a bring-up step that never finished. The clock goes back to the reset clock (HSI), the console
 * is started on it, one protocol fault line names the step, and the board halts:
 *     \x03llmcu end status=fault reason=<step> stage=boot rev=<V|Y> clock_hz=64000000\n
 * No static data: it may run before .data and .bss exist. */
void boot_fail(const char *reason) __attribute__((noreturn));
/* boot_fail with what was expected and what was found, as hex fields of the fault line:
 *     ... reason=<step> expected=0x<hex> found=0x<hex> stage=boot ... */
void boot_fail_values(const char *reason, uint32_t expected, uint32_t found) __attribute__((noreturn));

#endif /* LLMCU_H7BOARD_H */
