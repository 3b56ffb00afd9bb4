/*
 * The stack guard: an MPU region (PMSAv7) with no access directly below the stack.
 *
 * ARMv7-M has no stack limit register (MSPLIM is ARMv8-M), so an overflow would run silently into
 * whatever lies below the stack. The generated linker script (cortex_m.ld.j2) reserves a guard there,
 * [__stack_guard, __stack_limit), a power of two of at least 32 bytes aligned to its size (the rules for
 * an MPU region, ARMv7-M ARM B3.5.8). This makes it a region with no access and execute-never, in the
 * highest-numbered region the MPU has, so that it wins over any region a board set up for its caches and
 * external memories (where regions overlap, the higher number decides, B3.5.3; the STM32H743's
 * mpu_cache.c uses 0-3 of its 16). PRIVDEFENA keeps the default memory map for everything else; a
 * board's own settings (its regions, HFNMIENA) are left as they are.
 *
 * What happens on an overflow: a push or store into the guard is a MemManage fault (startup.c sets
 * MEMFAULTENA before calling this, so it is not escalated to a HardFault), and pushing the exception
 * frame into the guard fails too (MSTKERR). fault.c's entry sees the stack pointer below __stack_limit,
 * moves to the top of the stack and reports reason=stack_overflow. HFNMIENA is clear, so the MPU is off
 * in the HardFault and NMI handlers: a second fault inside the report still ends in a HardFault report.
 */
#include <stdint.h>

#include "armv7m.h"
#include "cortex_m.h"

extern uint32_t __stack_guard[];
extern uint32_t __stack_limit[];

int cortex_m_stack_guard_enable(void) {
    uint32_t regions = (MPU_TYPE >> 8) & 0xFFu; /* DREGION: 0 when there is no MPU */
    uintptr_t base = (uintptr_t)__stack_guard;
    uintptr_t size = (uintptr_t)__stack_limit - base;
    if (regions == 0u || size < 32u || (size & (size - 1u)) != 0u || (base & (size - 1u)) != 0u) {
        return -1; /* no MPU; the linker script's ASSERT rules out the rest */
    }
    uint32_t region = regions - 1u;
    dsb(); /* every access before this one completes under the old map */
    MPU_RNR = region;
    MPU_RBAR = (uint32_t)base; /* VALID = 0: the region is the one MPU_RNR selects */
    MPU_RASR = MPU_RASR_ENABLE | MPU_RASR_SIZE((uint32_t)__builtin_ctz((uint32_t)size)) |
               MPU_RASR_AP(MPU_AP_NO_ACCESS) | MPU_RASR_XN | MPU_ATTR_STRONGLY_ORDERED;
    MPU_CTRL |= MPU_CTRL_ENABLE | MPU_CTRL_PRIVDEFENA;
    dsb();
    isb(); /* and every one after it under the new */
    return (int)region;
}
