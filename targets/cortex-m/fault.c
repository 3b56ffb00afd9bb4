/*
 * Fault report: HardFault, MemManage, BusFault and UsageFault (and any exception without a handler, via
 * startup.c's Default_Handler) end the run with one output protocol end line over the console,
 *
 *   \x03llmcu end status=fault reason=UsageFault exception=UsageFault pc=0x.. lr=0x.. xpsr=0x.. cfsr=0x..
 *        hfsr=0x.. mmfar=0x.. bfar=0x.. sp=0x..\n                                  (one line)
 *
 * so the host sees a fault where it would have seen the end of a run, then calls board_fatal().
 * reason is the exception's name, except for two causes the report names outright:
 *   reason=stack_overflow  the stack pointer was below the stack (__stack_limit), or the faulting address
 *                          lies in the MPU guard below it (startup.c); the line adds stack_limit=0x..
 *                          stack_top=0x.., so the host can say by how much and which stack= would do
 *   reason=watchdog        an NMI that the board says came from its watchdog (the QEMU twin's CMSDK
 *                          watchdog; a board whose watchdog resets it says so in its next ready line)
 * pc/lr/xpsr are the faulting code's, from the frame the core stacked; sp is its stack pointer before
 * the exception. cfsr says what happened (MemManage, BusFault and UsageFault bits), hfsr why a fault
 * became a HardFault, mmfar/bfar the faulting address when cfsr marks them valid.
 *
 * Everything is formatted by hand into a local buffer: no printf, no static state, so the report works
 * whatever state the fault left the program in, a stack overflow included.
 */
#include <stddef.h>
#include <stdint.h>

#include "armv7m.h"
#include "board.h"

extern uint32_t __stack_top[];
extern uint32_t __stack_limit[];
extern uint32_t __stack_guard[];

void cortex_m_fault_entry(void);
void cortex_m_fault_report(const uint32_t *frame, uint32_t exc_return) __attribute__((noreturn, used));

/*
 * The entry: bit 2 of EXC_RETURN (in LR) says which stack the core pushed the frame to, MSP or PSP.
 * Pass that frame and EXC_RETURN on to C. When SP is below the stack (an overflow: the fault is likely
 * the core failing to push the frame there), the report moves to the top of the stack; nothing returns
 * from here, so what was there is not needed. Naked: no prologue may move SP or clobber LR first.
 */
__attribute__((naked)) void cortex_m_fault_entry(void) {
    __asm volatile("tst lr, #4\n"
                   "ite eq\n"
                   "mrseq r0, msp\n"
                   "mrsne r0, psp\n"
                   "mov r1, lr\n"
                   "ldr r2, =__stack_limit\n"
                   "ldr r3, =__stack_top\n"
                   "cmp sp, r2\n"
                   "it lo\n"
                   "movlo sp, r3\n"
                   "b cortex_m_fault_report\n");
}

void HardFault_Handler(void) __attribute__((alias("cortex_m_fault_entry")));
void MemManage_Handler(void) __attribute__((alias("cortex_m_fault_entry")));
void BusFault_Handler(void) __attribute__((alias("cortex_m_fault_entry")));
void UsageFault_Handler(void) __attribute__((alias("cortex_m_fault_entry")));

/* The exception frame the core pushes: r0-r3, r12, lr, pc, xpsr. */
#define FRAME_LR 5
#define FRAME_PC 6
#define FRAME_XPSR 7
#define FRAME_WORDS 8
#define FRAME_FP_WORDS 18 /* s0-s15, fpscr and a reserved word, when the FPU context was stacked */
#define EXC_RETURN_BASIC_FRAME (1u << 4) /* 0: the frame includes the FP words */
#define EXC_RETURN_SPSEL_PROCESS (1u << 2) /* 1: the frame is on the process stack */
#define XPSR_STACK_ALIGNED (1u << 9)     /* the core added a padding word to align the frame to 8 */
#define CFSR_STACKING_FAILED ((1u << 4) | (1u << 12)) /* MSTKERR, STKERR: no frame to read */
#define CFSR_MMARVALID (1u << 7)
#define CFSR_BFARVALID (1u << 15)
#define EXCEPTION_NMI 2u

static int in_guard(uint32_t address) {
    return address >= (uint32_t)(uintptr_t)__stack_guard && address < (uint32_t)(uintptr_t)__stack_limit;
}

/*
 * An overflow shows in one of two ways: the core's own push of the exception frame went below the stack
 * (the frame's address, the stack pointer at entry, is under __stack_limit: a push, a `sub sp` past the
 * limit, or the frame itself), or an access the program made hit the guard (MMFAR or BFAR in it, while
 * the stack pointer was still just above the limit). The guard is never a valid address for anything
 * else, so either is an overflow, whatever exception it became.
 */
