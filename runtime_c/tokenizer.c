/*
 * The byte-pair-encoding tokenizer: run.c's encode() and decode() on the linked-in vocabulary.
 *
 * Pieces are byte strings without terminators (offsets[] delimits them). The encoder looks pieces up by
 * binary search over `sorted`, the token ids in strcmp order, computed at build time instead of sorting
 * on the device.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "llmcu.h"

#ifndef LLMCU_ADD_SPACE_PREFIX /* model_config.h defines it */
#define LLMCU_ADD_SPACE_PREFIX 1
#endif

/* Merging never needs more than two pieces side by side, and no piece is longer than
 * LLMCU_MAX_TOKEN_LENGTH, so a longer concatenation cannot be in the vocabulary. */
static uint8_t pair_buffer[LLMCU_MAX_TOKEN_LENGTH * 2 + 1];

/* What decode returns for a <0xHH> piece: valid until the next call. */
static char raw_byte;

static const uint8_t *piece_of(int id, size_t *len) {
    uint32_t start = llmcu_model_vocab.offsets[id];
    *len = llmcu_model_vocab.offsets[id + 1] - start;
    return llmcu_model_vocab.bytes + start;
}

/* strcmp order for strings without NUL bytes: compare the common prefix, then the shorter comes first. */
static int compare_pieces(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len) {
    size_t common = a_len < b_len ? a_len : b_len;
    int c = common > 0 ? memcmp(a, b, common) : 0;
    if (c != 0) {
        return c;
    }
    return (a_len > b_len) - (a_len < b_len);
}

/* The id of the piece equal to text[0..len), or -1. Probes exactly like glibc's bsearch, so that if two
 * tokens had the same piece the same one would be found as in run.c. */
static int lookup(const uint8_t *text, size_t len) {
    size_t lo = 0;
    size_t hi = LLMCU_VOCAB_SIZE;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int id = (int)llmcu_model_vocab.sorted[mid];
        size_t piece_len;
        const uint8_t *piece = piece_of(id, &piece_len);
        int c = compare_pieces(text, len, piece, piece_len);
        if (c < 0) {
            hi = mid;
        } else if (c > 0) {
            lo = mid + 1;
        } else {
            return id;
        }
    }
    return -1;
}

/* The token whose piece is piece(a) followed by piece(b), or -1. */
static int lookup_pair(int a, int b) {
    size_t a_len, b_len;
    const uint8_t *pa = piece_of(a, &a_len);
    const uint8_t *pb = piece_of(b, &b_len);
    if (a_len + b_len > LLMCU_MAX_TOKEN_LENGTH) {
        return -1;
    }
    memcpy(pair_buffer, pa, a_len);
    memcpy(pair_buffer + a_len, pb, b_len);
    return lookup(pair_buffer, a_len + b_len);
}

static int is_continuation(uint8_t byte) { return (byte & 0xC0) == 0x80; }

/*
 * One token per UTF-8 character, as run.c splits the text: a character is a byte plus the continuation
 * bytes that follow it, at most 4 bytes in all. A character missing from the vocabulary becomes one token
 * per byte (byte fallback: the <0xHH> tokens are ids 3..258). At most one token per byte of the text.
 */
static int split_characters(const uint8_t *text, int *tokens, int n) {
    size_t i = 0;
    while (text[i] != '\0') {
        size_t len = 1;
        while (len < 4 && is_continuation(text[i + len])) {
            len++;
        }
        int id = lookup(text + i, len);
        if (id >= 0) {
            tokens[n++] = id;
        } else {
            for (size_t j = 0; j < len; j++) {
                tokens[n++] = text[i + j] + 3;
            }
        }
        i += len;
    }
    return n;
}

/* Merges the adjacent pair with the highest-scoring merged piece (the leftmost on a tie); returns the new
 * token count, or n when no pair merges. */
static int merge_best_pair(int *tokens, int n) {
    float best_score = -1e10f; /* run.c's starting point: pieces scoring lower never merge */
    int best_id = -1;
    int best_at = -1;
    for (int i = 0; i + 1 < n; i++) {
        int id = lookup_pair(tokens[i], tokens[i + 1]);
        if (id >= 0 && llmcu_model_vocab.scores[id] > best_score) {
            best_score = llmcu_model_vocab.scores[id];
            best_id = id;
            best_at = i;
        }
    }
    if (best_at < 0) {
        return n;
    }
    tokens[best_at] = best_id;
    memmove(&tokens[best_at + 1], &tokens[best_at + 2], (size_t)(n - best_at - 2) * sizeof(int));
    return n - 1;
}

/*
 * The merges work on a buffer of their own, sized by the longest text and not by the caller's room: a prompt
 * is measured by the tokens it merges to (a 158-token story is 700 characters), so the caller can refuse one
 * that does not fit its context and say by how much. BOS, the dummy prefix and EOS take the 3 extra entries.
 */
static int encode_work[LLMCU_PROMPT_MAX_BYTES + 3] LLMCU_STATE_ATTR;

int llmcu_encode(const char *text, int bos, int eos, int *tokens, int max_tokens) {
    if (strlen(text) > LLMCU_PROMPT_MAX_BYTES) {
        return LLMCU_ENCODE_TEXT_TOO_LONG;
    }
    int n = 0;
    if (bos) {
        encode_work[n++] = LLMCU_BOS;
    }
    /* SentencePiece's dummy prefix: the text is encoded as if it started with a space (unless the vocabulary
     * says not to: GGUF's tokenizer.ggml.add_space_prefix). */
    if (LLMCU_ADD_SPACE_PREFIX && text[0] != '\0') {
        int space = lookup((const uint8_t *)" ", 1);
        if (space >= 0) {
            encode_work[n++] = space;
        }
    }
    n = split_characters((const uint8_t *)text, encode_work, n);
    for (int merged = merge_best_pair(encode_work, n); merged != n; merged = merge_best_pair(encode_work, n)) {
        n = merged;
    }
    if (eos) {
        encode_work[n++] = LLMCU_EOS;
    }
    int kept = n < max_tokens ? n : max_tokens;
    if (kept > 0) {
        memcpy(tokens, encode_work, (size_t)kept * sizeof(int));
    }
    return n;
}

static int hex_value(uint8_t c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

/* The byte a "<0xHH>" piece stands for, or -1 for any other piece. */
static int byte_piece_value(const uint8_t *p, size_t len) {
    if (len != 6 || p[0] != '<' || p[1] != '0' || p[2] != 'x' || p[5] != '>') {
        return -1;
    }
    int hi = hex_value(p[3]);
    int lo = hex_value(p[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

/* What run.c's safe_printf lets through as a lone byte: printable ASCII or white space. */
static int is_printable_byte(uint8_t c) {
    return (c >= 0x20 && c <= 0x7e) || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

const char *llmcu_decode(int prev, int token, size_t *len) {
    size_t n;
    const uint8_t *p = piece_of(token, &n);
    /* The first token after BOS carries the dummy prefix's space, which is not part of the text. */
    if (prev == LLMCU_BOS && n > 0 && p[0] == ' ') {
        p++;
        n--;
    }
    int byte = byte_piece_value(p, n);
    if (byte >= 0) {
        raw_byte = (char)byte;
        p = (const uint8_t *)&raw_byte;
        n = 1;
    }
    /* Control bytes and stray bytes of multi-byte characters are dropped, which also keeps the output
     * protocol's markers (STX, RS, ETX) out of the text. */
    if (n == 1 && !is_printable_byte(p[0])) {
        n = 0;
    }
    *len = n;
    return (const char *)p;
}
