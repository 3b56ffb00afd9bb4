/*
 * Where a forward pass spends its cost, for the benchmark harness (tools/bench.py): built with
 * -DLLMCU_PHASES=1 (scons option phases=1), each PHASE(id, statement) adds the platform counter's
 * difference around the statement to llmcu_phase_cost[id]; otherwise PHASE() is the bare statement, so
 * normal builds carry no trace of it. The counter reads themselves cost a little, which is why the harness
 * takes the per-token totals from a build without phases.
 */
#ifndef LLMCU_PHASES_H
#define LLMCU_PHASES_H

#include <stdint.h>

#include "platform.h"

enum llmcu_phase {
    PHASE_MATMUL,    /* every matrix-vector product, the classifier included */
    PHASE_ATTENTION, /* scores, softmax and the weighted sum of values, all heads */
    PHASE_ROPE,      /* rotary embedding, and storing this position's key and value */
    PHASE_NORM,      /* RMSNorm */
    PHASE_SWIGLU,    /* the FFN's gate */
    PHASE_QUANTIZE,  /* quantizing matmul inputs to int8 */
    PHASE_SAMPLING,  /* choosing the next token */
    PHASE_COUNT
};

#ifndef LLMCU_PHASES
#define LLMCU_PHASES 0
#endif

#if LLMCU_PHASES
extern uint64_t llmcu_phase_cost[PHASE_COUNT];
#define PHASE(id, statement)                                                                                           \
    do {                                                                                                               \
        uint64_t phase_start_ = platform_counter();                                                                    \
        statement;                                                                                                     \
        llmcu_phase_cost[id] += platform_counter() - phase_start_;                                                     \
    } while (0)
#else
#define PHASE(id, statement)                                                                                           \
    do {                                                                                                               \
        statement;                                                                                                     \
    } while (0)
#endif

#endif /* LLMCU_PHASES_H */
