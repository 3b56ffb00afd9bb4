/* Integer and fixed-point formatting for the output protocol (see format.h). */
#include <string.h>

#include "format.h"
#include "platform.h"

/* n / 10 and its last decimal digit without a division: q first approximates n * 0.8 by shifts and adds, and
 * q / 8 is then n / 10 or one less, which the remainder shows. (At -Os, GCC calls libgcc's 64-bit division
 * for a / 10, 750 bytes of flash on the M7.) */
static uint64_t div10_u64(uint64_t n, char *digit) {
    uint64_t q = (n >> 1) + (n >> 2);
    q += q >> 4;
    q += q >> 8;
    q += q >> 16;
    q += q >> 32;
    q >>= 3;
    uint64_t r = n - ((q << 3) + (q << 1));
    if (r > 9) {
        q++;
        r -= 10;
    }
    *digit = (char)('0' + r);
    return q;
}

size_t fmt_u64(char *out, uint64_t v) {
    char reversed[FMT_U64_MAX_CHARS];
    size_t n = 0;
    do {
        v = div10_u64(v, &reversed[n++]);
    } while (v != 0);
    for (size_t i = 0; i < n; i++) {
        out[i] = reversed[n - 1 - i];
    }
    return n;
}

/* num / den and its remainder by shifting and subtracting, one quotient bit per step: the output protocol
 * divides a handful of times per run, and libgcc's 64-bit division is 750 bytes of flash. den != 0. */
static uint64_t divide_u64(uint64_t num, uint64_t den, uint64_t *rem) {
    uint64_t quotient = 0;
    uint64_t r = 0;
    for (int bit = 63; bit >= 0; bit--) {
        int carry = (int)(r >> 63); /* r << 1 overflows only when den > 2^63; then r >= den for sure */
        r = (r << 1) | ((num >> bit) & 1u);
        if (carry || r >= den) {
            r -= den;
            quotient |= (uint64_t)1 << bit;
        }
    }
    *rem = r;
    return quotient;
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
    uint64_t rem;
    uint64_t whole = divide_u64(num, den, &rem);
    uint64_t frac = 0;
    uint64_t one = 1; /* 10^decimals */
    for (int d = 0; d < decimals; d++) {
        frac = frac * 10 + divide_u64(rem * 10, den, &rem);
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
            frac = div10_u64(frac, &out[n + (size_t)d]);
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
