/*
 * The host "board": the cost counter on this machine. The program around the runtime (command line,
 * output, stack painting, threads, weights file) is the POSIX layer in targets/posix/, which every
 * hosted and Linux target shares.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime under -std=c99 */

#include <stdint.h>
#include <time.h>

#include "platform.h"

uint64_t platform_counter(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

const char *platform_counter_unit(void) { return "ns"; }

uint64_t platform_counter_hz(void) { return 1000000000u; }
