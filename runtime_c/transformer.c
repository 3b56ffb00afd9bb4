/*
 * The Llama-2 forward pass: one token in, the next token's logits out.
 *
 * Top-down like run.c's forward(): embed the token, run every layer (attention block, then feed-forward
 * block, each added to the residual stream x), normalise, classify. All state is static and sized by
 * model_config.h. Which kernel a matrix uses is decided by its kind's LLMCU_QTYPE_<KIND> constant; the
 * dispatchers below take that constant as an argument and, once inlined, the compiler keeps only the
 * branch that applies, so an fp32 build carries no quantization code and vice versa.
 */
#include <stddef.h>
#include <stdint.h>

#include "kernels/kernels.h"
#include "llmcu.h"
#include "phases.h"
#include "parallel.h"

#define IS_QUANTIZED(qtype) ((qtype) != LLMCU_F32)
/* The matmuls that share one input need it quantized when any of them is quantized. */
#define QKV_QUANTIZED (IS_QUANTIZED(LLMCU_QTYPE_WQ) || IS_QUANTIZED(LLMCU_QTYPE_WK) || IS_QUANTIZED(LLMCU_QTYPE_WV))
#define W13_QUANTIZED (IS_QUANTIZED(LLMCU_QTYPE_W1) || IS_QUANTIZED(LLMCU_QTYPE_W3))

/* The longest vector a matmul reads: x/xb (DIM) or hb (HIDDEN_DIM). */
#define ACT_LEN (LLMCU_DIM > LLMCU_HIDDEN_DIM ? LLMCU_DIM : LLMCU_HIDDEN_DIM)
#define ACT_GROUPS ((ACT_LEN + LLMCU_GROUP_SIZE - 1) / LLMCU_GROUP_SIZE)
#define KV_MUL (LLMCU_N_HEADS / LLMCU_N_KV_HEADS) /* query heads per kv head */
/* Positions the q16 cache has room for: kernel sets lay them out in blocks of up to 8. */
#define KV_POSITIONS ((LLMCU_SEQ_LEN + 7) / 8 * 8)

/* The activations of one position. */
typedef struct {
    float x[LLMCU_DIM];          /* the residual stream */
    float xb[LLMCU_DIM];         /* normalised x; also the attention output and the FFN output */
    float xb2[LLMCU_DIM];        /* the attention block's output projection */
    float hb[LLMCU_HIDDEN_DIM];  /* FFN hidden: w1 x, then swiglu */
    float hb2[LLMCU_HIDDEN_DIM]; /* FFN hidden: w3 x */
    float q[LLMCU_DIM];          /* queries (fp32 cache: keys and values go straight into the cache) */
#if LLMCU_KV_TYPE != LLMCU_KV_F32
    float k[LLMCU_KV_DIM]; /* this position's key and value in float32, before they are stored converted */
    float v[LLMCU_KV_DIM];
#endif
#if LLMCU_KV_TYPE == LLMCU_KV_Q16
    /* One head's integer attention: its quantized query, scores and softmax weights. */
    int32_t scores[KV_POSITIONS];
    int16_t weights[KV_POSITIONS] __attribute__((aligned(8))); /* read a word (two positions) at a time */
    int16_t query[LLMCU_HEAD_SIZE] __attribute__((aligned(4)));
#else
    float att[LLMCU_SEQ_LEN]; /* one head's attention weights: heads run one after the other */
#endif
    float logits[LLMCU_VOCAB_SIZE];
    /* The current matmul input, quantized once and shared by every matmul that reads it. */
    int8_t xq[ACT_LEN];
    float xs[ACT_GROUPS];
} run_state;

static run_state s LLMCU_STATE_ATTR;

