/* Integer and fixed-point formatting for the output protocol (see format.h). */
#include <string.h>

#include "format.h"
#include "platform.h"

size_t fmt_u64(char *out, uint64_t v) {
    char reversed[FMT_U64_MAX_CHARS];
    size_t n = 0;
    do {
        reversed[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i < n; i++) {
        out[i] = reversed[n - 1 - i];
    }
    return n;
}

size_t fmt_ratio(char *out, uint64_t num, uint64_t den, int decimals) {
    if (den == 0) {
        out[0] = '0';
        return 1;
    }
    if (decimals < 0) {
        decimals = 0;
    } else if (decimals > 9) {
        decimals = 9;
    }
    /* Long division needs remainder * 10 to fit: give up low bits of huge operands instead. */
    while (den > UINT64_MAX / 10) {
        num >>= 1;
        den >>= 1;
    }
    uint64_t whole = num / den;
    uint64_t rem = num % den;
    uint64_t frac = 0;
    uint64_t one = 1; /* 10^decimals */
    for (int d = 0; d < decimals; d++) {
        rem *= 10;
        frac = frac * 10 + rem / den;
        rem %= den;
        one *= 10;
    }
    if (rem >= den - rem) { /* rem / den >= 1/2: round up, carrying into the whole part */
        frac++;
        if (frac == one) {
            frac = 0;
            whole++;
        }
    }
    size_t n = fmt_u64(out, whole);
    if (decimals > 0) {
        out[n++] = '.';
        for (int d = decimals - 1; d >= 0; d--) { /* zero-padded, most significant digit first */
            out[n + (size_t)d] = (char)('0' + frac % 10);
            frac /= 10;
        }
        n += (size_t)decimals;
    }
    return n;
}

void line_start(fmt_line *line) { line->len = 0; }

void line_bytes(fmt_line *line, const char *data, size_t len) {
    while (len > 0) {
        if (line->len == sizeof line->buf) {
            platform_write(line->buf, line->len);
            line->len = 0;
        }
        size_t room = sizeof line->buf - line->len;
        size_t chunk = len < room ? len : room;
        memcpy(line->buf + line->len, data, chunk);
        line->len += chunk;
        data += chunk;
        len -= chunk;
    }
}

void line_str(fmt_line *line, const char *text) { line_bytes(line, text, strlen(text)); }

void line_u64(fmt_line *line, uint64_t v) {
    char digits[FMT_U64_MAX_CHARS];
    line_bytes(line, digits, fmt_u64(digits, v));
}

void line_ratio(fmt_line *line, uint64_t num, uint64_t den, int decimals) {
    char text[FMT_U64_MAX_CHARS + 1 + 9];
    line_bytes(line, text, fmt_ratio(text, num, den, decimals));
}

void line_end(fmt_line *line) {
    if (line->len > 0) {
        platform_write(line->buf, line->len);
    }
    line->len = 0;
}
