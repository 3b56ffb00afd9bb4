/*
 * The command-line program of the hosted and Linux targets (posix.h), around the runtime:
 *
 *   llmcu [-p prompt] [-n steps] [-t temperature] [-P topp] [-s seed] [-j threads] [-w weights] [-q]
 *   llmcu -c [-j threads] [-w weights]
 *
 * Output is the output protocol (runtime_c/README.md) or, with -q, the generated text alone, byte for
 * byte what llama2.c's run.c prints for the same settings. With -c the program is the firmware's console
 * (targets/cortex-m/firmware_main.c) on standard input and output: a ready line, one `run ...` command
 * line read (runtime_c/console.c), its run or its refusal, and ready again until the input ends.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "console.h"
#include "llmcu.h"
#include "parallel.h"
#include "platform.h"
#include "posix.h"

#ifndef LLMCU_WEIGHTS_FILE
#define LLMCU_WEIGHTS_FILE 0
#endif

/* ---- platform hooks every POSIX target shares ---- */

void platform_write(const void *data, size_t len) {
    fwrite(data, 1, len, stdout);
    fflush(stdout); /* stream each token as it comes, as run.c does */
}

/*
 * Peak stack use by stack painting: before generating, paint_stack() fills a 256 KiB region of the stack
 * below main's frame, where llmcu_generate's frames will live, with a pattern; afterwards the deepest
 * byte no longer holding the pattern marks the peak. It is approximate: a few bytes of main's call
 * sequence count or are missed, and a frame that writes the pattern value itself looks untouched.
 * Under AddressSanitizer (and MemorySanitizer) locals may live off the stack and reading dead stack
 * is reported, so there the measurement is off and the peak reads 0. Worker threads have stacks of
 * their own, which this does not see (they run kernels only).
 */
#if defined(__SANITIZE_ADDRESS__)
#define STACK_PAINTING 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define STACK_PAINTING 0
#endif
#endif
#ifndef STACK_PAINTING
#define STACK_PAINTING 1
#endif

#define STACK_PAINT_BYTES (256u * 1024u)
#define STACK_PAINT_PATTERN 0xA5u

/* Kept as integers: the region is a dead frame by the time it is read. */
static uintptr_t painted_low;
static int painted;

/* noinline: the region must be a frame of its own, at the depth where main's next call starts. */
__attribute__((noinline)) static void paint_stack(void) {
#if STACK_PAINTING
    volatile uint8_t region[STACK_PAINT_BYTES];
    for (size_t i = 0; i < STACK_PAINT_BYTES; i++) {
        region[i] = STACK_PAINT_PATTERN;
    }
    painted_low = (uintptr_t)&region[0];
    painted = 1;
#endif
}

size_t platform_stack_peak(void) {
    if (!painted) {
        return 0;
    }
    /* The stack grows down: scan up from the far end to the first byte someone wrote. */
    const volatile uint8_t *region = (const volatile uint8_t *)painted_low;
    size_t untouched = 0;
    while (untouched < STACK_PAINT_BYTES && region[untouched] == STACK_PAINT_PATTERN) {
        untouched++;
    }
    return STACK_PAINT_BYTES - untouched;
}

/* ---- command line ---- */

const char *posix_program = "llmcu";

static void usage(FILE *out) {
    fprintf(out,
            "usage: %s [-p prompt] [-n steps] [-t temperature] [-P topp] [-s seed] [-j threads]%s [-q]\n"
            "       %s -c [-j threads]%s\n"
            "  -p prompt       text to start from (default: none)\n"
            "  -n steps        forward passes, 0 for the context length %d (default 256)\n"
            "  -t temperature  0 for greedy decoding (default 1.0)\n"
            "  -P topp         nucleus sampling threshold in [0, 1]; 0 or 1 samples from all (default 0.9)\n"
            "  -s seed         random seed >= 1 (default 1)\n"
            "  -j threads      threads for the matrix products, 1..%d (default %d); the output is the same\n"
            "%s"
            "  -q              print the generated text only, as llama2.c's run does\n"
            "  -c              console: read `run steps=N temperature=F topp=F seed=N prompt=TEXT` lines (the\n"
            "                  firmware's commands, prompt percent-encoded) from standard input until it ends\n",
            posix_program, LLMCU_WEIGHTS_FILE ? " [-w weights]" : "", posix_program,
            LLMCU_WEIGHTS_FILE ? " [-w weights]" : "", LLMCU_SEQ_LEN, LLMCU_MAX_THREADS,
            LLMCU_THREADS,
            LLMCU_WEIGHTS_FILE ? "  -w weights      the weights file (default: model.bin beside the program)\n" : "");
}

