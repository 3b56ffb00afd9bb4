/*
 * Reset for every Cortex-M board: the vector table and Reset_Handler, which brings the C environment up
 * and calls main().
 *
 *   Reset_Handler: FPU on -> VTOR -> board_early_init() -> copy table -> zero table -> paint the stack
 *                  -> fault traps on -> stack guard (MPU) on -> board_init() -> main()
 *
 * Only the 16 core entries are here. Every handler but Reset_Handler is a weak alias of Default_Handler,
 * so a board or fault.c defines the ones it uses simply by defining a function of that name.
 */
#include <stddef.h>
#include <stdint.h>

#include "armv7m.h"
#include "board.h"
#include "cortex_m.h"

/* ---- what the linker script provides (targets/README.md, "Symbols the generated linker script defines") ---- */

extern uint32_t __stack_top[];
extern uint32_t __stack_limit[];

/* Sections loaded from flash into RAM (.data and the planner's copied groups) and regions to clear. */
typedef struct {
    const uint32_t *src;
    uint32_t *dst;
    uint32_t bytes;
} copy_entry;

typedef struct {
    uint32_t *dst;
    uint32_t bytes;
} zero_entry;

extern const copy_entry __llmcu_copy_table_start[];
extern const copy_entry __llmcu_copy_table_end[];
extern const zero_entry __llmcu_zero_table_start[];
extern const zero_entry __llmcu_zero_table_end[];

int main(void);

/* ---- the vector table ---- */

void Reset_Handler(void) __attribute__((weak));
void Default_Handler(void);

#define DEFAULT_HANDLER __attribute__((weak, alias("Default_Handler")))
void NMI_Handler(void) DEFAULT_HANDLER;
void HardFault_Handler(void) DEFAULT_HANDLER;
void MemManage_Handler(void) DEFAULT_HANDLER;
void BusFault_Handler(void) DEFAULT_HANDLER;
void UsageFault_Handler(void) DEFAULT_HANDLER;
void SVC_Handler(void) DEFAULT_HANDLER;
void DebugMon_Handler(void) DEFAULT_HANDLER;
void PendSV_Handler(void) DEFAULT_HANDLER;
void SysTick_Handler(void) DEFAULT_HANDLER;

typedef void (*exception_handler)(void);

/* Word 0 is the initial stack pointer, the 15 after it are exceptions 1..15 (0: reserved). */
typedef struct {
    uint32_t *initial_sp;
    exception_handler handlers[15];
} vector_table;

__attribute__((section(".isr_vector"), used)) const vector_table llmcu_vector_table = {
    __stack_top,
    {
        Reset_Handler,      /*  1 */
        NMI_Handler,        /*  2 */
        HardFault_Handler,  /*  3 */
        MemManage_Handler,  /*  4 */
        BusFault_Handler,   /*  5 */
        UsageFault_Handler, /*  6 */
        0,                  /*  7 */
        0,                  /*  8 */
        0,                  /*  9 */
        0,                  /* 10 */
        SVC_Handler,        /* 11 */
        DebugMon_Handler,   /* 12 */
        0,                  /* 13 */
        PendSV_Handler,     /* 14 */
        SysTick_Handler,    /* 15 */
    },
};

/*
 * An exception nobody handles: report it like a fault (fault.c reads the exception number from IPSR and
 * names it) rather than hang silently. A branch, not a call, so that LR still holds EXC_RETURN.
 */
__attribute__((naked)) void Default_Handler(void) { __asm volatile("b cortex_m_fault_entry"); }

/* ---- the stack: painted at boot, so that the deepest overwritten byte gives the peak use ---- */

#define STACK_PAINT_WORD 0xA5A5A5A5u
#define STACK_PAINT_BYTE 0xA5u
#define STACK_PAINT_MARGIN 16u /* a gap below the painter's own SP: nothing live is ever painted over */

/* Volatile stores: a plain loop could become a call to memset, whose frame would lie in the region. */
static void paint_stack(void) {
    uintptr_t sp;
    __asm volatile("mov %0, sp" : "=r"(sp));
    volatile uint32_t *word = __stack_limit;
    uintptr_t end = (sp - STACK_PAINT_MARGIN) & ~(uintptr_t)3u;
    while ((uintptr_t)word < end) {
        *word++ = STACK_PAINT_WORD;
    }
}

size_t cortex_m_stack_peak(void) {
    const volatile uint32_t *word = __stack_limit;
    const volatile uint32_t *top = __stack_top;
    while (word < top && *word == STACK_PAINT_WORD) { /* whole words first, */
        word++;
    }
    const volatile uint8_t *byte = (const volatile uint8_t *)word;
    const volatile uint8_t *end = (const volatile uint8_t *)top;
    while (byte < end && *byte == STACK_PAINT_BYTE) { /* then the bytes of the first word in use */
        byte++;
    }
    return (size_t)((uintptr_t)top - (uintptr_t)byte);
}

/* ---- reset ---- */

void Reset_Handler(void) {
    /* The FPU first: hard-float code may touch FP registers anywhere, even in the copy loops below. */
    SCB_CPACR |= SCB_CPACR_CP10_CP11_FULL;
    dsb();
    isb();
    SCB_VTOR = (uint32_t)(uintptr_t)&llmcu_vector_table;

    /* Clocks, caches, MPU and external memories: the copy table may target SDRAM. */
    board_early_init();

    for (const copy_entry *e = __llmcu_copy_table_start; e < __llmcu_copy_table_end; e++) {
        const uint32_t *src = e->src;
        uint32_t *dst = e->dst;
        for (uint32_t n = e->bytes / 4u; n > 0; n--) {
            *dst++ = *src++;
        }
        const uint8_t *src_tail = (const uint8_t *)src; /* sections are word-aligned, sizes need not be */
        uint8_t *dst_tail = (uint8_t *)dst;
        for (uint32_t n = e->bytes % 4u; n > 0; n--) {
            *dst_tail++ = *src_tail++;
        }
    }
    for (const zero_entry *e = __llmcu_zero_table_start; e < __llmcu_zero_table_end; e++) {
        uint32_t *dst = e->dst;
        for (uint32_t n = e->bytes / 4u; n > 0; n--) {
            *dst++ = 0;
        }
        uint8_t *dst_tail = (uint8_t *)dst;
        for (uint32_t n = e->bytes % 4u; n > 0; n--) {
            *dst_tail++ = 0;
        }
    }

    paint_stack();

    /* Report MemManage, BusFault and UsageFault as themselves rather than escalated to HardFault, and
     * trap integer division by zero (which otherwise quietly gives 0). */
    SCB_SHCSR |= SCB_SHCSR_MEMFAULTENA | SCB_SHCSR_BUSFAULTENA | SCB_SHCSR_USGFAULTENA;
    SCB_CCR |= SCB_CCR_DIV_0_TRP;
    dsb();
    isb();

    /* After the fault traps: a hit in the guard is a MemManage fault (stack_guard.c). */
    (void)cortex_m_stack_guard_enable();

    board_init();
    main();
    for (;;) { /* main does not return; if it did, there is nowhere to go */
    }
}
