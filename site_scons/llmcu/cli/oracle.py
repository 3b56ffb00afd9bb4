"""The oracle's command line: run.c's generation on the Python reference, its standard output byte for byte::

llmcu-oracle --checkpoint stories260K.bin --tokenizer tok512.bin -p "Once upon a time" -n 64
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from ..model.kvcache import KV_TYPES
from ..model.oracle import generate
from ..model.quantize import QTYPES
from ..model.reference import MATH_KINDS, Reference
from ..model.sources import read_model, read_vocab
from .common import reported


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmcu-oracle", description=__doc__.split("\n")[0])
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
    return reported("llmcu-oracle", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    ckpt = read_model(args.checkpoint)
    tok = read_vocab(args.tokenizer, ckpt.config.vocab_size)
    model = Reference.from_checkpoint(ckpt, args.quant, args.group_size, math=args.math, kv_type=args.kv_type)
    seed = args.seed if args.seed > 0 else int(time.time())
    result = generate(model, tok, args.prompt, args.steps, args.temperature, args.topp, seed)
    sys.stdout.buffer.write(result.text)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
