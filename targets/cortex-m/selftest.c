/*
 * Bring-up self-test (build option selftest=1): what a new or custom board's memories do, before a model is
 * trusted to them. The firmware answers the console's `run` command with this instead of a generation:
 *
 *   \x02llmcu 1 target=<t> model=selftest quant=none unit=<cycles|instructions> clock_hz=<hz>\n
 *   \x1eselftest region=<r> test=read bytes=<n> cost=<counter>\n            every region: read speed
 *   \x1eselftest region=<r> test=data_bus result=<ok|fail> [pattern=0x..]\n external RAM (SDRAM):
 *   \x1eselftest region=<r> test=address_bus result=<ok|fail> [offset=0x..]\n
 *   \x1eselftest region=<r> test=pattern result=<ok|fail> bytes=<n> errors=<n> [first=0x..] wait=<counter>\n
 *   \x1eselftest region=<r> test=crc bytes=<n> crc32=0x..\n                  external flash: what it holds
 *   \x03llmcu end status=<ok|error> [reason=selftest_failed]\n
 *
 * The host (llmcu.device.selftest) turns the read figures into MB/s with the clock, checks the CRC against the image
 * the build flashed, and writes the report. Destructive tests run only on external RAM: the self-test firmware
 * runs no model, so nothing there is needed; internal RAM holds the stack and data and is only read. The
 * pattern pass writes every word, waits a second (many refresh periods) and reads every word back, so a refresh
 * that does not work shows up as errors. Each fault has its own line: a stuck or shorted data line fails data_bus
 * (pattern= the bit), an open or shorted address line fails address_bus (offset= the first aliasing offset), a
 * lost refresh fails pattern (errors=, first=); tests/builder/test_selftest_faults.py plants each in a model.
 */
#if defined(LLMCU_SELFTEST) && LLMCU_SELFTEST

#include <stddef.h>
#include <stdint.h>

#include "board.h"
#include "selftest.h"

/* The region table (generated selftest_regions.c, from the image's memory plan). */
extern const selftest_region llmcu_selftest_regions[];
extern const unsigned llmcu_selftest_region_count;
/* The external flash's image, when the plan put anything there (the linker script defines them). */
extern const uint8_t __llmcu_qspi_image[] __attribute__((weak));
extern const uint8_t __llmcu_qspi_image_bytes[] __attribute__((weak));
/* The MPU guard below the stack (startup.c): reading it faults, so the read sample starts past it. */
extern uint32_t __stack_guard[];
extern uint32_t __stack_limit[];

#define READ_BYTES 65536u         /* read-speed sample per region (or the region, if smaller) */
/* How long the pattern waits before it reads back. A datasheet guarantees a cell only its refresh period (64 ms),
 * but real cells hold their charge far longer at room temperature: waiting one period would let a board whose
 * refresh never runs pass. One second is many periods, so cells that are not refreshed have lost their data. */
#define REFRESH_WAIT_S_DIV 1u      /* 1 s ... */
#define REFRESH_WAIT_UNITS 30000000u /* ... or this many counter units when the counter is not time (the twin) */

static void put(const char *text) {
    size_t n = 0;
    while (text[n] != '\0') {
        n++;
    }
    board_write(text, n);
}

