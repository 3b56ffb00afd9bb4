#!/usr/bin/env python3
"""Host throughput: build a model in each quantization and report tok/s (median, min, max of N runs).

    tools/bench_host.py [--model 260k] [--quants fp32,q8,q4] [--kernels opt,ref] [--runs 5] [--steps 256]
                        [--json bench/host.json]

Each run is a 256-token greedy generation from "Once upon a time"; tok/s is the program's own figure
(forward passes over the time spent in them, from its summary record). --kernels picks the kernel sets to
compare: opt (the host target's optimised set, runtime_c/kernels/x86/; the default) and/or ref (the portable
reference kernels).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from llmcu.core.fileio import write_text_atomic
from llmcu.device.protocol import parse
from llmcu.reports import bench

ROOT = Path(__file__).resolve().parent.parent


def build(model: str, quant: str, extra: dict[str, str], kernels: str = "opt") -> Path:
    options = {"target": "host", "model": model, "quant": quant, "kernels": kernels, **extra}
    return bench.build(options).out_dir / "llmcu"


def measure(program: Path, steps: int, prompt: str) -> float:
    stdout = subprocess.run(
        [str(program), "-p", prompt, "-n", str(steps), "-t", "0"], capture_output=True, check=True
    ).stdout
    return parse(stdout).summary_number("tok_per_s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="260k")
    parser.add_argument("--tokenizer", default="")
    parser.add_argument("--quants", default="fp32,q8,q4")
    parser.add_argument("--kernels", default="opt", help="comma-separated kernel sets: opt, ref")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--prompt", default="Once upon a time")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    extra = {"tokenizer": args.tokenizer} if args.tokenizer else {}
    rows = []
    for quant in args.quants.split(","):
        for kernels in args.kernels.split(","):
            program = build(args.model, quant, extra, kernels)
            rates = [measure(program, args.steps, args.prompt) for _ in range(args.runs)]
            rows.append(
                {
                    "target": "host",
                    "model": args.model,
                    "quant": quant,
                    "kernels": kernels,
                    "runs": args.runs,
                    "tok_per_s": {"min": min(rates), "median": statistics.median(rates), "max": max(rates)},
                }
            )
    print(f"| model | quant | kernels | tok/s median | min | max |  ({args.runs} runs of {args.steps} tokens)")
    print("|---|---|---|---:|---:|---:|")
    for row in rows:
        rate = row["tok_per_s"]
        print(
            f"| {row['model']} | {row['quant']} | {row['kernels']} "
            f"| {rate['median']:.0f} | {rate['min']:.0f} | {rate['max']:.0f} |"
        )
    if args.json:
        write_text_atomic(args.json, json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