static int is_stack_overflow(uint32_t frame_address, uint32_t cfsr) {
    if (frame_address < (uint32_t)(uintptr_t)__stack_limit) {
        return 1;
    }
    if ((cfsr & CFSR_MMARVALID) && in_guard(SCB_MMFAR)) {
        return 1;
    }
    return (cfsr & CFSR_BFARVALID) && in_guard(SCB_BFAR);
}

static const char *exception_name(uint32_t number) {
    switch (number) {
    case 2:
        return "NMI";
    case 3:
        return "HardFault";
    case 4:
        return "MemManage";
    case 5:
        return "BusFault";
    case 6:
        return "UsageFault";
    case 11:
        return "SVC";
    case 12:
        return "DebugMon";
    case 14:
        return "PendSV";
    case 15:
        return "SysTick";
    default:
        return number >= 16 ? "IRQ" : "Reserved";
    }
}

typedef struct {
    char buf[256]; /* the longest report is under 200 characters */
    size_t len;
} report_line;

static void put_str(report_line *line, const char *text) {
    while (*text != '\0' && line->len < sizeof line->buf) {
        line->buf[line->len++] = *text++;
    }
}

/* " name=0x" and eight hex digits. */
static void put_hex(report_line *line, const char *name, uint32_t value) {
    static const char digits[] = "0123456789abcdef";
    put_str(line, " ");
    put_str(line, name);
    put_str(line, "=0x");
    for (int shift = 28; shift >= 0; shift -= 4) {
        if (line->len < sizeof line->buf) {
            line->buf[line->len++] = digits[(value >> shift) & 0xFu];
        }
    }
}

void cortex_m_fault_report(const uint32_t *frame, uint32_t exc_return) {
    uint32_t ipsr;
    __asm volatile("mrs %0, ipsr" : "=r"(ipsr));
    uint32_t number = ipsr & 0x1FFu;

    /* The faulting code's registers, from the frame, unless the core could not push one (then they read
     * as 0 and sp is where the frame would have gone). */
    uint32_t pc = 0, lr = 0, xpsr = 0;
    uint32_t sp = (uint32_t)(uintptr_t)frame;
    uint32_t cfsr = SCB_CFSR;
    /* The MSP is checked, not the PSP: the firmware runs on the main stack, which the guard protects. */
    int overflow = (exc_return & EXC_RETURN_SPSEL_PROCESS) == 0 && is_stack_overflow(sp, cfsr);
    uint32_t frame_bytes = 4u * (FRAME_WORDS + ((exc_return & EXC_RETURN_BASIC_FRAME) ? 0u : FRAME_FP_WORDS));
    /* A frame that overlaps the guard cannot have been pushed there, and reading it would fault again. */
    int frame_in_guard = sp < (uint32_t)(uintptr_t)__stack_limit && sp + frame_bytes > (uint32_t)(uintptr_t)__stack_guard;
    if ((cfsr & CFSR_STACKING_FAILED) == 0 && !frame_in_guard) {
        pc = frame[FRAME_PC];
        lr = frame[FRAME_LR];
        xpsr = frame[FRAME_XPSR];
        /* SP before the exception: above the frame, its FP extension and the alignment padding. */
        sp += frame_bytes;
        if (xpsr & XPSR_STACK_ALIGNED) {
            sp += 4u;
        }
    }

    report_line line;
    line.len = 0;
    put_str(&line, "\x03llmcu end status=fault reason=");
    if (overflow) {
        put_str(&line, "stack_overflow");
    } else if (number == EXCEPTION_NMI && board_watchdog_fired()) {
        put_str(&line, "watchdog");
    } else {
        put_str(&line, exception_name(number));
    }
    put_str(&line, " exception=");
    put_str(&line, exception_name(number));
    put_hex(&line, "pc", pc);
    put_hex(&line, "lr", lr);
    put_hex(&line, "xpsr", xpsr);
    put_hex(&line, "cfsr", cfsr);
    put_hex(&line, "hfsr", SCB_HFSR);
    put_hex(&line, "mmfar", SCB_MMFAR);
    put_hex(&line, "bfar", SCB_BFAR);
    put_hex(&line, "sp", sp);
    if (overflow) {
        put_hex(&line, "stack_limit", (uint32_t)(uintptr_t)__stack_limit);
        put_hex(&line, "stack_top", (uint32_t)(uintptr_t)__stack_top);
    }
    put_str(&line, "\n");
    board_write(line.buf, line.len);

    board_fatal((int)number);
}