static void bad_value(const char *flag, const char *text, const char *expected) {
    fprintf(stderr, "%s: bad value '%s' for %s: expected %s\n", posix_program, text, flag, expected);
    exit(POSIX_EXIT_USAGE);
}

/* A whole-string decimal number in [lo, hi]. */
static double parse_real(const char *flag, const char *text, double lo, double hi, const char *expected) {
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (end == text || *end != '\0' || errno != 0 || !isfinite(value) || value < lo || value > hi) {
        bad_value(flag, text, expected);
    }
    return value;
}

/* A whole-string unsigned decimal integer in [lo, hi]; signs and spaces are refused (strtoull would
 * quietly wrap "-1" around). */
static uint64_t parse_unsigned(const char *flag, const char *text, uint64_t lo, uint64_t hi, const char *expected) {
    char *end;
    errno = 0;
    if (text[0] < '0' || text[0] > '9') {
        bad_value(flag, text, expected);
    }
    unsigned long long value = strtoull(text, &end, 10);
    if (*end != '\0' || errno != 0 || value < lo || value > hi) {
        bad_value(flag, text, expected);
    }
    return (uint64_t)value;
}

posix_options posix_parse_args(int argc, char **argv) {
    posix_options options = {{NULL, 256, 1.0f, 0.9f, 1, 1}, LLMCU_THREADS, NULL, 0};
    llmcu_params *params = &options.params;
    const char *run_flag = NULL; /* the last flag that sets up a single run, which -c does not take */
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        if (strcmp(flag, "-q") == 0) {
            params->records = 0;
            run_flag = flag;
            continue;
        }
        if (strcmp(flag, "-c") == 0) {
            options.console = 1;
            continue;
        }
        if (strcmp(flag, "-h") == 0 || strcmp(flag, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strlen(flag) != 2 || strchr("pntPsjw", flag[1]) == NULL || flag[0] != '-') {
            fprintf(stderr, "%s: unknown option '%s'\n", posix_program, flag);
            usage(stderr);
            exit(POSIX_EXIT_USAGE);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "%s: %s needs a value\n", posix_program, flag);
            usage(stderr);
            exit(POSIX_EXIT_USAGE);
        }
        const char *value = argv[++i];
        if (strchr("pntPs", flag[1]) != NULL) {
            run_flag = flag;
        }
        switch (flag[1]) {
        case 'p':
            params->prompt = value;
            break;
        case 'n':
            params->steps = (int)parse_unsigned(flag, value, 0, 1000000000u, "a number of steps in 0..1000000000");
            break;
        case 't':
            params->temperature = (float)parse_real(flag, value, 0.0, HUGE_VAL, "a temperature >= 0");
            break;
        case 'P':
            params->topp = (float)parse_real(flag, value, 0.0, 1.0, "a probability in [0, 1]");
            break;
        case 'j':
            options.threads = (int)parse_unsigned(flag, value, 1, LLMCU_MAX_THREADS, "a thread count in 1..8");
            break;
        case 'w':
            if (!LLMCU_WEIGHTS_FILE) {
                fprintf(stderr, "%s: -w: this program has its weights linked in (build with weights_file=yes "
                                "for a separate weights file)\n", posix_program);
                exit(POSIX_EXIT_USAGE);
            }
            options.weights_path = value;
            break;
        default: /* 's' */
            /* Seed 0 would freeze run.c's xorshift generator at 0 (run.c replaces it with the time). */
            params->seed = parse_unsigned(flag, value, 1, UINT64_MAX, "an integer seed >= 1");
            break;
        }
    }
    if (options.console && run_flag != NULL) {
        fprintf(stderr, "%s: %s does not go with -c: in console mode each command line says how to run\n",
                posix_program, run_flag);
        exit(POSIX_EXIT_USAGE);
    }
    return options;
}

/* ---- console mode (-c) ---- */

/*
 * Standard input is read with read(2) into this buffer rather than through stdio, so that a run can look
 * for a stop request (CONSOLE_STOP) without blocking and without losing the bytes around it: a command the
 * host sent ahead waits here for the next console_feed.
 */
static uint8_t input[4096];
static size_t input_len;  /* bytes in input[] */
static size_t input_at;   /* the next one to feed */
static int input_ended;   /* end of file (or a read error) */
static int serving;       /* in console mode: the stop hook reads standard input */

