/*
 * The generation loop (run.c's generate()) and the output protocol around it (runtime_c/README.md).
 *
 * The text streams out token by token. The per-token records are kept in static arrays meanwhile and
 * written after the text, so that nothing interrupts it and the protocol parser sees one text block.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "format.h"
#include "llmcu.h"
#include "phases.h"
#include "platform.h"

#ifndef LLMCU_TARGET_NAME /* set by the build, e.g. -DLLMCU_TARGET_NAME=\"host\" */
#define LLMCU_TARGET_NAME "unknown"
#endif

#define GENERATE_ERR_PROMPT_TOO_LONG 3

#ifndef LLMCU_SLIDE /* model_config.h defines it; 0 is overflow=stop */
#define LLMCU_SLIDE 0
#endif

/* How many forward passes one run may make: the context (overflow=stop), or with a sliding window as many as
 * the records below hold (overflow=slide: LLMCU_MAX_STEPS, a build option, 12 bytes each). */
#if LLMCU_SLIDE
#define MAX_PASSES LLMCU_MAX_STEPS
#define CAPPED_REASON "max_steps"
#else
#define MAX_PASSES LLMCU_SEQ_LEN
#define CAPPED_REASON "context_full"
#endif

/* Per forward pass (indexed by position): the token that followed and what the pass cost. */
static int next_token[MAX_PASSES] LLMCU_STATE_ATTR;
static uint64_t pass_cost[MAX_PASSES] LLMCU_STATE_ATTR;

#if LLMCU_PHASES
/* The harness's per-phase split is taken at this position (or the last one, in a shorter run). */
#define PHASE_POS 128
uint64_t llmcu_phase_cost[PHASE_COUNT];
static uint64_t phase_snapshot[PHASE_COUNT + 1]; /* the phases, then the whole pass */
static int phase_pos = -1;
static const char *const phase_names[PHASE_COUNT] = {"matmul", "attention", "rope", "norm",
                                                     "swiglu", "quantize", "sampling"};

/* Writes `\x1ephase pos=N matmul=... sampling=... other=...`: where the pass at phase_pos went. */
static void write_phase_record(void) {
    if (phase_pos < 0) {
        return;
    }
    fmt_line line;
    uint64_t accounted = 0;
    line_start(&line);
    line_str(&line, "\x1ephase pos=");
    line_u64(&line, (uint64_t)phase_pos);
    for (int i = 0; i < PHASE_COUNT; i++) {
        line_str(&line, " ");
        line_str(&line, phase_names[i]);
        line_str(&line, "=");
        line_u64(&line, phase_snapshot[i]);
        accounted += phase_snapshot[i];
    }
    line_str(&line, " other=");
    line_u64(&line, phase_snapshot[PHASE_COUNT] > accounted ? phase_snapshot[PHASE_COUNT] - accounted : 0);
    line_str(&line, "\n");
    line_end(&line);
}

static void phase_begin_pass(int pos, int steps) {
    if (pos == PHASE_POS || (pos == steps - 1 && steps - 1 < PHASE_POS)) {
        for (int i = 0; i < PHASE_COUNT; i++) {
            llmcu_phase_cost[i] = 0;
        }
    }
}

static void phase_end_pass(int pos, int steps, uint64_t cost) {
    if (pos == PHASE_POS || (pos == steps - 1 && steps - 1 < PHASE_POS)) {
        for (int i = 0; i < PHASE_COUNT; i++) {
            phase_snapshot[i] = llmcu_phase_cost[i];
        }
        phase_snapshot[PHASE_COUNT] = cost;
        phase_pos = pos;
    }
}
#else
#define write_phase_record() ((void)0)
#define phase_begin_pass(pos, steps) ((void)0)
#define phase_end_pass(pos, steps, cost) ((void)0)
#endif

/* What one run did, for the summary record. */
typedef struct {
    int passes;        /* forward passes = positions processed */
    int prompt_tokens; /* the encoded prompt, BOS included */
    int generated;     /* tokens chosen by the sampler (the passes after the prompt) */
    int stopped;       /* the host asked to stop (platform_stop_requested) */
} run_counts;

static void write_header(void) {
    fmt_line line;
    line_start(&line);
    line_str(&line, "\x02llmcu 1 target=" LLMCU_TARGET_NAME " model=" LLMCU_MODEL_NAME " quant=" LLMCU_QUANT_NAME
                    " unit=");
    line_str(&line, platform_counter_unit());
    line_str(&line, " clock_hz=");
    line_u64(&line, platform_counter_hz());
#if LLMCU_SLIDE
    /* The window: the cache's positions and the attention sinks it keeps (overflow=slide). */
    line_str(&line, " window=");
    line_u64(&line, (uint64_t)LLMCU_SEQ_LEN);
    line_str(&line, " sinks=");
    line_u64(&line, (uint64_t)LLMCU_SINKS);
#endif
    line_str(&line, "\n");
    line_end(&line);
}

static void write_end(const char *status, const char *reason) {
    fmt_line line;
    line_start(&line);
    line_str(&line, "\x03llmcu end status=");
    line_str(&line, status);
    if (reason != NULL) {
        line_str(&line, " reason=");
        line_str(&line, reason);
    }
    line_str(&line, "\n");
    line_end(&line);
}