/* The KV cache's element type is LLMCU_KV_TYPE (runtime_c/README.md, "KV cache types"). */
#if LLMCU_KV_TYPE == LLMCU_KV_F16
typedef uint16_t kv_elem; /* IEEE binary16 bits */
#elif LLMCU_KV_TYPE == LLMCU_KV_Q8
typedef int8_t kv_elem; /* times the scale of its (position, kv head) */
#elif LLMCU_KV_TYPE != LLMCU_KV_Q16
typedef float kv_elem;
#endif
#if LLMCU_KV_TYPE == LLMCU_KV_Q16
/* Each layer's codes in the order the kernel set's attention_q16 reads them (kv_store_q16 writes them). */
static int16_t key_cache[LLMCU_N_LAYERS][KV_POSITIONS * LLMCU_KV_DIM] LLMCU_KV_ATTR __attribute__((aligned(8)));
static int16_t value_cache[LLMCU_N_LAYERS][KV_POSITIONS * LLMCU_KV_DIM] LLMCU_KV_ATTR __attribute__((aligned(8)));
#else
static kv_elem key_cache[LLMCU_N_LAYERS][LLMCU_SEQ_LEN][LLMCU_KV_DIM] LLMCU_KV_ATTR;
static kv_elem value_cache[LLMCU_N_LAYERS][LLMCU_SEQ_LEN][LLMCU_KV_DIM] LLMCU_KV_ATTR;
#endif
#if LLMCU_KV_TYPE == LLMCU_KV_Q8
static float key_scales[LLMCU_N_LAYERS][LLMCU_SEQ_LEN][LLMCU_N_KV_HEADS] LLMCU_KV_ATTR;
static float value_scales[LLMCU_N_LAYERS][LLMCU_SEQ_LEN][LLMCU_N_KV_HEADS] LLMCU_KV_ATTR;
#endif

/* ---- dispatch on the tensor kind's quantization type (a compile-time constant) ---- */

/* Quantizes x[n] into s.xq/s.xs when at least one of the matmuls about to read it is quantized. */
static inline void quantize_input(const float *x, int n, int needed) {
    if (needed) {
        quantize_activations(s.xq, s.xs, x, n, LLMCU_GROUP_SIZE);
    }
}

/* Rows [row0, row0 + rows) of out = W x, where x[cols] is the fp32 input and, for a quantized W, s.xq/s.xs
 * hold it quantized: the kernel on pointers offset to row0 (row0 is 0 unless the rows are split across
 * threads, and every row's arithmetic is the same either way). */
static inline void matmul_rows(float *out, const float *x, const llmcu_tensor *w, int qtype, int row0, int rows,
                               int cols) {
    size_t first_scale = (size_t)row0 * (size_t)group_count(cols, LLMCU_GROUP_SIZE);
    switch (qtype) {
    case LLMCU_Q8:
        matmul_q8(out + row0, s.xq, s.xs, (const int8_t *)w->data + (size_t)row0 * (size_t)cols,
                  (const float *)w->scales + first_scale, rows, cols, LLMCU_GROUP_SIZE);
        break;
    case LLMCU_Q4:
        matmul_q4(out + row0, s.xq, s.xs, (const uint8_t *)w->data + (size_t)row0 * (((size_t)cols + 1) / 2),
                  (const float *)w->scales + first_scale, rows, cols, LLMCU_GROUP_SIZE);
        break;
    case LLMCU_Q4Z:
        matmul_q4z(out + row0, s.xq, s.xs, (const uint8_t *)w->data + (size_t)row0 * (((size_t)cols + 1) / 2),
                   (const uint16_t *)w->scales + first_scale, rows, cols, LLMCU_GROUP_SIZE);
        break;
    default:
        matmul_f32(out + row0, x, (const float *)w->data + (size_t)row0 * (size_t)cols, rows, cols);
        break;
    }
}

#if defined(LLMCU_PTHREADS)
/* A matmul handed to the thread pool (parallel.h): each thread computes a range of rows. */
typedef struct {
    float *out;
    const float *x;
    const llmcu_tensor *w;
    int qtype;
    int cols;
} matmul_job;

