/*
 * QSPI NOR flash, memory-mapped at 0x90000000 (RM0433 section "Quad-SPI interface"). The bring-up trusts nothing
 * the chip or a bootloader may have left behind (the Daisy bootloader and ST's ExtMem_Boot both leave the QUADSPI
 * memory-mapped and the flash in continuous-read mode):
 *   1. a controller that is still busy (memory-mapped, a prefetch under way) is aborted;
 *   2. the flash is brought out of continuous-read mode (mode bits all ones) and reset (66h/99h), in QPI and then
 *      in SPI, so that whatever mode it was left in, it ends in SPI mode with nothing half-done;
 *   3. its JEDEC ID (9Fh) is read and must be the board file's: no answer (all 0 or all 1 bits: nothing is fitted,
 *      or a pin is wrong) and a different chip each fail the boot with their own fault line;
 *   4. Quad Enable, where the chip has one (none on Micron MT25Q; a bit of status register 1 on ISSI IS25LP or 2
 *      on Winbond W25Q), is set and read back: without it IO2/IO3 are /WP and /HOLD and quad reads are garbage;
 *   5. memory-mapped mode with the chip's quad I/O fast read (3- or 4-byte addresses, as the board file says).
 * With two chips (dual-flash mode, QUADSPI_CR DFM) every command goes to both, every register byte comes back once
 * per chip (chip 1's first) and both must answer alike. Nothing here touches static data: this runs before .data
 * and .bss exist.
 */
#include "h7board.h"
#include "stm32h7.h"

#if BOARD_HAS_QSPI

/* A command of a few bytes takes microseconds at any QUADSPI clock; 10 ms means the interface is stuck. */
#define QSPI_TIMEOUT_US 10000u
/* After Reset (99h) the chip is busy for tRST: 30 us on the W25Q and IS25LP, 40 us on the MT25Q; wait longer. */
#define QSPI_RESET_US 100u
#define CHIPS BOARD_QSPI_CHIPS
#define QSPI_NO_VALUES 0u, 0u

/* The steps that can fail, as qspi_init reports them (and the fault line names them). */
#define QSPI_BUSY "qspi_busy"                        /* the QUADSPI never went idle, not even after an abort */
#define QSPI_NO_COMPLETE "qspi_no_transfer_complete" /* a command never completed */
#define QSPI_NO_ANSWER "qspi_no_answer"              /* the JEDEC ID read all 0 or all 1 bits: no chip answers */
#define QSPI_WRONG_CHIP "qspi_wrong_chip"            /* another chip than the board file's answered */
#define QSPI_FLASH_BUSY "qspi_flash_busy"            /* the flash stayed busy after its status write */
#define QSPI_QE_NOT_SET "qspi_quad_enable_not_set"   /* Quad Enable did not read back set */

static qspi_result ok(void)
{
    qspi_result result = {NULL, QSPI_NO_VALUES};
    return result;
}

static qspi_result failed(const char *reason, uint32_t expected, uint32_t found)
{
    qspi_result result = {reason, expected, found};
    return result;
}

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

/* `count` bytes of a register read without an address (status, JEDEC ID), single line; the command starts when CCR
 * is written and TCF says every byte is in the FIFO (at most 6 here, the FIFO holds 32). */
static const char *qspi_read_bytes(uint32_t instruction, uint8_t *out, uint32_t count)
{
    const char *failure = qspi_wait_idle();
    if (failure != NULL) {
        return failure;
    }
    QUADSPI_DLR = count - 1u;
    QUADSPI_CCR = QUADSPI_CCR_FMODE_INDIRECT_READ | QUADSPI_CCR_DMODE(QUADSPI_LINES_SINGLE) |
                  QUADSPI_CCR_IMODE(QUADSPI_LINES_SINGLE) | QUADSPI_CCR_INSTRUCTION(instruction);
    if (!wait_bits_for(&QUADSPI_SR, QUADSPI_SR_TCF, QUADSPI_SR_TCF, US_CYCLES(QSPI_TIMEOUT_US))) {
        return QSPI_NO_COMPLETE;
    }
    for (uint32_t i = 0; i < count; i++) {
        out[i] = QUADSPI_DR8;
    }
    QUADSPI_FCR = QUADSPI_FCR_CTCF;
    return NULL;
}

/* An instruction alone on `lines` lines (write enable, reset): starts when CCR is written. */
static const char *qspi_command_on(uint32_t instruction, uint32_t lines)
{
    const char *failure = qspi_wait_idle();
    if (failure != NULL) {
        return failure;
    }
    QUADSPI_CCR = QUADSPI_CCR_FMODE_INDIRECT_WRITE | QUADSPI_CCR_IMODE(lines) | QUADSPI_CCR_INSTRUCTION(instruction);
    return qspi_wait_complete();
}

