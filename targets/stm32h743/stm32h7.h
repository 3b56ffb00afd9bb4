/*
 * STM32H743 peripheral registers used by llmcu's board layer, from ST's reference manual RM0433
 * (STM32H742, STM32H743/753 and STM32H750). Addresses are from its "Memory map and register boundary
 * addresses"; bit positions from each peripheral's register description. Only the registers the board
 * layer uses are defined (with a few neighbouring fields). Core (Cortex-M7) registers are in
 * ../cortex-m/armv7m.h.
 */
#ifndef LLMCU_STM32H7_H
#define LLMCU_STM32H7_H

#include <stdint.h>

#include "armv7m.h" /* REG32 */

#define REG8(addr) (*(volatile uint8_t *)(uintptr_t)(addr))
#define REG16(addr) (*(volatile uint16_t *)(uintptr_t)(addr))

/* ---- RCC, reset and clock control (D3 AHB4, 0x58024400) ---- */
#define RCC_BASE 0x58024400u
#define RCC_CR REG32(RCC_BASE + 0x000u)
#define RCC_CFGR REG32(RCC_BASE + 0x010u)
#define RCC_D1CFGR REG32(RCC_BASE + 0x018u)
#define RCC_D2CFGR REG32(RCC_BASE + 0x01Cu)
#define RCC_D3CFGR REG32(RCC_BASE + 0x020u)
#define RCC_PLLCKSELR REG32(RCC_BASE + 0x028u)
#define RCC_PLLCFGR REG32(RCC_BASE + 0x02Cu)
#define RCC_PLL1DIVR REG32(RCC_BASE + 0x030u)
#define RCC_PLL1FRACR REG32(RCC_BASE + 0x034u)
#define RCC_PLL2DIVR REG32(RCC_BASE + 0x038u)
#define RCC_PLL2FRACR REG32(RCC_BASE + 0x03Cu)
#define RCC_D1CCIPR REG32(RCC_BASE + 0x04Cu)
#define RCC_D2CCIP2R REG32(RCC_BASE + 0x054u)
#define RCC_RSR REG32(RCC_BASE + 0x0D0u) /* reset status (RM0433 RCC_RSR; RCC_C1_RSR at 0x130 mirrors it) */
#define RCC_AHB3ENR REG32(RCC_BASE + 0x0D4u)
#define RCC_AHB2ENR REG32(RCC_BASE + 0x0DCu)
#define RCC_AHB4ENR REG32(RCC_BASE + 0x0E0u)
#define RCC_APB1LENR REG32(RCC_BASE + 0x0E8u)
#define RCC_APB2ENR REG32(RCC_BASE + 0x0F0u)
#define RCC_APB4ENR REG32(RCC_BASE + 0x0F4u)

/* RCC_RSR: which resets happened since the flags were last cleared (RMVF). A reset sets every flag of
 * the resets it implies: a power-on sets PORRSTF and BORRSTF and PINRSTF (the chip drives NRST), an IWDG1
 * reset also sets PINRSTF, so the decoding goes from the most specific cause to the least. */
#define RCC_RSR_RMVF (1u << 16)
#define RCC_RSR_CPURSTF (1u << 17)
#define RCC_RSR_D1RSTF (1u << 19)
#define RCC_RSR_D2RSTF (1u << 20)
#define RCC_RSR_BORRSTF (1u << 21)
#define RCC_RSR_PINRSTF (1u << 22)
#define RCC_RSR_PORRSTF (1u << 23)
#define RCC_RSR_SFTRSTF (1u << 24)
#define RCC_RSR_IWDG1RSTF (1u << 26)
#define RCC_RSR_WWDG1RSTF (1u << 28)
#define RCC_RSR_LPWRRSTF (1u << 30)

#define RCC_CR_HSION (1u << 0)
#define RCC_CR_HSIRDY (1u << 2)
#define RCC_CR_HSEON (1u << 16)
#define RCC_CR_HSERDY (1u << 17)
#define RCC_CR_HSEBYP (1u << 18)
#define RCC_CR_PLL1ON (1u << 24)
#define RCC_CR_PLL1RDY (1u << 25)
#define RCC_CR_PLL2ON (1u << 26)
#define RCC_CR_PLL2RDY (1u << 27)
#define RCC_CR_PLL3ON (1u << 28)
#define RCC_CR_PLL3RDY (1u << 29)

