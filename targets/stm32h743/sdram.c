/*
 * External SDRAM on the FMC (RM0433 section "Flexible memory controller", "SDRAM controller" and its
 * "SDRAM initialization" sequence, which follows the JEDEC power-up sequence):
 *   FMC clock and pins -> device features (FMC_SDCRx) -> timings (FMC_SDTRx) -> FMC on (FMC_BCR1 FMCEN)
 *   -> clock configuration enable -> >= 100 us with the clock running -> precharge all -> N auto-refresh
 *   -> load mode register -> refresh rate (FMC_SDRTR).
 * Every register value is computed from the chip's datasheet timings by llmcu/platform/stm32h7.py.
 * Nothing here touches static data: this runs before .data and .bss exist.
 */
#include "h7board.h"
#include "stm32h7.h"

#if BOARD_HAS_SDRAM

#if BOARD_SDRAM_BANK == 1
#define SDRAM_COMMAND_TARGET FMC_SDCMR_CTB1
#else
#define SDRAM_COMMAND_TARGET FMC_SDCMR_CTB2
#endif

/*
 * Issue one command to the SDRAM. The FMC of RM0433 has no command-busy flag (FMC_SDSR holds only the
 * refresh error and the bank modes): it spaces commands by the FMC_SDTR timings itself. Reading FMC_SDCMR
 * back makes sure the write reached the FMC; the wait then covers the longest command (the auto-refresh
 * burst) before the next one, in CPU cycles computed by boards.py.
 */
static void sdram_command(uint32_t mode, uint32_t auto_refresh, uint32_t mode_register)
{
    FMC_SDCMR = mode | SDRAM_COMMAND_TARGET | ((auto_refresh - 1u) << FMC_SDCMR_NRFS_SHIFT) |
                (mode_register << FMC_SDCMR_MRD_SHIFT);
    (void)FMC_SDCMR;
    dsb();
    delay_cycles(BOARD_SDRAM_COMMAND_CYCLES);
}

#define SDRAM_PIN(port, pin, af) gpio_set_af((port), (pin), (af), GPIO_SPEED_VERY_HIGH, GPIO_PULL_NONE);

void sdram_init(void)
{
    /* The FMC kernel clock boards.py computed SDCLK from (HCLK, or PLL2 R so that it does not change with the
     * revision's plan), selected while the FMC's clock is still off. */
    RCC_D1CCIPR = (RCC_D1CCIPR & ~RCC_D1CCIPR_FMCSEL_MASK) | (BOARD_FMC_KERNEL_SEL << RCC_D1CCIPR_FMCSEL_SHIFT);
    RCC_AHB3ENR |= RCC_AHB3ENR_FMCEN;
    (void)RCC_AHB3ENR;

    gpio_enable_ports(BOARD_SDRAM_GPIO_PORTS);
    BOARD_SDRAM_PINS(SDRAM_PIN)

    /* NOR/PSRAM bank 1 is enabled at reset but nothing is connected to it: disable it, so no access
     * (speculative or stray) ever drives the bus for it; the MPU also forbids its address range. */
    FMC_BCR1 &= ~(FMC_BCR1_FMCEN | FMC_BCR1_MBKEN);

    /* SDCLK, RBURST and RPIPE live in FMC_SDCR1 and TRC/TRP in FMC_SDTR1 even for bank 2. */
    FMC_SDCR1 = BOARD_FMC_SDCR1;
    FMC_SDTR1 = BOARD_FMC_SDTR1;
#if BOARD_SDRAM_BANK == 2
    FMC_SDCR2 = BOARD_FMC_SDCR2;
    FMC_SDTR2 = BOARD_FMC_SDTR2;
#endif
    FMC_BCR1 |= FMC_BCR1_FMCEN;

    sdram_command(FMC_SDCMR_MODE_CLK_ENABLE, 1u, 0u);
    delay_cycles(BOARD_SDRAM_STARTUP_CYCLES);
    sdram_command(FMC_SDCMR_MODE_PALL, 1u, 0u);
    sdram_command(FMC_SDCMR_MODE_AUTO_REFRESH, BOARD_SDRAM_AUTO_REFRESH, 0u);
    sdram_command(FMC_SDCMR_MODE_LOAD_MODE, 1u, BOARD_SDRAM_MODE_REGISTER);

    /* Refreshes start as soon as the count is written; it must not be changed afterwards. */
    FMC_SDRTR = BOARD_SDRAM_REFRESH_COUNT << FMC_SDRTR_COUNT_SHIFT;
}

#endif /* BOARD_HAS_SDRAM */
