/*
 * main() for every Cortex-M board, and the runtime's platform hooks (platform.h) on top of board.h.
 *
 * The firmware serves prompts over the console, so that one flashed image answers many of them:
 *
 *   firmware: \x05llmcu ready 1 target=<t> model=<m> quant=<q> reset=<why the chip last reset>
 *             [clock_hz=<the CPU clock> rev=<silicon revision>]\n
 *   host:     run steps=256 temperature=0.0 topp=0.9 seed=1 prompt=Once%20upon%20a%20time\n
 *   firmware: the output protocol (runtime_c/README.md), then board_after_run(status)
 *   host:     \x03 during the run: stop it after the current token (reason=stopped)
 *
 * A line that is not a valid command gets one error line and the firmware waits for the next:
 *
 *   \x15llmcu error reason=line_too_long\n             longer than CONSOLE_LINE_MAX; dropped
 *   \x15llmcu error reason=bad_command detail=<word>\n the command, key or word that is wrong
 *   \x15llmcu error reason=bad_utf8 detail=prompt\n    the prompt does not decode to UTF-8
 *
 * The command syntax is in runtime_c/console.h; the host side is site_scons/llmcu/device/console.py.
 */
#include <stddef.h>
#include <stdint.h>

#include "board.h"
#include "selftest.h"
#include "console.h"
#include "cortex_m.h"
#include "llmcu.h"
#include "platform.h"

#ifndef LLMCU_TARGET_NAME /* set by the build, e.g. -DLLMCU_TARGET_NAME=\"qemu-m7\" */
#define LLMCU_TARGET_NAME "unknown"
#endif

#ifndef LLMCU_WATCHDOG /* set by the build from watchdog= (board.h) */
#define LLMCU_WATCHDOG 0
#endif
#define READ_SLICE_MS 10u /* with a watchdog: how long to wait for a console byte between two kicks */

/* ---- platform hooks ---- */

void platform_write(const void *data, size_t len) { board_write(data, len); }

uint64_t platform_counter(void) { return board_counter(); }

const char *platform_counter_unit(void) { return board_counter_unit(); }

uint64_t platform_counter_hz(void) { return board_counter_hz(); }

size_t platform_stack_peak(void) { return cortex_m_stack_peak(); }

#ifdef LLMCU_TEST_HANG_AFTER
/* Test builds only: after this many forward passes the firmware hangs, kicking nothing, so that the tests
 * see the watchdog end the run. */
static void test_hang(void) {
    static unsigned passes;
    if (++passes > LLMCU_TEST_HANG_AFTER) {
        for (;;) {
            __asm volatile("" ::: "memory");
        }
    }
}
#endif

/* Once per forward pass: the runtime is making progress, so the watchdog is kicked. */
void platform_alive(void) {
#ifdef LLMCU_TEST_HANG_AFTER
    test_hang();
#endif
    board_watchdog_kick();
}

/* Once per forward pass: a console's Ctrl-C arrives as one ETX byte and stops the generation. Any other
 * byte is dropped: the host sends a command only after a ready line, so nothing else is due during a run. */
int platform_stop_requested(void) { return board_poll_byte() == 0x03; }

#ifdef LLMCU_TEST_RECURSION_BYTES
/* Test builds only: before each run, a recursion at least LLMCU_TEST_RECURSION_BYTES deep (64-byte
 * frames plus saved registers), so that the tests see the stack's peak grow and, deeper than the stack,
 * the guard stop it. Not a tail call (the frame is read after the call returns), so every level keeps its
 * frame; volatile, so the compiler neither drops nor merges the frames. */
__attribute__((noinline)) static uint32_t test_recurse(uint32_t depth) {
    volatile uint8_t frame[64];
    frame[0] = (uint8_t)depth;
    frame[63] = (uint8_t)(depth >> 8);
    if (depth == 0u) {
        return frame[0];
    }
    return test_recurse(depth - 1u) + frame[0] + frame[63];
}
#endif

/* ---- console ---- */

static console_reader reader;
static console_command command;

static void write_str(const char *text) {
    size_t len = 0;
    while (text[len] != '\0') {
        len++;
    }
    board_write(text, len);
}

/* A refused line's error line (console_format_error: the detail reduced to characters that cannot disturb
 * the host's parser, and bounded). */
static void write_error(const char *reason, const console_word *detail) {
    char line[CONSOLE_ERROR_MAX];
    board_write(line, console_format_error(line, reason, detail));
}

/* Collects one line; 0 when it was too long (and already answered with an error). */
static int read_line(void) {
    for (;;) {
        /* With a watchdog, wait in slices and kick it between them: waiting for the host is not a hang. */
        int byte = board_read_byte(LLMCU_WATCHDOG ? READ_SLICE_MS : 0u);
        if (byte < 0) {
            board_watchdog_kick();
            continue;
        }
        int event = console_feed(&reader, (uint8_t)byte);
        if (event == CONSOLE_LINE) {
            return 1;
        }
        if (event == CONSOLE_LINE_TOO_LONG) {
            write_error("line_too_long", NULL);
            return 0;
        }
    }
}

#ifdef LLMCU_FAULT_TEST
/* Test builds only: `fault` executes an undefined instruction, so the tests can see fault.c's report. */
static int is_fault_command(const char *line) {
    const char *word = "fault";
    while (*word != '\0' && *line == *word) {
        line++;
        word++;
    }
    return *word == '\0' && *line == '\0';
}
#endif

int main(void) {
    console_reader_init(&reader);
    board_watchdog_start();
    for (;;) {
        /* reset=: why this boot happened (reset=watchdog after the watchdog reset the board). */
        write_str("\x05llmcu ready 1 target=" LLMCU_TARGET_NAME " model=" LLMCU_MODEL_NAME
                  " quant=" LLMCU_QUANT_NAME " reset=");
        write_str(board_reset_cause());
        const char *clock = board_clock_description(); /* clock_hz= and rev= on a board */
        if (clock[0] != '\0') {
            write_str(" ");
            write_str(clock);
        }
        write_str("\n");
        if (!read_line()) {
            continue;
        }
#ifdef LLMCU_FAULT_TEST
        if (is_fault_command(reader.buf)) {
            __asm volatile("udf #0"); /* UsageFault: UNDEFINSTR */
        }
#endif
        console_word bad;
        int parsed = console_parse(reader.buf, &command, &bad);
        if (parsed == CONSOLE_EMPTY) {
            continue;
        }
        if (parsed != CONSOLE_OK) { /* bad_command, bad_utf8 */
            write_error(console_error_reason(parsed), &bad);
            continue;
        }

        llmcu_params params = {0};
        params.prompt = command.prompt;
        params.steps = command.steps;
        params.temperature = command.temperature;
        params.topp = command.topp;
        params.seed = command.seed;
        params.records = 1;
#ifdef LLMCU_TEST_RECURSION_BYTES
        (void)test_recurse(LLMCU_TEST_RECURSION_BYTES / 64u);
#endif
#if defined(LLMCU_SELFTEST) && LLMCU_SELFTEST
        (void)params;
        int status = selftest_run(); /* a bring-up firmware: the memories' tests instead of a generation */
#else
        int status = llmcu_generate(&params);
#endif
        board_after_run(status); /* a board comes back for the next command; the QEMU twin exits (or serves) */
    }
}
