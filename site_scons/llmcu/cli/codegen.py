"""``llmcu-codegen``: a model's generated C sources and data (llmcu.builder.codegen) outside a build, for a look at
what a build would link or for a firmware of one's own."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..builder.codegen import GENERATED_FILES, generate
from ..builder.quantreport import write_quant_report
from ..model.kvcache import KV_TYPES
from ..model.quantize import QTYPES, QuantPlan
from ..model.sources import read_model, read_vocab
from .common import reported


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmcu-codegen", description=__doc__)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--tokenizer", required=True, type=Path)
    parser.add_argument("--quant", default="fp32", choices=QTYPES)
    parser.add_argument("--group-size", type=int, default=32)
    parser.add_argument("--overrides", default="", help="per-kind quant, e.g. tok_embeddings=q8,w2=q8")
    parser.add_argument("--seq-len", type=int, default=0, help="context length (0: the model's)")
    parser.add_argument("--kv-type", default="f32", choices=KV_TYPES, help="KV cache element type")
    parser.add_argument("--model-name", default="")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    return reported("llmcu-codegen", lambda: _generate(args), status=2)


def _generate(args: argparse.Namespace) -> int:
    ckpt = read_model(args.checkpoint)
    tok = read_vocab(args.tokenizer, ckpt.config.vocab_size)
    plan = QuantPlan.parse(args.quant, args.group_size, args.overrides)
    model = generate(
        ckpt,
        tok,
        plan,
        args.out,
        model_name=args.model_name or args.checkpoint.stem,
        tokenizer_name=args.tokenizer.name,
        seq_len=args.seq_len,
        progress=sys.stderr.isatty(),
        kv_type=args.kv_type,
    )
    write_quant_report(model, args.out / "quant_report.json", args.out / "quant_report.md")
    print(f"wrote {', '.join(GENERATED_FILES)} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
