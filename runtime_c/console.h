/*
 * The firmware's console command: one line that says what to generate, so that one flashed image serves
 * any number of prompts. Portable C (no board code), so the host tests can feed it lines.
 *
 *   run [steps=N] [temperature=F] [topp=F] [seed=N] [prompt=<percent-encoded bytes>]\n
 *
 * Keys may come in any order; a missing key takes the host program's default (steps 256, temperature
 * 1.0, topp 0.9, seed 1, empty prompt). In the prompt every byte may be written %XX (two hex digits) and
 * space, tab, '%' and control bytes must be; %00 is refused because the prompt is a C string, and so is
 * a prompt that does not decode to valid UTF-8 (the model's text is UTF-8; see console_parse).
 * The host side is site_scons/llmcu/device/console.py.
 *
 * A line is at most CONSOLE_LINE_MAX bytes whatever arrives: the reader never writes past its buffer, a
 * longer line is dropped up to its '\n' and reported once, and a NUL byte on the wire cannot end a line
 * early (it is kept as ASCII SUB, a control byte that no command accepts).
 */
#ifndef LLMCU_CONSOLE_H
#define LLMCU_CONSOLE_H

#include <stddef.h>
#include <stdint.h>

#define CONSOLE_LINE_MAX 1024 /* bytes before the '\n' (a trailing '\r' included) */

/* ETX: during a run, the host's request to stop it (platform_stop_requested); between runs it is ignored,
 * since a stop that crossed the end of its run must not spoil the next command. */
#define CONSOLE_STOP 0x03

/* ---- reading lines ---- */

typedef struct {
    char buf[CONSOLE_LINE_MAX + 1]; /* the line, NUL-terminated once complete */
    size_t len;
    int overflow; /* the line grew past CONSOLE_LINE_MAX: the rest of it is being dropped */
} console_reader;

#define CONSOLE_MORE 0          /* keep feeding */
#define CONSOLE_LINE 1          /* buf holds a complete line (without '\n' and a trailing '\r') */
#define CONSOLE_LINE_TOO_LONG 2 /* a line longer than CONSOLE_LINE_MAX ended; it was discarded */

void console_reader_init(console_reader *r);
/* Adds one received byte. After CONSOLE_LINE or CONSOLE_LINE_TOO_LONG the next byte starts a new line. */
int console_feed(console_reader *r, uint8_t byte);

/* ---- parsing the command ---- */

typedef struct {
    int steps;
    float temperature;
    float topp;
    uint64_t seed;
    char prompt[CONSOLE_LINE_MAX + 1]; /* decoded, NUL-terminated; a prompt can only shrink when decoded */
} console_command;

#define CONSOLE_OK 0
#define CONSOLE_EMPTY 1       /* nothing but white space: not a command, no reply */
#define CONSOLE_BAD_COMMAND 2 /* *bad names the offending word: the command, a key, or a key's name */
#define CONSOLE_BAD_UTF8 3    /* the prompt decodes to bytes that are not UTF-8; *bad names the key */

/* The word an error is about: points into the parsed line. */
typedef struct {
    const char *text;
    size_t len;
} console_word;

/* Parses a line as console_feed leaves it (NUL-terminated, no '\n'). A word holding a raw control byte
 * (below 0x20 or 0x7F; tab separates words) is refused: such bytes must be percent-encoded. */
int console_parse(const char *line, console_command *cmd, console_word *bad);

/* The protocol's reason word for a line console_parse refused: "bad_command" or "bad_utf8". (A line
 * console_feed dropped as CONSOLE_LINE_TOO_LONG, whose value is a feed event, is "line_too_long".) */
const char *console_error_reason(int result);

/* The error line of a refused line, "\x15llmcu error reason=<reason>[ detail=<word>]\n", into out (at least
 * CONSOLE_ERROR_MAX bytes); returns its length. The detail word is reduced to characters that cannot disturb
 * the host's parser (A-Z a-z 0-9 _ - . ; anything else becomes '?', so no space or protocol marker comes
 * back) and to its first CONSOLE_DETAIL_MAX of them. detail may be NULL. */
#define CONSOLE_DETAIL_MAX 32
#define CONSOLE_REASON_MAX 16
#define CONSOLE_ERROR_MAX (20 + CONSOLE_REASON_MAX + 8 + CONSOLE_DETAIL_MAX + 1)
size_t console_format_error(char *out, const char *reason, const console_word *detail);

/* 1 if text[0..len) is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above
 * U+10FFFF, no sequence cut short), else 0. */
int console_valid_utf8(const uint8_t *text, size_t len);

/* Number parsing, exposed for the tests. Each takes the whole of text[0..len) or fails (returns 0). */
int console_parse_u64(const char *text, size_t len, uint64_t *out);
int console_parse_float(const char *text, size_t len, float *out);

#endif /* LLMCU_CONSOLE_H */
