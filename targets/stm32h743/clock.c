/*
 * Clock tree bring-up, in the order RM0433 requires for raising the frequency:
 *   the reset state (whatever a bootloader left running) -> supply configuration (section "Power control", PWR_CR3) -> voltage scale VOS1 then VOS0 (section
 *   "Voltage scaling": the core voltage goes up before the clock does) -> HSE -> PLL1 (section "PLLs":
 *   configure while off, then enable; PLL2 too when the FMC runs from it) -> flash wait states for the new AXI clock (section "Embedded
 *   flash memory": before the clock rises) -> bus prescalers -> SYSCLK switch to PLL1 (RCC_CFGR).
 * The values come from board_config.h, computed and checked against targets/stm32h743/limits.toml by
 * llmcu/platform/stm32h7.py: two plans, one per silicon revision (board_plan). Every wait for a ready bit is bounded
 * (wait_bits): a part that never answers ends the boot with a fault line naming the step (boot_fail.c).
 * Nothing here touches static data: this runs before .data and .bss exist (the plans are in flash).
 */
#include "h7board.h"
#include "stm32h7.h"

/* Bounds of the waits, generous against the datasheet's figures (HSE start-up up to a few ms, PLL lock
 * tens of microseconds): long enough for any working part, short enough that a dead one is reported. */
#define SUPPLY_TIMEOUT_US 10000u
#define HSE_TIMEOUT_US 100000u
#define PLL_TIMEOUT_US 10000u
#define SWITCH_TIMEOUT_US 1000u

/*
 * The reset state of the clock tree, whatever ran before: a bootloader (the Daisy bootloader, ST's ExtMem_Boot, a
 * debugger's flash loader) leaves SYSCLK on PLL1, the PLLs locked and the HSE on, and RM0433 allows none of what
 * follows then (PLL sources and dividers change only while every PLL is off, HSEBYP only while the HSE is off). So:
 * HSI on, SYSCLK back to HSI with every prescaler at 1, PLL1-3 off, HSE off, each waited for. After a reset this
 * finds everything so already and changes nothing.
 */
static void clock_known_state(void)
{
    RCC_CR |= RCC_CR_HSION;
    wait_bits(&RCC_CR, RCC_CR_HSIRDY, RCC_CR_HSIRDY, US_CYCLES(SWITCH_TIMEOUT_US), "hsi_not_ready");
    if ((RCC_CFGR & RCC_CFGR_SWS_MASK) != RCC_CFGR_SWS_HSI) {
        RCC_CFGR = (RCC_CFGR & ~RCC_CFGR_SW_MASK) | RCC_CFGR_SW_HSI;
        wait_bits(&RCC_CFGR, RCC_CFGR_SWS_MASK, RCC_CFGR_SWS_HSI, US_CYCLES(SWITCH_TIMEOUT_US), "sysclk_not_hsi");
    }
    RCC_D1CFGR = 0u;
    RCC_D2CFGR = 0u;
    RCC_D3CFGR = 0u;
    const uint32_t plls_on = RCC_CR_PLL1ON | RCC_CR_PLL2ON | RCC_CR_PLL3ON;
    const uint32_t plls_ready = RCC_CR_PLL1RDY | RCC_CR_PLL2RDY | RCC_CR_PLL3RDY;
    if ((RCC_CR & (plls_on | RCC_CR_HSEON)) != 0u) {
        RCC_CR &= ~(plls_on | RCC_CR_HSEON);
        wait_bits(&RCC_CR, plls_ready | RCC_CR_HSERDY, 0u, US_CYCLES(PLL_TIMEOUT_US), "pll_not_stopped");
    }
}