static void put_u64(uint64_t v) {
    char buf[21];
    int n = 0;
    do {
        buf[sizeof buf - 1 - n++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v != 0u);
    board_write(buf + sizeof buf - n, (size_t)n);
}

static void put_hex(uint32_t v) {
    char buf[10] = {'0', 'x'};
    for (int i = 0; i < 8; i++) {
        buf[2 + i] = "0123456789abcdef"[(v >> (28 - 4 * i)) & 15u];
    }
    board_write(buf, sizeof buf);
}

static void record(const selftest_region *r, const char *test) {
    put("\x1eselftest region=");
    put(r->name);
    put(" test=");
    put(test);
}

/* Reads `bytes` from `base` eight words a step; the sum keeps the compiler from dropping the loads. */
static uint32_t read_words(const volatile uint32_t *base, uint32_t bytes) {
    uint32_t sum = 0;
    for (uint32_t i = 0; i < bytes / 4u; i += 8u) {
        sum += base[i] ^ base[i + 1] ^ base[i + 2] ^ base[i + 3] ^ base[i + 4] ^ base[i + 5] ^ base[i + 6] ^
               base[i + 7];
    }
    return sum;
}

static void test_read(const selftest_region *r) {
    uint32_t from = r->origin, end = r->origin + r->size;
    uint32_t guard = (uint32_t)(uintptr_t)__stack_guard, guard_end = (uint32_t)(uintptr_t)__stack_limit;
    if (guard < from + READ_BYTES && guard_end > from && guard_end < end) {
        from = guard_end; /* the guard is in the first sample: start after it */
    }
    uint32_t bytes = end - from < READ_BYTES ? (end - from) & ~31u : READ_BYTES;
    uint64_t start = board_counter();
    volatile uint32_t sink = read_words((const volatile uint32_t *)from, bytes);
    uint64_t cost = board_counter() - start;
    (void)sink;
    record(r, "read");
    put(" bytes=");
    put_u64(bytes);
    put(" cost=");
    put_u64(cost);
    put("\n");
}

/* Walking ones on the data bus: one word, every bit alone. */
static int test_data_bus(const selftest_region *r) {
    volatile uint32_t *word = (volatile uint32_t *)r->origin;
    for (uint32_t bit = 1u; bit != 0u; bit <<= 1) {
        *word = bit;
        if (*word != bit) {
            record(r, "data_bus");
            put(" result=fail pattern=");
            put_hex(bit);
            put("\n");
            return 0;
        }
    }
    record(r, "data_bus");
    put(" result=ok\n");
    return 1;
}

/* Address lines: a word at every power-of-two offset gets its own value, written after a marker at offset 0;
 * a line stuck or shorted makes two offsets alias, which a read-back finds. */
static int test_address_bus(const selftest_region *r) {
    volatile uint32_t *base = (volatile uint32_t *)r->origin;
    uint32_t words = r->size / 4u;
    base[0] = 0xAAAAAAAAu;
    for (uint32_t offset = 1u; offset < words; offset <<= 1) {
        base[offset] = 0xAAAAAAAAu;
    }
    for (uint32_t offset = 1u; offset < words; offset <<= 1) {
        base[offset] = 0x55555555u ^ offset;
        for (uint32_t other = 1u; other < words; other <<= 1) {
            uint32_t want = other == offset ? 0x55555555u ^ offset : 0xAAAAAAAAu;
            if (base[other] != want || base[0] != 0xAAAAAAAAu) {
                record(r, "address_bus");
                put(" result=fail offset=");
                put_hex(offset * 4u);
                put("\n");
                return 0;
            }
        }
        base[offset] = 0xAAAAAAAAu;
    }
    record(r, "address_bus");
    put(" result=ok\n");
    return 1;
}

static uint32_t pattern_at(uint32_t index) { return (index * 0x9E3779B1u) ^ 0x5A5AA5A5u; }

/* Every word written with its own value, one refresh interval of waiting, every word read back. */
static int test_pattern(const selftest_region *r) {
    volatile uint32_t *base = (volatile uint32_t *)r->origin;
    uint32_t words = r->size / 4u;
    for (uint32_t i = 0; i < words; i++) {
        base[i] = pattern_at(i);
    }
    uint64_t hz = board_counter_hz();
    uint64_t wait = hz != 0u ? hz / REFRESH_WAIT_S_DIV : REFRESH_WAIT_UNITS;
    uint64_t start = board_counter();
    while (board_counter() - start < wait) {
    }
    uint32_t errors = 0, first = 0;
    for (uint32_t i = 0; i < words; i++) {
        if (base[i] != pattern_at(i)) {
            if (errors++ == 0u) {
                first = r->origin + 4u * i;
            }
        }
    }
    record(r, "pattern");
    put(errors == 0u ? " result=ok bytes=" : " result=fail bytes=");
    put_u64(r->size);
    put(" errors=");
    put_u64(errors);
    if (errors != 0u) {
        put(" first=");
        put_hex(first);
    }
    put(" wait=");
    put_u64(wait);
    put("\n");
    return errors == 0u;
}

/* CRC-32 (IEEE 802.3, reflected, as zlib's crc32) of the external flash's image, bit by bit: no table. */
static void test_crc(const selftest_region *r) {
    const uint8_t *image = __llmcu_qspi_image;
    uint32_t bytes = (uint32_t)(uintptr_t)__llmcu_qspi_image_bytes;
    if (image == NULL || bytes == 0u) {
        return;
    }
    uint32_t crc = 0xFFFFFFFFu;
    for (uint32_t i = 0; i < bytes; i++) {
        crc ^= image[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
        }
    }
    record(r, "crc");
    put(" bytes=");
    put_u64(bytes);
    put(" crc32=");
    put_hex(~crc);
    put("\n");
}

int selftest_run(void) {
    put("\x02llmcu 1 target=" LLMCU_TARGET_NAME " model=selftest quant=none unit=");
    put(board_counter_unit());
    put(" clock_hz=");
    put_u64(board_counter_hz());
    put("\n");
    int ok = 1;
    for (unsigned i = 0; i < llmcu_selftest_region_count; i++) {
        const selftest_region *r = &llmcu_selftest_regions[i];
        if (r->external && r->writable) {
            ok &= test_data_bus(r);
            ok &= test_address_bus(r);
            ok &= test_pattern(r);
        }
        test_read(r);
        if (r->external && !r->writable) {
            test_crc(r);
        }
    }
    put(ok ? "\x03llmcu end status=ok\n" : "\x03llmcu end status=error reason=selftest_failed\n");
    return ok ? 0 : 1;
}

#endif /* LLMCU_SELFTEST */
