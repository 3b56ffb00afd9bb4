/*
 * Fuzz target: the step-wise generation API (runtime_c/gen.c, llmcu.h) with a model build's generated sources
 * linked in (its model_weights.c and model_data.S): the whole runtime runs, forward passes included.
 *
 * The input's first bytes pick the parameters and the calls: [0] steps (0..15), [1] temperature (0, 0.5, 1, 2),
 * [2] top-p, [3] the seed, [4] a call script: which of begin, next, cancel, a NULL argument come in what order;
 * the rest is the prompt (NUL ends the C string). Checked besides the sanitizers' own checks:
 *   - every call returns one of its documented codes, never anything else;
 *   - llmcu_next makes at most one forward pass a call, never more than the steps asked for (or the context);
 *   - after LLMCU_DONE every llmcu_next is LLMCU_ERR_FINISHED, and the reason is one of the five;
 *   - a piece is never longer than the longest token, and llmcu_strerror/llmcu_reason_name always give a string.
 */
#include <string.h>

#include "fuzz.h"
#include "llmcu.h"

const char *const fuzz_seeds[] = {
    "\x04\x00\x00\x01\x00Once upon a time",
    "\x08\x02\x05\x07\x33The dog",
    "\x02\x01\x09\x02\xff",
    "\x0f\x03\x00\x09\x5a\xc3\xa9t\xc3\xa9 \xf0\x9f\xa6\x99",
};
const size_t fuzz_seed_count = sizeof fuzz_seeds / sizeof fuzz_seeds[0];

static int is_code(int rc) {
    return rc == LLMCU_OK || rc == LLMCU_DONE || rc == LLMCU_ERR_ARGUMENT || rc == LLMCU_ERR_PROMPT_TOO_LONG ||
           rc == LLMCU_ERR_NOT_STARTED || rc == LLMCU_ERR_FINISHED;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char prompt[LLMCU_PROMPT_MAX_BYTES + 64];
    if (size < 5) {
        return 0;
    }
    llmcu_params params;
    memset(&params, 0, sizeof params);
    params.steps = data[0] % 16;
    params.temperature = (float)(data[1] % 4) * 0.5f;
    params.topp = (float)(data[2] % 11) / 10.0f;
    params.seed = 1u + data[3];
    uint8_t script = data[4];
    size_t len = size - 5 < sizeof prompt - 1 ? size - 5 : sizeof prompt - 1;
    memcpy(prompt, data + 5, len);
    prompt[len] = '\0';

    llmcu_gen gen;
    const char *piece;
    size_t piece_len;
    if (script & 1) { /* next before any begin: refused */
        memset(&gen, 0, sizeof gen);
        FUZZ_CHECK(llmcu_next(&gen, &piece, &piece_len) == LLMCU_ERR_NOT_STARTED);
    }
    if (script & 2) {
        FUZZ_CHECK(llmcu_begin(&gen, NULL, &params) == LLMCU_ERR_ARGUMENT);
    }
    int rc = llmcu_begin(&gen, prompt, &params);
    FUZZ_CHECK(is_code(rc) && rc != LLMCU_DONE);
    FUZZ_CHECK(llmcu_strerror(rc) != NULL);
    if (rc != LLMCU_OK) {
        FUZZ_CHECK(rc == LLMCU_ERR_PROMPT_TOO_LONG);
        FUZZ_CHECK(gen.prompt_tokens == -1 || gen.prompt_tokens > LLMCU_SEQ_LEN);
        return 0;
    }
    int limit = params.steps > 0 && params.steps <= llmcu_max_passes() ? params.steps : llmcu_max_passes();
    int cancel_at = (script >> 2) & 7; /* 0: never */
    for (int call = 0; call < 64; call++) {
        int before = gen.pos;
        if (cancel_at != 0 && call == cancel_at) {
            llmcu_cancel(&gen);
        }
        rc = llmcu_next(&gen, (script & 0x20) && call == 1 ? NULL : &piece, &piece_len);
        FUZZ_CHECK(is_code(rc));
        if (rc == LLMCU_ERR_ARGUMENT) {
            continue;
        }
        FUZZ_CHECK(gen.pos - before <= 1 && gen.pos <= limit);
        if (rc == LLMCU_DONE) {
            FUZZ_CHECK(gen.reason >= LLMCU_REASON_STEPS && gen.reason <= LLMCU_REASON_STOPPED);
            FUZZ_CHECK(strcmp(llmcu_reason_name(gen.reason), "unknown") != 0);
            FUZZ_CHECK(llmcu_next(&gen, &piece, &piece_len) == LLMCU_ERR_FINISHED);
            FUZZ_CHECK(llmcu_next(&gen, &piece, &piece_len) == LLMCU_ERR_FINISHED);
            return 0;
        }
        FUZZ_CHECK(rc == LLMCU_OK && piece != NULL && piece_len <= LLMCU_MAX_TOKEN_LENGTH);
    }
    return 0;
}
