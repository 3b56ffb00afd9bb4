#!/usr/bin/env python3
"""Quantization quality of a model: greedy agreement with fp32 and next-token KL, for q8 and q4.

tools/quant_quality.py [--model 260k] [--group-size 32] [--steps 256] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "site_scons"))

from llmcu import models, project
from llmcu.checkpoint import read_checkpoint
from llmcu.errors import LlmcuError
from llmcu.fileio import write_text_atomic
from llmcu.quality import compare
from llmcu.tokenizer import read_tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="260k", help="preset name or checkpoint path")
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--quants", default="q8,q4")
    parser.add_argument("--group-size", type=int, default=32)
    parser.add_argument("--prompt", default="Once upon a time")
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    try:
        resolved = models.resolve_model(args.model, args.tokenizer, project.MODELS_DIR)
        ckpt = read_checkpoint(resolved.checkpoint)
        tok = read_tokenizer(resolved.tokenizer, ckpt.config.vocab_size)
    except LlmcuError as error:
        print(f"llmcu: error: {error}", file=sys.stderr)
        return 2
    reports = [
        compare(ckpt, tok, quant, args.group_size, prompt=args.prompt, steps=args.steps)
        for quant in args.quants.split(",")
    ]
    print(f"{resolved.name}, prompt {args.prompt!r}, {args.steps} steps, group size {args.group_size}")
    print("| quant | greedy agreement | first divergence | teacher-forced top-1 | mean KL | max KL |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in reports:
        print(
            f"| {r.quant} | {r.greedy_agreement:.3f} | {r.first_divergence} | {r.teacher_forced_top1:.3f} "
            f"| {r.mean_kl:.5f} | {r.max_kl:.4f} |"
        )
    if args.json:
        write_text_atomic(args.json, json.dumps([r.as_dict() for r in reports], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