static const char *qspi_command(uint32_t instruction)
{
    return qspi_command_on(instruction, QUADSPI_LINES_SINGLE);
}

/* An instruction with `count` data bytes (one per chip): starts when the FIFO holds them. */
static const char *qspi_write_bytes(uint32_t instruction, const uint8_t *data, uint32_t count)
{
    const char *failure = qspi_wait_idle();
    if (failure != NULL) {
        return failure;
    }
    QUADSPI_DLR = count - 1u;
    QUADSPI_CCR = QUADSPI_CCR_FMODE_INDIRECT_WRITE | QUADSPI_CCR_DMODE(QUADSPI_LINES_SINGLE) |
                  QUADSPI_CCR_IMODE(QUADSPI_LINES_SINGLE) | QUADSPI_CCR_INSTRUCTION(instruction);
    for (uint32_t i = 0; i < count; i++) {
        QUADSPI_DR8 = data[i];
    }
    return qspi_wait_complete();
}

/* A controller a bootloader left memory-mapped keeps prefetching: abort it (QUADSPI_CR ABORT clears itself once
 * the abort is done) before anything is reconfigured. */
static const char *qspi_abort_if_busy(void)
{
    if ((QUADSPI_SR & QUADSPI_SR_BUSY) == 0u) {
        return NULL;
    }
    QUADSPI_CR |= QUADSPI_CR_ABORT;
    if (!wait_bits_for(&QUADSPI_CR, QUADSPI_CR_ABORT, 0u, US_CYCLES(QSPI_TIMEOUT_US))) {
        return QSPI_BUSY;
    }
    return qspi_wait_idle();
}

/* Continuous-read ("XIP") mode ends when the mode bits the chip samples after the address are not 10xx: ten clocks
 * with IO0-IO3 high cover a 3- or 4-byte address and the mode byte. Then Enable Reset + Reset, first as QPI
 * (4-line instructions, for a chip left in QPI mode; a chip in SPI mode sees two bits and an aborted command) and
 * then as SPI. */
static const char *qspi_reset_flash(void)
{
    const char *failure = qspi_wait_idle();
    if (failure != NULL) {
        return failure;
    }
    QUADSPI_CCR = QUADSPI_CCR_FMODE_INDIRECT_WRITE | QUADSPI_CCR_IMODE(QUADSPI_LINES_QUAD) |
                  QUADSPI_CCR_ADMODE(QUADSPI_LINES_QUAD) | QUADSPI_CCR_ADSIZE(3u) | QUADSPI_CCR_INSTRUCTION(0xFFu);
    QUADSPI_AR = 0xFFFFFFFFu; /* an address and no data: the command starts now */
    failure = qspi_wait_complete();
    const uint32_t lines[2] = {QUADSPI_LINES_QUAD, QUADSPI_LINES_SINGLE};
    for (uint32_t i = 0; failure == NULL && i < 2u; i++) {
        failure = qspi_command_on(BOARD_QSPI_CMD_RESET_ENABLE, lines[i]);
        if (failure == NULL) {
            failure = qspi_command_on(BOARD_QSPI_CMD_RESET, lines[i]);
        }
    }
    delay_cycles(US_CYCLES(QSPI_RESET_US));
    return failure;
}

/* Each chip's JEDEC ID must be the board file's. Returns the first one that is not (or NULL). */
static qspi_result qspi_check_id(void)
{
    uint8_t id[3u * CHIPS];
    const char *failure = qspi_read_bytes(BOARD_QSPI_CMD_READ_ID, id, 3u * CHIPS);
    if (failure != NULL) {
        return failed(failure, QSPI_NO_VALUES);
    }
    for (uint32_t chip = 0; chip < CHIPS; chip++) {
        uint32_t found = (uint32_t)id[chip] << 16 | (uint32_t)id[CHIPS + chip] << 8 | id[2u * CHIPS + chip];
        if (found == 0u || found == 0xFFFFFFu) {
            return failed(QSPI_NO_ANSWER, BOARD_QSPI_JEDEC_ID, found);
        }
        if (found != BOARD_QSPI_JEDEC_ID) {
            return failed(QSPI_WRONG_CHIP, BOARD_QSPI_JEDEC_ID, found);
        }
    }
    return ok();
}

/* 1 when every chip's byte has `mask` set. */
static int all_set(const uint8_t *bytes, uint32_t mask)
{
    for (uint32_t chip = 0; chip < CHIPS; chip++) {
        if ((bytes[chip] & mask) == 0u) {
            return 0;
        }
    }
    return 1;
}

