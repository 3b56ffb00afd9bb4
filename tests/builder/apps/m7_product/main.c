/*
 * A product's firmware on llmcu's exported library: its own UART driver (the CMSDK UART0 of QEMU's mps2-an500)
 * and its own loop around llmcu_next. It prints two generations, each ended by a newline: greedy from "Once upon a
 * time", then sampled from "The dog" (temperature 1, top-p 0.9, seed 7), 64 passes each.
 */
#include <stddef.h>
#include <stdint.h>

#include <llmcu.h>

#define UART0_DATA (*(volatile uint32_t *)0x40004000u)
#define UART0_STATE (*(volatile uint32_t *)0x40004004u)
#define UART0_CTRL (*(volatile uint32_t *)0x40004008u)
#define UART0_BAUDDIV (*(volatile uint32_t *)0x40004010u)

static void uart_send(const char *data, size_t len) {
    for (size_t i = 0; i < len; i++) {
        while (UART0_STATE & 1u) { /* TX buffer full */
        }
        UART0_DATA = (uint8_t)data[i];
    }
}

static int story(const char *prompt, float temperature, uint64_t seed) {
    llmcu_gen gen;
    llmcu_params params = {0};
    params.steps = 64;
    params.temperature = temperature;
    params.topp = 0.9f;
    params.seed = seed;
    const char *piece;
    size_t len;
    int rc = llmcu_begin(&gen, prompt, &params);
    while (rc == LLMCU_OK && (rc = llmcu_next(&gen, &piece, &len)) == LLMCU_OK) {
        uart_send(piece, len);
    }
    uart_send("\n", 1);
    return rc == LLMCU_DONE ? 0 : 1;
}

int main(void) {
    UART0_BAUDDIV = 16u;
    UART0_CTRL = 1u; /* TX enable */
    llmcu_copy_weights(); /* nothing to copy in this plan; a weights=sdram plan needs it */
    return story("Once upon a time", 0.0f, 1u) | story("The dog", 1.0f, 7u);
}
