/*
 * A bring-up step that never finished (a dead crystal, a PLL that does not lock, a QSPI flash that stays busy):
 * say so on the console and stop, instead of hanging before any output. The clock goes back to the reset clock,
 * HSI at 64 MHz with every prescaler at 1 (RM0433 "RCC": SYSCLK switch back to HSI is always allowed); the
 * console starts on it with the USART_BRR boards.py computed for 64 MHz; one protocol end line names the step,
 *
 *   \x03llmcu end status=fault reason=<step> [expected=0x<hex> found=0x<hex>] stage=boot rev=<V|Y> clock_hz=64000000\n
 *
 * which `scons run` turns into an error saying what to check; then the board halts (WFI with interrupts off:
 * nothing wakes it but a reset). No static data: this may run before .data and .bss exist.
 */
#include "armv7m.h"
#include "h7board.h"
#include "stm32h7.h"

void wait_bits(volatile uint32_t *reg, uint32_t mask, uint32_t want, uint32_t cycles, const char *reason)
{
    if (!wait_bits_for(reg, mask, want, cycles)) {
        boot_fail(reason);
    }
}

static void put(const char *text)
{
    for (; *text != '\0'; text++) {
        uart_write(text, 1u); /* a byte at a time: no strlen, nothing from the C library */
    }
}

static void put_hex(uint32_t value)
{
    char text[11] = {'0', 'x'};
    int digits = 1;
    while (digits < 8 && (value >> (4 * digits)) != 0u) {
        digits++;
    }
    for (int i = 0; i < digits; i++) {
        uint32_t nibble = (value >> (4 * (digits - 1 - i))) & 0xFu;
        text[2 + i] = (char)(nibble < 10u ? '0' + nibble : 'a' + nibble - 10u);
    }
    text[2 + digits] = '\0';
    put(text);
}

static void boot_halt(const char *reason, int with_values, uint32_t expected, uint32_t found)
    __attribute__((noreturn, noinline));

static void boot_halt(const char *reason, int with_values, uint32_t expected, uint32_t found)
{
    __asm volatile("cpsid i" ::: "memory");
    RCC_CFGR = (RCC_CFGR & ~RCC_CFGR_SW_MASK) | RCC_CFGR_SW_HSI;
    (void)wait_bits_for(&RCC_CFGR, RCC_CFGR_SWS_MASK, RCC_CFGR_SWS_HSI, US_CYCLES(10000u)); /* no second failure */
    RCC_D1CFGR = 0u; /* CPU, AXI/AHB and APB3 at 64 MHz */
    RCC_D2CFGR = 0u;
    RCC_D3CFGR = 0u;

    uart_start(BOARD_UART_BRR_HSI);
    char rev[2] = {board_plan()->revision, '\0'};
    put("\x03llmcu end status=fault reason=");
    put(reason);
    if (with_values) {
        put(" expected=");
        put_hex(expected);
        put(" found=");
        put_hex(found);
    }
    put(" stage=boot rev=");
    put(rev);
    put(" clock_hz=64000000\n");
    uart_drain();
    for (;;) {
        __asm volatile("wfi");
    }
}

void boot_fail(const char *reason)
{
    boot_halt(reason, 0, 0u, 0u);
}

void boot_fail_values(const char *reason, uint32_t expected, uint32_t found)
{
    boot_halt(reason, 1, expected, found);
}
