/*
 * What a target's board layer provides to the runtime. Kept small on purpose: a new board implements
 * these few functions and nothing else in the runtime changes.
 */
#ifndef LLMCU_PLATFORM_H
#define LLMCU_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

/* Writes bytes to the console (stdout, a UART, ...). */
void platform_write(const void *data, size_t len);

/* A free-running counter for the per-token cost, in the unit platform_counter_unit names. */
uint64_t platform_counter(void);

/* "ns", "cycles" or "instructions". */
const char *platform_counter_unit(void);

/* Counter ticks per second, or 0 when unknown (then no tok/s is reported). */
uint64_t platform_counter_hz(void);

/* Deepest stack use seen so far, in bytes, or 0 when the platform cannot tell. */
size_t platform_stack_peak(void);

/* Called once per forward pass: the run is making progress (a firmware kicks its watchdog here).
 * generate.c has an empty weak default, so a platform without a watchdog need not define it. */
void platform_alive(void);

/* Called once per forward pass, after it: 1 when the host asked to stop this generation (a console's
 * Ctrl-C arrives as one ETX byte, 0x03, on the command channel). The run then ends after the current
 * token with `status=ok reason=stopped`. generate.c has a weak default that never stops. */
int platform_stop_requested(void);

#endif /* LLMCU_PLATFORM_H */
