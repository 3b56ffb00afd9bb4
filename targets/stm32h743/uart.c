/*
 * The console: one USART, 8N1, polled (RM0433 section "USART/UART"). The instance, pins and baud come
 * from the board file; the kernel clock is the instance's APB clock (RCC_D2CCIP2R selection 000), and
 * BRR = kernel clock / baud with 16x oversampling (section "USART baud rate generation"), one value per
 * clock plan and one for the reset clock, all computed by boards.py.
 */
#include "board.h"
#include "h7board.h"
#include "stm32h7.h"

#if BOARD_UART_INSTANCE == 1
#define UART_BASE USART1_BASE
#define UART_ENR RCC_APB2ENR
#define UART_EN RCC_APB2ENR_USART1EN
#define UART_KERNEL_SEL RCC_D2CCIP2R_USART16SEL_MASK
#elif BOARD_UART_INSTANCE == 2
#define UART_BASE USART2_BASE
#define UART_ENR RCC_APB1LENR
#define UART_EN RCC_APB1LENR_USART2EN
#define UART_KERNEL_SEL RCC_D2CCIP2R_USART234578SEL_MASK
#elif BOARD_UART_INSTANCE == 3
#define UART_BASE USART3_BASE
#define UART_ENR RCC_APB1LENR
#define UART_EN RCC_APB1LENR_USART3EN
#define UART_KERNEL_SEL RCC_D2CCIP2R_USART234578SEL_MASK
#elif BOARD_UART_INSTANCE == 4
#define UART_BASE UART4_BASE
#define UART_ENR RCC_APB1LENR
#define UART_EN RCC_APB1LENR_UART4EN
#define UART_KERNEL_SEL RCC_D2CCIP2R_USART234578SEL_MASK
#elif BOARD_UART_INSTANCE == 5
#define UART_BASE UART5_BASE
#define UART_ENR RCC_APB1LENR
#define UART_EN RCC_APB1LENR_UART5EN
#define UART_KERNEL_SEL RCC_D2CCIP2R_USART234578SEL_MASK
#elif BOARD_UART_INSTANCE == 6
#define UART_BASE USART6_BASE
#define UART_ENR RCC_APB2ENR
#define UART_EN RCC_APB2ENR_USART6EN
#define UART_KERNEL_SEL RCC_D2CCIP2R_USART16SEL_MASK
#elif BOARD_UART_INSTANCE == 7
#define UART_BASE UART7_BASE
#define UART_ENR RCC_APB1LENR
#define UART_EN RCC_APB1LENR_UART7EN
#define UART_KERNEL_SEL RCC_D2CCIP2R_USART234578SEL_MASK
#elif BOARD_UART_INSTANCE == 8
#define UART_BASE UART8_BASE
#define UART_ENR RCC_APB1LENR
#define UART_EN RCC_APB1LENR_UART8EN
#define UART_KERNEL_SEL RCC_D2CCIP2R_USART234578SEL_MASK
#else
#error "board_config.h: BOARD_UART_INSTANCE is not a USART/UART this board layer knows"
#endif

#define UART_TX(port, pin, af) gpio_set_af((port), (pin), (af), GPIO_SPEED_MEDIUM, GPIO_PULL_NONE)
/* A pull-up on RX: an unconnected line then reads idle instead of a stream of break characters. */
#define UART_RX(port, pin, af) gpio_set_af((port), (pin), (af), GPIO_SPEED_MEDIUM, GPIO_PULL_UP)
#define PORT_BIT(port, pin, af) (1u << (port))

void uart_start(uint32_t brr)
{
    UART_ENR |= UART_EN;
    (void)UART_ENR;
    RCC_D2CCIP2R &= ~UART_KERNEL_SEL;

    gpio_enable_ports(BOARD_UART_TX_PIN(PORT_BIT) | BOARD_UART_RX_PIN(PORT_BIT));
    BOARD_UART_TX_PIN(UART_TX);
    BOARD_UART_RX_PIN(UART_RX);

    /* The frame format and BRR can only be changed while the USART is disabled (UE = 0). Reset values
     * give 8 data bits, no parity, 1 stop bit, 16x oversampling, FIFO off, prescaler 1. */
    USART_CR1(UART_BASE) = 0u;
    USART_CR2(UART_BASE) = 0u;
    USART_CR3(UART_BASE) = 0u;
    USART_PRESC(UART_BASE) = 0u;
    USART_BRR(UART_BASE) = brr;
    USART_CR1(UART_BASE) = USART_CR1_TE | USART_CR1_RE | USART_CR1_UE;
}

void uart_init(void)
{
    uart_start(board_plan()->uart_brr);
}

/* Whether uart_init() has run. A fault during board_early_init is reported (fault.c) before the UART
 * exists; an unclocked USART reads as all zeros, so waiting for TXE there would hang instead of reset.
 * The RCC enable bit is checked first: the USART's own registers mean nothing without its clock. */
static int uart_running(void)
{
    return (UART_ENR & UART_EN) != 0u && (USART_CR1(UART_BASE) & USART_CR1_UE) != 0u;
}

void uart_write(const void *data, size_t len)
{
    if (!uart_running()) {
        return;
    }
    const uint8_t *bytes = data;
    for (size_t i = 0u; i < len; i++) {
        /* A byte leaves in under 1 ms at any baud llmcu allows; a transmitter stuck for 10 ms drops it. */
        uint32_t start = DWT_CYCCNT;
        while ((USART_ISR(UART_BASE) & USART_ISR_TXE) == 0u) {
            if ((uint32_t)(DWT_CYCCNT - start) > US_CYCLES(10000u)) {
                return;
            }
        }
        USART_TDR(UART_BASE) = bytes[i];
    }
}

int uart_poll_byte(void)
{
    uint32_t isr = USART_ISR(UART_BASE);
    if ((isr & (USART_ISR_ORE | USART_ISR_FE | USART_ISR_NE)) != 0u) {
        /* An overrun stops reception until its flag is cleared; a lost byte is the caller's
         * problem (the protocol has checks), a stuck receiver would be ours. */
        USART_ICR(UART_BASE) = USART_ICR_ORECF | USART_ICR_FECF | USART_ICR_NECF;
    }
    if ((isr & USART_ISR_RXNE) != 0u) {
        return (int)(USART_RDR(UART_BASE) & 0xFFu);
    }
    return -1;
}

int uart_read_byte(uint32_t timeout_ms)
{
    uint64_t start = board_counter();
    uint64_t limit = (uint64_t)timeout_ms * (board_counter_hz() / 1000u);
    for (;;) {
        int byte = uart_poll_byte();
        if (byte >= 0) {
            return byte;
        }
        if (timeout_ms != 0u && board_counter() - start >= limit) {
            return -1;
        }
    }
}

/* Wait until the last byte has left the shift register (TC), at most about 10 ms, so that a report is
 * on the wire before a reset. */
void uart_drain(void)
{
    if (!uart_running()) {
        return;
    }
    uint32_t start = DWT_CYCCNT;
    while ((USART_ISR(UART_BASE) & USART_ISR_TC) == 0u && (uint32_t)(DWT_CYCCNT - start) < US_CYCLES(10000u)) {
    }
}
