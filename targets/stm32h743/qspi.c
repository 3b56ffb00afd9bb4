/*
 * QSPI NOR flash, memory-mapped at 0x90000000 (RM0433 section "Quad-SPI interface"). Indirect mode
 * first, to set the flash's Quad Enable bit (without it the flash's IO2/IO3 are /WP and /HOLD and the
 * quad read returns garbage), then memory-mapped mode with the flash's quad I/O fast read, after which
 * the flash reads like memory. Instructions, sizes, clock and dummy cycles come from the board file.
 * Nothing here touches static data: this runs before .data and .bss exist.
 */
#include "h7board.h"
#include "stm32h7.h"

#if BOARD_HAS_QSPI

/* QUADSPI_CCR may only be written while no command is running (BUSY = 0). */
static void qspi_wait_idle(void)
{
    while ((QUADSPI_SR & QUADSPI_SR_BUSY) != 0u) {
    }
}

static void qspi_wait_complete(void)
{
    while ((QUADSPI_SR & QUADSPI_SR_TCF) == 0u) {
    }
    QUADSPI_FCR = QUADSPI_FCR_CTCF;
}

/* A one-byte status register read, single line. Without an address the command starts when CCR is
 * written; TCF says the byte is in the FIFO. */
static uint32_t qspi_read_register(uint32_t instruction)
{
    qspi_wait_idle();
    QUADSPI_DLR = 0u; /* data length - 1 */
    QUADSPI_CCR = QUADSPI_CCR_FMODE_INDIRECT_READ | QUADSPI_CCR_DMODE(QUADSPI_LINES_SINGLE) |
                  QUADSPI_CCR_IMODE(QUADSPI_LINES_SINGLE) | QUADSPI_CCR_INSTRUCTION(instruction);
    while ((QUADSPI_SR & QUADSPI_SR_TCF) == 0u) {
    }
    uint32_t value = QUADSPI_DR8;
    QUADSPI_FCR = QUADSPI_FCR_CTCF;
    return value;
}

/* An instruction alone (write enable): starts when CCR is written. */
static void qspi_command(uint32_t instruction)
{
    qspi_wait_idle();
    QUADSPI_CCR = QUADSPI_CCR_FMODE_INDIRECT_WRITE | QUADSPI_CCR_IMODE(QUADSPI_LINES_SINGLE) |
                  QUADSPI_CCR_INSTRUCTION(instruction);
    qspi_wait_complete();
}

/* An instruction with one data byte: starts when the byte is written to the FIFO. */
static void qspi_write_register(uint32_t instruction, uint32_t value)
{
    qspi_wait_idle();
    QUADSPI_DLR = 0u;
    QUADSPI_CCR = QUADSPI_CCR_FMODE_INDIRECT_WRITE | QUADSPI_CCR_DMODE(QUADSPI_LINES_SINGLE) |
                  QUADSPI_CCR_IMODE(QUADSPI_LINES_SINGLE) | QUADSPI_CCR_INSTRUCTION(instruction);
    QUADSPI_DR8 = (uint8_t)value;
    qspi_wait_complete();
}

static void qspi_quad_enable(void)
{
    uint32_t status2 = qspi_read_register(BOARD_QSPI_CMD_READ_STATUS2);
    if ((status2 & (1u << BOARD_QSPI_QE_BIT)) != 0u) {
        return; /* QE is non-volatile: set once, it stays (and is not worn by rewriting it each boot) */
    }
    qspi_command(BOARD_QSPI_CMD_WRITE_ENABLE);
    qspi_write_register(BOARD_QSPI_CMD_WRITE_STATUS2, status2 | (1u << BOARD_QSPI_QE_BIT));
    /* The status write takes milliseconds; poll the flash's BUSY bit, bounded in case no flash answers. */
    uint32_t start = DWT_CYCCNT;
    while ((qspi_read_register(BOARD_QSPI_CMD_READ_STATUS1) & (1u << BOARD_QSPI_BUSY_BIT)) != 0u &&
           (uint32_t)(DWT_CYCCNT - start) < BOARD_QSPI_STATUS_WRITE_TIMEOUT_CYCLES) {
    }
}

#define QSPI_PIN(port, pin, af) gpio_set_af((port), (pin), (af), GPIO_SPEED_VERY_HIGH, GPIO_PULL_NONE);

void qspi_init(void)
{
    RCC_AHB3ENR |= RCC_AHB3ENR_QSPIEN;
    (void)RCC_AHB3ENR;
    /* The QUADSPI kernel clock is rcc_hclk3, as boards.py assumed when computing the prescaler. */
    RCC_D1CCIPR &= ~RCC_D1CCIPR_QSPISEL_MASK;

    gpio_enable_ports(BOARD_QSPI_GPIO_PORTS);
    BOARD_QSPI_PINS(QSPI_PIN)

    QUADSPI_CR = 0u; /* disabled while configured */
    /* FSIZE: flash size = 2^(FSIZE + 1) bytes; CSHT + 1 cycles of NCS high between commands; CKMODE. */
    QUADSPI_DCR = (BOARD_QSPI_FSIZE << QUADSPI_DCR_FSIZE_SHIFT) | (BOARD_QSPI_CSHT << QUADSPI_DCR_CSHT_SHIFT) |
                  (BOARD_QSPI_CKMODE != 0u ? QUADSPI_DCR_CKMODE : 0u);
    /* CLK = kernel clock / (PRESCALER + 1); SSHIFT samples half a cycle later for board delays. */
    QUADSPI_CR = (BOARD_QSPI_PRESCALER << QUADSPI_CR_PRESCALER_SHIFT) |
                 (BOARD_QSPI_SSHIFT != 0u ? QUADSPI_CR_SSHIFT : 0u) | QUADSPI_CR_EN;

    qspi_quad_enable();

    /* Memory-mapped: instruction on 1 line, address, mode byte (alternate bytes), dummy cycles and data
     * on 4 lines. The timeout counter stays off (TCEN = 0), so NCS stays low between prefetches and
     * sequential reads continue without a new command. */
    qspi_wait_idle();
    QUADSPI_ABR = BOARD_QSPI_MODE_BYTE;
    QUADSPI_CCR = QUADSPI_CCR_FMODE_MEMORY_MAPPED | QUADSPI_CCR_DMODE(QUADSPI_LINES_QUAD) |
                  QUADSPI_CCR_DCYC(BOARD_QSPI_DUMMY_CYCLES) | QUADSPI_CCR_ABSIZE(BOARD_QSPI_ABSIZE) |
                  QUADSPI_CCR_ABMODE(QUADSPI_LINES_QUAD) | QUADSPI_CCR_ADSIZE(BOARD_QSPI_ADSIZE) |
                  QUADSPI_CCR_ADMODE(QUADSPI_LINES_QUAD) | QUADSPI_CCR_IMODE(QUADSPI_LINES_SINGLE) |
                  QUADSPI_CCR_INSTRUCTION(BOARD_QSPI_READ_INSTRUCTION);
}

#endif /* BOARD_HAS_QSPI */