static void matmul_range(void *ctx, int begin, int end) {
    const matmul_job *job = (const matmul_job *)ctx;
    matmul_rows(job->out, job->x, job->w, job->qtype, begin, end - begin, job->cols);
}
#endif

/* out[rows] = W x (see matmul_rows), on every thread of the pool when the matrix is large enough. */
static inline void matmul(float *out, const float *x, const llmcu_tensor *w, int qtype, int rows, int cols) {
#if defined(LLMCU_PTHREADS)
    if ((long)rows * cols >= LLMCU_PARALLEL_MIN_WORK && llmcu_parallel_threads() > 1) {
        matmul_job job = {out, x, w, qtype, cols};
        llmcu_parallel_rows(matmul_range, &job, rows);
        return;
    }
#endif
    matmul_rows(out, x, w, qtype, 0, rows, cols);
}

static inline void embed(float *out, const llmcu_tensor *table, int qtype, int token) {
    switch (qtype) {
    case LLMCU_Q8:
        embed_q8(out, (const int8_t *)table->data, (const float *)table->scales, token, LLMCU_DIM, LLMCU_GROUP_SIZE);
        break;
    case LLMCU_Q4:
        embed_q4(out, (const uint8_t *)table->data, (const float *)table->scales, token, LLMCU_DIM,
                 LLMCU_GROUP_SIZE);
        break;
    case LLMCU_Q4Z:
        embed_q4z(out, (const uint8_t *)table->data, (const uint16_t *)table->scales, token, LLMCU_DIM,
                  LLMCU_GROUP_SIZE);
        break;
    default:
        embed_f32(out, (const float *)table->data, token, LLMCU_DIM);
        break;
    }
}

/* ---- the KV cache's element type (a compile-time choice) ---- */

/* Stores this position's key and value, computed in s.k/s.v, into the cache slot `pos` (fp32: already there). */
static inline void store_kv(int l, int pos) {
#if LLMCU_KV_TYPE == LLMCU_KV_F16
    kv_store_f16(key_cache[l][pos], s.k, LLMCU_KV_DIM);
    kv_store_f16(value_cache[l][pos], s.v, LLMCU_KV_DIM);
#elif LLMCU_KV_TYPE == LLMCU_KV_Q8
    /* One group per kv head: the weight contract's int8 quantization with group_size = head_size. */
    quantize_activations(key_cache[l][pos], key_scales[l][pos], s.k, LLMCU_KV_DIM, LLMCU_HEAD_SIZE);
    quantize_activations(value_cache[l][pos], value_scales[l][pos], s.v, LLMCU_KV_DIM, LLMCU_HEAD_SIZE);
#elif LLMCU_KV_TYPE == LLMCU_KV_Q16
    kv_store_q16(key_cache[l], value_cache[l], s.k, s.v, llmcu_kv_q16_scales[0][l], llmcu_kv_q16_scales[1][l], pos,
                 KV_POSITIONS, LLMCU_KV_DIM, LLMCU_HEAD_SIZE);
#else
    (void)l;
    (void)pos;
#endif
}

#if LLMCU_KV_TYPE == LLMCU_KV_Q16
/* Every query head at once over the first n_pos slots: the kernel set shares what it can between the heads of
 * one kv head. */