#define RCC_CFGR_SW_MASK (7u << 0)
#define RCC_CFGR_SW_HSI (0u << 0)
#define RCC_CFGR_SWS_HSI (0u << 3)
#define RCC_CFGR_SW_PLL1 (3u << 0)
#define RCC_CFGR_SWS_MASK (7u << 3)
#define RCC_CFGR_SWS_PLL1 (3u << 3)

#define RCC_D1CFGR_HPRE_SHIFT 0u   /* AXI/AHB prescaler, 4 bits */
#define RCC_D1CFGR_D1PPRE_SHIFT 4u /* APB3 prescaler, 3 bits */
#define RCC_D1CFGR_D1CPRE_SHIFT 8u /* CPU prescaler, 4 bits */
#define RCC_D2CFGR_D2PPRE1_SHIFT 4u
#define RCC_D2CFGR_D2PPRE2_SHIFT 8u
#define RCC_D3CFGR_D3PPRE_SHIFT 4u

#define RCC_PLLCKSELR_PLLSRC_MASK (3u << 0)
#define RCC_PLLCKSELR_PLLSRC_HSE (2u << 0)
#define RCC_PLLCKSELR_DIVM1_SHIFT 4u
#define RCC_PLLCKSELR_DIVM1_MASK (0x3Fu << 4)
#define RCC_PLLCKSELR_DIVM2_SHIFT 12u
#define RCC_PLLCKSELR_DIVM2_MASK (0x3Fu << 12)

#define RCC_PLLCFGR_PLL1FRACEN (1u << 0)
#define RCC_PLLCFGR_PLL1VCOSEL_SHIFT 1u
#define RCC_PLLCFGR_PLL1RGE_SHIFT 2u
#define RCC_PLLCFGR_PLL1_MASK (0xFu << 0) /* PLL1FRACEN, PLL1VCOSEL, PLL1RGE */
#define RCC_PLLCFGR_DIVP1EN (1u << 16)
#define RCC_PLLCFGR_DIVQ1EN (1u << 17)
#define RCC_PLLCFGR_DIVR1EN (1u << 18)
#define RCC_PLLCFGR_PLL2VCOSEL_SHIFT 5u
#define RCC_PLLCFGR_PLL2RGE_SHIFT 6u
#define RCC_PLLCFGR_PLL2_MASK (0xFu << 4) /* PLL2FRACEN, PLL2VCOSEL, PLL2RGE */
#define RCC_PLLCFGR_DIVP2EN (1u << 19)
#define RCC_PLLCFGR_DIVQ2EN (1u << 20)
#define RCC_PLLCFGR_DIVR2EN (1u << 21)

/* RCC_PLL1DIVR: each field holds the factor minus one. */
#define RCC_PLL1DIVR_DIVN1_SHIFT 0u
#define RCC_PLL1DIVR_DIVP1_SHIFT 9u
#define RCC_PLL1DIVR_DIVQ1_SHIFT 16u
#define RCC_PLL1DIVR_DIVR1_SHIFT 24u

#define RCC_D1CCIPR_FMCSEL_MASK (3u << 0)  /* 00: rcc_hclk3, 10: pll2_r_ck */
#define RCC_D1CCIPR_FMCSEL_SHIFT 0u
#define RCC_D1CCIPR_QSPISEL_MASK (3u << 4) /* 00: rcc_hclk3 */
#define RCC_D2CCIP2R_USART234578SEL_MASK (7u << 0) /* 000: rcc_pclk1 */
#define RCC_D2CCIP2R_USART16SEL_MASK (7u << 3)     /* 000: rcc_pclk2 */

#define RCC_AHB3ENR_FMCEN (1u << 12)
#define RCC_AHB3ENR_QSPIEN (1u << 14)
#define RCC_AHB2ENR_SRAM1EN (1u << 29)
#define RCC_AHB2ENR_SRAM2EN (1u << 30)
#define RCC_AHB2ENR_SRAM3EN (1u << 31)
#define RCC_AHB4ENR_GPIOEN(port) (1u << (port)) /* GPIOAEN .. GPIOKEN are bits 0..10 */
#define RCC_APB1LENR_USART2EN (1u << 17)
#define RCC_APB1LENR_USART3EN (1u << 18)
#define RCC_APB1LENR_UART4EN (1u << 19)
#define RCC_APB1LENR_UART5EN (1u << 20)
#define RCC_APB1LENR_UART7EN (1u << 30)
#define RCC_APB1LENR_UART8EN (1u << 31)
#define RCC_APB2ENR_USART1EN (1u << 4)
#define RCC_APB2ENR_USART6EN (1u << 5)
#define RCC_APB4ENR_SYSCFGEN (1u << 1)

