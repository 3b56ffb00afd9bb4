/*
 * llmcu runtime: the model's data as the generated files provide it, and the runtime's entry points.
 *
 * The generated model_config.h fixes every dimension at compile time, so all state is static and sized
 * exactly; the generated model_weights.c fills in the two descriptors below with pointers into the
 * linked-in weight and tokenizer data (see runtime_c/README.md for the arithmetic and storage format).
 */
#ifndef LLMCU_H
#define LLMCU_H

#include <stddef.h>
#include <stdint.h>

#include "model_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Quantization types; model_config.h says which one each tensor kind uses (LLMCU_QTYPE_WQ, ...). */
#define LLMCU_F32 0
#define LLMCU_Q8 1
#define LLMCU_Q4 2
#define LLMCU_Q4Z 3 /* 4-bit codes with a zero point per group (kernels/ref/q4z.c) */

/* KV cache element types; model_config.h's LLMCU_KV_TYPE says which one the cache uses (runtime_c/README.md,
 * "KV cache types"): float32, IEEE binary16 bits, or int8 with one float scale per position and kv head. */
#define LLMCU_KV_F32 0
#define LLMCU_KV_F16 1
#define LLMCU_KV_Q8 2
#define LLMCU_KV_Q16 3 /* int16 with build-time scales per channel, and integer attention (kernels/ref/attention_q16.c) */
#ifndef LLMCU_KV_TYPE
#define LLMCU_KV_TYPE LLMCU_KV_F32 /* a model_config.h generated before the option existed */
#endif

#define LLMCU_BOS 1
#define LLMCU_EOS 2

/*
 * The big static buffers live in named sections so that a firmware linker script can place them (the
 * memory planner puts the KV cache and the run state in DTCM, AXI SRAM or SDRAM). Names beginning with
 * .bss keep them zero-initialised wherever no linker script says otherwise (the host).
 */
#define LLMCU_KV_ATTR __attribute__((section(".bss.llmcu_kv")))
#define LLMCU_STATE_ATTR __attribute__((section(".bss.llmcu_state")))

/* One weight matrix of `rows` x `cols` (the dimensions are known from its role in the model). */
typedef struct {
    const void *data;   /* float[rows*cols] | int8_t[rows*cols] | uint8_t[rows*ceil(cols/2)] (q4, q4z) */
    const void *scales; /* per group, rows * ceil(cols/LLMCU_GROUP_SIZE) of them: q8/q4 float scales, q4z
                           uint16_t words (scale and zero point); NULL for fp32 */
} llmcu_tensor;

typedef struct {
    const float *rms_att;        /* [DIM] */
    llmcu_tensor wq, wk, wv, wo; /* (DIM, DIM), (KV_DIM, DIM), (KV_DIM, DIM), (DIM, DIM) */
    const float *rms_ffn;        /* [DIM] */
    llmcu_tensor w1, w2, w3;     /* (HIDDEN, DIM), (DIM, HIDDEN), (HIDDEN, DIM) */
} llmcu_layer;

typedef struct {
    llmcu_tensor tok_embeddings; /* (VOCAB, DIM), type LLMCU_QTYPE_TOK_EMBEDDINGS */
    llmcu_layer layers[LLMCU_N_LAYERS];
    const float *rms_final;      /* [DIM] */
    llmcu_tensor wcls;           /* (VOCAB, DIM): the embedding table itself when the classifier is shared */
} llmcu_weights;

/* The tokenizer, with the encoder's lookup order computed at build time. */
typedef struct {
    const float *scores;     /* [VOCAB] merge scores */
    const uint32_t *offsets; /* [VOCAB + 1]: piece i is bytes[offsets[i] .. offsets[i+1]) */
    const uint8_t *bytes;    /* every piece, concatenated, no terminators */
    const uint32_t *sorted;  /* [VOCAB] token ids ordered by their bytes (strcmp order) */
} llmcu_vocab;

extern const llmcu_weights llmcu_model_weights; /* generated model_weights.c */

/* RoPE from a table computed at build time (codegen, rope_table=yes): row pos holds, for each even head
 * position hd, cosf and sinf of pos * freq(hd) at [hd] and [hd + 1] -- the floats the runtime's own
 * powf/cosf/sinf give (runtime_c/README.md, "RoPE table"), so the results do not change. */
