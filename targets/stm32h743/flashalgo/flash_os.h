/*
 * The CMSIS flash-algorithm interface ("FLM" files, as in CMSIS-Pack device family packs), as debuggers
 * such as pyOCD and Keil MDK load them: a position-independent ELF whose code is in section PrgCode
 * (starting at address 0), whose writable data is in PrgData, and whose device description is the object
 * `FlashDevice` in section DevDscr.
 *
 * The debugger copies PrgCode and PrgData to target RAM as one block, sets r9 (the static base) to where
 * PrgData landed, SP to a stack it chose and LR to a breakpoint, then calls the entry points below with
 * their arguments in r0-r3. Each returns 0 on success (Verify: the address after the last byte checked).
 */
#ifndef LLMCU_FLASH_OS_H
#define LLMCU_FLASH_OS_H

#include <stdint.h>

#define FLASH_DRV_VERS 0x0101u /* interface version 1.01: the only one debuggers accept */

/* FlashDevice.type */
#define FLASH_TYPE_UNKNOWN 0u
#define FLASH_TYPE_ONCHIP 1u
#define FLASH_TYPE_EXT8BIT 2u
#define FLASH_TYPE_EXT16BIT 3u
#define FLASH_TYPE_EXT32BIT 4u
#define FLASH_TYPE_EXTSPI 5u

#define FLASH_SECTOR_END {0xFFFFFFFFu, 0xFFFFFFFFu}

/* One run of equal sectors: `size` bytes each, from `offset` (relative to the device start) up to the
 * next entry's offset or the end of the device. */
struct FlashSectors {
    uint32_t size;
    uint32_t offset;
};

/* The layout debuggers parse (pyOCD: "<H128sHLLLLBxxxLL" followed by the sector list). */
struct FlashDevice {
    uint16_t version;  /* FLASH_DRV_VERS */
    char name[128];    /* shown by debuggers */
    uint16_t type;     /* FLASH_TYPE_* */
    uint32_t start;    /* default device start address */
    uint32_t size;     /* bytes */
    uint32_t page_size;          /* bytes ProgramPage takes at most */
    uint32_t reserved;           /* 0 */
    uint8_t erased_value;        /* what erased bytes read as */
    uint32_t program_timeout_ms; /* one ProgramPage */
    uint32_t erase_timeout_ms;   /* one EraseSector */
    struct FlashSectors sectors[2]; /* runs of sectors, then FLASH_SECTOR_END */
};

int Init(uint32_t adr, uint32_t clk, uint32_t fnc); /* fnc: 1 erase, 2 program, 3 verify */
int UnInit(uint32_t fnc);
int EraseChip(void);
int EraseSector(uint32_t adr);
int ProgramPage(uint32_t adr, uint32_t sz, const uint8_t *buf);

#endif /* LLMCU_FLASH_OS_H */
