/*
 * The console command line (see console.h): collecting bytes into a bounded line, splitting it into
 * key=value words, and parsing numbers without the C library's strto* functions, which pull in locale
 * tables and, in newlib, an allocating reentrancy structure.
 */
#include <float.h>
#include <stddef.h>
#include <stdint.h>

#include "console.h"

#define CONSOLE_SUBSTITUTE '\x1a' /* what a received NUL byte becomes */

/* ---- reading lines ---- */

void console_reader_init(console_reader *r) {
    r->len = 0;
    r->overflow = 0;
    r->buf[0] = '\0';
}

int console_feed(console_reader *r, uint8_t byte) {
    if (byte == CONSOLE_STOP) {
        return CONSOLE_MORE; /* a stop request that came after its run had ended: nothing to stop */
    }
    if (byte == '\n') {
        int result = r->overflow ? CONSOLE_LINE_TOO_LONG : CONSOLE_LINE;
        if (!r->overflow && r->len > 0 && r->buf[r->len - 1] == '\r') { /* a terminal's CR LF */
            r->len--;
        }
        r->buf[r->overflow ? 0 : r->len] = '\0';
        r->len = 0;
        r->overflow = 0;
        return result;
    }
    if (r->overflow) {
        return CONSOLE_MORE; /* dropping the rest of an overlong line up to its '\n' */
    }
    if (r->len == CONSOLE_LINE_MAX) {
        r->overflow = 1;
        return CONSOLE_MORE;
    }
    /* The line is handed on as a C string: a NUL byte would end it early and hide what followed (`run\0 x`
     * would run with the defaults). ASCII SUB, the substitute character, keeps its place and is refused. */
    r->buf[r->len++] = byte == 0 ? CONSOLE_SUBSTITUTE : (char)byte;
    return CONSOLE_MORE;
}

/* ---- numbers ---- */

static int is_digit(char c) { return c >= '0' && c <= '9'; }

int console_parse_u64(const char *text, size_t len, uint64_t *out) {
    if (len == 0) {
        return 0;
    }
    uint64_t value = 0;
    for (size_t i = 0; i < len; i++) {
        if (!is_digit(text[i])) {
            return 0;
        }
        uint64_t digit = (uint64_t)(text[i] - '0');
        /* Compared with constants: a division by 10 here would pull libgcc's 64-bit division in at -Os. */
        if (value > UINT64_MAX / 10 || (value == UINT64_MAX / 10 && digit > UINT64_MAX % 10)) {
            return 0; /* does not fit */
        }
        value = value * 10 + digit;
    }
    *out = value;
    return 1;
}

/* (double)value, correctly rounded, from two 32-bit halves: both convert exactly and hi * 2^32 is exact, so
 * the one rounding is the sum's. The Cortex-M7's FPU converts 32-bit integers only; (double) of a 64-bit one
 * pulled about a kilobyte of soft-float code from libgcc into the firmware. */
static double u64_to_double(uint64_t value) {
    return (double)(uint32_t)(value >> 32) * 4294967296.0 + (double)(uint32_t)value;
}

/* value * 10^exp10. Powers of ten up to 1e22 are exact doubles, so for a mantissa below 2^53 and
 * |exp10| <= 22 this is a single correctly rounded multiplication or division. */
