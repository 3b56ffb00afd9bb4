"""The oracle: run.c's generation loop on the Python reference, producing run.c's exact standard output
(``llmcu-oracle``, llmcu.cli.oracle, is its command line)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .reference import Reference
from .sampler import Sampler
from .tokenizer import BOS, Tokenizer, printable


@dataclass
class GenerationResult:
    """What one generation produced.

    ``tokens[pos]`` is the token fed at position ``pos`` and ``tokens[pos + 1]`` the one chosen there, so
    there were ``len(tokens) - 1`` forward passes; a final BOS (which stopped the loop) is included.
    """

    text: bytes
    tokens: list[int]
    prompt_tokens: int
    logits: list[np.ndarray] | None = None

    @property
    def forward_passes(self) -> int:
        return len(self.tokens) - 1

    @property
    def generated(self) -> int:
        """How many tokens the sampler chose (forward passes past the prompt)."""
        return max(0, self.forward_passes - (self.prompt_tokens - 1))


def effective_steps(steps: int, seq_len: int) -> int:
    """run.c: a negative count is 0, and 0 or more than ``seq_len`` means ``seq_len``."""
    steps = max(steps, 0)
    return seq_len if steps == 0 or steps > seq_len else steps


def generate(
    model: Reference,
    tok: Tokenizer,
    prompt: str | bytes,
    steps: int,
    temperature: float,
    topp: float,
    seed: int,
    keep_logits: bool = False,
) -> GenerationResult:
    """run.c's ``generate``. ``seed`` is the RNG state as given (run.c replaces a seed <= 0 by the time,
    which the command line below also does). Like run.c's ``main``, a negative temperature means 0 and a
    ``topp`` outside [0, 1] means 0.9."""
    temperature = max(temperature, 0.0)
    topp = 0.9 if topp < 0.0 or topp > 1.0 else topp
    steps = effective_steps(steps, getattr(model, "max_passes", model.config.seq_len))
    sampler = Sampler(temperature, topp, seed, model.cmath)
    prompt_ids = tok.encode_prompt(prompt)
    tokens = [prompt_ids[0]]
    logits_log: list[np.ndarray] | None = [] if keep_logits else None
    text = bytearray()
    token = prompt_ids[0]
    if token != BOS:  # a vocabulary without BOS (add_bos_token false): the first word is shown too
        text += printable(tok.decode(BOS, token))
    for pos in range(steps):
        logits = model.forward(token, pos)
        if logits_log is not None:
            logits_log.append(logits)
        nxt = prompt_ids[pos + 1] if pos < len(prompt_ids) - 1 else sampler.sample(logits)
        tokens.append(nxt)
        if nxt == BOS:
            break
        text += printable(tok.decode(token, nxt))
        token = nxt
    text += b"\n"
    return GenerationResult(bytes(text), tokens, len(prompt_ids), logits_log)
