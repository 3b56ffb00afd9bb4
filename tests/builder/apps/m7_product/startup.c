/*
 * A product's own startup for QEMU's mps2-an500 (Cortex-M7), not llmcu's: a vector table, the FPU on, .data copied
 * and .bss cleared from this product's own linker script (app.ld), then main(); its exit status goes to QEMU by
 * semihosting (SYS_EXIT, ADP_Stopped_ApplicationExit).
 */
#include <stdint.h>

extern uint32_t _estack[], _sidata[], _sdata[], _edata[], _sbss[], _ebss[];
int main(void);

static void semihosting_exit(int status) {
    /* SYS_EXIT_EXTENDED would carry the status; QEMU's SYS_EXIT with ApplicationExit ends with 0 */
    register uint32_t op __asm("r0") = 0x18u;
    register uint32_t reason __asm("r1") = status == 0 ? 0x20026u : 0x20023u; /* ApplicationExit : RunTimeError */
    __asm volatile("bkpt 0xab" : : "r"(op), "r"(reason) : "memory");
    for (;;) {
    }
}

void Reset_Handler(void) {
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20; /* CPACR: CP10 and CP11 full access (the FPU) */
    __asm volatile("dsb\n isb" ::: "memory");
    for (uint32_t *src = _sidata, *dst = _sdata; dst < _edata;) {
        *dst++ = *src++;
    }
    for (uint32_t *dst = _sbss; dst < _ebss;) {
        *dst++ = 0u;
    }
    semihosting_exit(main());
}

static void Fault_Handler(void) { semihosting_exit(1); }

__attribute__((section(".isr_vector"), used)) const void *const vectors[16] = {
    _estack, (const void *)Reset_Handler, (const void *)Fault_Handler, (const void *)Fault_Handler,
    (const void *)Fault_Handler, (const void *)Fault_Handler, (const void *)Fault_Handler,
};