static void attend_all_heads(int l, int n_pos) {
    attention_q16(s.xb, s.q, key_cache[l], value_cache[l], llmcu_kv_q16_scales[2][l], llmcu_kv_q16_scales[1][l],
                  s.query, s.scores, s.weights, LLMCU_N_HEADS, LLMCU_N_KV_HEADS, LLMCU_HEAD_SIZE, KV_POSITIONS,
                  n_pos);
}
#else
/* One query head (query q, output out) attends over positions 0..n_pos-1 of layer l's kv head kvh. */
static inline void attend(float *out, const float *q, int l, int kvh, int n_pos) {
    int kv_offset = kvh * LLMCU_HEAD_SIZE;
#if LLMCU_KV_TYPE == LLMCU_KV_F16
    attention_head_f16(out, s.att, q, &key_cache[l][0][kv_offset], &value_cache[l][0][kv_offset], LLMCU_KV_DIM,
                       LLMCU_HEAD_SIZE, n_pos);
#elif LLMCU_KV_TYPE == LLMCU_KV_Q8
    attention_head_q8(out, s.att, q, &key_cache[l][0][kv_offset], &key_scales[l][0][kvh],
                      &value_cache[l][0][kv_offset], &value_scales[l][0][kvh], LLMCU_KV_DIM, LLMCU_N_KV_HEADS,
                      LLMCU_HEAD_SIZE, n_pos);
#else
    attention_head(out, s.att, q, &key_cache[l][0][kv_offset], &value_cache[l][0][kv_offset], LLMCU_KV_DIM,
                   LLMCU_HEAD_SIZE, n_pos);
#endif
}

/* Grouped-query attention over the first n_pos slots: query head h reads kv head h / KV_MUL; outputs in s.xb. */
static void attend_all_heads(int l, int n_pos) {
    for (int h = 0; h < LLMCU_N_HEADS; h++) {
        attend(s.xb + h * LLMCU_HEAD_SIZE, s.q + h * LLMCU_HEAD_SIZE, l, h / KV_MUL, n_pos);
    }
}
#endif

/* ---- overflow=slide: a sliding window with attention sinks ---- */

#ifndef LLMCU_SLIDE /* model_config.h defines it; 0 is overflow=stop */
#define LLMCU_SLIDE 0
#endif

#if LLMCU_SLIDE
/*
 * The cache keeps the first LLMCU_SINKS positions ("attention sinks") and a ring of the most recent ones, so a
 * generation goes on past the context (runtime_c/README.md, "Sliding window"). Position pos lives in slot pos
 * until the cache is full, then in the ring slot SINKS + (pos - SINKS) mod (SEQ_LEN - SINKS). Attention runs
 * over the occupied slots in slot order; every kernel set and the Python oracle do the same, so a slid run is
 * bit-identical across them as a stopped one is.
 */
static int kv_slot(int pos) {
    if (pos < LLMCU_SEQ_LEN) {
        return pos;
    }
    return LLMCU_SINKS + (pos - LLMCU_SINKS) % (LLMCU_SEQ_LEN - LLMCU_SINKS);
}

/*
 * RoPE keeps the absolute positions. Below LLMCU_SEQ_LEN a position's angles are those of a stopped build (the
 * table row, or rope's own cosf/sinf). Past it they are composed from angles below it, with float32 products
 * only, so that every target computes the same bits whatever its libm: with B = SEQ_LEN - 1 and pos = q B + r,
 * row(pos) = row(r) (x) P_q, where P_0 = (1, 0) and P_q = P_(q-1) (x) row(B), and (c1, s1) (x) (c2, s2) =
 * (c1 c2 - s1 s2, s1 c2 + c1 s2). P_q is kept between tokens (q grows by one every B positions).
 */
static float rope_base[LLMCU_HEAD_SIZE];  /* row(B) */
static float rope_power[LLMCU_HEAD_SIZE]; /* P_q for q = rope_power_q */
static float rope_row_out[LLMCU_HEAD_SIZE];
static int rope_power_q = -1;

static void rope_row(float *cs, int pos) {
#if LLMCU_ROPE_TABLE
    const float *row = llmcu_rope_table + (size_t)pos * LLMCU_HEAD_SIZE;
    for (int i = 0; i < LLMCU_HEAD_SIZE; i++) {
        cs[i] = row[i];
    }
#else
    rope_angles(cs, LLMCU_HEAD_SIZE, pos, LLMCU_ROPE_THETA);
#endif
}

