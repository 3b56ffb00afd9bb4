/*
 * Host driver for runtime_c/format.c, compiled and run by tests/runtime/test_format.py.
 *
 *   stdin:  one case per line, "u64 <v>" or "ratio <num> <den> <decimals>" (decimal integers)
 *   stdout: what fmt_u64 / fmt_ratio write for it, one line per case
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "format.h"
#include "platform.h"

/* format.c's line_* functions write through the platform layer; this driver uses only fmt_*. */
void platform_write(const void *data, size_t len) {
    fwrite(data, 1, len, stdout);
}

int main(void) {
    char line[256];
    char out[FMT_U64_MAX_CHARS + 1 + 9 + 1];
    while (fgets(line, sizeof line, stdin) != NULL) {
        uint64_t a, b;
        int decimals;
        size_t n;
        if (sscanf(line, "u64 %" SCNu64, &a) == 1) {
            n = fmt_u64(out, a);
        } else if (sscanf(line, "ratio %" SCNu64 " %" SCNu64 " %d", &a, &b, &decimals) == 3) {
            n = fmt_ratio(out, a, b, decimals);
        } else {
            fprintf(stderr, "bad input line: %s", line);
            return 2;
        }
        out[n] = '\0';
        puts(out);
    }
    return 0;
}
