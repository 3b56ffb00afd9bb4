/*
 * The clock plans, one per silicon revision (board_config.h BOARD_PLAN_V and BOARD_PLAN_Y, computed and checked
 * against limits.toml by llmcu/platform/stm32h7.py), and the choice between them: DBGMCU_IDCODE REV_ID (RM0433 "DBGMCU
 * identity code register"). Revision V runs 480 MHz at VOS0, revision Y at most 400 MHz at VOS1 (DS12110); an
 * unknown revision gets revision Y's plan, which every revision runs. In flash and a register only, so the plan
 * can be asked for before .data exists, by the QSPI flash algorithm too.
 */
#include "h7board.h"
#include "stm32h7.h"

static const board_clock_plan plans[2] = {BOARD_PLAN_V, BOARD_PLAN_Y};

const board_clock_plan *board_plan(void)
{
    uint32_t rev_id = DBGMCU_IDCODE >> DBGMCU_IDCODE_REV_ID_SHIFT;
    return rev_id == plans[0].rev_id ? &plans[0] : &plans[1];
}