static void supply_and_voltage_scale(const board_clock_plan *plan)
{
    /* Supply configuration: the LDO supplies the core (no SMPS on the STM32H743). PWR_CR3's supply bits
     * can be written once after power-on, and must be before VOS or the system clock changes; writing
     * them (with SCUEN cleared) locks the configuration. ACTVOSRDY then says the core supply is good. */
    PWR_CR3 = (PWR_CR3 & ~(PWR_CR3_BYPASS | PWR_CR3_SCUEN)) | PWR_CR3_LDOEN;
    wait_bits(&PWR_CSR1, PWR_CSR1_ACTVOSRDY, PWR_CSR1_ACTVOSRDY, US_CYCLES(SUPPLY_TIMEOUT_US), "supply_not_ready");

    /* VOS1 first: VOS0 is VOS1 plus the LDO overdrive, which may only be enabled from VOS1. */
    PWR_D3CR = (PWR_D3CR & ~PWR_D3CR_VOS_MASK) | PWR_D3CR_VOS_SCALE1;
    (void)PWR_D3CR; /* the write must land before VOSRDY is read, or a stale "ready" is seen */
    wait_bits(&PWR_D3CR, PWR_D3CR_VOSRDY, PWR_D3CR_VOSRDY, US_CYCLES(SUPPLY_TIMEOUT_US), "vos1_not_ready");

    if (plan->vos == 0u) {
        /* VOS0: SYSCFG_PWRCR ODEN (the SYSCFG needs its clock for the write to take). */
        RCC_APB4ENR |= RCC_APB4ENR_SYSCFGEN;
        (void)RCC_APB4ENR;
        SYSCFG_PWRCR |= SYSCFG_PWRCR_ODEN;
        (void)SYSCFG_PWRCR;
        wait_bits(&PWR_D3CR, PWR_D3CR_VOSRDY, PWR_D3CR_VOSRDY, US_CYCLES(SUPPLY_TIMEOUT_US), "vos0_not_ready");
    }
}

static void hse_on(void)
{
#if BOARD_HSE_BYPASS
    /* An external clock on OSC_IN (no crystal): HSEBYP must be set while the HSE is still off. */
    RCC_CR |= RCC_CR_HSEBYP;
#endif
    RCC_CR |= RCC_CR_HSEON;
    wait_bits(&RCC_CR, RCC_CR_HSERDY, RCC_CR_HSERDY, US_CYCLES(HSE_TIMEOUT_US), "hse_not_ready");
}

/* PLL1 (and PLL2 when the board uses it) are configured while all PLLs are off, as RCC_PLLCKSELR's source and
 * DIVMx fields and each PLL's dividers require (RM0433 "PLLs"), then enabled one after the other. */
