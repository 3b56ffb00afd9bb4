#!/usr/bin/env python3
"""Quantization quality of a model against fp32: weight bytes, greedy agreement, teacher-forced top-1 and KL.

tools/quant_quality.py [--model 260k] [--quants q8,q4,q4z,q4z+tok_embeddings=q8] [--fits absmax,search,gptq]
                       [--group-size 32] [--steps 256] [--prompts ...] [--json out.json]

A quant is a type (fp32, q8, q4, q4z) or a mix as a build names it (``q4z+tok_embeddings=q8+wk=q8``). Each row
is averaged over the evaluation prompts (llmcu.model.quality.EVALUATION_PROMPTS by default): fp32's greedy
continuation of each, which the calibration text (stories sampled from BOS) does not contain. "First
divergence" is where the free-running greedy text of the first prompt first differs from fp32's, in tokens
after the prompt ("-" when it never does).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from llmcu.core.errors import LlmcuError
from llmcu.core.fileio import write_text_atomic
from llmcu.core.paths import MODELS_DIR
from llmcu.model import models
from llmcu.model.quality import EVALUATION_PROMPTS, compare, fp32_baseline
from llmcu.model.quantize import QuantPlan, quantize_checkpoint
from llmcu.model.sources import read_model, read_vocab


def parse_mix(text: str, group_size: int, fit: str) -> QuantPlan:
    """``q4z+tok_embeddings=q8`` -> a plan."""
    default, *extras = text.split("+")
    return QuantPlan.parse(default, group_size, ",".join(extras), fit)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="260k", help="preset name or checkpoint path")
    parser.add_argument("--tokenizer", default=None)
    parser.add_argument("--quants", default="q8,q4,q4z")
    parser.add_argument("--fits", default="gptq", help="comma-separated: absmax, search, gptq")
    parser.add_argument("--group-size", type=int, default=32)
    parser.add_argument("--prompts", nargs="+", default=list(EVALUATION_PROMPTS))
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    try:
        resolved = models.resolve_model(args.model, args.tokenizer, MODELS_DIR)
        ckpt = read_model(resolved.checkpoint)
        tok = read_vocab(resolved.tokenizer, ckpt.config.vocab_size)
        norms = sum(int(np.size(ckpt.weights[name])) * 4 for name in ("rms_att", "rms_ffn", "rms_final"))
        baselines = [fp32_baseline(ckpt, tok, prompt, args.steps) for prompt in args.prompts]
        rows = []
        for fit in args.fits.split(","):
            for mix in args.quants.split(","):
                plan = parse_mix(mix, args.group_size, fit)
                weight_bytes = norms + sum(m.nbytes() for m in quantize_checkpoint(ckpt, plan, tok).values())
                kinds = dict(plan.overrides)
                reports = [
                    compare(ckpt, tok, plan.default, plan.group_size, kinds, text, args.steps, baseline=base, fit=fit)
                    for text, base in zip(args.prompts, baselines, strict=True)
                ]
                rows.append(
                    {
                        "quant": plan.name,
                        "fit": fit if plan.quantized else "-",
                        "group_size": plan.group_size,
                        "weight_bytes": weight_bytes,
                        "bits_per_weight": 8 * weight_bytes / ckpt.config.parameter_count(),
                        "greedy_agreement": float(np.mean([r.greedy_agreement for r in reports])),
                        "first_divergence": reports[0].first_divergence,
                        "teacher_forced_top1": float(np.mean([r.teacher_forced_top1 for r in reports])),
                        "mean_kl": float(np.mean([r.mean_kl for r in reports])),
                        "positions": sum(r.positions for r in reports),
                    }
                )
                print(f"  {plan.name} ({fit}) done", file=sys.stderr, flush=True)
    except LlmcuError as error:
        print(f"llmcu: error: {error}", file=sys.stderr)
        return 2
    print(f"{resolved.name}, {len(args.prompts)} prompts x {args.steps} steps, group size {args.group_size}")
    print("| quant | fit | weight bytes | bits/weight | greedy agreement | first divergence | top-1 | mean KL |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        divergence = "-" if r["first_divergence"] is None else r["first_divergence"]
        print(
            f"| {r['quant']} | {r['fit']} | {r['weight_bytes']:,} | {r['bits_per_weight']:.2f} "
            f"| {r['greedy_agreement']:.3f} | {divergence} | {r['teacher_forced_top1']:.3f} | {r['mean_kl']:.4f} |"
        )
    if args.json:
        write_text_atomic(args.json, json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
