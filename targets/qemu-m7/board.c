/*
 * The QEMU twin's board: `qemu-system-arm -M mps2-an500` (a Cortex-M7 on Arm's MPS2 FPGA board).
 *
 *   console   CMSDK APB UART0 at 0x40004000 (QEMU's first serial port)
 *   counter   instructions: under `-icount shift=0` QEMU runs one instruction per virtual nanosecond and
 *             SysTick, clocked at the 25 MHz system clock, ticks every 40 of them
 *   exit      semihosting SYS_EXIT_EXTENDED with the run's status as QEMU's exit code, after one run; a twin
 *             started with `-semihosting-config ...,arg=llmcu,arg=serve` (a console session) serves commands
 *             as a board does and never exits on its own
 *   watchdog  the CMSDK APB watchdog at 0x40008000 on the 25 MHz clock (watchdog=<time>); QEMU wires its
 *             interrupt to the NMI, and fault.c reports that NMI as reason=watchdog before the exit
 *
 * QEMU's RAMs need no setup and it models no caches, so there is nothing to do before .data exists.
 */
#include <stddef.h>
#include <stdint.h>

#include "armv7m.h"
#include "board.h"

#define SYSCLK_HZ 25000000u         /* mps2-an500: the system clock of SysTick and the UART */
#define INSTRUCTIONS_PER_TICK 40u   /* 1e9 virtual ns per second / SYSCLK_HZ, one instruction per ns */
#define CONSOLE_BAUD 115200u

/* ---- CMSDK APB UART (Arm DDI 0479, Cortex-M System Design Kit TRM) ---- */

#define UART0_BASE 0x40004000u
#define UART_DATA REG32(UART0_BASE + 0x00u)
#define UART_STATE REG32(UART0_BASE + 0x04u)
#define UART_CTRL REG32(UART0_BASE + 0x08u)
#define UART_BAUDDIV REG32(UART0_BASE + 0x10u)

#define UART_STATE_TX_FULL (1u << 0)
#define UART_STATE_RX_FULL (1u << 1)
#define UART_CTRL_TX_ENABLE (1u << 0)
#define UART_CTRL_RX_ENABLE (1u << 1)

/* ---- CMSDK APB watchdog (Arm DDI 0479; QEMU's hw/arm/mps2.c maps it at 0x40008000 for mps2-an500) ---- */

#define WDOG_BASE 0x40008000u
#define WDOG_LOAD REG32(WDOG_BASE + 0x000u)
#define WDOG_CONTROL REG32(WDOG_BASE + 0x008u)
#define WDOG_INTCLR REG32(WDOG_BASE + 0x00Cu) /* any write: clear the interrupt, reload the counter */
#define WDOG_RIS REG32(WDOG_BASE + 0x010u)    /* bit 0: the counter reached 0 */
#define WDOG_LOCK REG32(WDOG_BASE + 0xC00u)

#define WDOG_CONTROL_INTEN (1u << 0) /* interrupt (here: NMI) when the counter reaches 0 */
#define WDOG_LOCK_KEY 0x1ACCE551u    /* unlocks writes; any other value locks them again */

#ifndef LLMCU_WATCHDOG
#define LLMCU_WATCHDOG 0
#endif

/* ---- semihosting (Arm's semihosting specification; QEMU with -semihosting-config enable=on) ---- */

#define SEMIHOSTING_SYS_GET_CMDLINE 0x15u
#define SEMIHOSTING_SYS_EXIT_EXTENDED 0x20u
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u

/* Ends the emulation with `code` as QEMU's exit status. */
__attribute__((noreturn)) static void semihosting_exit(uint32_t code) {
    /* SYS_EXIT_EXTENDED takes a pointer to {reason, exit code}: plain SYS_EXIT on 32-bit Arm can only
     * say "success" or "failure". */
    volatile uint32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, code};
    register uint32_t op __asm("r0") = SEMIHOSTING_SYS_EXIT_EXTENDED;
    register volatile uint32_t *arg __asm("r1") = block;
    __asm volatile("bkpt 0xAB" : "+r"(op) : "r"(arg) : "memory");
    for (;;) { /* no semihosting host: stop here */
    }
}

/* 1 when QEMU's semihosting command line has the word "serve" (asked once, after the first run, so that
 * a single run's instruction counts do not change with it). */
static int semihosting_serves(void) {
    static char cmdline[64];
    volatile uint32_t block[2] = {(uint32_t)(uintptr_t)cmdline, sizeof cmdline - 1u};
    register uint32_t op __asm("r0") = SEMIHOSTING_SYS_GET_CMDLINE;
    register volatile uint32_t *arg __asm("r1") = block;
    __asm volatile("bkpt 0xAB" : "+r"(op) : "r"(arg) : "memory");
    if (op != 0u) { /* no command line: a plain run */
        return 0;
    }
    uint32_t len = block[1] < sizeof cmdline - 1u ? block[1] : sizeof cmdline - 1u;
    cmdline[len] = '\0';
    static const char word[] = "serve";
    for (uint32_t i = 0; i + sizeof word - 1u <= len; i++) {
        uint32_t j = 0;
        while (j < sizeof word - 1u && cmdline[i + j] == word[j]) {
            j++;
        }
        int starts = i == 0u || cmdline[i - 1u] == ' ';
        int ends = i + j == len || cmdline[i + j] == ' ';
        if (j == sizeof word - 1u && starts && ends) {
            return 1;
        }
    }
    return 0;
}

