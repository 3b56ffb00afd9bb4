"""run.c's sampler: xorshift RNG, argmax, temperature, multinomial and top-p (nucleus) sampling.

All arithmetic is float32 in the order of run.c's C loops (cumulative sums are ``np.cumsum`` with a
float32 accumulator, which is a sequential loop).
"""

from __future__ import annotations

import numpy as np

from .reference import CMath, c_math, softmax

F32 = np.float32
MASK64 = (1 << 64) - 1
XORSHIFT_MULTIPLIER = 0x2545F4914F6CDD1D


class Rng:
    """run.c's ``random_u32``/``random_f32``: a 64-bit xorshift* generator."""

    def __init__(self, seed: int) -> None:
        self.state = seed & MASK64

    def next_u32(self) -> int:
        s = self.state
        s ^= s >> 12
        s = (s ^ (s << 25)) & MASK64
        s ^= s >> 27
        self.state = s
        return ((s * XORSHIFT_MULTIPLIER) & MASK64) >> 32

    def next_f32(self) -> np.float32:
        """A float32 in [0, 1): the top 24 bits of ``next_u32`` over 2^24."""
        return F32(F32(self.next_u32() >> 8) / F32(16777216.0))


def argmax(values: np.ndarray) -> int:
    """The first index of the maximum (run.c keeps the first on ties)."""
    return int(np.argmax(values))


def sample_multinomial(probs: np.ndarray, coin: np.float32) -> int:
    """The first ``i`` with ``coin < cdf[i]`` (``cdf`` a sequential float32 sum), else the last index."""
    cdf = np.cumsum(probs, dtype=F32)
    hits = np.flatnonzero(coin < cdf)
    return int(hits[0]) if hits.size else len(probs) - 1


def sample_topp(probs: np.ndarray, topp: np.float32, coin: np.float32) -> int:
    """Nucleus sampling as run.c does it.

    Candidates are the tokens with ``p >= (1 - topp) / (n - 1)``, ordered by probability descending
    (ties in index order); the nucleus ends at the first candidate where the running sum exceeds
    ``topp`` (or at the last candidate); ``coin`` scaled by the nucleus's sum picks from it.
    """
    n = len(probs)
    cutoff = F32((F32(1.0) - topp) / F32(n - 1)) if n > 1 else F32(0.0)
    candidates = np.flatnonzero(probs >= cutoff)
    ordered = candidates[np.argsort(-probs[candidates], kind="stable")]
    cumulative = np.cumsum(probs[ordered], dtype=F32)
    over = np.flatnonzero(cumulative > topp)
    last = int(over[0]) if over.size else len(ordered) - 1
    r = F32(coin * cumulative[last])
    hits = np.flatnonzero(r < cumulative[: last + 1])
    return int(ordered[hits[0]]) if hits.size else int(ordered[last])


class Sampler:
    """run.c's ``sample``: argmax at temperature 0, else softmax of ``logits / temperature`` and one coin
    from the RNG for multinomial (``topp`` outside (0, 1)) or top-p sampling."""

    def __init__(self, temperature: float, topp: float, seed: int, cmath: CMath | None = None) -> None:
        self.temperature = F32(temperature)
        self.topp = F32(topp)
        self.rng = Rng(seed)
        self.cmath = cmath if cmath is not None else c_math("auto")

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """``softmax(logits / temperature)`` in float32 (temperature must be nonzero)."""
        scaled = (np.asarray(logits, dtype=F32) / self.temperature).astype(F32)
        return softmax(scaled, self.cmath)

    def sample(self, logits: np.ndarray) -> int:
        if self.temperature == F32(0.0):
            return argmax(np.asarray(logits, dtype=F32))
        with np.errstate(over="ignore"):
            overflows = not np.all(np.isfinite(np.asarray(logits, dtype=F32) / self.temperature))
        if overflows:  # a tiny temperature: greedy, after drawing the coin (runtime_c/sampler.c says why)
            self.rng.next_f32()
            return argmax(np.asarray(logits, dtype=F32))
        probs = self.probabilities(logits)
        coin = self.rng.next_f32()
        if self.topp <= 0 or self.topp >= 1:
            return sample_multinomial(probs, coin)
        return sample_topp(probs, self.topp, coin)
