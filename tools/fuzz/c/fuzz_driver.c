/*
 * main() for the C fuzz targets when there is no libFuzzer (gcc): replay inputs, then mutate.
 *
 *   fuzz_<target> [--iterations N] [--seed S] [--max-len L] [--crash-dir DIR] [FILE...]
 *
 * Each FILE is run as one input and joins the corpus (a crash file found earlier replays this way). Then N
 * inputs are generated from the corpus (the target's seeds when no FILE is given) by a small mutator driven by
 * a xorshift generator seeded with S, so a run repeats exactly. When a sanitizer report or fuzz_fail() ends
 * the program (both abort: run_c_fuzz.py sets abort_on_error=1), a SIGABRT handler writes the input being run
 * to DIR/crash-<target>-<fnv1a64 of the input> and prints its name.
 * Exit status 0: every input ran clean; anything else is a finding.
 */
#define _POSIX_C_SOURCE 200809L

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"

#ifndef FUZZ_TARGET_NAME
#define FUZZ_TARGET_NAME "target"
#endif

#define MAX_CORPUS 256
#define DEFAULT_MAX_LEN 4096

static const uint8_t *current_data;
static size_t current_size;
static const char *crash_dir = ".";

static uint64_t fnv1a64(const uint8_t *data, size_t size) {
    uint64_t h = 0xCBF29CE484222325ull;
    for (size_t i = 0; i < size; i++) {
        h = (h ^ data[i]) * 0x100000001B3ull;
    }
    return h;
}

static size_t append(char *out, size_t at, size_t cap, const char *text) {
    while (*text != '\0' && at + 1 < cap) {
        out[at++] = *text++;
    }
    out[at] = '\0';
    return at;
}

/* Called from the SIGABRT handler, so only async-signal-safe calls: open, write, close. */
static void save_current_input(void) {
    if (current_data == NULL) {
        return;
    }
    const uint8_t *data = current_data;
    current_data = NULL; /* once */
    char path[4096];
    char hex[17];
    uint64_t h = fnv1a64(data, current_size);
    for (int i = 15; i >= 0; i--, h >>= 4) {
        hex[i] = "0123456789abcdef"[h & 15u];
    }
    hex[16] = '\0';
    size_t n = append(path, 0, sizeof path, crash_dir);
    n = append(path, n, sizeof path, "/crash-" FUZZ_TARGET_NAME "-");
    n = append(path, n, sizeof path, hex);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        return;
    }
    for (size_t done = 0; done < current_size;) {
        ssize_t w = write(fd, data + done, current_size - done);
        if (w <= 0) {
            break;
        }
        done += (size_t)w;
    }
    close(fd);
    static const char note[] = "fuzz: the failing input is saved as ";
    (void)!write(2, note, sizeof note - 1);
    (void)!write(2, path, n);
    (void)!write(2, "\n", 1);
}

static void on_abort(int sig) {
    save_current_input();
    signal(sig, SIG_DFL);
    raise(sig);
}



static void run_one(const uint8_t *data, size_t size) {
    /* A copy of exactly `size` bytes on the heap, so that a read past the end is an AddressSanitizer report. */
    uint8_t *copy = malloc(size > 0 ? size : 1);
    if (copy == NULL) {
        fprintf(stderr, "fuzz: out of memory\n");
        exit(2);
    }
    memcpy(copy, data, size);
    current_data = copy;
    current_size = size;
    LLVMFuzzerTestOneInput(copy, size);
    current_data = NULL;
    free(copy);
}

/* ---- the mutator ---- */

static uint64_t rng_state;

static uint32_t rnd(uint32_t bound) { /* uniform enough in [0, bound) for bound > 0 */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1Dull) >> 32) % bound;
}

typedef struct {
    uint8_t *data;
    size_t size;
} input;

static input corpus[MAX_CORPUS];
static size_t corpus_size;

static void corpus_add(const uint8_t *data, size_t size) {
    if (corpus_size == MAX_CORPUS) {
        return;
    }
    uint8_t *copy = malloc(size > 0 ? size : 1);
    if (copy == NULL) {
        return;
    }
    memcpy(copy, data, size);
    corpus[corpus_size].data = copy;
    corpus[corpus_size].size = size;
    corpus_size++;
}

/* Bytes that matter to the targets' parsers: separators, escapes, UTF-8 lead and continuation bytes, NUL. */
static const uint8_t interesting[] = {0x00, '\n', '\r', ' ', '\t', '=', '%', '0', '9', 'F', 'f', 0x7F, 0x80, 0xBF,
                                      0xC0, 0xC2, 0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF, 0x1A, 0x02, 0x03};