/* Poll the status register until no chip is busy, at most the board file's status write time. */
static const char *qspi_wait_flash_ready(void)
{
    uint32_t start = DWT_CYCCNT;
    for (;;) {
        uint8_t status[CHIPS];
        const char *failure = qspi_read_bytes(BOARD_QSPI_CMD_READ_STATUS1, status, CHIPS);
        if (failure != NULL) {
            return failure;
        }
        int busy = 0;
        for (uint32_t chip = 0; chip < CHIPS; chip++) {
            busy |= (status[chip] >> BOARD_QSPI_BUSY_BIT) & 1;
        }
        if (!busy) {
            return NULL;
        }
        if ((uint32_t)(DWT_CYCCNT - start) > BOARD_QSPI_STATUS_WRITE_TIMEOUT_CYCLES) {
            return QSPI_FLASH_BUSY;
        }
    }
}

/* Quad Enable is non-volatile: set once, it stays, and it is not rewritten (and worn) on every boot. */
static const char *qspi_quad_enable(void)
{
    if (BOARD_QSPI_QE_REGISTER == 0u) {
        return NULL; /* the chip's quad instructions need no enable bit */
    }
    const uint32_t qe = 1u << BOARD_QSPI_QE_BIT;
    uint8_t value[CHIPS];
    const char *failure = qspi_read_bytes(BOARD_QSPI_CMD_READ_QE, value, CHIPS);
    if (failure != NULL || all_set(value, qe)) {
        return failure;
    }
    for (uint32_t chip = 0; chip < CHIPS; chip++) {
        value[chip] = (uint8_t)(value[chip] | qe);
    }
    failure = qspi_command(BOARD_QSPI_CMD_WRITE_ENABLE);
    if (failure == NULL) {
        failure = qspi_write_bytes(BOARD_QSPI_CMD_WRITE_QE, value, CHIPS);
    }
    /* The status write takes milliseconds; a flash that stays busy past its datasheet's time is broken. */
    if (failure == NULL) {
        failure = qspi_wait_flash_ready();
    }
    if (failure == NULL) {
        failure = qspi_read_bytes(BOARD_QSPI_CMD_READ_QE, value, CHIPS);
    }
    return failure != NULL || all_set(value, qe) ? failure : QSPI_QE_NOT_SET;
}

#define QSPI_PIN(port, pin, af) gpio_set_af((port), (pin), (af), GPIO_SPEED_VERY_HIGH, GPIO_PULL_NONE);

qspi_result qspi_init(void)
{
    RCC_AHB3ENR |= RCC_AHB3ENR_QSPIEN;
    (void)RCC_AHB3ENR;
    /* The QUADSPI kernel clock is rcc_hclk3, as llmcu/platform/stm32h7.py assumed when computing the prescaler. */
    RCC_D1CCIPR &= ~RCC_D1CCIPR_QSPISEL_MASK;

    gpio_enable_ports(BOARD_QSPI_GPIO_PORTS);
    BOARD_QSPI_PINS(QSPI_PIN)

    const char *failure = qspi_abort_if_busy();
    if (failure != NULL) {
        return failed(failure, QSPI_NO_VALUES);
    }
    QUADSPI_CR = 0u; /* disabled while configured */
    /* FSIZE: flash size = 2^(FSIZE + 1) bytes (both chips together); CSHT + 1 cycles of NCS high between
     * commands; CKMODE. */
    const board_clock_plan *plan = board_plan(); /* prescaler and CSHT for this revision's HCLK */
    QUADSPI_DCR = (BOARD_QSPI_FSIZE << QUADSPI_DCR_FSIZE_SHIFT) | (plan->qspi_csht << QUADSPI_DCR_CSHT_SHIFT) |
                  (BOARD_QSPI_CKMODE != 0u ? QUADSPI_DCR_CKMODE : 0u);
    /* CLK = kernel clock / (PRESCALER + 1); SSHIFT samples half a cycle later for board delays. */
    QUADSPI_CR = (plan->qspi_prescaler << QUADSPI_CR_PRESCALER_SHIFT) |
                 (BOARD_QSPI_SSHIFT != 0u ? QUADSPI_CR_SSHIFT : 0u) | (CHIPS == 2u ? QUADSPI_CR_DFM : 0u) |
                 QUADSPI_CR_EN;

    failure = qspi_reset_flash();
    if (failure != NULL) {
        return failed(failure, QSPI_NO_VALUES);
    }
    qspi_result identity = qspi_check_id();
    if (identity.reason != NULL) {
        return identity;
    }
    failure = qspi_quad_enable();
    if (failure == NULL) {
        failure = qspi_wait_idle();
    }
    if (failure != NULL) {
        return failed(failure, QSPI_NO_VALUES);
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
    return ok();
}

#endif /* BOARD_HAS_QSPI */
