/*
 * The POSIX program layer shared by the hosted and Linux targets (host, rzv2l): the command line, the
 * output, stack painting, the thread pool and the weights file live in targets/posix/; a target's
 * board.c adds only its cost counter (platform_counter, platform_counter_unit, platform_counter_hz).
 *
 *   llmcu [-p prompt] [-n steps] [-t temperature] [-P topp] [-s seed] [-j threads] [-w weights] [-q]
 *   llmcu -c [-j threads] [-w weights]        (the firmware's console on standard input)
 */
#ifndef LLMCU_POSIX_H
#define LLMCU_POSIX_H

#include <stddef.h>
#include <stdint.h>

#include "llmcu.h"

/* Exit statuses besides llmcu_generate's own (0 ok, 3 prompt too long). */
#define POSIX_EXIT_USAGE 2
#define POSIX_EXIT_WEIGHTS 4 /* the weights file is missing, unreadable, corrupt or for another build */
#define POSIX_EXIT_THREADS 5

/* What the command line asked for. */
typedef struct {
    llmcu_params params;
    int threads;              /* 1..LLMCU_MAX_THREADS (default: the build's threads= option) */
    const char *weights_path; /* weights_file builds: NULL for model.bin beside the program */
    int console;              /* -c: serve the firmware's console commands from standard input */
} posix_options;

/* Parses argv; prints usage and exits on -h or a bad flag. */
posix_options posix_parse_args(int argc, char **argv);

/* The program's name for messages (argv[0]). */
extern const char *posix_program;

/* ---- weights_file.c (builds with LLMCU_WEIGHTS_FILE) ---- */

/* Maps the weights file read-only over the space the build reserved for it, after checking its header
 * (magic, version, header checksum, the layout hash and data size this program was built for) and the
 * CRC-32 of its data. Prints why on stderr and returns POSIX_EXIT_WEIGHTS when the file cannot be used;
 * returns 0 when the weights are in place. */
int posix_map_weights(const char *path);

/* CRC-32 (IEEE 802.3, as zlib's crc32): crc is 0 for a new sum, or the previous result to continue. */
uint32_t posix_crc32(uint32_t crc, const uint8_t *data, size_t len);

#endif /* LLMCU_POSIX_H */
