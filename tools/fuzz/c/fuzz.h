/*
 * The C fuzz targets' shared interface (tools/fuzz/c/README.md).
 *
 * Every target defines libFuzzer's entry point, LLVMFuzzerTestOneInput, so the same file builds as a libFuzzer
 * target under clang (-fsanitize=fuzzer) or, with gcc, with fuzz_driver.c's main(), which replays files and
 * generates mutated inputs itself. A broken invariant calls fuzz_fail(): the input is saved and the program
 * aborts, exactly as a sanitizer report does.
 */
#ifndef LLMCU_FUZZ_H
#define LLMCU_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Seed inputs the driver starts mutating from (and libFuzzer builds can write out as a corpus). */
extern const char *const fuzz_seeds[];
extern const size_t fuzz_seed_count;

/* Reports a broken invariant with the input that broke it, then aborts. */
void fuzz_fail(const char *what) __attribute__((noreturn));

#define FUZZ_CHECK(cond)                                                                                           \
    do {                                                                                                           \
        if (!(cond)) {                                                                                             \
            fuzz_fail(#cond);                                                                                      \
        }                                                                                                          \
    } while (0)

#endif /* LLMCU_FUZZ_H */
