/*
 * A weights_file export (llmcu.h: llmcu_open): the model's weights are not in the library but in its weights file
 * (model.bin beside the export), mapped read-only over the space the library reserved for them, after every check
 * the llmcu program itself makes (targets/posix/weights_file.c: its header, the layout this library was built for,
 * its size, the CRC-32 of its data). Why a file is refused goes to stderr, prefixed "llmcu:".
 */
#include <stddef.h>

#include "llmcu.h"
#include "posix.h"

const char *posix_program = "llmcu";

int llmcu_open(const char *path) {
    if (path == NULL) {
        return LLMCU_ERR_ARGUMENT;
    }
    return posix_map_weights(path) == 0 ? LLMCU_OK : LLMCU_ERR_WEIGHTS_FILE;
}
