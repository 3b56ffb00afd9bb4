/*
 * Before anything else runs on the chip: is it the part this image was built for, and which of its silicon's errata
 * need a workaround. Both read registers and system memory only (no RAM, no clock change), so they run first in
 * board_early_init, before the copy table fills AXI SRAM.
 */
#include "h7board.h"
#include "stm32h7.h"

/* The flash-size word reads 0xFFFF (or 0) on parts where it was never programmed: those are taken as 2 MB, as the
 * host's chip check (llmcu/device/chipcheck.py) takes them. */
#define FLASH_SIZE_UNPROGRAMMED_KB 2048u

/*
 * An image built for another part stops here with reason=wrong_part instead of running into what it cannot see: an
 * STM32H743 image on an STM32H750 (128 KB of flash: the image was cut when it was programmed), or on a part with
 * another DEV_ID. The fault line carries expected and found as 0x<DEV_ID><flash KB, 4 hex digits>: 0x4500800 is
 * DEV_ID 0x450 with 2048 KB. (An STM32H745/747 reads the STM32H743's DEV_ID and flash size: the board file's part is
 * what refuses those, at build time.)
 */
void part_check(void)
{
    uint32_t dev_id = DBGMCU_IDCODE & DBGMCU_IDCODE_DEV_ID_MASK;
    uint32_t flash_kb = FLASH_SIZE_KB;
    if (flash_kb == 0xFFFFu || flash_kb == 0u) {
        flash_kb = FLASH_SIZE_UNPROGRAMMED_KB;
    }
    uint32_t expected = (uint32_t)BOARD_PART_DEV_ID << 16 | BOARD_PART_FLASH_KB;
    uint32_t found = dev_id << 16 | flash_kb;
    if (found != expected) {
        boot_fail_values("wrong_part", expected, found);
    }
}

/*
 * ES0392 (STM32H742xI/G and STM32H743xI/G device errata), section 2.2.10 "Reading from AXI SRAM may lead to data read
 * corruption": on revision Y a read from AXI SRAM can return wrong data under concurrent accesses. The workaround is
 * the one ST's SystemInit applies: set READ_ISS_OVERRIDE in the AXI interconnect's TARG7_FN_MOD (AXI SRAM is its
 * target 7), so the AXI SRAM takes one read at a time. Revisions from X on (REV_ID >= 0x2000) have the fix in
 * silicon and keep the full read issuing capability. The memory planner puts the KV cache and the run state in AXI
 * SRAM, so this comes before the copy table runs.
 */
void errata_apply(void)
{
    uint32_t rev_id = DBGMCU_IDCODE >> DBGMCU_IDCODE_REV_ID_SHIFT;
    if (rev_id < REV_ID_FIXED_AXI_SRAM) {
        AXI_TARG7_FN_MOD = AXI_TARG7_FN_MOD_READ_ISS_OVERRIDE;
    }
}