/* ---- SysTick: the instruction counter ---- */

/*
 * SysTick counts down from SYST_RVR_MAX to 0, then reloads: a period of 2^24 ticks. It raises its
 * exception as it reaches 0, so the wraps counted by the handler already include a period whose counter
 * reads 0; the position in the current period is therefore (2^24 - CVR) mod 2^24.
 */
static volatile uint32_t systick_wraps;
static uint64_t systick_base; /* ticks counted before the last restart */

void SysTick_Handler(void) { systick_wraps++; }

static uint64_t systick_ticks(void) {
    uint32_t wraps;
    uint32_t current;
    do { /* if the handler runs between the two reads, read both again */
        wraps = systick_wraps;
        current = SYST_CVR;
    } while (wraps != systick_wraps);
    return systick_base + (uint64_t)wraps * (SYST_RVR_MAX + 1u) + ((SYST_RVR_MAX + 1u - current) & SYST_RVR_MAX);
}

/*
 * (Re)starts SysTick from this instruction. Its ticks then fall at fixed instruction counts from here,
 * which is what makes the per-token counts repeatable: without it they would depend, by up to one tick,
 * on how many polls the wait for the host's command took.
 */
static void systick_restart(void) {
    uint64_t now = systick_ticks();
    SYST_CSR = 0;
    systick_base = now;
    systick_wraps = 0;
    SYST_RVR = SYST_RVR_MAX;
    SYST_CVR = 0; /* any write clears it; the first tick reloads it without an exception */
    SYST_CSR = SYST_CSR_CLKSOURCE | SYST_CSR_TICKINT | SYST_CSR_ENABLE;
}

/* ---- board.h ---- */

void board_early_init(void) {}

void board_init(void) {
    UART_BAUDDIV = SYSCLK_HZ / CONSOLE_BAUD; /* QEMU ignores the rate but refuses a divisor below 16 */
    UART_CTRL = UART_CTRL_TX_ENABLE | UART_CTRL_RX_ENABLE;

    systick_restart();
}

void board_write(const void *data, size_t len) {
    const uint8_t *bytes = data;
    for (size_t i = 0; i < len; i++) {
        while (UART_STATE & UART_STATE_TX_FULL) {
        }
        UART_DATA = bytes[i];
    }
}

int board_read_byte(uint32_t timeout_ms) {
    uint64_t start = systick_ticks();
    uint64_t limit = (uint64_t)timeout_ms * (SYSCLK_HZ / 1000u);
    while (!(UART_STATE & UART_STATE_RX_FULL)) {
        if (timeout_ms != 0 && systick_ticks() - start >= limit) {
            return -1;
        }
    }
    int byte = (int)(UART_DATA & 0xFFu);
    systick_restart(); /* the wait took as long as the host did: realign the counter to the code */
    return byte;
}

int board_poll_byte(void) { return (UART_STATE & UART_STATE_RX_FULL) ? (int)(UART_DATA & 0xFFu) : -1; }

uint64_t board_counter(void) { return systick_ticks() * INSTRUCTIONS_PER_TICK; }

const char *board_counter_unit(void) { return "instructions"; }

uint64_t board_counter_hz(void) { return 0; }

void board_after_run(int status) {
    static int serves = -1; /* not asked yet */
    if (serves < 0) {
        serves = semihosting_serves();
    }
    if (!serves) {
        semihosting_exit((uint32_t)status);
    }
}

void board_fatal(int code) { semihosting_exit(128u + (uint32_t)code); }

/*
 * The watchdog counts down from LOAD and raises its interrupt (the NMI) at 0. RESEN is left off: QEMU
 * would reset the machine on the second timeout and the twin would boot again silently, whereas the
 * NMI's report says what happened and ends the emulation with a non-zero status (board_fatal).
 * The registers are locked between accesses, as a stray write must not stop the watchdog.
 */
void board_watchdog_start(void) {
#if LLMCU_WATCHDOG
    WDOG_LOCK = WDOG_LOCK_KEY;
    WDOG_LOAD = LLMCU_WATCHDOG_RELOAD;
    WDOG_CONTROL = WDOG_CONTROL_INTEN;
    WDOG_LOCK = 0u;
#endif
}

void board_watchdog_kick(void) {
#if LLMCU_WATCHDOG
    WDOG_LOCK = WDOG_LOCK_KEY;
    WDOG_INTCLR = 1u;
    WDOG_LOCK = 0u;
#endif
}

int board_watchdog_fired(void) { return LLMCU_WATCHDOG && (WDOG_RIS & 1u) != 0u; }

/* QEMU starts the twin afresh every time (nothing survives a reset to tell otherwise). */
const char *board_reset_cause(void) { return "power_on"; }

const char *board_clock_description(void) { return ""; /* the twin counts instructions, not time */ }
