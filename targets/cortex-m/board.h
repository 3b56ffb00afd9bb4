/*
 * What a Cortex-M board provides to the shared Cortex-M code (startup.c, fault.c, firmware_main.c).
 *
 * Boot order (startup.c):
 *   Reset_Handler: FPU on (CPACR) -> board_early_init() -> copy and zero tables -> board_init() -> main()
 * board_early_init() runs before .data is copied and .bss is zeroed, and before the sections placed in
 * external memory exist, so it must not touch static variables: it brings up clocks, MPU, caches and the
 * external memories (SDRAM, memory-mapped QSPI) that the copy table may target.
 */
#ifndef LLMCU_CORTEX_M_BOARD_H
#define LLMCU_CORTEX_M_BOARD_H

#include <stddef.h>
#include <stdint.h>

void board_early_init(void);
void board_init(void); /* console UART, cycle counter */

/* Console: blocking write; read returns one byte, or -1 when nothing arrives within timeout_ms
 * (timeout_ms 0: wait forever). */
void board_write(const void *data, size_t len);
int board_read_byte(uint32_t timeout_ms);

/* Per-token cost counter (DWT cycles on a board, instructions on the QEMU twin). */
uint64_t board_counter(void);
const char *board_counter_unit(void);
uint64_t board_counter_hz(void); /* 0 when the counter is not time */

/* Called after each generation with its status: a board returns and serves the next command; the QEMU
 * twin ends the emulation with the status as exit code (semihosting) and does not return. */
void board_after_run(int status);

/* Called by the fault handler after the report: never returns (reset, or the twin's exit). */
void board_fatal(int code) __attribute__((noreturn));

#endif /* LLMCU_CORTEX_M_BOARD_H */