#ifndef LLMCU_ROPE_TABLE
#define LLMCU_ROPE_TABLE 0 /* a model_config.h generated before the option existed */
#endif
#if LLMCU_ROPE_TABLE
extern const float llmcu_rope_table[]; /* [LLMCU_SEQ_LEN][LLMCU_HEAD_SIZE], generated model_data.S */
#endif
extern const llmcu_vocab llmcu_model_vocab;     /* generated model_weights.c */
#if LLMCU_KV_TYPE == LLMCU_KV_Q16
/* [0] key scales, [1] value scales, [2] key scales x log2(e) / sqrt(head_size); generated model_weights.c */
extern const float llmcu_kv_q16_scales[3][LLMCU_N_LAYERS][LLMCU_KV_DIM];
#endif

/* ---- transformer.c ---- */
/* Runs one token at position `pos` (0 <= pos < LLMCU_SEQ_LEN); returns the VOCAB logits. */
float *llmcu_forward(int token, int pos);

/* ---- tokenizer.c ---- */
/* The longest text (bytes) the encoder takes: its working buffer holds a token per byte before merging. Prompts
 * reach firmware as a console line (CONSOLE_LINE_MAX, 1024); hosted programs also take them from the command
 * line, and their build sets more (llmcu.platform.targets.PROMPT_MAX_BYTES). */
#ifndef LLMCU_PROMPT_MAX_BYTES
#define LLMCU_PROMPT_MAX_BYTES 1024
#endif
#define LLMCU_ENCODE_TEXT_TOO_LONG (-1)
/* BPE-encodes `text` (NUL-terminated UTF-8), a BOS and/or EOS added when asked as run.c does. Returns how many
 * tokens the text encodes to, as snprintf does: when that is more than `max_tokens` only the first `max_tokens`
 * are stored, and the caller knows by how much it is over (`tokens` may be NULL when `max_tokens` is 0: a count
 * only). LLMCU_ENCODE_TEXT_TOO_LONG for a text of more than LLMCU_PROMPT_MAX_BYTES bytes. */
int llmcu_encode(const char *text, int bos, int eos, int *tokens, int max_tokens);
/* The bytes to print for `token` following `prev`: leading space dropped after BOS, <0xNN> pieces as
 * raw bytes, unprintable single bytes as nothing (run.c's safe_printf). Sets *len. */
const char *llmcu_decode(int prev, int token, size_t *len);

/* ---- sampler.c ---- */
typedef struct {
    float temperature;  /* 0: greedy (argmax) */
    float topp;         /* nucleus sampling when 0 < topp < 1 */
    uint64_t rng_state; /* run.c's xorshift state, seeded with the seed */
} llmcu_sampler;

void llmcu_sampler_init(llmcu_sampler *s, float temperature, float topp, uint64_t seed);
/* Picks the next token; may scale and softmax `logits` in place as run.c does. */
int llmcu_sample(llmcu_sampler *s, float *logits);

/* ---- the parameters of a generation (gen.c, generate.c) ---- */
typedef struct {
    const char *prompt; /* llmcu_generate's prompt: NULL or "" for none (llmcu_begin takes its own) */
    int steps;          /* forward passes, the prompt's included; 0 or more than the context: the context */
    float temperature;  /* 0: greedy */
    float topp;         /* nucleus sampling when 0 < topp < 1 */
    uint64_t seed;      /* the sampler's xorshift seed, as run.c's -s */
    int records; /* llmcu_generate only: 1 frames the text with the output protocol's markers and records */
} llmcu_params;

/* ---- gen.c: step-wise generation, for an application's super-loop or RTOS task ----
 *
 *     llmcu_gen gen;                                  (the caller's; nothing is allocated)
 *     llmcu_params params = {0};
 *     params.steps = 64;
 *     int rc = llmcu_begin(&gen, "Once upon a time", &params);
 *     const char *piece;
 *     size_t len;
 *     while (rc == LLMCU_OK && (rc = llmcu_next(&gen, &piece, &len)) == LLMCU_OK) {
 *         uart_send(piece, len);                      (the prompt's text first, then the model's)
 *     }
 *     if (rc < 0) { ... llmcu_strerror(rc) ... }   else: gen.reason says why it ended
 *
 * llmcu_next makes at most one forward pass; the concatenated pieces of an fp32 build are llama2.c's output byte
 * for byte. One model per image and one generation at a time, not reentrant: the model's state (KV cache,
 * activations, the prompt's tokens) is static, sized at build time (an export's README gives the bytes of each);
 * nothing is allocated. The stack stays small (the buffers are in the static state); llmcu's own runs report the
 * measured peak (peak_stack, and a firmware export's MEMORY.md). */
