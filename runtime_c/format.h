/*
 * Number formatting for the output protocol, without printf: newlib's printf family costs tens of
 * kilobytes of flash and may allocate. Integers and fixed-point ratios are all the protocol needs.
 */
#ifndef LLMCU_FORMAT_H
#define LLMCU_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#define FMT_U64_MAX_CHARS 20 /* 18446744073709551615 */

/* Writes the decimal digits of v to out (no terminator); returns how many. */
size_t fmt_u64(char *out, uint64_t v);

/*
 * Writes num / den rounded (half up) to `decimals` (0..9) places, e.g. 7 / 2 with 1 decimal is "3.5".
 * den 0 gives "0". Needs at most FMT_U64_MAX_CHARS + 1 + decimals characters. Returns how many.
 */
size_t fmt_ratio(char *out, uint64_t num, uint64_t den, int decimals);

/* A line assembled piece by piece and written with one platform_write, so that a UART sees whole lines.
 * A line longer than the buffer is written out in several parts, never cut. */
typedef struct {
    char buf[96];
    size_t len;
} fmt_line;

void line_start(fmt_line *line);
void line_bytes(fmt_line *line, const char *data, size_t len);
void line_str(fmt_line *line, const char *text);
void line_u64(fmt_line *line, uint64_t v);
void line_ratio(fmt_line *line, uint64_t num, uint64_t den, int decimals);
/* Writes what is left (call after the final "\n"). */
void line_end(fmt_line *line);

#endif /* LLMCU_FORMAT_H */
