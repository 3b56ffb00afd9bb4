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

/* A one-byte command takes microseconds at any QUADSPI clock; 10 ms means the interface is stuck. */
#define QSPI_TIMEOUT_US 10000u

/* The steps that can fail, as qspi_init reports them (and the fault line names them). */
#define QSPI_BUSY "qspi_busy"                    /* the QUADSPI never went idle */
#define QSPI_NO_COMPLETE "qspi_no_transfer_complete" /* a command never completed */
#define QSPI_FLASH_BUSY "qspi_flash_busy"        /* the flash stayed busy after its status write */

/* QUADSPI_CCR may only be written while no command is running (BUSY = 0). */
static const char *qspi_wait_idle(void)
{
    return wait_bits_for(&QUADSPI_SR, QUADSPI_SR_BUSY, 0u, US_CYCLES(QSPI_TIMEOUT_US)) ? NULL : QSPI_BUSY;
}

static const char *qspi_wait_complete(void)
{
    if (!wait_bits_for(&QUADSPI_SR, QUADSPI_SR_TCF, QUADSPI_SR_TCF, US_CYCLES(QSPI_TIMEOUT_US))) {
        return QSPI_NO_COMPLETE;
    }
    QUADSPI_FCR = QUADSPI_FCR_CTCF;
    return NULL;
}

/* A one-byte status register read, single line, into *value. Without an address the command starts when
 * CCR is written; TCF says the byte is in the FIFO. */
static const char *qspi_read_register(uint32_t instruction, uint32_t *value)
{
    const char *failed = qspi_wait_idle();
    if (failed != NULL) {
        return failed;
    }
    QUADSPI_DLR = 0u; /* data length - 1 */
    QUADSPI_CCR = QUADSPI_CCR_FMODE_INDIRECT_READ | QUADSPI_CCR_DMODE(QUADSPI_LINES_SINGLE) |
                  QUADSPI_CCR_IMODE(QUADSPI_LINES_SINGLE) | QUADSPI_CCR_INSTRUCTION(instruction);
    if (!wait_bits_for(&QUADSPI_SR, QUADSPI_SR_TCF, QUADSPI_SR_TCF, US_CYCLES(QSPI_TIMEOUT_US))) {
        return QSPI_NO_COMPLETE;
    }
    *value = QUADSPI_DR8;
    QUADSPI_FCR = QUADSPI_FCR_CTCF;
    return NULL;
}

/* An instruction alone (write enable): starts when CCR is written. */
static const char *qspi_command(uint32_t instruction)
{
    const char *failed = qspi_wait_idle();
    if (failed != NULL) {
        return failed;
    }
    QUADSPI_CCR = QUADSPI_CCR_FMODE_INDIRECT_WRITE | QUADSPI_CCR_IMODE(QUADSPI_LINES_SINGLE) |
                  QUADSPI_CCR_INSTRUCTION(instruction);
    return qspi_wait_complete();
}

/* An instruction with one data byte: starts when the byte is written to the FIFO. */
static const char *qspi_write_register(uint32_t instruction, uint32_t value)
{
    const char *failed = qspi_wait_idle();
    if (failed != NULL) {
        return failed;
    }
    QUADSPI_DLR = 0u;
    QUADSPI_CCR = QUADSPI_CCR_FMODE_INDIRECT_WRITE | QUADSPI_CCR_DMODE(QUADSPI_LINES_SINGLE) |
                  QUADSPI_CCR_IMODE(QUADSPI_LINES_SINGLE) | QUADSPI_CCR_INSTRUCTION(instruction);
    QUADSPI_DR8 = (uint8_t)value;
    return qspi_wait_complete();
}