static void rope_compose(float *acc, const float *by) {
    for (int i = 0; i < LLMCU_HEAD_SIZE; i += 2) {
        float c = acc[i] * by[i] - acc[i + 1] * by[i + 1];
        float sn = acc[i + 1] * by[i] + acc[i] * by[i + 1];
        acc[i] = c;
        acc[i + 1] = sn;
    }
}

/* The angles of a position past the context, as the comment above composes them. */
static const float *rope_beyond(int pos) {
    const int base = LLMCU_SEQ_LEN - 1;
    int q = pos / base;
    if (rope_power_q < 0 || q < rope_power_q) { /* the first time, or a new generation: from P_0 */
        rope_row(rope_base, base);
        for (int i = 0; i < LLMCU_HEAD_SIZE; i += 2) {
            rope_power[i] = 1.0f;
            rope_power[i + 1] = 0.0f;
        }
        rope_power_q = 0;
    }
    while (rope_power_q < q) {
        rope_compose(rope_power, rope_base);
        rope_power_q++;
    }
    rope_row(rope_row_out, pos % base);
    rope_compose(rope_row_out, rope_power);
    return rope_row_out;
}
#else
#define kv_slot(pos) (pos)
#endif

#if !LLMCU_ROPE_TABLE && LLMCU_HEAD_SIZE % 2 == 0
/*
 * Without the table, a position's angles are computed once for all the layers rather than once per layer:
 * rope_angles gives the cosines and sines rope computes for each pair (the same expressions), and every layer
 * rotates by them. (An odd head size has pairs that straddle heads: rope itself runs then.)
 */
#define ROPE_ANGLES_ONCE 1
static float rope_angles_row[LLMCU_HEAD_SIZE];
static int rope_angles_pos = -1;

static const float *rope_angles_at(int pos) {
    if (pos != rope_angles_pos) { /* the first layer of a pass; a function of pos alone, so kept across passes */
        rope_angles(rope_angles_row, LLMCU_HEAD_SIZE, pos, LLMCU_ROPE_THETA);
        rope_angles_pos = pos;
    }
    return rope_angles_row;
}
#endif

/* ---- the blocks of a layer ---- */

static void add_residual(float *x, const float *y, int n) {
    for (int i = 0; i < n; i++) {
        x[i] += y[i];
    }
}

static void attention_block(const llmcu_layer *layer, int l, int pos) {
    int slot = kv_slot(pos);                                    /* where this position's key and value go */
    int n_pos = pos < LLMCU_SEQ_LEN ? pos + 1 : LLMCU_SEQ_LEN; /* the slots attention reads */
#if LLMCU_KV_TYPE == LLMCU_KV_F32
    /* This position's key and value are written straight into the cache. */
    float *k = key_cache[l][slot];
    float *v = value_cache[l][slot];
#else
    /* They are computed and rotated in float32, then stored converted. */
    float *k = s.k;
    float *v = s.v;
#endif

    PHASE(PHASE_NORM, rmsnorm(s.xb, s.x, layer->rms_att, LLMCU_DIM, LLMCU_NORM_EPS));
    PHASE(PHASE_QUANTIZE, quantize_input(s.xb, LLMCU_DIM, QKV_QUANTIZED));
    PHASE(PHASE_MATMUL, matmul(s.q, s.xb, &layer->wq, LLMCU_QTYPE_WQ, LLMCU_DIM, LLMCU_DIM));
    PHASE(PHASE_MATMUL, matmul(k, s.xb, &layer->wk, LLMCU_QTYPE_WK, LLMCU_KV_DIM, LLMCU_DIM));
    PHASE(PHASE_MATMUL, matmul(v, s.xb, &layer->wv, LLMCU_QTYPE_WV, LLMCU_KV_DIM, LLMCU_DIM));

#if LLMCU_SLIDE
    if (pos >= LLMCU_SEQ_LEN) { /* past the context: composed angles (see rope_beyond) */
        PHASE(PHASE_ROPE, rope_rotate(s.q, LLMCU_DIM, k, LLMCU_KV_DIM, LLMCU_HEAD_SIZE, rope_beyond(pos)));
    } else
#endif
    {
#if LLMCU_ROPE_TABLE
        /* The angles' cosines and sines from the build-time table (llmcu.h), the same floats rope computes. */
        PHASE(PHASE_ROPE, rope_rotate(s.q, LLMCU_DIM, k, LLMCU_KV_DIM, LLMCU_HEAD_SIZE,
                                      llmcu_rope_table + (size_t)pos * LLMCU_HEAD_SIZE));
#elif defined(ROPE_ANGLES_ONCE)
        PHASE(PHASE_ROPE, rope_rotate(s.q, LLMCU_DIM, k, LLMCU_KV_DIM, LLMCU_HEAD_SIZE, rope_angles_at(pos)));
#else
        PHASE(PHASE_ROPE, rope(s.q, LLMCU_DIM, k, LLMCU_KV_DIM, LLMCU_HEAD_SIZE, pos, LLMCU_ROPE_THETA));
#endif
    }
    PHASE(PHASE_ROPE, store_kv(l, slot));

    PHASE(PHASE_ATTENTION, attend_all_heads(l, n_pos));

    PHASE(PHASE_QUANTIZE, quantize_input(s.xb, LLMCU_DIM, IS_QUANTIZED(LLMCU_QTYPE_WO)));
    PHASE(PHASE_MATMUL, matmul(s.xb2, s.xb, &layer->wo, LLMCU_QTYPE_WO, LLMCU_DIM, LLMCU_DIM));
    add_residual(s.x, s.xb2, LLMCU_DIM);
}

