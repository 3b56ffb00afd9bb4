/*
 * The RZ/V2L board layer: the cost counter. Everything else of the program (command line, output, stack
 * painting, threads, the weights file) is the POSIX layer in targets/posix/.
 *
 * On the board the counter is CLOCK_MONOTONIC in nanoseconds. Under `scons run hil=qemu` the program runs
 * in qemu-aarch64 with llmcu's instruction-counting plugin (tools/qemu-plugin/llmcu_insn.c), and the
 * environment names the file descriptor the plugin answers on (LLMCU_COUNTER_FD): a read(2) of 8 bytes
 * there returns the number of guest instructions executed so far, which the plugin writes into its pipe
 * at the moment the read system call is made. The count is exact, and with one thread (-j 1) the same on
 * every run.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "platform.h"

#define COUNTER_UNDECIDED (-1)
#define COUNTER_CLOCK (-2)

static int counter_fd = COUNTER_UNDECIDED;

static int read_count(int fd, uint64_t *count) { return read(fd, count, sizeof *count) == (ssize_t)sizeof *count; }

/* The plugin's descriptor, or COUNTER_CLOCK: decided once, by a first read that must succeed. */
static int counter_source(void) {
    if (counter_fd == COUNTER_UNDECIDED) {
        counter_fd = COUNTER_CLOCK;
        const char *text = getenv("LLMCU_COUNTER_FD");
        if (text != NULL && text[0] >= '0' && text[0] <= '9') {
            char *end;
            long fd = strtol(text, &end, 10);
            uint64_t probe;
            if (*end == '\0' && fd < 65536 && read_count((int)fd, &probe)) {
                counter_fd = (int)fd;
            }
        }
    }
    return counter_fd;
}

uint64_t platform_counter(void) {
    int fd = counter_source();
    uint64_t count;
    if (fd >= 0 && read_count(fd, &count)) {
        return count;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

const char *platform_counter_unit(void) { return counter_source() >= 0 ? "instructions" : "ns"; }

uint64_t platform_counter_hz(void) { return counter_source() >= 0 ? 0 : 1000000000u; }