/* Reads what standard input has, waiting up to timeout_ms (-1: until something comes). */
static void input_fill(int timeout_ms) {
    if (input_ended) {
        return;
    }
    if (input_at > 0) { /* keep the unread bytes at the front */
        memmove(input, input + input_at, input_len - input_at);
        input_len -= input_at;
        input_at = 0;
    }
    if (input_len == sizeof input) {
        return; /* full: the console consumes before more is read */
    }
    struct pollfd wait = {STDIN_FILENO, POLLIN, 0};
    int ready = poll(&wait, 1, timeout_ms);
    if (ready < 0 && errno == EINTR) {
        return;
    }
    if (ready == 0) {
        return;
    }
    ssize_t got = read(STDIN_FILENO, input + input_len, sizeof input - input_len);
    if (got < 0 && errno == EINTR) {
        return;
    }
    if (got <= 0) {
        input_ended = 1;
        return;
    }
    input_len += (size_t)got;
}

/* The next byte of standard input, or EOF at its end. */
static int input_byte(void) {
    while (input_at == input_len) {
        if (input_ended) {
            return EOF;
        }
        input_fill(-1);
    }
    return input[input_at++];
}

/* Once per forward pass in console mode: has a stop request arrived? It is taken out of the input (the
 * bytes around it stay for the next command); in a plain run nothing is read. */
int platform_stop_requested(void) {
    if (!serving) {
        return 0;
    }
    input_fill(0);
    for (size_t i = input_at; i < input_len; i++) {
        if (input[i] == CONSOLE_STOP) {
            memmove(input + i, input + i + 1, input_len - i - 1);
            input_len--;
            return 1;
        }
    }
    return 0;
}

/* A refused command's error line (the same bytes the firmware writes). */
static void console_refuse(const char *reason, const console_word *detail) {
    char line[CONSOLE_ERROR_MAX];
    platform_write(line, console_format_error(line, reason, detail));
}

static void console_ready(void) {
    static const char ready[] = "\x05llmcu ready 1 target=" LLMCU_TARGET_NAME " model=" LLMCU_MODEL_NAME
                                " quant=" LLMCU_QUANT_NAME "\n";
    platform_write(ready, sizeof ready - 1);
}

/* Serves commands from standard input until it ends; the status is 0 (refusals and failed runs are answered
 * on the channel, as on a board). Static: the reader and command are as big as a line each. */
static int serve_console(void) {
    static console_reader reader;
    static console_command command;
    console_reader_init(&reader);
    serving = 1;
    console_ready();
    int c;
    while ((c = input_byte()) != EOF) {
        int event = console_feed(&reader, (uint8_t)c);
        if (event == CONSOLE_MORE) {
            continue;
        }
        if (event == CONSOLE_LINE_TOO_LONG) {
            console_refuse("line_too_long", NULL);
        } else {
            console_word bad;
            int parsed = console_parse(reader.buf, &command, &bad);
            if (parsed == CONSOLE_OK) {
                llmcu_params params = {command.prompt, command.steps, command.temperature, command.topp,
                                       command.seed, 1};
                paint_stack();
                llmcu_generate(&params); /* a prompt too long for the context ends with its own end line */
            } else if (parsed != CONSOLE_EMPTY) {
                console_refuse(console_error_reason(parsed), &bad);
            }
        }
        console_ready();
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 0 && argv[0] != NULL) {
        posix_program = argv[0];
    }
    posix_options options = posix_parse_args(argc, argv);
#if LLMCU_WEIGHTS_FILE
    int mapped = posix_map_weights(options.weights_path);
    if (mapped != 0) {
        return mapped;
    }
#endif
    if (llmcu_parallel_start(options.threads) != 0) {
        fprintf(stderr, "%s: cannot start %d threads\n", posix_program, options.threads);
        return POSIX_EXIT_THREADS;
    }
    if (options.console) {
        return serve_console();
    }
    if (options.params.records) {
        paint_stack();
    }
    int status = llmcu_generate(&options.params);
    if (status != 0 && !options.params.records) {
        /* The only failure llmcu_generate has: a prompt that does not fit (with records the end line says so). */
        const char *prompt = options.params.prompt != NULL ? options.params.prompt : "";
        int needed = llmcu_encode(prompt, LLMCU_ADD_BOS || prompt[0] == '\0', 0, NULL, 0); /* as generate.c */
        if (needed == LLMCU_ENCODE_TEXT_TOO_LONG) {
            fprintf(stderr, "%s: the prompt is %zu bytes; this program takes at most %d\n", posix_program,
                    strlen(prompt), LLMCU_PROMPT_MAX_BYTES);
        } else {
            fprintf(stderr, "%s: the prompt is %d tokens (BOS included); the context holds %d\n", posix_program,
                    needed, LLMCU_SEQ_LEN);
        }
    }
    return status;
}
