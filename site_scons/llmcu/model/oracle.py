"""The oracle: run.c's generation loop on the Python reference, producing run.c's exact standard output.

Command line (the text goes to standard output byte for byte)::

    python -m llmcu.model.oracle --checkpoint stories260K.bin --tokenizer tok512.bin -p "Once upon a time" -n 64
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.errors import LlmcuError
from .kvcache import KV_TYPES
from .quantize import QTYPES
from .reference import MATH_KINDS, Reference
from .sampler import Sampler
from .sources import read_model, read_vocab
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llmcu.model.oracle", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="llama2.c checkpoint (.bin)")
    parser.add_argument("--tokenizer", required=True, help="llama2.c tokenizer (.bin)")
    parser.add_argument("--quant", default="fp32", choices=QTYPES, help="matrix quantization (default fp32)")
    parser.add_argument("--group-size", type=int, default=32, help="quantization group size (default 32)")
    parser.add_argument(
        "--kv-type", default="auto", choices=("auto", *KV_TYPES), help="KV cache element type (default: a build's)"
    )
    parser.add_argument("-p", "-i", "--prompt", default="", help="prompt (default: empty)")
    parser.add_argument("-n", "--steps", type=int, default=256, help="steps, 0 = seq_len (default 256)")
    parser.add_argument("-t", "--temperature", type=float, default=1.0, help="temperature (default 1.0)")
    parser.add_argument("--topp", type=float, default=0.9, help="top-p, outside (0,1) = multinomial")
    parser.add_argument("-s", "--seed", type=int, default=0, help="RNG seed, <= 0 = current time (as run.c)")
    parser.add_argument("--math", default="auto", choices=MATH_KINDS, help="expf/cosf/sinf/powf source")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        ckpt = read_model(args.checkpoint)
        tok = read_vocab(args.tokenizer, ckpt.config.vocab_size)
        model = Reference.from_checkpoint(ckpt, args.quant, args.group_size, math=args.math, kv_type=args.kv_type)
        seed = args.seed if args.seed > 0 else int(time.time())
        result = generate(model, tok, args.prompt, args.steps, args.temperature, args.topp, seed)
    except LlmcuError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(result.text)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
