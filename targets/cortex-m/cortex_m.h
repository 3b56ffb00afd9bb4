/*
 * What the shared Cortex-M code (startup.c, fault.c) offers the rest of the firmware.
 */
#ifndef LLMCU_CORTEX_M_H
#define LLMCU_CORTEX_M_H

#include <stddef.h>

/* Deepest stack use since reset, in bytes from __stack_top: startup.c paints the stack at boot and this
 * finds the lowest painted byte that has been overwritten since. */
size_t cortex_m_stack_peak(void);

/* Makes the guard below the stack an MPU region with no access (stack_guard.c); returns the region's
 * number, or -1 when the core has no MPU. startup.c calls it once the fault traps are on. */
int cortex_m_stack_guard_enable(void);

#endif /* LLMCU_CORTEX_M_H */
