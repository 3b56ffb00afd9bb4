/*
 * ARMv7-M core registers used by llmcu's Cortex-M code, from the ARMv7-M Architecture Reference Manual
 * (System Control Space, B3.2) and the Cortex-M7 TRM (caches, DWT lock). Only what is used is defined.
 */
#ifndef LLMCU_ARMV7M_H
#define LLMCU_ARMV7M_H

#include <stdint.h>

#define REG32(addr) (*(volatile uint32_t *)(uintptr_t)(addr))

/* ---- System Control Block (SCB), 0xE000ED00 ---- */
#define SCB_CPUID REG32(0xE000ED00u)
#define SCB_ICSR REG32(0xE000ED04u)
#define SCB_VTOR REG32(0xE000ED08u)
#define SCB_AIRCR REG32(0xE000ED0Cu)
#define SCB_CCR REG32(0xE000ED14u)
#define SCB_SHCSR REG32(0xE000ED24u)
#define SCB_CFSR REG32(0xE000ED28u) /* MMFSR [7:0], BFSR [15:8], UFSR [31:16] */
#define SCB_HFSR REG32(0xE000ED2Cu)
#define SCB_MMFAR REG32(0xE000ED34u)
#define SCB_BFAR REG32(0xE000ED38u)
#define SCB_CLIDR REG32(0xE000ED78u)
#define SCB_CTR REG32(0xE000ED7Cu)
#define SCB_CCSIDR REG32(0xE000ED80u)
#define SCB_CSSELR REG32(0xE000ED84u)
#define SCB_CPACR REG32(0xE000ED88u)

#define SCB_AIRCR_VECTKEY (0x05FAu << 16)
#define SCB_AIRCR_SYSRESETREQ (1u << 2)

#define SCB_CCR_UNALIGN_TRP (1u << 3)
#define SCB_CCR_DIV_0_TRP (1u << 4)
#define SCB_CCR_STKALIGN (1u << 9)
#define SCB_CCR_DC (1u << 16) /* data cache enable (Cortex-M7) */
#define SCB_CCR_IC (1u << 17) /* instruction cache enable (Cortex-M7) */

#define SCB_SHCSR_MEMFAULTENA (1u << 16)
#define SCB_SHCSR_BUSFAULTENA (1u << 17)
#define SCB_SHCSR_USGFAULTENA (1u << 18)

#define SCB_HFSR_FORCED (1u << 30)

/* CPACR: full access to coprocessors 10 and 11 (the FPU). */
#define SCB_CPACR_CP10_CP11_FULL (0xFu << 20)

/* CCSIDR fields for set/way cache maintenance. */
#define CCSIDR_LINE_SIZE(x) (((x) & 0x7u))              /* log2(words per line) - 2 */
#define CCSIDR_ASSOCIATIVITY(x) ((((x) >> 3) & 0x3FFu)) /* ways - 1 */
#define CCSIDR_NUM_SETS(x) ((((x) >> 13) & 0x7FFFu))    /* sets - 1 */

/* ---- Cache maintenance operations, 0xE000EF50 ---- */
#define SCB_ICIALLU REG32(0xE000EF50u) /* invalidate all instruction caches to PoU */
#define SCB_DCIMVAC REG32(0xE000EF5Cu) /* invalidate data cache line by address to PoC */
#define SCB_DCISW REG32(0xE000EF60u)   /* invalidate data cache line by set/way */
#define SCB_DCCMVAC REG32(0xE000EF68u) /* clean data cache line by address to PoC */
#define SCB_DCCSW REG32(0xE000EF6Cu)   /* clean data cache line by set/way */
#define SCB_DCCISW REG32(0xE000EF74u)  /* clean and invalidate by set/way */

/* ---- SysTick, 0xE000E010 ---- */
#define SYST_CSR REG32(0xE000E010u)
#define SYST_RVR REG32(0xE000E014u)
#define SYST_CVR REG32(0xE000E018u)
#define SYST_CALIB REG32(0xE000E01Cu)