static double scale_by_power_of_ten(double value, int exp10) {
    static const double powers[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    while (exp10 > 22) {
        value *= 1e22;
        exp10 -= 22;
    }
    while (exp10 < -22) {
        value /= 1e22;
        exp10 += 22;
    }
    return exp10 >= 0 ? value * powers[exp10] : value / powers[-exp10];
}

/*
 * Decimal digits with an optional fraction and exponent ("0.95", "1", ".5", "1e-05", "2.5E+3"); no sign,
 * no "inf" or "nan". The digits are collected into an integer and scaled once in double precision, then
 * rounded to float: the result is the float of the correctly rounded double, (float)strtod(text), which
 * is what the host program and the Python reference use, whenever the digits fit in 2^53 and the decimal
 * exponent in +-22 (every short decimal, such as Python's repr() of 0.8 or 0.95). Longer ones can be a
 * double's last bit off, which changes the float only when it sits on a float rounding boundary.
 */
int console_parse_float(const char *text, size_t len, float *out) {
    uint64_t mantissa = 0;
    int exp10 = 0;
    int digits = 0;
    size_t i = 0;

    for (; i < len && is_digit(text[i]); i++, digits++) {
        if (mantissa <= (UINT64_MAX - 9) / 10) {
            mantissa = mantissa * 10 + (uint64_t)(text[i] - '0');
        } else {
            exp10++; /* digits beyond 19 only scale */
        }
    }
    if (i < len && text[i] == '.') {
        for (i++; i < len && is_digit(text[i]); i++, digits++) {
            if (mantissa <= (UINT64_MAX - 9) / 10) {
                mantissa = mantissa * 10 + (uint64_t)(text[i] - '0');
                exp10--;
            }
        }
    }
    if (digits == 0) {
        return 0;
    }
    if (i < len && (text[i] == 'e' || text[i] == 'E')) {
        i++;
        int negative = 0;
        if (i < len && (text[i] == '+' || text[i] == '-')) {
            negative = text[i] == '-';
            i++;
        }
        if (i == len || !is_digit(text[i])) {
            return 0;
        }
        int exponent = 0;
        for (; i < len && is_digit(text[i]); i++) {
            if (exponent < 100000) { /* far past any float: saturate rather than overflow */
                exponent = exponent * 10 + (text[i] - '0');
            }
        }
        exp10 += negative ? -exponent : exponent;
    }
    if (i != len) {
        return 0;
    }

    if (mantissa == 0) {
        *out = 0.0f;
        return 1;
    }
    /* Past these a float is 0 or infinite whatever the digits; stop the scaling loops early. */
    if (exp10 < -400) {
        exp10 = -400;
    } else if (exp10 > 400) {
        exp10 = 400;
    }
    *out = (float)scale_by_power_of_ten(u64_to_double(mantissa), exp10);
    return 1;
}

/* ---- the command ---- */

static int is_space(char c) { return c == ' ' || c == '\t'; }

/* Raw control bytes in a word: they must come percent-encoded (and '\r' only ends a line). */
static int is_control(char c) { return (uint8_t)c < 0x20 || (uint8_t)c == 0x7F; }

int console_valid_utf8(const uint8_t *text, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint8_t lead = text[i];
        size_t extra;
        uint32_t min; /* the smallest code point this length may encode (shorter forms are overlong) */
        uint32_t cp;
        if (lead < 0x80) {
            i++;
            continue;
        } else if ((lead & 0xE0) == 0xC0) {
            extra = 1, min = 0x80, cp = lead & 0x1Fu;
        } else if ((lead & 0xF0) == 0xE0) {
            extra = 2, min = 0x800, cp = lead & 0x0Fu;
        } else if ((lead & 0xF8) == 0xF0) {
            extra = 3, min = 0x10000, cp = lead & 0x07u;
        } else {
            return 0; /* a continuation byte without a lead, or 0xF8..0xFF */
        }
        if (len - i <= extra) {
            return 0; /* cut short by the end of the text */
        }
        for (size_t k = 1; k <= extra; k++) {
            if ((text[i + k] & 0xC0) != 0x80) {
                return 0;
            }
            cp = cp << 6 | (text[i + k] & 0x3Fu);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            return 0;
        }
        i += extra + 1;
    }
    return 1;
}

static size_t append(char *out, size_t at, const char *text, size_t max) {
    for (size_t i = 0; i < max && text[i] != '\0'; i++) {
        out[at++] = text[i];
    }
    return at;
}

size_t console_format_error(char *out, const char *reason, const console_word *detail) {
    size_t n = append(out, 0, "\x15llmcu error reason=", 20);
    n = append(out, n, reason, CONSOLE_REASON_MAX);
    if (detail != NULL) {
        n = append(out, n, " detail=", 8);
        for (size_t i = 0; i < detail->len && i < CONSOLE_DETAIL_MAX; i++) {
            char c = detail->text[i];
            int plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                        c == '-' || c == '.';
            out[n++] = plain ? c : '?';
        }
    }
    out[n++] = '\n';
    return n;
}

