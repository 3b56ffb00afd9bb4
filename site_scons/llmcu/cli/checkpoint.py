"""``llmcu-checkpoint info FILE`` checks a llama2.c checkpoint and prints its format and shape; ``llmcu-checkpoint
random`` writes one of a known shape with random weights (llmcu.model.checkpoint reads and writes them)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..model.checkpoint import (
    PARAM_NAMES,
    PRESETS,
    Checkpoint,
    nonfinite_report,
    random_checkpoint,
    read_checkpoint,
    write_checkpoint,
)
from .common import reported


def _info_lines(ckpt: Checkpoint, file_size: int) -> list[str]:
    config = ckpt.config
    lines = [f"file: {ckpt.path}", f"format: {ckpt.format}", f"bytes: {file_size}"]
    lines += [f"{name}: {getattr(config, name)}" for name in PARAM_NAMES]
    lines += [f"head_size: {config.head_size}", f"shared_classifier: {config.shared_classifier}"]
    if ckpt.source_group_size is not None:
        lines.append(f"group_size: {ckpt.source_group_size}")
    lines.append(f"parameters: {config.parameter_count()}")
    report = nonfinite_report(ckpt)
    if report:
        lines.append("non-finite: " + ", ".join(f"{name} {count}" for name, count in report.items()))
    return lines


def _cmd_info(args: argparse.Namespace) -> int:
    ckpt = read_checkpoint(args.file, allow_nonfinite=args.allow_nonfinite)
    print("\n".join(_info_lines(ckpt, Path(args.file).stat().st_size)))
    return 0


def _cmd_random(args: argparse.Namespace) -> int:
    ckpt = random_checkpoint(PRESETS[args.preset], seed=args.seed, scale=args.scale)
    write_checkpoint(args.out, ckpt, version=args.version, group_size=args.group_size)
    print(f"wrote {args.out}: {args.preset} shape, seed {args.seed}, v{args.version}")
    return 0


def _parser() -> argparse.ArgumentParser:
    description = "Inspect llama2.c checkpoints, or write random ones."
    parser = argparse.ArgumentParser(prog="llmcu-checkpoint", description=description)
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="validate a checkpoint and print its format and shape")
    info.add_argument("file", type=Path)
    info.add_argument("--allow-nonfinite", action="store_true", help="report NaN/Inf weights, do not fail")
    info.set_defaults(run=_cmd_info)
    rand = commands.add_parser("random", help="write a checkpoint of a known shape with random weights")
    rand.add_argument("--preset", choices=sorted(PRESETS), required=True)
    rand.add_argument("--seed", type=int, default=0)
    rand.add_argument("--scale", type=float, default=0.02, help="standard deviation of matrix weights")
    rand.add_argument("--version", type=int, choices=(0, 1, 2), default=0, help="checkpoint format version")
    rand.add_argument("--group-size", type=int, default=64, help="Q8_0 group size (version 2 only)")
    rand.add_argument("out", type=Path)
    rand.set_defaults(run=_cmd_random)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``llmcu-checkpoint`` (``python -m llmcu.cli.checkpoint``); returns the exit status (1 on a checkpoint error)."""
    args = _parser().parse_args(argv)
    return reported("llmcu-checkpoint", lambda: int(args.run(args)))


if __name__ == "__main__":
    sys.exit(main())
