/*
 * Fuzz target: the runtime's BPE tokenizer (runtime_c/tokenizer.c) on the linked-in vocabulary of a model
 * build (its generated model_weights.c and model_data.S).
 *
 * The input's first byte picks the token budget (1..LLMCU_SEQ_LEN, as the generation loop's prompt buffer
 * bounds it), the rest is the text (NUL bytes stand for the end of the C string, as a prompt would have
 * them). Checked besides the sanitizers' own checks:
 *   - llmcu_encode returns -1 (a text longer than LLMCU_PROMPT_MAX_BYTES) or the count the text needs whatever
 *     the budget, storing no more than the budget: the first tokens of the same sequence, BOS first and every id
 *     in the vocabulary;
 *   - decoding every token (after its predecessor, as the generation loop does) gives a piece within the
 *     vocabulary's bytes, and no single unprintable byte (the protocol's markers must stay out of the text);
 *   - for printable ASCII text the decoded pieces put together are the text again.
 */
#include <string.h>

#include "fuzz.h"
#include "llmcu.h"

const char *const fuzz_seeds[] = {
    "\x40Once upon a time",
    "\x10Tom and his dog",
    "\xff\xc3\xa9t\xc3\xa9 \xf0\x9f\xa6\x99 \xe2\x82",
    "\x03  leading spaces and a very long word: supercalifragilisticexpialidocious",
    "\x80\x01\x02\x7f\x80\xff",
};
const size_t fuzz_seed_count = sizeof fuzz_seeds / sizeof fuzz_seeds[0];

static int is_printable_ascii(const char *text) {
    for (; *text != '\0'; text++) {
        if ((uint8_t)*text < 0x20 || (uint8_t)*text > 0x7E) {
            return 0;
        }
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char text[8192];
    static int tokens[LLMCU_SEQ_LEN];
    static int more[LLMCU_SEQ_LEN];
    static char joined[sizeof text];
    if (size == 0) {
        return 0;
    }
    int budget = 1 + data[0] % LLMCU_SEQ_LEN;
    size_t len = size - 1 < sizeof text - 1 ? size - 1 : sizeof text - 1;
    memcpy(text, data + 1, len);
    text[len] = '\0';

    int n = llmcu_encode(text, 1, 0, tokens, budget);
    FUZZ_CHECK(n == -1 || n >= 1);
    FUZZ_CHECK((n == -1) == (strlen(text) > LLMCU_PROMPT_MAX_BYTES));
    int full = llmcu_encode(text, 1, 0, more, LLMCU_SEQ_LEN);
    FUZZ_CHECK(full == n);
    if (n > 0) {
        int stored = n < budget ? n : budget;
        FUZZ_CHECK(memcmp(tokens, more, (size_t)stored * sizeof(int)) == 0);
    }
    if (full < 0 || full > LLMCU_SEQ_LEN) {
        return 0;
    }
    FUZZ_CHECK(more[0] == LLMCU_BOS);
    size_t at = 0;
    for (int i = 0; i < full; i++) {
        FUZZ_CHECK(more[i] >= 0 && more[i] < LLMCU_VOCAB_SIZE);
        if (i == 0) {
            continue;
        }
        size_t piece_len;
        const char *piece = llmcu_decode(more[i - 1], more[i], &piece_len);
        FUZZ_CHECK(piece_len <= LLMCU_MAX_TOKEN_LENGTH);
        if (piece_len == 1) {
            uint8_t c = (uint8_t)piece[0];
            FUZZ_CHECK((c >= 0x20 && c <= 0x7E) || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r');
        }
        if (at + piece_len < sizeof joined) {
            memcpy(joined + at, piece, piece_len);
            at += piece_len;
        }
    }
    joined[at] = '\0';
    if (is_printable_ascii(text)) {
        FUZZ_CHECK(strcmp(joined, text) == 0);
    }
    /* Decoding arbitrary pairs, as a corrupted token stream would ask for. */
    if (size >= 5) {
        int prev = (data[1] | data[2] << 8) % LLMCU_VOCAB_SIZE;
        int token = (data[3] | data[4] << 8) % LLMCU_VOCAB_SIZE;
        size_t piece_len;
        llmcu_decode(prev, token, &piece_len);
        FUZZ_CHECK(piece_len <= LLMCU_MAX_TOKEN_LENGTH);
    }
    return 0;
}
