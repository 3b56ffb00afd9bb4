/*
 * The independent watchdog IWDG1 and the reset cause (RM0433: "Independent watchdog (IWDG)" and
 * "RCC reset status register (RCC_RSR)").
 *
 * IWDG1 counts down from RLR at LSI / prescaler (LSI: 32 kHz) and resets the chip when it reaches 0,
 * unless the key 0xAAAA reloads it first. Once started nothing but a reset stops it. The build works the
 * prescaler and reload out of watchdog=<time> (site_scons/llmcu/platform/watchdog.py, which refuses times the
 * IWDG cannot count) and passes them as LLMCU_WATCHDOG_PRESCALER / LLMCU_WATCHDOG_RELOAD.
 *
 * After the reset the watchdog causes, RCC_RSR has IWDG1RSTF set, and the next ready line says
 * reset=watchdog: that is how the host learns that the board hung. The IWDG raises no interrupt, so
 * board_watchdog_fired() is always 0 here (an NMI on this board is not the watchdog's).
 */
#include <stdint.h>

#include "board.h"
#include "stm32h7.h"

#ifndef LLMCU_WATCHDOG
#define LLMCU_WATCHDOG 0
#endif

/* Polls of IWDG1_SR before giving up on the prescaler/reload update reaching the LSI domain (it takes a
 * few LSI cycles, about 5 x 31 us; far fewer polls than this at 480 MHz). */
#define IWDG_UPDATE_POLLS 1000000u

void board_watchdog_start(void)
{
#if LLMCU_WATCHDOG
    /* Frozen while a debugger halts the core: otherwise a breakpoint, or pyOCD halting the chip to flash it
     * again, ends in a watchdog reset under the debugger's feet. No effect without a debugger. */
    DBGMCU_APB4FZ1 |= DBGMCU_APB4FZ1_DBG_IWDG1;
    IWDG1_KR = IWDG_KR_START; /* starts the LSI and the counter, with the reset values (/4, 0xFFF) */
    IWDG1_KR = IWDG_KR_UNLOCK;
    IWDG1_PR = LLMCU_WATCHDOG_PRESCALER;
    IWDG1_RLR = LLMCU_WATCHDOG_RELOAD;
    /* The new values take effect only once SR clears; a reload before that would use the old ones. */
    for (uint32_t polls = 0u; (IWDG1_SR & (IWDG_SR_PVU | IWDG_SR_RVU)) != 0u && polls < IWDG_UPDATE_POLLS; polls++) {
    }
    IWDG1_KR = IWDG_KR_RELOAD; /* also locks PR and RLR again */
#endif
}

void board_watchdog_kick(void)
{
#if LLMCU_WATCHDOG
    IWDG1_KR = IWDG_KR_RELOAD;
#endif
}

int board_watchdog_fired(void)
{
    return 0;
}

/* Decoded once: RCC_RSR is read, then cleared (RMVF), so that the next boot's flags are its own. */
static const char *reset_cause;

static const char *decode_reset_status(uint32_t rsr)
{
    if (rsr & RCC_RSR_IWDG1RSTF) {
        return "watchdog";
    }
    if (rsr & RCC_RSR_WWDG1RSTF) {
        return "window_watchdog";
    }
    if (rsr & RCC_RSR_LPWRRSTF) {
        return "low_power";
    }
    if (rsr & RCC_RSR_SFTRSTF) {
        return "software"; /* SYSRESETREQ: board_fatal() after a fault report, or a debugger's reset */
    }
    if (rsr & RCC_RSR_PORRSTF) {
        return "power_on";
    }
    if (rsr & RCC_RSR_BORRSTF) {
        return "brownout";
    }
    if (rsr & RCC_RSR_PINRSTF) {
        return "pin"; /* NRST: the reset button or the probe */
    }
    return "unknown";
}

const char *board_reset_cause(void)
{
    if (reset_cause == 0) {
        reset_cause = decode_reset_status(RCC_RSR);
        RCC_RSR |= RCC_RSR_RMVF;
    }
    return reset_cause;
}