static void ffn_block(const llmcu_layer *layer) {
    PHASE(PHASE_NORM, rmsnorm(s.xb, s.x, layer->rms_ffn, LLMCU_DIM, LLMCU_NORM_EPS));
    PHASE(PHASE_QUANTIZE, quantize_input(s.xb, LLMCU_DIM, W13_QUANTIZED));
    PHASE(PHASE_MATMUL, matmul(s.hb, s.xb, &layer->w1, LLMCU_QTYPE_W1, LLMCU_HIDDEN_DIM, LLMCU_DIM));
    PHASE(PHASE_MATMUL, matmul(s.hb2, s.xb, &layer->w3, LLMCU_QTYPE_W3, LLMCU_HIDDEN_DIM, LLMCU_DIM));

    PHASE(PHASE_SWIGLU, swiglu(s.hb, s.hb2, LLMCU_HIDDEN_DIM));

    PHASE(PHASE_QUANTIZE, quantize_input(s.hb, LLMCU_HIDDEN_DIM, IS_QUANTIZED(LLMCU_QTYPE_W2)));
    PHASE(PHASE_MATMUL, matmul(s.xb, s.hb, &layer->w2, LLMCU_QTYPE_W2, LLMCU_DIM, LLMCU_HIDDEN_DIM));
    add_residual(s.x, s.xb, LLMCU_DIM);
}

/* ---- the forward pass ---- */

float *llmcu_forward(int token, int pos) {
    const llmcu_weights *w = &llmcu_model_weights;

    embed(s.x, &w->tok_embeddings, LLMCU_QTYPE_TOK_EMBEDDINGS, token);

    for (int l = 0; l < LLMCU_N_LAYERS; l++) {
        attention_block(&w->layers[l], l, pos);
        ffn_block(&w->layers[l]);
    }

    PHASE(PHASE_NORM, rmsnorm(s.x, s.x, w->rms_final, LLMCU_DIM, LLMCU_NORM_EPS));
    PHASE(PHASE_QUANTIZE, quantize_input(s.x, LLMCU_DIM, IS_QUANTIZED(LLMCU_QTYPE_WCLS)));
    PHASE(PHASE_MATMUL, matmul(s.logits, s.x, &w->wcls, LLMCU_QTYPE_WCLS, LLMCU_VOCAB_SIZE, LLMCU_DIM));
    return s.logits;
}
