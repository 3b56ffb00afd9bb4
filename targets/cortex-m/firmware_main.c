/*
 * main() for every Cortex-M board, and the runtime's platform hooks (platform.h) on top of board.h.
 *
 * The firmware serves prompts over the console, so that one flashed image answers many of them:
 *
 *   firmware: \x05llmcu ready 1 target=<t> model=<m> quant=<q>\n
 *   host:     run steps=256 temperature=0.0 topp=0.9 seed=1 prompt=Once%20upon%20a%20time\n
 *   firmware: the output protocol (runtime_c/README.md), then board_after_run(status)
 *
 * A line that is not a valid command gets one error line and the firmware waits for the next:
 *
 *   \x15llmcu error reason=line_too_long\n             longer than CONSOLE_LINE_MAX; dropped
 *   \x15llmcu error reason=bad_command detail=<word>\n the command, key or word that is wrong
 *   \x15llmcu error reason=bad_utf8 detail=prompt\n    the prompt does not decode to UTF-8
 *
 * The command syntax is in runtime_c/console.h; the host side is site_scons/llmcu/console.py.
 */
#include <stddef.h>
#include <stdint.h>

#include "board.h"
#include "console.h"
#include "cortex_m.h"
#include "llmcu.h"
#include "platform.h"

#ifndef LLMCU_TARGET_NAME /* set by the build, e.g. -DLLMCU_TARGET_NAME=\"qemu-m7\" */
#define LLMCU_TARGET_NAME "unknown"
#endif

/* ---- platform hooks ---- */

void platform_write(const void *data, size_t len) { board_write(data, len); }

uint64_t platform_counter(void) { return board_counter(); }

const char *platform_counter_unit(void) { return board_counter_unit(); }

uint64_t platform_counter_hz(void) { return board_counter_hz(); }

size_t platform_stack_peak(void) { return cortex_m_stack_peak(); }

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
        int byte = board_read_byte(0);
        if (byte < 0) {
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
    for (;;) {
        write_str("\x05llmcu ready 1 target=" LLMCU_TARGET_NAME " model=" LLMCU_MODEL_NAME
                  " quant=" LLMCU_QUANT_NAME "\n");
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
        int status = llmcu_generate(&params);
        board_after_run(status); /* a board comes back for the next command; the QEMU twin exits */
    }
}
