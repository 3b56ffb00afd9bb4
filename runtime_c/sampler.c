/*
 * Choosing the next token from the logits, exactly as run.c's sampler does: greedy at temperature 0,
 * otherwise temperature-scaled softmax, one random number from run.c's xorshift generator, and either
 * plain multinomial sampling or top-p (nucleus) sampling.
 */
#include <float.h>
#include <stdint.h>

#include "kernels/kernels.h"
#include "llmcu.h"

/* Token ids as stored for the top-p sort: 16 bits are enough for every vocabulary up to 65536. */
#if LLMCU_VOCAB_SIZE <= 65536
typedef uint16_t token_index;
#else
typedef uint32_t token_index;
#endif

/* The candidates of top-p sampling, and the merge sort's second buffer. */
static token_index candidates[LLMCU_VOCAB_SIZE] LLMCU_STATE_ATTR;
static token_index sort_scratch[LLMCU_VOCAB_SIZE] LLMCU_STATE_ATTR;

void llmcu_sampler_init(llmcu_sampler *s, float temperature, float topp, uint64_t seed) {
    s->temperature = temperature;
    s->topp = topp;
    s->rng_state = seed;
}

/* xorshift64* (run.c's random_u32). */
static uint32_t random_u32(uint64_t *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1DULL) >> 32);
}

/* A float in [0, 1) from the top 24 bits, which a float holds exactly. */
static float random_f32(uint64_t *state) { return (float)(random_u32(state) >> 8) / 16777216.0f; }

/* The first i whose cumulative probability exceeds coin (the last index if rounding leaves a gap). */
static int sample_multinomial(const float *p, int n, float coin) {
    float cdf = 0.0f;
    for (int i = 0; i < n; i++) {
        cdf += p[i];
        if (coin < cdf) {
            return i;
        }
    }
    return n - 1;
}

/* Merges the sorted runs a[lo..mid) and a[mid..hi) into out[lo..hi), higher probability first. Taking
 * from the right run only when strictly greater keeps equal probabilities in index order (stable), which
 * is the order run.c's qsort (glibc's merge sort) leaves them in. */
static void merge_runs(token_index *out, const token_index *a, int lo, int mid, int hi, const float *p) {
    int i = lo;
    int j = mid;
    int k = lo;
    while (i < mid && j < hi) {
        out[k++] = p[a[j]] > p[a[i]] ? a[j++] : a[i++];
    }
    while (i < mid) {
        out[k++] = a[i++];
    }
    while (j < hi) {
        out[k++] = a[j++];
    }
}

/* Stable bottom-up merge sort of ids[n] by descending p; returns whichever buffer ends up sorted. */
static token_index *sort_by_probability(token_index *ids, token_index *scratch, int n, const float *p) {
    for (int width = 1; width < n; width *= 2) {
        for (int lo = 0; lo < n; lo += 2 * width) {
            int mid = lo + width < n ? lo + width : n;
            int hi = lo + 2 * width < n ? lo + 2 * width : n;
            merge_runs(scratch, ids, lo, mid, hi, p);
        }
        token_index *sorted = scratch;
        scratch = ids;
        ids = sorted;
    }
    return ids;
}

/*
 * Top-p sampling: sample among the most likely tokens whose probabilities add up to just over topp.
 * Tokens below (1 - topp) / (n - 1) cannot be among them, so they are dropped before sorting.
 */
static int sample_topp(const float *p, int n, float topp, float coin) {
    const float cutoff = (1.0f - topp) / (float)(n - 1);
    int count = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] >= cutoff) {
            candidates[count++] = (token_index)i;
        }
    }
    if (count == 0) { /* cannot happen for a real distribution (some p >= 1/n > cutoff); be safe */
        return argmax(p, n);
    }
    const token_index *sorted = sort_by_probability(candidates, sort_scratch, count, p);

    float cumulative = 0.0f;
    int last = count - 1;
    for (int i = 0; i < count; i++) {
        cumulative += p[sorted[i]];
        if (cumulative > topp) {
            last = i;
            break;
        }
    }

    float r = coin * cumulative; /* the coin, scaled to the kept tokens' total */
    float cdf = 0.0f;
    for (int i = 0; i <= last; i++) {
        cdf += p[sorted[i]];
        if (r < cdf) {
            return sorted[i];
        }
    }
    return sorted[last];
}

int llmcu_sample(llmcu_sampler *s, float *logits) {
    const int n = LLMCU_VOCAB_SIZE;
    if (s->temperature == 0.0f) {
        return argmax(logits, n);
    }
    /* A temperature so small (below about 1e-37) that a logit divided by it overflows would give softmax
     * inf - inf = NaN and run.c's sampler then picks token 0 (<unk>) at every step. The distribution it
     * stands for is the greedy one, so that is what such a temperature gets; the coin is still drawn, as at
     * every other nonzero temperature. Finite scaled logits take run.c's path unchanged. */
    float largest = 0.0f;
    for (int i = 0; i < n; i++) {
        float magnitude = logits[i] < 0.0f ? -logits[i] : logits[i];
        largest = magnitude > largest ? magnitude : largest;
    }
    if (!(largest / s->temperature <= FLT_MAX)) {
        (void)random_f32(&s->rng_state);
        return argmax(logits, n);
    }
    for (int i = 0; i < n; i++) {
        logits[i] /= s->temperature;
    }
    softmax(logits, n);
    float coin = random_f32(&s->rng_state);
    if (s->topp <= 0.0f || s->topp >= 1.0f) {
        return sample_multinomial(logits, n, coin);
    }
    return sample_topp(logits, n, s->topp, coin);
}