/* A prompt that does not fit: what it needs and what there is, in tokens (BOS included; the context's every
 * position may hold a prompt token) or, for a text longer than the encoder takes, in bytes. */
static void write_prompt_refusal(int n_prompt, const char *prompt) {
    fmt_line line;
    line_start(&line);
    line_str(&line, "\x03llmcu end status=error reason=prompt_too_long");
    if (n_prompt == LLMCU_ENCODE_TEXT_TOO_LONG) {
        line_str(&line, " prompt_bytes=");
        line_u64(&line, (uint64_t)strlen(prompt));
        line_str(&line, " max_bytes=");
        line_u64(&line, (uint64_t)LLMCU_PROMPT_MAX_BYTES);
    } else {
        line_str(&line, " prompt_tokens=");
        line_u64(&line, (uint64_t)n_prompt);
        line_str(&line, " context=");
        line_u64(&line, (uint64_t)LLMCU_SEQ_LEN);
    }
    line_str(&line, "\n");
    line_end(&line);
}

/* One record per forward pass; the token fed at pos is the one that followed pos - 1. */
static void write_token_records(int first_token, int passes) {
    for (int pos = 0; pos < passes; pos++) {
        fmt_line line;
        line_start(&line);
        line_str(&line, "\x1etok pos=");
        line_u64(&line, (uint64_t)pos);
        line_str(&line, " token=");
        line_u64(&line, (uint64_t)(pos == 0 ? first_token : next_token[pos - 1]));
        line_str(&line, " next=");
        line_u64(&line, (uint64_t)next_token[pos]);
        line_str(&line, " cost=");
        line_u64(&line, pass_cost[pos]);
        line_str(&line, "\n");
        line_end(&line);
    }
}

static void write_summary(const run_counts *counts) {
    uint64_t total = 0;
    for (int pos = 0; pos < counts->passes; pos++) {
        total += pass_cost[pos];
    }
    uint64_t passes = (uint64_t)counts->passes;
    uint64_t hz = platform_counter_hz();

    fmt_line line;
    line_start(&line);
    line_str(&line, "\x1esum tokens=");
    line_u64(&line, passes);
    line_str(&line, " prompt_tokens=");
    line_u64(&line, (uint64_t)counts->prompt_tokens);
    line_str(&line, " generated=");
    line_u64(&line, (uint64_t)counts->generated);
    line_str(&line, " cost=");
    line_u64(&line, total);
    line_str(&line, " cost_per_token=");
    line_ratio(&line, total, passes, 1);
    /* tok/s = passes / (cost / hz); a counter of unknown rate (hz 0) gives 0. */
    line_str(&line, " tok_per_s=");
    line_ratio(&line, hz == 0 ? 0 : passes * hz, total == 0 ? 1 : total, 2);
    line_str(&line, " peak_stack=");
    line_u64(&line, (uint64_t)platform_stack_peak());
    line_str(&line, "\n");
    line_end(&line);
}

/* Runs the model over the prompt and then on its own output through the step-wise API (gen.c), writing each
 * piece as it comes and keeping each pass's token and cost for the records; returns the counts for the summary. */
static run_counts run(llmcu_gen *gen, int *first_token) {
    run_counts counts = {0, gen->prompt_tokens, 0, 0};
    *first_token = gen->fed;
    for (;;) {
        int pos = gen->pos;
        phase_begin_pass(pos, gen->steps);
        const char *piece;
        size_t len;
        int rc = llmcu_next(gen, &piece, &len);
        if (gen->pos > pos) { /* a forward pass was made */
            pass_cost[pos] = gen->cost;
            phase_end_pass(pos, gen->steps, gen->cost);
            next_token[pos] = gen->next;
        }
        if (rc != LLMCU_OK) {
            break;
        }
        if (len > 0) {
            platform_write(piece, len);
        }
        /* Asked after the piece is out, so that what the host saw is what the records describe. */
        if (gen->pos > pos && gen->pos < gen->steps && platform_stop_requested()) {
            llmcu_cancel(gen);
        }
    }
    platform_write("\n", 1);
    counts.passes = gen->pos;
    counts.generated = gen->generated;
    counts.stopped = gen->reason == LLMCU_REASON_STOPPED;
    return counts;
}

int llmcu_generate(const llmcu_params *params) {
    const char *prompt = params->prompt != NULL ? params->prompt : "";
    if (params->records) {
        write_header();
    }
    llmcu_gen gen;
    if (llmcu_begin(&gen, prompt, params) != LLMCU_OK) { /* the only error here: a prompt that does not fit */
        if (params->records) {
            write_prompt_refusal(gen.prompt_tokens, prompt);
        }
        return GENERATE_ERR_PROMPT_TOO_LONG;
    }

    int first_token;
    run_counts counts = run(&gen, &first_token);

    if (params->records) {
        write_token_records(first_token, counts.passes);
        write_phase_record();
        write_summary(&counts);
        /* Cut short by the host (stopped) or by the context (context_full, or max_steps with a sliding window)
         * rather than ended by the model (BOS) or by the steps asked for. */
        const char *reason = NULL;
        if (gen.reason == LLMCU_REASON_STOPPED) {
            reason = "stopped";
        } else if (gen.reason == LLMCU_REASON_CONTEXT_FULL) {
            reason = CAPPED_REASON;
        }
        write_end("ok", reason);
    }
    return 0;
}