static void plls_on(const board_clock_plan *plan)
{
    uint32_t divm = BOARD_PLL1_M << RCC_PLLCKSELR_DIVM1_SHIFT;
    uint32_t divm_mask = RCC_PLLCKSELR_PLLSRC_MASK | RCC_PLLCKSELR_DIVM1_MASK;
    /* Integer mode (FRACEN 0), VCO range, reference frequency range, and the P/Q/R outputs on. */
    uint32_t cfg = (BOARD_PLL1_VCOSEL << RCC_PLLCFGR_PLL1VCOSEL_SHIFT) | (BOARD_PLL1_RGE << RCC_PLLCFGR_PLL1RGE_SHIFT) |
                   RCC_PLLCFGR_DIVP1EN | RCC_PLLCFGR_DIVQ1EN | RCC_PLLCFGR_DIVR1EN;
    uint32_t cfg_mask = RCC_PLLCFGR_PLL1_MASK;
#if BOARD_HAS_PLL2
    /* PLL2: a kernel clock that stays the same whichever plan runs (the FMC's: BOARD_FMC_KERNEL_SEL). */
    divm |= BOARD_PLL2_M << RCC_PLLCKSELR_DIVM2_SHIFT;
    divm_mask |= RCC_PLLCKSELR_DIVM2_MASK;
    cfg |= (BOARD_PLL2_VCOSEL << RCC_PLLCFGR_PLL2VCOSEL_SHIFT) | (BOARD_PLL2_RGE << RCC_PLLCFGR_PLL2RGE_SHIFT) |
           RCC_PLLCFGR_DIVP2EN | RCC_PLLCFGR_DIVQ2EN | RCC_PLLCFGR_DIVR2EN;
    cfg_mask |= RCC_PLLCFGR_PLL2_MASK;
#endif
    RCC_PLLCKSELR = (RCC_PLLCKSELR & ~divm_mask) | RCC_PLLCKSELR_PLLSRC_HSE | divm;
    RCC_PLLCFGR = (RCC_PLLCFGR & ~cfg_mask) | cfg;
    /* Each divider field holds its factor minus one; PLL2DIVR has PLL1DIVR's fields. */
    RCC_PLL1DIVR = ((plan->pll1_n - 1u) << RCC_PLL1DIVR_DIVN1_SHIFT) |
                   ((BOARD_PLL1_P - 1u) << RCC_PLL1DIVR_DIVP1_SHIFT) |
                   ((BOARD_PLL1_Q - 1u) << RCC_PLL1DIVR_DIVQ1_SHIFT) |
                   ((BOARD_PLL1_R - 1u) << RCC_PLL1DIVR_DIVR1_SHIFT);
    RCC_PLL1FRACR = 0u;
#if BOARD_HAS_PLL2
    RCC_PLL2DIVR = ((BOARD_PLL2_N - 1u) << RCC_PLL1DIVR_DIVN1_SHIFT) |
                   ((BOARD_PLL2_P - 1u) << RCC_PLL1DIVR_DIVP1_SHIFT) |
                   ((BOARD_PLL2_Q - 1u) << RCC_PLL1DIVR_DIVQ1_SHIFT) |
                   ((BOARD_PLL2_R - 1u) << RCC_PLL1DIVR_DIVR1_SHIFT);
    RCC_PLL2FRACR = 0u;
#endif
    RCC_CR |= RCC_CR_PLL1ON;
    wait_bits(&RCC_CR, RCC_CR_PLL1RDY, RCC_CR_PLL1RDY, US_CYCLES(PLL_TIMEOUT_US), "pll1_not_locked");
#if BOARD_HAS_PLL2
    RCC_CR |= RCC_CR_PLL2ON;
    wait_bits(&RCC_CR, RCC_CR_PLL2RDY, RCC_CR_PLL2RDY, US_CYCLES(PLL_TIMEOUT_US), "pll2_not_locked");
#endif
}

static void flash_wait_states(const board_clock_plan *plan)
{
    uint32_t acr = (FLASH_ACR & ~(FLASH_ACR_LATENCY_MASK | FLASH_ACR_WRHIGHFREQ_MASK)) | plan->flash_latency |
                   (plan->flash_wrhighfreq << FLASH_ACR_WRHIGHFREQ_SHIFT);
    FLASH_ACR = acr;
    /* The new latency is in force once it reads back (RM0433 "FLASH read access latency"). */
    wait_bits(&FLASH_ACR, 0xFFFFFFFFu, acr, US_CYCLES(SWITCH_TIMEOUT_US), "flash_latency_not_set");
}

void clock_init(void)
{
    const board_clock_plan *plan = board_plan();
    clock_known_state();
    supply_and_voltage_scale(plan);
    hse_on();
    plls_on(plan);
    flash_wait_states(plan);

    /* Prescalers before the switch, so that AXI/AHB and the APBs never run above their limits. */
    RCC_D1CFGR = (BOARD_D1CPRE_BITS << RCC_D1CFGR_D1CPRE_SHIFT) | (BOARD_HPRE_BITS << RCC_D1CFGR_HPRE_SHIFT) |
                 (BOARD_D1PPRE_BITS << RCC_D1CFGR_D1PPRE_SHIFT);
    RCC_D2CFGR = (BOARD_D2PPRE1_BITS << RCC_D2CFGR_D2PPRE1_SHIFT) | (BOARD_D2PPRE2_BITS << RCC_D2CFGR_D2PPRE2_SHIFT);
    RCC_D3CFGR = BOARD_D3PPRE_BITS << RCC_D3CFGR_D3PPRE_SHIFT;

    RCC_CFGR = (RCC_CFGR & ~RCC_CFGR_SW_MASK) | RCC_CFGR_SW_PLL1;
    wait_bits(&RCC_CFGR, RCC_CFGR_SWS_MASK, RCC_CFGR_SWS_PLL1, US_CYCLES(SWITCH_TIMEOUT_US), "sysclk_not_switched");
}