#define LLMCU_OK 0
#define LLMCU_DONE 1
#define LLMCU_ERR_ARGUMENT (-1)        /* a NULL generation, prompt, parameters or output pointer */
#define LLMCU_ERR_PROMPT_TOO_LONG (-2) /* more tokens than the context (gen.prompt_tokens says how many), or more
                                          bytes than LLMCU_PROMPT_MAX_BYTES (gen.prompt_tokens is then -1) */
#define LLMCU_ERR_NOT_STARTED (-3)     /* llmcu_next without a successful llmcu_begin */
#define LLMCU_ERR_FINISHED (-4)        /* llmcu_next after it returned LLMCU_DONE */
#define LLMCU_ERR_WEIGHTS_FILE (-5)    /* llmcu_open: the weights file is missing, damaged or another model's */

/* gen.reason after LLMCU_DONE */
#define LLMCU_REASON_NONE 0
#define LLMCU_REASON_STEPS 1        /* the steps asked for were made */
#define LLMCU_REASON_END_OF_TEXT 2  /* the model began a new text (BOS) */
#define LLMCU_REASON_CONTEXT_FULL 3 /* more steps were asked for than the context (or max_steps) holds */
#define LLMCU_REASON_STOPPED 4      /* llmcu_cancel */

typedef struct {
    /* read these */
    int reason;        /* after LLMCU_DONE: LLMCU_REASON_* */
    int pos;           /* forward passes made */
    int steps;         /* the passes this generation may make */
    int prompt_tokens; /* the encoded prompt, BOS included */
    int generated;     /* tokens the sampler chose */
    int fed, next;     /* the last pass: the token it read and the one that follows it */
    uint64_t cost;     /* the last pass's platform_counter ticks (0 without a counter) */
    /* the runtime's */
    int token, state, capped, cancelled;
    llmcu_sampler sampler;
} llmcu_gen;

/* Encodes the prompt and readies the sampler. LLMCU_OK or a negative LLMCU_ERR_*. */
int llmcu_begin(llmcu_gen *gen, const char *prompt, const llmcu_params *params);
/* At most one forward pass: LLMCU_OK with the next piece of text (*piece, *len; possibly empty), LLMCU_DONE
 * (gen->reason says why), or a negative LLMCU_ERR_*. */
int llmcu_next(llmcu_gen *gen, const char **piece, size_t *len);
/* The next llmcu_next ends the generation (LLMCU_DONE, LLMCU_REASON_STOPPED) without a pass. */
void llmcu_cancel(llmcu_gen *gen);
/* What an LLMCU_* code means, and a reason's name ("steps", "end_of_text", "context_full", "stopped"). */
const char *llmcu_strerror(int code);
const char *llmcu_reason_name(int reason);
/* The most forward passes one generation may make (the context, or max_steps with a sliding window). */
int llmcu_max_passes(void);
/* sizeof(llmcu_gen), for bindings that hold one as an opaque buffer (the Python one of an export). */
size_t llmcu_gen_size(void);
/* An export of a weights_file build (its weights in model.bin, not in the library): maps the file read-only over the
 * space the library reserved, after checking it is this model's (header, layout, size, CRC-32); call it before
 * llmcu_begin. LLMCU_OK, or LLMCU_ERR_WEIGHTS_FILE (why on stderr). Defined in the export's src/llmcu_open.c. */
int llmcu_open(const char *path);
/* A firmware export (llmcu_sections.ld) whose plan copies weights to SDRAM at boot (weights=sdram): call this once
 * before the first generation, after the SDRAM works. Defined in the export's src/llmcu_sections.c. */
void llmcu_copy_weights(void);

/* ---- generate.c ---- */
/* Generates text and writes it (and the records) through platform_write; returns 0 or an error code. */
int llmcu_generate(const llmcu_params *params);

#ifdef __cplusplus
}
#endif

#endif /* LLMCU_H */
