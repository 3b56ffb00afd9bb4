/*
 * fuzz_fail() for every build of the targets: a broken invariant aborts, like a sanitizer report, so that
 * fuzz_driver.c's SIGABRT handler (gcc) or libFuzzer's deadly-signal handler (clang) keeps the input.
 */
#include <stdio.h>
#include <stdlib.h>

#include "fuzz.h"

#ifndef FUZZ_TARGET_NAME
#define FUZZ_TARGET_NAME "target"
#endif

void fuzz_fail(const char *what) {
    fprintf(stderr, "fuzz: %s: invariant broken: %s\n", FUZZ_TARGET_NAME, what);
    abort();
}