/* One mutation of buf[0..*size) in place (capacity max_len). */
static void mutate_once(uint8_t *buf, size_t *size, size_t max_len) {
    size_t n = *size;
    switch (rnd(8)) {
    case 0: /* flip a bit */
        if (n > 0) {
            buf[rnd((uint32_t)n)] ^= (uint8_t)(1u << rnd(8));
        }
        break;
    case 1: /* an interesting byte */
        if (n > 0) {
            buf[rnd((uint32_t)n)] = interesting[rnd(sizeof interesting)];
        }
        break;
    case 2: /* a random byte */
        if (n > 0) {
            buf[rnd((uint32_t)n)] = (uint8_t)rnd(256);
        }
        break;
    case 3: { /* insert a few random or interesting bytes */
        size_t k = 1 + rnd(8);
        if (n + k <= max_len) {
            size_t at = rnd((uint32_t)n + 1);
            memmove(buf + at + k, buf + at, n - at);
            for (size_t i = 0; i < k; i++) {
                buf[at + i] = rnd(2) ? interesting[rnd(sizeof interesting)] : (uint8_t)rnd(256);
            }
            n += k;
        }
        break;
    }
    case 4: /* delete a chunk */
        if (n > 0) {
            size_t at = rnd((uint32_t)n);
            size_t k = 1 + rnd((uint32_t)(n - at < 64 ? n - at : 64));
            memmove(buf + at, buf + at + k, n - at - k);
            n -= k;
        }
        break;
    case 5: /* duplicate a chunk (long lines, repeated keys) */
        if (n > 0) {
            size_t at = rnd((uint32_t)n);
            size_t k = 1 + rnd((uint32_t)(n - at < 256 ? n - at : 256));
            if (n + k <= max_len) {
                memmove(buf + at + k, buf + at, n - at);
                n += k; /* the chunk at [at, at+k) now appears twice */
            }
        }
        break;
    case 6: { /* splice in part of another corpus input */
        const input *other = &corpus[rnd((uint32_t)corpus_size)];
        if (other->size > 0) {
            size_t from = rnd((uint32_t)other->size);
            size_t k = 1 + rnd((uint32_t)(other->size - from));
            size_t at = rnd((uint32_t)n + 1);
            if (at + k > max_len) {
                k = max_len - at;
            }
            memcpy(buf + at, other->data + from, k);
            if (at + k > n) {
                n = at + k;
            }
        }
        break;
    }
    default: /* cut */
        n = rnd((uint32_t)n + 1);
        break;
    }
    *size = n;
}

static uint8_t *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    size_t got;
    while (buf != NULL && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            uint8_t *bigger = realloc(buf, cap * 2);
            if (bigger == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    fclose(f);
    *size = n;
    return buf;
}

static unsigned long long number(const char *flag, const char *text) {
    char *end;
    unsigned long long value = strtoull(text, &end, 10);
    if (*text < '0' || *text > '9' || *end != '\0') {
        fprintf(stderr, "fuzz: bad value '%s' for %s\n", text, flag);
        exit(2);
    }
    return value;
}

int main(int argc, char **argv) {
    unsigned long long iterations = 1000, seed = 1;
    size_t max_len = DEFAULT_MAX_LEN;
    int files = 0;
    signal(SIGABRT, on_abort);
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--iterations") == 0) {
            iterations = number(argv[i], argv[i + 1]), i++;
        } else if (i + 1 < argc && strcmp(argv[i], "--seed") == 0) {
            seed = number(argv[i], argv[i + 1]), i++;
        } else if (i + 1 < argc && strcmp(argv[i], "--max-len") == 0) {
            max_len = (size_t)number(argv[i], argv[i + 1]), i++;
        } else if (i + 1 < argc && strcmp(argv[i], "--crash-dir") == 0) {
            crash_dir = argv[++i];
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "usage: %s [--iterations N] [--seed S] [--max-len L] [--crash-dir DIR] [FILE...]\n",
                    argv[0]);
            return 2;
        } else {
            size_t size;
            uint8_t *data = read_file(argv[i], &size);
            if (data == NULL) {
                fprintf(stderr, "fuzz: cannot read %s\n", argv[i]);
                return 2;
            }
            run_one(data, size);
            corpus_add(data, size);
            free(data);
            files++;
        }
    }
    if (files == 0) {
        for (size_t i = 0; i < fuzz_seed_count; i++) {
            run_one((const uint8_t *)fuzz_seeds[i], strlen(fuzz_seeds[i]));
            corpus_add((const uint8_t *)fuzz_seeds[i], strlen(fuzz_seeds[i]));
        }
    }
    if (corpus_size == 0) {
        corpus_add((const uint8_t *)"", 0);
    }
    rng_state = seed != 0 ? seed : 1;
    uint8_t *buf = malloc(max_len > 0 ? max_len : 1);
    if (buf == NULL) {
        return 2;
    }
    for (unsigned long long it = 0; it < iterations; it++) {
        const input *base = &corpus[rnd((uint32_t)corpus_size)];
        size_t size = base->size < max_len ? base->size : max_len;
        memcpy(buf, base->data, size);
        for (uint32_t k = 1 + rnd(6); k > 0; k--) {
            mutate_once(buf, &size, max_len);
        }
        run_one(buf, size);
        if (rnd(64) == 0) { /* keep some mutants, so mutations stack up over the run */
            corpus_add(buf, size);
        }
    }
    free(buf);
    printf("fuzz: %s: %zu files and %llu generated inputs ran clean (seed %llu)\n", FUZZ_TARGET_NAME,
           (size_t)files, iterations, seed);
    return 0;
}
