/*
 * An application of its own on the step-wise API (llmcu.h): no llmcu port functions, no output protocol. It
 * prints the pieces of one generation exactly as they come, so that its output can be held against llama2.c's
 * run.c and against llmcu's own program; then checks the API's error paths.
 *
 *   step_api PROMPT STEPS TEMPERATURE TOPP SEED     the pieces, then "\n", as run.c prints them
 *   step_api --errors                               each error path, one line each, exit 0 when all behave
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmcu.h"

static int generate(const char *prompt, int steps, float temperature, float topp, unsigned long long seed) {
    llmcu_gen gen;
    llmcu_params params;
    memset(&params, 0, sizeof params);
    params.steps = steps;
    params.temperature = temperature;
    params.topp = topp;
    params.seed = seed;
    int rc = llmcu_begin(&gen, prompt, &params);
    const char *piece;
    size_t len;
    while (rc == LLMCU_OK && (rc = llmcu_next(&gen, &piece, &len)) == LLMCU_OK) {
        fwrite(piece, 1, len, stdout);
    }
    printf("\n");
    if (rc < 0) {
        fprintf(stderr, "error: %s\n", llmcu_strerror(rc));
        return 1;
    }
    fprintf(stderr, "reason=%s passes=%d generated=%d prompt_tokens=%d\n", llmcu_reason_name(gen.reason), gen.pos,
            gen.generated, gen.prompt_tokens);
    return 0;
}

static int check(const char *what, int got, int want) {
    printf("%s: %d (%s)\n", what, got, llmcu_strerror(got));
    return got == want ? 0 : 1;
}

static int errors(void) {
    llmcu_gen gen;
    llmcu_params params;
    memset(&params, 0, sizeof params);
    const char *piece;
    size_t len;
    int bad = 0;
    bad += check("null prompt", llmcu_begin(&gen, NULL, &params), LLMCU_ERR_ARGUMENT);
    bad += check("next before begin", llmcu_next(&gen, &piece, &len), LLMCU_ERR_NOT_STARTED);
    bad += check("null generation", llmcu_begin(NULL, "x", &params), LLMCU_ERR_ARGUMENT);
    /* a prompt of more tokens than the context: every word its own token */
    static char longest[LLMCU_PROMPT_MAX_BYTES + 1];
    for (size_t i = 0; i + 2 <= LLMCU_PROMPT_MAX_BYTES; i += 2) {
        longest[i] = 'a';
        longest[i + 1] = ' ';
    }
    int rc = llmcu_begin(&gen, longest, &params);
    bad += check("prompt of more tokens than the context", rc,
                 gen.prompt_tokens > LLMCU_SEQ_LEN ? LLMCU_ERR_PROMPT_TOO_LONG : LLMCU_OK);
    static char too_many_bytes[LLMCU_PROMPT_MAX_BYTES + 2];
    memset(too_many_bytes, 'a', LLMCU_PROMPT_MAX_BYTES + 1);
    bad += check("prompt of more bytes than the encoder takes", llmcu_begin(&gen, too_many_bytes, &params),
                 LLMCU_ERR_PROMPT_TOO_LONG);
    params.steps = 3;
    bad += check("begin", llmcu_begin(&gen, "Hi", &params), LLMCU_OK);
    while ((rc = llmcu_next(&gen, &piece, &len)) == LLMCU_OK) {
    }
    bad += check("the end", rc, LLMCU_DONE);
    bad += check("next after the end", llmcu_next(&gen, &piece, &len), LLMCU_ERR_FINISHED);
    bad += check("null output", llmcu_next(&gen, NULL, &len), LLMCU_ERR_ARGUMENT);
    params.steps = 100;
    bad += check("begin again", llmcu_begin(&gen, "Once", &params), LLMCU_OK);
    bad += check("one step", llmcu_next(&gen, &piece, &len), LLMCU_OK);
    llmcu_cancel(&gen);
    bad += check("cancelled", llmcu_next(&gen, &piece, &len), LLMCU_DONE);
    printf("reason after cancel: %s, passes %d\n", llmcu_reason_name(gen.reason), gen.pos);
    bad += gen.reason != LLMCU_REASON_STOPPED || gen.pos != 1;
    params.steps = 100000;
    bad += check("begin with more steps than the context", llmcu_begin(&gen, "", &params), LLMCU_OK);
    while ((rc = llmcu_next(&gen, &piece, &len)) == LLMCU_OK) {
    }
    printf("reason: %s, passes %d of %d\n", llmcu_reason_name(gen.reason), gen.pos, llmcu_max_passes());
    bad += gen.reason == LLMCU_REASON_CONTEXT_FULL ? gen.pos != llmcu_max_passes() : gen.reason != LLMCU_REASON_END_OF_TEXT;
    return bad == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
#ifdef OPEN_WEIGHTS_FILE /* built against a weights_file export: its weights are in the file LLMCU_WEIGHTS names */
    int opened = llmcu_open(getenv("LLMCU_WEIGHTS"));
    if (opened != LLMCU_OK) {
        fprintf(stderr, "error: %s\n", llmcu_strerror(opened));
        return 1;
    }
#endif
    if (argc == 2 && strcmp(argv[1], "--errors") == 0) {
        return errors();
    }
    if (argc != 6) {
        fprintf(stderr, "usage: %s PROMPT STEPS TEMPERATURE TOPP SEED | --errors\n", argv[0]);
        return 2;
    }
    return generate(argv[1], atoi(argv[2]), (float)atof(argv[3]), (float)atof(argv[4]), strtoull(argv[5], NULL, 10));
}
