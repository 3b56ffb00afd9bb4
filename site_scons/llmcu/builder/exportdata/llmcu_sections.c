/*
 * A firmware export's boot step (llmcu.h: llmcu_copy_weights): the arrays the memory plan copies from flash or
 * QSPI into SDRAM at boot (weights=sdram), as the table in llmcu_sections.ld lists them (load address, address,
 * bytes). A product calls it once, after its SDRAM works and before the first generation; with nothing to copy
 * the table is empty and it returns at once.
 */
#include <stdint.h>
#include <string.h>

#include "llmcu.h"

extern const uint32_t __llmcu_export_copy_start[];
extern const uint32_t __llmcu_export_copy_end[];

void llmcu_copy_weights(void) {
    for (const uint32_t *entry = __llmcu_export_copy_start; entry < __llmcu_export_copy_end; entry += 3) {
        memcpy((void *)(uintptr_t)entry[1], (const void *)(uintptr_t)entry[0], entry[2]);
    }
}
