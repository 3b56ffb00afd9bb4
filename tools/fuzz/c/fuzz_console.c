/*
 * Fuzz target: the firmware's console (runtime_c/console.c) on any byte stream.
 *
 * The input is fed byte by byte to a line reader, as a UART delivers it, and every completed line is parsed.
 * Besides the sanitizers' own checks (no read or write outside the reader's and command's buffers), these
 * must hold for every line:
 *   - the reader never holds more than CONSOLE_LINE_MAX bytes, and a line never contains a NUL byte;
 *   - an accepted command has its values in the documented ranges and a prompt that is NUL-free, valid UTF-8
 *     and no longer than the line;
 *   - a refusal names a word inside the line, and its error line fits CONSOLE_ERROR_MAX and holds no byte that
 *     could disturb the host's parser;
 *   - console_valid_utf8 agrees with an independent validator written from the Unicode standard's table of
 *     well-formed byte sequences (Table 3-7), on the raw input and on every accepted prompt.
 */
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "console.h"
#include "fuzz.h"

const char *const fuzz_seeds[] = {
    "run\n",
    "run steps=5 temperature=0.8 topp=0.95 seed=42 prompt=Once%20upon%20a%20time\n",
    "run prompt=%C3%A9t%C3%A9%20%F0%9F%A6%99 steps=0\r\n",
    "run seed=18446744073709551615 temperature=1e-05 topp=1\n\n   \nwalk\n",
    "run prompt=%zz\nrun prompt=%00\nrun steps=1000000001 topp=1.5\n",
};
const size_t fuzz_seed_count = sizeof fuzz_seeds / sizeof fuzz_seeds[0];

/* Table 3-7 of the Unicode standard: the well-formed UTF-8 byte sequences, range by range. */
static int reference_utf8(const uint8_t *s, size_t n) {
    static const struct {
        uint8_t lo[4], hi[4];
        int len;
    } forms[] = {
        {{0x00}, {0x7F}, 1},
        {{0xC2, 0x80}, {0xDF, 0xBF}, 2},
        {{0xE0, 0xA0, 0x80}, {0xE0, 0xBF, 0xBF}, 3},
        {{0xE1, 0x80, 0x80}, {0xEC, 0xBF, 0xBF}, 3},
        {{0xED, 0x80, 0x80}, {0xED, 0x9F, 0xBF}, 3},
        {{0xEE, 0x80, 0x80}, {0xEF, 0xBF, 0xBF}, 3},
        {{0xF0, 0x90, 0x80, 0x80}, {0xF0, 0xBF, 0xBF, 0xBF}, 4},
        {{0xF1, 0x80, 0x80, 0x80}, {0xF3, 0xBF, 0xBF, 0xBF}, 4},
        {{0xF4, 0x80, 0x80, 0x80}, {0xF4, 0x8F, 0xBF, 0xBF}, 4},
    };
    size_t i = 0;
    while (i < n) {
        int matched = 0;
        for (size_t f = 0; f < sizeof forms / sizeof forms[0] && !matched; f++) {
            int len = forms[f].len;
            if ((size_t)len > n - i) {
                continue;
            }
            int ok = 1;
            for (int k = 0; k < len && ok; k++) {
                ok = s[i + k] >= forms[f].lo[k] && s[i + k] <= forms[f].hi[k];
            }
            if (ok) {
                i += (size_t)len;
                matched = 1;
            }
        }
        if (!matched) {
            return 0;
        }
    }
    return 1;
}

static void check_line(const console_reader *reader) {
    static console_command cmd;
    const char *line = reader->buf;
    size_t line_len = strlen(line);
    FUZZ_CHECK(line_len <= CONSOLE_LINE_MAX);
    console_word bad = {NULL, 0};
    int result = console_parse(line, &cmd, &bad);
    if (result == CONSOLE_OK) {
        size_t prompt_len = strlen(cmd.prompt);
        FUZZ_CHECK(prompt_len <= line_len);
        FUZZ_CHECK(console_valid_utf8((const uint8_t *)cmd.prompt, prompt_len));
        FUZZ_CHECK(reference_utf8((const uint8_t *)cmd.prompt, prompt_len));
        FUZZ_CHECK(cmd.steps >= 0 && cmd.steps <= 1000000000);
        FUZZ_CHECK(cmd.temperature >= 0.0f && cmd.temperature <= FLT_MAX);
        FUZZ_CHECK(cmd.topp >= 0.0f && cmd.topp <= 1.0f);
        FUZZ_CHECK(cmd.seed != 0);
        return;
    }
    if (result == CONSOLE_EMPTY) {
        for (size_t i = 0; i < line_len; i++) {
            FUZZ_CHECK(line[i] == ' ' || line[i] == '\t');
        }
        return;
    }
    FUZZ_CHECK(result == CONSOLE_BAD_COMMAND || result == CONSOLE_BAD_UTF8);
    FUZZ_CHECK(bad.text >= line && bad.text + bad.len <= line + line_len);
    char error[CONSOLE_ERROR_MAX];
    size_t n = console_format_error(error, console_error_reason(result), &bad);
    FUZZ_CHECK(n <= CONSOLE_ERROR_MAX && error[0] == '\x15' && error[n - 1] == '\n');
    for (size_t i = 1; i + 1 < n; i++) {
        FUZZ_CHECK((uint8_t)error[i] >= 0x20 && (uint8_t)error[i] < 0x7F);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FUZZ_CHECK(console_valid_utf8(data, size) == reference_utf8(data, size));
    static console_reader reader;
    console_reader_init(&reader);
    for (size_t i = 0; i < size; i++) {
        int event = console_feed(&reader, data[i]);
        FUZZ_CHECK(reader.len <= CONSOLE_LINE_MAX);
        if (event == CONSOLE_LINE) {
            check_line(&reader);
        } else {
            FUZZ_CHECK(event == CONSOLE_MORE || event == CONSOLE_LINE_TOO_LONG);
        }
    }
#ifdef FUZZ_PLANTED_BUG
    /* Test builds only (tests/runtime/test_c_fuzz.py): a bug the harness must find, an out-of-bounds write when the
     * input holds the bytes "%ff". */
    if (size >= 3 && memmem(data, size, "%ff", 3) != NULL) {
        char *small = malloc(4);
        volatile size_t at = 4;
        small[at] = 1;
        free(small);
    }
#endif
    return 0;
}