/* ---- PWR, power control (0x58024800) ---- */
#define PWR_BASE 0x58024800u
#define PWR_CSR1 REG32(PWR_BASE + 0x04u)
#define PWR_CR3 REG32(PWR_BASE + 0x0Cu)
#define PWR_D3CR REG32(PWR_BASE + 0x18u)

#define PWR_CSR1_ACTVOSRDY (1u << 13)
#define PWR_CR3_BYPASS (1u << 0)
#define PWR_CR3_LDOEN (1u << 1)
#define PWR_CR3_SCUEN (1u << 2)
#define PWR_D3CR_VOSRDY (1u << 13)
#define PWR_D3CR_VOS_MASK (3u << 14)
#define PWR_D3CR_VOS_SCALE1 (3u << 14)
#define PWR_D3CR_VOS_SCALE2 (2u << 14)

/* ---- SYSCFG (0x58000400) ---- */
#define SYSCFG_BASE 0x58000400u
#define SYSCFG_PWRCR REG32(SYSCFG_BASE + 0x2Cu)
#define SYSCFG_PWRCR_ODEN (1u << 0) /* LDO overdrive: VOS1 -> VOS0 */

/* ---- Embedded flash interface (0x52002000) ---- */
#define FLASH_BASE_REG 0x52002000u
#define FLASH_ACR REG32(FLASH_BASE_REG + 0x00u)
#define FLASH_ACR_LATENCY_MASK (0xFu << 0)
#define FLASH_ACR_WRHIGHFREQ_SHIFT 4u
#define FLASH_ACR_WRHIGHFREQ_MASK (3u << 4)

/* ---- GPIO ports A..K (0x58020000, 0x400 apart) ---- */
#define GPIO_BASE(port) (0x58020000u + 0x400u * (uint32_t)(port))
#define GPIO_MODER(port) REG32(GPIO_BASE(port) + 0x00u)
#define GPIO_OTYPER(port) REG32(GPIO_BASE(port) + 0x04u)
#define GPIO_OSPEEDR(port) REG32(GPIO_BASE(port) + 0x08u)
#define GPIO_PUPDR(port) REG32(GPIO_BASE(port) + 0x0Cu)
#define GPIO_AFRL(port) REG32(GPIO_BASE(port) + 0x20u)
#define GPIO_AFRH(port) REG32(GPIO_BASE(port) + 0x24u)

#define GPIO_MODE_AF 2u
#define GPIO_SPEED_MEDIUM 1u
#define GPIO_SPEED_VERY_HIGH 3u
#define GPIO_PULL_NONE 0u
#define GPIO_PULL_UP 1u

/* ---- USART (USART1/6 on APB2, the others on APB1) ---- */
#define USART1_BASE 0x40011000u
#define USART2_BASE 0x40004400u
#define USART3_BASE 0x40004800u
#define UART4_BASE 0x40004C00u
#define UART5_BASE 0x40005000u
#define USART6_BASE 0x40011400u
#define UART7_BASE 0x40007800u
#define UART8_BASE 0x40007C00u

#define USART_CR1(base) REG32((base) + 0x00u)
#define USART_CR2(base) REG32((base) + 0x04u)
#define USART_CR3(base) REG32((base) + 0x08u)
#define USART_BRR(base) REG32((base) + 0x0Cu)
#define USART_ISR(base) REG32((base) + 0x1Cu)
#define USART_ICR(base) REG32((base) + 0x20u)
#define USART_RDR(base) REG32((base) + 0x24u)
#define USART_TDR(base) REG32((base) + 0x28u)
#define USART_PRESC(base) REG32((base) + 0x2Cu)

