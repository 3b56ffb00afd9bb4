/*
 * Clock tree bring-up, in the order RM0433 requires for raising the frequency:
 *   supply configuration (section "Power control", PWR_CR3) -> voltage scale VOS1 then VOS0 (section
 *   "Voltage scaling": the core voltage goes up before the clock does) -> HSE -> PLL1 (section "PLLs":
 *   configure while off, then enable) -> flash wait states for the new AXI clock (section "Embedded
 *   flash memory": before the clock rises) -> bus prescalers -> SYSCLK switch to PLL1 (RCC_CFGR).
 * The values come from board_config.h, computed and checked by llmcu/boards.py.
 * Nothing here touches static data: this runs before .data and .bss exist.
 */
#include "h7board.h"
#include "stm32h7.h"

static void supply_and_voltage_scale(void)
{
    /* Supply configuration: the LDO supplies the core (no SMPS on the STM32H743). PWR_CR3's supply bits
     * can be written once after power-on, and must be before VOS or the system clock changes; writing
     * them (with SCUEN cleared) locks the configuration. ACTVOSRDY then says the core supply is good. */
    PWR_CR3 = (PWR_CR3 & ~(PWR_CR3_BYPASS | PWR_CR3_SCUEN)) | PWR_CR3_LDOEN;
    while ((PWR_CSR1 & PWR_CSR1_ACTVOSRDY) == 0u) {
    }

    /* VOS1 first: VOS0 is VOS1 plus the LDO overdrive, which may only be enabled from VOS1. */
    PWR_D3CR = (PWR_D3CR & ~PWR_D3CR_VOS_MASK) | PWR_D3CR_VOS_SCALE1;
    (void)PWR_D3CR; /* the write must land before VOSRDY is read, or a stale "ready" is seen */
    while ((PWR_D3CR & PWR_D3CR_VOSRDY) == 0u) {
    }

#if BOARD_VOS == 0
    /* VOS0: SYSCFG_PWRCR ODEN (the SYSCFG needs its clock for the write to take). */
    RCC_APB4ENR |= RCC_APB4ENR_SYSCFGEN;
    (void)RCC_APB4ENR;
    SYSCFG_PWRCR |= SYSCFG_PWRCR_ODEN;
    (void)SYSCFG_PWRCR;
    while ((PWR_D3CR & PWR_D3CR_VOSRDY) == 0u) {
    }
#endif
}

static void hse_on(void)
{
#if BOARD_HSE_BYPASS
    /* An external clock on OSC_IN (no crystal): HSEBYP must be set while the HSE is still off. */
    RCC_CR |= RCC_CR_HSEBYP;
#endif
    RCC_CR |= RCC_CR_HSEON;
    while ((RCC_CR & RCC_CR_HSERDY) == 0u) {
    }
}

static void pll1_on(void)
{
    /* PLL1 is off after reset; its source, DIVM1 and dividers may only be written while it is off. */
    RCC_PLLCKSELR = (RCC_PLLCKSELR & ~(RCC_PLLCKSELR_PLLSRC_MASK | RCC_PLLCKSELR_DIVM1_MASK)) |
                    RCC_PLLCKSELR_PLLSRC_HSE | (BOARD_PLL1_M << RCC_PLLCKSELR_DIVM1_SHIFT);
    /* Integer mode (FRACEN 0), VCO range, reference frequency range, and the P/Q/R outputs on. */
    RCC_PLLCFGR = (RCC_PLLCFGR & ~RCC_PLLCFGR_PLL1_MASK) | (BOARD_PLL1_VCOSEL << RCC_PLLCFGR_PLL1VCOSEL_SHIFT) |
                  (BOARD_PLL1_RGE << RCC_PLLCFGR_PLL1RGE_SHIFT) | RCC_PLLCFGR_DIVP1EN | RCC_PLLCFGR_DIVQ1EN |
                  RCC_PLLCFGR_DIVR1EN;
    /* Each divider field holds its factor minus one. */
    RCC_PLL1DIVR = ((BOARD_PLL1_N - 1u) << RCC_PLL1DIVR_DIVN1_SHIFT) |
                   ((BOARD_PLL1_P - 1u) << RCC_PLL1DIVR_DIVP1_SHIFT) |
                   ((BOARD_PLL1_Q - 1u) << RCC_PLL1DIVR_DIVQ1_SHIFT) |
                   ((BOARD_PLL1_R - 1u) << RCC_PLL1DIVR_DIVR1_SHIFT);
    RCC_PLL1FRACR = 0u;
    RCC_CR |= RCC_CR_PLL1ON;
    while ((RCC_CR & RCC_CR_PLL1RDY) == 0u) {
    }
}

static void flash_wait_states(void)
{
    uint32_t acr = (FLASH_ACR & ~(FLASH_ACR_LATENCY_MASK | FLASH_ACR_WRHIGHFREQ_MASK)) | BOARD_FLASH_LATENCY |
                   (BOARD_FLASH_WRHIGHFREQ << FLASH_ACR_WRHIGHFREQ_SHIFT);
    FLASH_ACR = acr;
    /* The new latency is in force once it reads back (RM0433 "FLASH read access latency"). */
    while (FLASH_ACR != acr) {
    }
}

void clock_init(void)
{
    supply_and_voltage_scale();
    hse_on();
    pll1_on();
    flash_wait_states();

    /* Prescalers before the switch, so that AXI/AHB and the APBs never run above their limits. */
    RCC_D1CFGR = (BOARD_D1CPRE_BITS << RCC_D1CFGR_D1CPRE_SHIFT) | (BOARD_HPRE_BITS << RCC_D1CFGR_HPRE_SHIFT) |
                 (BOARD_D1PPRE_BITS << RCC_D1CFGR_D1PPRE_SHIFT);
    RCC_D2CFGR = (BOARD_D2PPRE1_BITS << RCC_D2CFGR_D2PPRE1_SHIFT) | (BOARD_D2PPRE2_BITS << RCC_D2CFGR_D2PPRE2_SHIFT);
    RCC_D3CFGR = BOARD_D3PPRE_BITS << RCC_D3CFGR_D3PPRE_SHIFT;

    RCC_CFGR = (RCC_CFGR & ~RCC_CFGR_SW_MASK) | RCC_CFGR_SW_PLL1;
    while ((RCC_CFGR & RCC_CFGR_SWS_MASK) != RCC_CFGR_SWS_PLL1) {
    }
}
