/*
 * Host driver for runtime_c/console.c, compiled and run by tests/device/test_console.py.
 *
 *   test_console floats    stdin: one decimal per line; stdout: "<console> <strtof> <(float)strtod>" as
 *                          float bit patterns in hex, or "fail" when console_parse_float refuses it
 *   test_console commands  stdin: a byte stream fed to console_feed; stdout: one line per event, either
 *                          "too_long", "empty", "bad <word>", "bad_utf8 <word>" or
 *                          "ok <steps> <temperature bits> <topp bits> <seed> <prompt as hex>"
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "console.h"

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static int floats(void) {
    char line[512];
    while (fgets(line, sizeof line, stdin) != NULL) {
        size_t len = strcspn(line, "\n");
        line[len] = '\0';
        float parsed;
        if (!console_parse_float(line, len, &parsed)) {
            printf("fail\n");
            continue;
        }
        printf("%08x %08x %08x\n", (unsigned)bits(parsed), (unsigned)bits(strtof(line, NULL)),
               (unsigned)bits((float)strtod(line, NULL)));
    }
    return 0;
}

static int commands(void) {
    static console_reader reader;
    static console_command cmd;
    console_reader_init(&reader);
    int c;
    while ((c = getchar()) != EOF) {
        int event = console_feed(&reader, (uint8_t)c);
        if (event == CONSOLE_MORE) {
            continue;
        }
        if (event == CONSOLE_LINE_TOO_LONG) {
            printf("too_long\n");
            continue;
        }
        console_word bad;
        int result = console_parse(reader.buf, &cmd, &bad);
        if (result == CONSOLE_EMPTY) {
            printf("empty\n");
        } else if (result != CONSOLE_OK) {
            /* "bad <word>" or "bad_utf8 <word>": the reason as the firmware names it, and the word */
            const char *reason = console_error_reason(result);
            printf("%s %.*s\n", strcmp(reason, "bad_command") == 0 ? "bad" : reason, (int)bad.len, bad.text);
            /* then the error line exactly as the firmware would write it, as "line <hex>" */
            char line[CONSOLE_ERROR_MAX];
            size_t n = console_format_error(line, reason, &bad);
            printf("line ");
            for (size_t i = 0; i < n; i++) {
                printf("%02x", (unsigned)(uint8_t)line[i]);
            }
            printf("\n");
        } else {
            printf("ok %d %08x %08x %llu ", cmd.steps, (unsigned)bits(cmd.temperature), (unsigned)bits(cmd.topp),
                   (unsigned long long)cmd.seed);
            for (const char *p = cmd.prompt; *p != '\0'; p++) {
                printf("%02x", (unsigned)(uint8_t)*p);
            }
            printf("\n");
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "floats") == 0) {
        return floats();
    }
    if (argc == 2 && strcmp(argv[1], "commands") == 0) {
        return commands();
    }
    fprintf(stderr, "usage: %s floats|commands < input\n", argv[0]);
    return 2;
}