static const char *qspi_quad_enable(void)
{
    uint32_t status2 = 0u;
    const char *failed = qspi_read_register(BOARD_QSPI_CMD_READ_STATUS2, &status2);
    if (failed != NULL || (status2 & (1u << BOARD_QSPI_QE_BIT)) != 0u) {
        return failed; /* QE is non-volatile: set once, it stays (and is not worn by rewriting it each boot) */
    }
    failed = qspi_command(BOARD_QSPI_CMD_WRITE_ENABLE);
    if (failed == NULL) {
        failed = qspi_write_register(BOARD_QSPI_CMD_WRITE_STATUS2, status2 | (1u << BOARD_QSPI_QE_BIT));
    }
    /* The status write takes milliseconds; poll the flash's BUSY bit, bounded: a flash that stays busy past
     * its datasheet's write time is broken, and memory-mapped reads from it would be garbage. */
    uint32_t start = DWT_CYCCNT;
    uint32_t status1 = 1u << BOARD_QSPI_BUSY_BIT;
    while (failed == NULL && (status1 & (1u << BOARD_QSPI_BUSY_BIT)) != 0u) {
        failed = qspi_read_register(BOARD_QSPI_CMD_READ_STATUS1, &status1);
        if (failed == NULL && (status1 & (1u << BOARD_QSPI_BUSY_BIT)) != 0u &&
            (uint32_t)(DWT_CYCCNT - start) > BOARD_QSPI_STATUS_WRITE_TIMEOUT_CYCLES) {
            failed = QSPI_FLASH_BUSY;
        }
    }
    return failed;
}

#define QSPI_PIN(port, pin, af) gpio_set_af((port), (pin), (af), GPIO_SPEED_VERY_HIGH, GPIO_PULL_NONE);

const char *qspi_init(void)
{
    RCC_AHB3ENR |= RCC_AHB3ENR_QSPIEN;
    (void)RCC_AHB3ENR;
    /* The QUADSPI kernel clock is rcc_hclk3, as boards.py assumed when computing the prescaler. */
    RCC_D1CCIPR &= ~RCC_D1CCIPR_QSPISEL_MASK;

    gpio_enable_ports(BOARD_QSPI_GPIO_PORTS);
    BOARD_QSPI_PINS(QSPI_PIN)

    QUADSPI_CR = 0u; /* disabled while configured */
    /* FSIZE: flash size = 2^(FSIZE + 1) bytes; CSHT + 1 cycles of NCS high between commands; CKMODE. */
    const board_clock_plan *plan = board_plan(); /* prescaler and CSHT for this revision's HCLK */
    QUADSPI_DCR = (BOARD_QSPI_FSIZE << QUADSPI_DCR_FSIZE_SHIFT) | (plan->qspi_csht << QUADSPI_DCR_CSHT_SHIFT) |
                  (BOARD_QSPI_CKMODE != 0u ? QUADSPI_DCR_CKMODE : 0u);
    /* CLK = kernel clock / (PRESCALER + 1); SSHIFT samples half a cycle later for board delays. */
    QUADSPI_CR = (plan->qspi_prescaler << QUADSPI_CR_PRESCALER_SHIFT) |
                 (BOARD_QSPI_SSHIFT != 0u ? QUADSPI_CR_SSHIFT : 0u) | QUADSPI_CR_EN;

    const char *failed = qspi_quad_enable();
    if (failed == NULL) {
        failed = qspi_wait_idle();
    }
    if (failed != NULL) {
        return failed;
    }

    /* Memory-mapped: instruction on 1 line, address, mode byte (alternate bytes), dummy cycles and data
     * on 4 lines. The timeout counter stays off (TCEN = 0), so NCS stays low between prefetches and
     * sequential reads continue without a new command. */
    QUADSPI_ABR = BOARD_QSPI_MODE_BYTE;
    QUADSPI_CCR = QUADSPI_CCR_FMODE_MEMORY_MAPPED | QUADSPI_CCR_DMODE(QUADSPI_LINES_QUAD) |
                  QUADSPI_CCR_DCYC(BOARD_QSPI_DUMMY_CYCLES) | QUADSPI_CCR_ABSIZE(BOARD_QSPI_ABSIZE) |
                  QUADSPI_CCR_ABMODE(QUADSPI_LINES_QUAD) | QUADSPI_CCR_ADSIZE(BOARD_QSPI_ADSIZE) |
                  QUADSPI_CCR_ADMODE(QUADSPI_LINES_QUAD) | QUADSPI_CCR_IMODE(QUADSPI_LINES_SINGLE) |
                  QUADSPI_CCR_INSTRUCTION(BOARD_QSPI_READ_INSTRUCTION);
    return NULL;
}

#endif /* BOARD_HAS_QSPI */
