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
int board_poll_byte(void); /* a byte that has arrived, or -1 without waiting (the stop request during a run) */

/* Per-token cost counter (DWT cycles on a board, instructions on the QEMU twin). */
uint64_t board_counter(void);
const char *board_counter_unit(void);
uint64_t board_counter_hz(void); /* 0 when the counter is not time */

/* Called after each generation with its status: a board returns and serves the next command; the QEMU
 * twin ends the emulation with the status as exit code (semihosting) and does not return, unless it was
 * started to serve a console session (QEMU's semihosting command line says `serve`), when it returns too. */
void board_after_run(int status);

/* Called by the fault handler after the report: never returns (reset, or the twin's exit). */
void board_fatal(int code) __attribute__((noreturn));

/*
 * Watchdog (option watchdog=<time>): the build computes the board's prescaler and reload from the time
 * (site_scons/llmcu/platform/watchdog.py) and defines LLMCU_WATCHDOG=1, LLMCU_WATCHDOG_PRESCALER,
 * LLMCU_WATCHDOG_RELOAD and LLMCU_WATCHDOG_MS; without the option LLMCU_WATCHDOG is 0 and these do nothing.
 * firmware_main.c starts it before the first ready line and kicks it after each forward pass
 * (platform_alive) and while it waits for a command. board_watchdog_fired() tells the fault handler
 * whether an NMI came from the watchdog (the twin's watchdog raises one; a board's may just reset it).
 */
void board_watchdog_start(void);
void board_watchdog_kick(void);
int board_watchdog_fired(void);

/* Why the chip last reset, as one word for the ready line: power_on, pin, software, watchdog,
 * window_watchdog, brownout, low_power or unknown. */
const char *board_reset_cause(void);

/* What clock runs, as ready-line fields ("clock_hz=480000000 rev=V" on a board that picks its clock plan by
 * silicon revision), or "" when there is nothing to say (the QEMU twin counts instructions). */
const char *board_clock_description(void);

#endif /* LLMCU_CORTEX_M_BOARD_H */