const char *console_error_reason(int result) {
    switch (result) {
    case CONSOLE_BAD_UTF8:
        return "bad_utf8";
    default:
        return "bad_command";
    }
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Decodes %XX escapes into out (room for len + 1 bytes); a bare '%', a bad escape or %00 fails (-1).
 * Returns the decoded length. */
static long percent_decode(const char *text, size_t len, char *out) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] != '%') {
            out[n++] = text[i];
            continue;
        }
        if (i + 2 >= len) { /* fewer than two characters follow */
            return -1;
        }
        int hi = hex_value(text[i + 1]);
        int lo = hex_value(text[i + 2]);
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            return -1;
        }
        out[n++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[n] = '\0';
    return (long)n;
}

static int word_is(const char *text, size_t len, const char *name) {
    size_t i = 0;
    for (; i < len && name[i] != '\0'; i++) {
        if (text[i] != name[i]) {
            return 0;
        }
    }
    return i == len && name[i] == '\0';
}

/* One key=value word into cmd; returns CONSOLE_OK, or CONSOLE_BAD_COMMAND if the key is unknown or its value
 * bad, or CONSOLE_BAD_UTF8 for a prompt that is not UTF-8. */
static int parse_setting(const char *key, size_t key_len, const char *value, size_t value_len,
                         console_command *cmd) {
    if (word_is(key, key_len, "steps")) {
        uint64_t steps;
        if (!console_parse_u64(value, value_len, &steps) || steps > 1000000000u) {
            return CONSOLE_BAD_COMMAND;
        }
        cmd->steps = (int)steps;
        return CONSOLE_OK;
    }
    if (word_is(key, key_len, "temperature")) {
        float t;
        if (!console_parse_float(value, value_len, &t) || t > FLT_MAX) { /* >= 0 by syntax; not infinite */
            return CONSOLE_BAD_COMMAND;
        }
        cmd->temperature = t;
        return CONSOLE_OK;
    }
    if (word_is(key, key_len, "topp")) {
        float p;
        if (!console_parse_float(value, value_len, &p) || p > 1.0f) {
            return CONSOLE_BAD_COMMAND;
        }
        cmd->topp = p;
        return CONSOLE_OK;
    }
    if (word_is(key, key_len, "seed")) {
        uint64_t seed;
        /* Seed 0 would freeze run.c's xorshift generator at 0. */
        if (!console_parse_u64(value, value_len, &seed) || seed == 0) {
            return CONSOLE_BAD_COMMAND;
        }
        cmd->seed = seed;
        return CONSOLE_OK;
    }
    if (word_is(key, key_len, "prompt")) {
        long n = percent_decode(value, value_len, cmd->prompt);
        if (n < 0) {
            return CONSOLE_BAD_COMMAND;
        }
        if (!console_valid_utf8((const uint8_t *)cmd->prompt, (size_t)n)) {
            cmd->prompt[0] = '\0'; /* nothing half-checked is left behind for a caller that ignores the result */
            return CONSOLE_BAD_UTF8;
        }
        return CONSOLE_OK;
    }
    return CONSOLE_BAD_COMMAND;
}

int console_parse(const char *line, console_command *cmd, console_word *bad) {
    cmd->steps = 256;
    cmd->temperature = 1.0f;
    cmd->topp = 0.9f;
    cmd->seed = 1;
    cmd->prompt[0] = '\0';

    const char *p = line;
    while (is_space(*p)) {
        p++;
    }
    if (*p == '\0') {
        return CONSOLE_EMPTY;
    }
    const char *word = p;
    while (*p != '\0' && !is_space(*p)) {
        p++;
    }
    if (!word_is(word, (size_t)(p - word), "run")) {
        bad->text = word;
        bad->len = (size_t)(p - word);
        return CONSOLE_BAD_COMMAND;
    }

    for (;;) {
        while (is_space(*p)) {
            p++;
        }
        if (*p == '\0') {
            return CONSOLE_OK;
        }
        word = p;
        const char *equals = NULL;
        int control = 0;
        while (*p != '\0' && !is_space(*p)) {
            if (*p == '=' && equals == NULL) {
                equals = p;
            }
            control |= is_control(*p);
            p++;
        }
        /* The error names the key, or the whole word when it has no '='. */
        size_t key_len = equals != NULL ? (size_t)(equals - word) : (size_t)(p - word);
        int result = equals == NULL || control ? CONSOLE_BAD_COMMAND
                                               : parse_setting(word, key_len, equals + 1, (size_t)(p - equals - 1), cmd);
        if (result != CONSOLE_OK) {
            bad->text = word;
            bad->len = key_len;
            return result;
        }
    }
}
