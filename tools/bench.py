#!/usr/bin/env python3
"""Benchmark matrix: exact instructions per token on the QEMU twins, host tok/s, code size, estimates.

    tools/bench.py [--targets host,qemu-m7] [--models 260k] [--quants fp32,q8,q4] [--kernels ref,opt]
                   [--numerics exact,fast] [--runs 5] [--out bench] [--baseline bench/baseline.json] [--save-baseline]
    tools/bench.py --peer [--machines a55,host] [--models 260k,15m-shaped,110m-shaped] [--quants fp32,q8,q4]

Writes OUT/results.json (bench/README.md documents the schema), OUT/results.md and OUT/instructions.png, and lists
regressions against the baseline (exit status 1 when there are any). With --peer: llama.cpp beside llmcu on the
same GGUF files (instructions per token under qemu-aarch64, host tok/s), into OUT/peer.json and OUT/peer.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmcu.core.errors import LlmcuError
from llmcu.core.fileio import write_text_atomic
from llmcu.reports import bench, peer

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="host,qemu-m7,rzv2l")
    parser.add_argument("--models", help="default: 260k,15m-shaped (with --peer: 260k,15m-shaped,110m-shaped)")
    parser.add_argument("--quants", default="fp32,q8,q4")
    parser.add_argument("--kernels", default="ref,opt")
    parser.add_argument(
        "--numerics", default="exact,fast", help="exact, fast or both (fast rows only for kernel sets that have it)"
    )
    parser.add_argument("--runs", type=int, default=5, help="host runs per row (median, min, max)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    parser.add_argument("--baseline", type=Path, default=ROOT / "bench" / "baseline.json")
    parser.add_argument("--save-baseline", action="store_true", help="also write the results as the baseline")
    parser.add_argument("--merge", action="store_true", help="update the rows of OUT/results.json, keep the others")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra scons option")
    parser.add_argument(
        "--board-study", action="store_true", help="add the 15M-shaped q4 rows of the external-memory board (twin)"
    )
    parser.add_argument(
        "--slide-study", action="store_true", help="add the overflow=slide row (a 64-position window on the M7 twin)"
    )
    parser.add_argument(
        "--selftest-log",
        type=Path,
        help="a board's self-test log folder (or selftest.json): its measured read bandwidths replace the assumed "
        "ones in the on-chip estimates",
    )
    parser.add_argument("--peer", action="store_true", help="llama.cpp beside llmcu (bench/README.md, 'The peer')")
    parser.add_argument("--machines", default="a55,host", help="--peer: a55 (qemu-aarch64), host or both")
    args = parser.parse_args(argv)
    if args.peer:
        return run_peer(args)
    args.models = args.models or "260k,15m-shaped"
    extra = dict(item.split("=", 1) for item in args.set)
    if args.selftest_log is not None:
        from llmcu.device.selftest import bandwidths_from_log

        bench.MEASURED_BANDWIDTH.update(bandwidths_from_log(args.selftest_log))
    try:
        rows = bench.run_matrix(
            args.targets.split(","), args.models.split(","), args.quants.split(","), args.kernels.split(","),
            numerics=args.numerics.split(","), runs=args.runs, extra=extra,
            progress=lambda line: print(line, file=sys.stderr),
        )  # fmt: skip
        if args.board_study:
            target, board, model, quant, placements = bench.BOARD_STUDY
            for placement in placements:
                print(f"bench {target} board={board} {model} {quant} {placement}", file=sys.stderr)
                rows.append(bench.bench_board(target, board, model, quant, placement))
        if args.slide_study:
            print(f"bench {' '.join(str(part) for part in bench.SLIDE_STUDY)}", file=sys.stderr)
            rows.append(bench.bench_slide())
    except LlmcuError as error:
        print(f"llmcu: error: {error}", file=sys.stderr)
        return 2
    if args.merge and (args.out / "results.json").is_file():
        rows = bench.merge(bench.load_rows(args.out / "results.json"), rows)
    bench.write_results(rows, args.out)
    if not bench.plot(rows, args.out / "instructions.png"):
        print(
            f"bench: no row with its per-position curve; {args.out / 'instructions.png'} left as it was",
            file=sys.stderr,
        )
    print("\n".join(bench.markdown(rows)))
    if args.save_baseline:
        write_text_atomic(args.baseline, json.dumps([row.as_dict() for row in rows], indent=2) + "\n")
    regressions = bench.compare(rows, json.loads(args.baseline.read_text())) if args.baseline.is_file() else []
    for line in regressions:
        print(f"REGRESSION {line}")
    return 1 if regressions else 0


def run_peer(args: argparse.Namespace) -> int:
    try:
        rows = peer.run_peer(
            (args.models or ",".join(peer.PEER_MODELS)).split(","), args.quants.split(","), args.machines.split(","),
            runs=args.runs, progress=lambda line: print(line, file=sys.stderr),
        )  # fmt: skip
    except LlmcuError as error:
        print(f"llmcu: error: {error}", file=sys.stderr)
        return 2
    if args.merge and (args.out / "peer.json").is_file():
        rows = bench.merge(peer.load_rows(args.out / "peer.json"), rows)
    peer.write_results(rows, args.out)
    print("\n".join(peer.markdown(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
