/*
 * Memory protection and the Cortex-M7 L1 caches.
 *
 * Why the MPU is needed at all: in the ARMv7-M default memory map (ARMv7-M ARM B3.1, table B3-1)
 * 0x60000000-0x9FFFFFFF is "external RAM", Normal memory that the Cortex-M7 may read speculatively
 * (a predicted branch, a prefetch near a pointer) even when the program never touches it. On the
 * STM32H743 that window holds the FMC NOR/PSRAM bank 1 (0x60000000, enabled at reset), the FMC NAND
 * bank (0x80000000) and the QUADSPI window (0x90000000): a speculative read there, with no memory
 * behind it, can stall the bus (ST's application note AN4861 and the Cortex-M7 notes in RM0433). And
 * 0xC0000000-0xDFFFFFFF (FMC SDRAM banks) is Device memory by default, which would make SDRAM slow and
 * fault on unaligned accesses. So:
 *   region 0: 0x60000000-0xDFFFFFFF no access, execute-never, strongly ordered: nothing is fetched or
 *             read there, speculatively or not, unless a higher region says otherwise;
 *   region 1: peripherals 0x40000000-0x5FFFFFFF as shared Device, execute-never (as the default map,
 *             but stated, so no other setting can make them cacheable);
 *   region 2: the SDRAM, Normal write-back write-allocate, once it is initialised;
 *   region 3: the QSPI NOR flash, Normal write-through read-only, once it is memory-mapped. It stays
 *             executable: target.toml calls it "xip" (execute in place), so the memory planner may put
 *             code there, and it is fully backed and read-only, so speculative fetches are harmless.
 * A higher region number wins where regions overlap (ARMv7-M ARM B3.5.3), which is what lets 2 and 3
 * open the parts of region 0 that have memory behind them.
 */
#include "armv7m.h"
#include "h7board.h"

#define REGION_GUARD 0u
#define REGION_PERIPHERALS 1u
#define REGION_SDRAM 2u
#define REGION_QSPI 3u

/* Region 0 spans the whole 4 GB as eight 512 MB subregions; only 3..6 (0x60000000-0xDFFFFFFF) are
 * enabled: 0-2 are code, SRAM and peripherals, 7 is the system region, which the MPU does not map. */
#define GUARD_SUBREGIONS_DISABLED 0x87u

static void mpu_set_region(uint32_t number, uint32_t base, uint32_t attributes)
{
    MPU_RNR = number;
    MPU_RBAR = base; /* VALID = 0: the region number is the one in MPU_RNR */
    MPU_RASR = attributes;
}

void mpu_init(void)
{
    dsb();
    MPU_CTRL = 0u;
    /* Clear every region, in case a bootloader or debugger left some. */
    uint32_t regions = (MPU_TYPE >> 8) & 0xFFu;
    for (uint32_t i = 0u; i < regions; i++) {
        MPU_RNR = i;
        MPU_RASR = 0u;
    }
    mpu_set_region(REGION_GUARD, 0x00000000u,
                   MPU_RASR_ENABLE | MPU_RASR_SIZE(32) | MPU_RASR_SRD(GUARD_SUBREGIONS_DISABLED) |
                       MPU_RASR_AP(MPU_AP_NO_ACCESS) | MPU_RASR_XN | MPU_ATTR_STRONGLY_ORDERED);
    mpu_set_region(REGION_PERIPHERALS, 0x40000000u,
                   MPU_RASR_ENABLE | MPU_RASR_SIZE(29) | MPU_RASR_AP(MPU_AP_FULL) | MPU_RASR_XN |
                       MPU_ATTR_DEVICE_SHARED);
    /* PRIVDEFENA: everything else (flash, TCMs, SRAMs) keeps the default map for this privileged code. */
    MPU_CTRL = MPU_CTRL_ENABLE | MPU_CTRL_PRIVDEFENA;
    dsb();
    isb();
}

#if BOARD_HAS_SDRAM || BOARD_HAS_QSPI
/* Changing a region while the MPU is on is safe here: nothing has used the memory it opens yet. */
static void mpu_open(uint32_t number, uint32_t base, uint32_t attributes)
{
    dsb();
    mpu_set_region(number, base, attributes);
    dsb();
    isb();
}
#endif

void mpu_enable_sdram(void)
{
#if BOARD_HAS_SDRAM
    mpu_open(REGION_SDRAM, BOARD_SDRAM_BASE,
             MPU_RASR_ENABLE | MPU_RASR_SIZE(BOARD_SDRAM_SIZE_LOG2) | MPU_RASR_AP(MPU_AP_FULL) |
                 MPU_ATTR_NORMAL_WBWA);
#endif
}

void mpu_enable_qspi(void)
{
#if BOARD_HAS_QSPI
    mpu_open(REGION_QSPI, BOARD_QSPI_BASE,
             MPU_RASR_ENABLE | MPU_RASR_SIZE(BOARD_QSPI_SIZE_LOG2) | MPU_RASR_AP(MPU_AP_RO) | MPU_ATTR_NORMAL_WT);
#endif
}

/*
 * The caches come out of reset disabled and with undefined contents, so each is invalidated before it
 * is enabled (Cortex-M7 TRM, "L1 caches": "the caches must be invalidated before they are enabled").
 * The I-cache has an invalidate-all operation; the D-cache is invalidated line by line by set and way
 * (ARMv7-M ARM B2.2.7, DCISW), with the geometry read from CCSIDR after selecting the L1 data cache in
 * CSSELR. A cache that is already on (a debugger or bootloader enabled it) is left alone: invalidating
 * a live D-cache would throw away dirty lines.
 */
void cache_enable(void)
{
    if ((SCB_CCR & SCB_CCR_IC) == 0u) {
        dsb();
        isb();
        SCB_ICIALLU = 0u;
        dsb();
        isb();
        SCB_CCR |= SCB_CCR_IC;
        dsb();
        isb();
    }
    if ((SCB_CCR & SCB_CCR_DC) == 0u) {
        SCB_CSSELR = 0u; /* level 1, data cache */
        dsb();
        uint32_t ccsidr = SCB_CCSIDR;
        uint32_t sets = CCSIDR_NUM_SETS(ccsidr) + 1u;
        uint32_t ways = CCSIDR_ASSOCIATIVITY(ccsidr) + 1u;
        uint32_t set_shift = CCSIDR_LINE_SIZE(ccsidr) + 4u; /* log2 of the line length in bytes */
        /* DCISW holds the way in its top bits: bit 32 - log2(ways) upwards. */
        uint32_t way_shift = ways > 1u ? (uint32_t)__builtin_clz(ways - 1u) : 0u;
        for (uint32_t set = 0u; set < sets; set++) {
            for (uint32_t way = 0u; way < ways; way++) {
                SCB_DCISW = (way << way_shift) | (set << set_shift);
            }
        }
        dsb();
        SCB_CCR |= SCB_CCR_DC;
        dsb();
        isb();
    }
}
