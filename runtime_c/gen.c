/*
 * Step-wise generation for an application's own loop (llmcu.h, "gen.c"): llmcu_begin encodes the prompt,
 * each llmcu_next makes at most one forward pass and hands back the next piece of text, as run.c's generate()
 * would print it: the prompt's own pieces first (one per pass, the prompt is fed a token at a time), then the
 * sampled ones. llmcu_generate (generate.c) is this loop plus the output protocol, so the demo image and an
 * application run the same code.
 *
 * The prompt's tokens are static (one generation at a time: the runtime's state is static anyway); the rest of a
 * generation is the caller's llmcu_gen. Nothing here writes anything.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "llmcu.h"
#include "phases.h"
#include "platform.h"

#ifndef LLMCU_ADD_BOS /* model_config.h defines it */
#define LLMCU_ADD_BOS 1
#endif

#ifndef LLMCU_SLIDE /* model_config.h defines it; 0 is overflow=stop */
#define LLMCU_SLIDE 0
#endif

/* How many forward passes one generation may make: the context (overflow=stop), or with a sliding window as
 * many as a run's records hold (overflow=slide: LLMCU_MAX_STEPS). */
#if LLMCU_SLIDE
#define MAX_PASSES LLMCU_MAX_STEPS
#else
#define MAX_PASSES LLMCU_SEQ_LEN
#endif

enum { GEN_IDLE = 0, GEN_FIRST_PIECE, GEN_RUNNING, GEN_DONE };

static int prompt_tokens[LLMCU_SEQ_LEN] LLMCU_STATE_ATTR;

/* The port's optional hooks, as weak defaults: an application that provides none still runs. */
__attribute__((weak)) void platform_alive(void) {}
__attribute__((weak)) int platform_stop_requested(void) { return 0; }
__attribute__((weak)) uint64_t platform_counter(void) { return 0; }
__attribute__((weak)) const char *platform_counter_unit(void) { return "none"; }
__attribute__((weak)) uint64_t platform_counter_hz(void) { return 0; }
__attribute__((weak)) size_t platform_stack_peak(void) { return 0; }
__attribute__((weak)) void platform_write(const void *data, size_t len) {
    (void)data;
    (void)len;
}

int llmcu_max_passes(void) { return MAX_PASSES; }

size_t llmcu_gen_size(void) { return sizeof(llmcu_gen); }

#ifdef LLMCU_REQUIRE_LINKER_FRAGMENT
/* A firmware export's library: the product's linker script must INCLUDE llmcu_sections.ld, which defines this
 * symbol; without it the link fails naming it, instead of the arrays landing wherever the linker likes. */
extern char llmcu_sections_ld_included[];
#endif

int llmcu_begin(llmcu_gen *gen, const char *prompt, const llmcu_params *params) {
#ifdef LLMCU_REQUIRE_LINKER_FRAGMENT
    __asm volatile("" : : "r"(llmcu_sections_ld_included));
#endif
    if (gen == NULL) {
        return LLMCU_ERR_ARGUMENT;
    }
    memset(gen, 0, sizeof *gen);
    if (prompt == NULL || params == NULL) {
        return LLMCU_ERR_ARGUMENT;
    }
    /* Without a sliding window every position needs a slot of the KV cache, so no run goes past the context:
     * more steps than it holds stop there (LLMCU_REASON_CONTEXT_FULL); 0 or less means as many as it holds. */
    int steps = params->steps;
    gen->capped = steps > MAX_PASSES;
    gen->steps = steps <= 0 || gen->capped ? MAX_PASSES : steps;
    /* BOS first when the vocabulary asks for it (GGUF's add_bos_token; run.c always), and for an empty prompt:
     * the run needs a first token. */
    int n = llmcu_encode(prompt, LLMCU_ADD_BOS || prompt[0] == '\0', 0, prompt_tokens, LLMCU_SEQ_LEN);
    gen->prompt_tokens = n;
    if (n < 0 || n > LLMCU_SEQ_LEN) {
        return LLMCU_ERR_PROMPT_TOO_LONG;
    }
    llmcu_sampler_init(&gen->sampler, params->temperature, params->topp, params->seed);
    gen->token = prompt_tokens[0];
    gen->fed = gen->token;
    /* A vocabulary without BOS: the first word is a token of its own, and its text comes first. */
    gen->state = gen->token != LLMCU_BOS ? GEN_FIRST_PIECE : GEN_RUNNING;
    return LLMCU_OK;
}

static int finish(llmcu_gen *gen, int reason) {
    gen->state = GEN_DONE;
    gen->reason = reason;
    return LLMCU_DONE;
}

int llmcu_next(llmcu_gen *gen, const char **piece, size_t *len) {
    if (gen == NULL || piece == NULL || len == NULL) {
        return LLMCU_ERR_ARGUMENT;
    }
    *piece = "";
    *len = 0;
    if (gen->state == GEN_IDLE) {
        return LLMCU_ERR_NOT_STARTED;
    }
    if (gen->state == GEN_DONE) {
        return LLMCU_ERR_FINISHED;
    }
    if (gen->state == GEN_FIRST_PIECE) {
        gen->state = GEN_RUNNING;
        *piece = llmcu_decode(LLMCU_BOS, gen->token, len);
        return LLMCU_OK;
    }
    if (gen->cancelled) {
        return finish(gen, LLMCU_REASON_STOPPED);
    }
    if (gen->pos >= gen->steps) {
        return finish(gen, gen->capped ? LLMCU_REASON_CONTEXT_FULL : LLMCU_REASON_STEPS);
    }

    int pos = gen->pos;
    platform_alive();
    uint64_t start = platform_counter();
    float *logits = llmcu_forward(gen->token, pos);
    int next;
    if (pos < gen->prompt_tokens - 1) { /* still reading the prompt: its next token is given */
        next = prompt_tokens[pos + 1];
    } else {
        PHASE(PHASE_SAMPLING, next = llmcu_sample(&gen->sampler, logits));
        gen->generated++;
    }
    gen->cost = platform_counter() - start;
    gen->fed = gen->token;
    gen->next = next;
    gen->pos = pos + 1;

    if (next == LLMCU_BOS) { /* the model starts a new text: this one is done */
        return finish(gen, LLMCU_REASON_END_OF_TEXT);
    }
    *piece = llmcu_decode(gen->token, next, len);
    gen->token = next;
    return LLMCU_OK;
}

void llmcu_cancel(llmcu_gen *gen) {
    if (gen != NULL) {
        gen->cancelled = 1;
    }
}

const char *llmcu_strerror(int code) {
    switch (code) {
    case LLMCU_OK:
        return "ok";
    case LLMCU_DONE:
        return "done";
    case LLMCU_ERR_ARGUMENT:
        return "a NULL argument (generation, prompt, parameters or output)";
    case LLMCU_ERR_PROMPT_TOO_LONG:
        return "the prompt does not fit: more tokens than the context holds, or more bytes than the encoder takes";
    case LLMCU_ERR_NOT_STARTED:
        return "llmcu_next without a successful llmcu_begin";
    case LLMCU_ERR_FINISHED:
        return "llmcu_next after the generation ended (LLMCU_DONE)";
    case LLMCU_ERR_WEIGHTS_FILE:
        return "the weights file cannot be used: missing, damaged or another model's (stderr says which)";
    default:
        return "unknown llmcu error code";
    }
}

const char *llmcu_reason_name(int reason) {
    static const char *const names[] = {"none", "steps", "end_of_text", "context_full", "stopped"};
    return reason >= 0 && reason < (int)(sizeof names / sizeof names[0]) ? names[reason] : "unknown";
}