#define USART_CR1_UE (1u << 0)
#define USART_CR1_RE (1u << 2)
#define USART_CR1_TE (1u << 3)
#define USART_ISR_FE (1u << 1)
#define USART_ISR_NE (1u << 2)
#define USART_ISR_ORE (1u << 3)
#define USART_ISR_RXNE (1u << 5) /* RXFNE with the FIFO enabled */
#define USART_ISR_TC (1u << 6)
#define USART_ISR_TXE (1u << 7) /* TXFNF with the FIFO enabled */
#define USART_ICR_FECF (1u << 1)
#define USART_ICR_NECF (1u << 2)
#define USART_ICR_ORECF (1u << 3)

/* ---- FMC, flexible memory controller (registers at 0x52004000) ---- */
#define FMC_BASE 0x52004000u
#define FMC_BCR1 REG32(FMC_BASE + 0x000u)
#define FMC_SDCR1 REG32(FMC_BASE + 0x140u)
#define FMC_SDCR2 REG32(FMC_BASE + 0x144u)
#define FMC_SDTR1 REG32(FMC_BASE + 0x148u)
#define FMC_SDTR2 REG32(FMC_BASE + 0x14Cu)
#define FMC_SDCMR REG32(FMC_BASE + 0x150u)
#define FMC_SDRTR REG32(FMC_BASE + 0x154u)
#define FMC_SDSR REG32(FMC_BASE + 0x158u)

#define FMC_BCR1_MBKEN (1u << 0)  /* NOR/PSRAM bank 1 enable: set at reset */
#define FMC_BCR1_FMCEN (1u << 31) /* the whole controller, both SDRAM banks included */

#define FMC_SDCMR_MODE_CLK_ENABLE 1u
#define FMC_SDCMR_MODE_PALL 2u
#define FMC_SDCMR_MODE_AUTO_REFRESH 3u
#define FMC_SDCMR_MODE_LOAD_MODE 4u
#define FMC_SDCMR_CTB2 (1u << 3)
#define FMC_SDCMR_CTB1 (1u << 4)
#define FMC_SDCMR_NRFS_SHIFT 5u /* number of auto-refresh commands minus one, 4 bits */
#define FMC_SDCMR_MRD_SHIFT 9u  /* mode register value, 14 bits */
#define FMC_SDRTR_COUNT_SHIFT 1u

/* ---- QUADSPI (registers at 0x52005000; memory-mapped flash at 0x90000000) ---- */
#define QUADSPI_BASE 0x52005000u
#define QUADSPI_CR REG32(QUADSPI_BASE + 0x00u)
#define QUADSPI_DCR REG32(QUADSPI_BASE + 0x04u)
#define QUADSPI_SR REG32(QUADSPI_BASE + 0x08u)
#define QUADSPI_FCR REG32(QUADSPI_BASE + 0x0Cu)
#define QUADSPI_DLR REG32(QUADSPI_BASE + 0x10u)
#define QUADSPI_CCR REG32(QUADSPI_BASE + 0x14u)
#define QUADSPI_AR REG32(QUADSPI_BASE + 0x18u)
#define QUADSPI_ABR REG32(QUADSPI_BASE + 0x1Cu)
#define QUADSPI_DR8 REG8(QUADSPI_BASE + 0x20u) /* byte access: one FIFO byte */
#define QUADSPI_LPTR REG32(QUADSPI_BASE + 0x30u)

#define QUADSPI_CR_EN (1u << 0)
#define QUADSPI_CR_ABORT (1u << 1)
#define QUADSPI_CR_SSHIFT (1u << 4)
#define QUADSPI_CR_DFM (1u << 6) /* dual-flash mode: two chips on BK1 and BK2, their nibbles side by side */
#define QUADSPI_CR_PRESCALER_SHIFT 24u
#define QUADSPI_DCR_CKMODE (1u << 0)
#define QUADSPI_DCR_CSHT_SHIFT 8u
#define QUADSPI_DCR_FSIZE_SHIFT 16u
#define QUADSPI_SR_TEF (1u << 0)
#define QUADSPI_SR_TCF (1u << 1)
#define QUADSPI_SR_FTF (1u << 2)
#define QUADSPI_SR_BUSY (1u << 5)
#define QUADSPI_SR_FLEVEL_SHIFT 8u
#define QUADSPI_SR_FLEVEL_MASK (0x3Fu << 8)
#define QUADSPI_FCR_CTEF (1u << 0)
#define QUADSPI_FCR_CTCF (1u << 1)