#define SYST_CSR_ENABLE (1u << 0)
#define SYST_CSR_TICKINT (1u << 1)
#define SYST_CSR_CLKSOURCE (1u << 2) /* 1: processor clock */
#define SYST_CSR_COUNTFLAG (1u << 16)
#define SYST_RVR_MAX 0x00FFFFFFu

/* ---- NVIC ---- */
#define NVIC_ISER(n) REG32(0xE000E100u + 4u * (n))
#define NVIC_ICER(n) REG32(0xE000E180u + 4u * (n))

/* ---- Debug: DEMCR and the DWT cycle counter ---- */
#define DEMCR REG32(0xE000EDFCu)
#define DEMCR_TRCENA (1u << 24)

#define DWT_CTRL REG32(0xE0001000u)
#define DWT_CYCCNT REG32(0xE0001004u)
#define DWT_LAR REG32(0xE0001FB0u) /* Cortex-M7: software lock, write DWT_LAR_KEY to unlock */
#define DWT_CTRL_CYCCNTENA (1u << 0)
#define DWT_LAR_KEY 0xC5ACCE55u

/* ---- Memory Protection Unit (PMSAv7), 0xE000ED90 ---- */
#define MPU_TYPE REG32(0xE000ED90u)
#define MPU_CTRL REG32(0xE000ED94u)
#define MPU_RNR REG32(0xE000ED98u)
#define MPU_RBAR REG32(0xE000ED9Cu)
#define MPU_RASR REG32(0xE000EDA0u)

#define MPU_CTRL_ENABLE (1u << 0)
#define MPU_CTRL_HFNMIENA (1u << 1)
#define MPU_CTRL_PRIVDEFENA (1u << 2) /* the default memory map as background region for privileged code */

#define MPU_RASR_ENABLE (1u << 0)
#define MPU_RASR_SIZE(log2_bytes) ((((uint32_t)(log2_bytes)) - 1u) << 1) /* region of 2^log2_bytes */
#define MPU_RASR_SRD(mask) (((uint32_t)(mask) & 0xFFu) << 8)             /* subregion disable bits */
#define MPU_RASR_B (1u << 16)
#define MPU_RASR_C (1u << 17)
#define MPU_RASR_S (1u << 18)
#define MPU_RASR_TEX(x) (((uint32_t)(x) & 0x7u) << 19)
#define MPU_RASR_AP(x) (((uint32_t)(x) & 0x7u) << 24)
#define MPU_RASR_XN (1u << 28)

#define MPU_AP_NO_ACCESS 0u
#define MPU_AP_FULL 3u     /* read/write, privileged and unprivileged */
#define MPU_AP_RO 6u       /* read-only, privileged and unprivileged */
#define MPU_AP_PRIV_RO 5u  /* read-only, privileged only */

/* Memory types (TEX, C, B) from the ARMv7-M ARM, table B3-13. */
#define MPU_ATTR_STRONGLY_ORDERED (MPU_RASR_TEX(0))
#define MPU_ATTR_DEVICE_SHARED (MPU_RASR_TEX(0) | MPU_RASR_B)
#define MPU_ATTR_NORMAL_WT (MPU_RASR_TEX(0) | MPU_RASR_C)                 /* write-through, no write-allocate */
#define MPU_ATTR_NORMAL_WBWA (MPU_RASR_TEX(1) | MPU_RASR_C | MPU_RASR_B)  /* write-back, write-allocate */
#define MPU_ATTR_NORMAL_NONCACHEABLE (MPU_RASR_TEX(1))

/* ---- barriers ---- */
static inline void dsb(void) { __asm volatile("dsb 0xF" ::: "memory"); }
static inline void isb(void) { __asm volatile("isb 0xF" ::: "memory"); }

#endif /* LLMCU_ARMV7M_H */