/* QUADSPI_CCR fields. Line counts (IMODE, ADMODE, ABMODE, DMODE): 0 none, 1 single, 2 dual, 3 quad. */
#define QUADSPI_CCR_INSTRUCTION(x) ((uint32_t)(x) & 0xFFu)
#define QUADSPI_CCR_IMODE(lines) ((uint32_t)(lines) << 8)
#define QUADSPI_CCR_ADMODE(lines) ((uint32_t)(lines) << 10)
#define QUADSPI_CCR_ADSIZE(x) ((uint32_t)(x) << 12) /* 0: 8 .. 3: 32 bits */
#define QUADSPI_CCR_ABMODE(lines) ((uint32_t)(lines) << 14)
#define QUADSPI_CCR_ABSIZE(x) ((uint32_t)(x) << 16)
#define QUADSPI_CCR_DCYC(x) ((uint32_t)(x) << 18)
#define QUADSPI_CCR_DMODE(lines) ((uint32_t)(lines) << 24)
#define QUADSPI_CCR_FMODE_INDIRECT_WRITE (0u << 26)
#define QUADSPI_CCR_FMODE_INDIRECT_READ (1u << 26)
#define QUADSPI_CCR_FMODE_MEMORY_MAPPED (3u << 26)
#define QUADSPI_LINES_SINGLE 1u
#define QUADSPI_LINES_QUAD 3u

/* ---- IWDG1, the independent watchdog (D3 APB4, 0x58004800), clocked by the LSI (32 kHz) ---- */
#define IWDG1_BASE 0x58004800u
#define IWDG1_KR REG32(IWDG1_BASE + 0x00u)
#define IWDG1_PR REG32(IWDG1_BASE + 0x04u)  /* prescaler: 0 = /4, 1 = /8, ..., 6 and 7 = /256 */
#define IWDG1_RLR REG32(IWDG1_BASE + 0x08u) /* reload value, 12 bits */
#define IWDG1_SR REG32(IWDG1_BASE + 0x0Cu)  /* PVU, RVU, WVU: an update still on its way to the LSI domain */

#define IWDG_KR_RELOAD 0xAAAAu /* reload the counter from RLR (the kick) */
#define IWDG_KR_UNLOCK 0x5555u /* allow writes to PR, RLR and WINR */
#define IWDG_KR_START 0xCCCCu  /* start the watchdog (and the LSI); nothing stops it but a reset */
#define IWDG_SR_PVU (1u << 0)
#define IWDG_SR_RVU (1u << 1)
#define IWDG_SR_WVU (1u << 2)
#define IWDG_RLR_MAX 0xFFFu

/* ---- DBGMCU (0x5C001000): what keeps counting while a debugger halts the core ---- */
#define DBGMCU_BASE 0x5C001000u
#define DBGMCU_IDCODE REG32(DBGMCU_BASE + 0x00u) /* REV_ID 31:16 (0x1003 revision Y, 0x2003 V), DEV_ID 11:0 */
#define DBGMCU_IDCODE_REV_ID_SHIFT 16u
#define DBGMCU_IDCODE_DEV_ID_MASK 0xFFFu
#define DBGMCU_APB4FZ1 REG32(DBGMCU_BASE + 0x54u)

/* ---- Part identity: the internal flash size in KB, a 16-bit word ST programs in system memory (RM0433 "Flash size");
 * 0xFFFF or 0 reads as not programmed (2 MB, as chipcheck.py takes it) ---- */
#define FLASH_SIZE_KB REG16(0x1FF1E880u)

/* ---- AXI interconnect (0x51000000): ES0392 section 2.2.10, revision Y only. TARG7_FN_MOD's READ_ISS_OVERRIDE
 * (bit 0) limits the AXI SRAM target to one outstanding read; without it a read from AXI SRAM can return
 * corrupted data. ---- */
#define AXI_TARG7_FN_MOD REG32(0x51008108u)
#define AXI_TARG7_FN_MOD_READ_ISS_OVERRIDE (1u << 0)
#define REV_ID_FIXED_AXI_SRAM 0x2000u /* revisions from X (0x2001) on have the fix in silicon */
#define DBGMCU_APB4FZ1_DBG_IWDG1 (1u << 18) /* IWDG1 stops while the core is halted */

#endif /* LLMCU_STM32H7_H */
