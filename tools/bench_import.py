#!/usr/bin/env python3
"""What a big imported model costs: a random model of a real shape (TinyLlama-1.1B's by default) written as a GGUF
file, built for the RZ/V2L with quant=q4 (build time, peak memory of the build, model.bin's size, the planner's RAM
figure), then run under qemu-aarch64 with threads=1 and threads=2 (instructions per token, wall time per token).

    python3 tools/bench_import.py                       # TinyLlama-1.1B's shape, 8 tokens
    python3 tools/bench_import.py --shape 110m --steps 16
    python3 tools/bench_import.py --json bench/import_1b.json
    python3 tools/bench_import.py --source Q4_0 --fit default --json bench/import_1b_q4_0.json   # a preset's path

The weights are random (the figures are about size and speed, not text), so nothing is downloaded. qemu-aarch64
runs guest threads on host threads, so the threads=2 wall time shows how the matrix products split, on this
machine's cores; the instruction counts are the A55's work, not its time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from llmcu.core.config import ModelConfig
from llmcu.model.checkpoint import Checkpoint
from llmcu.model.gguf_writer import write_gguf
from llmcu.model.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]

SHAPES = {
    # dim, hidden_dim, layers, heads, kv heads, vocab, context: TinyLlama-1.1B and a Llama-2-style 110M
    "1.1b": ModelConfig(2048, 5632, 22, 32, 4, 32000, 2048, False, 10000.0, 1e-5),
    "110m": ModelConfig(768, 2048, 12, 12, 12, 32000, 1024, True, 10000.0, 1e-5),
}


def random_model(config: ModelConfig, seed: int = 0) -> Checkpoint:
    """float32 weights of ``config``'s shapes, scaled like a trained model's (about 1/sqrt(fan-in))."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in config.tensor_shapes().items():
        if name.startswith("rms"):
            weights[name] = np.ones(shape, dtype=np.float32)
        else:
            scale = 1.0 / np.sqrt(shape[-1])
            weights[name] = (rng.standard_normal(shape, dtype=np.float32) * np.float32(scale)).astype(np.float32)
    return Checkpoint(config, weights)


def vocabulary(size: int) -> Tokenizer:
    """A sentencepiece-style vocabulary: unk, BOS, EOS, the 256 byte pieces, then made-up words."""
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n", *(f"<0x{b:02X}>".encode() for b in range(256))]
    pieces += [f" w{i}".encode() for i in range(size - len(pieces))]
    scores = -np.arange(size, dtype=np.float32)
    return Tokenizer(pieces, scores, max(len(p) for p in pieces))


def _children_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="1.1b")
    parser.add_argument("--quant", default="q4")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--work", type=Path, default=Path("/tmp/llmcu-bench-import"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--source", choices=("F16", "Q8_0", "Q4_0"), default="F16",
                        help="the GGUF file's matrix type (Q4_0 with --quant q4 keeps its codes, as the TinyLlama "
                        "presets do)")  # fmt: skip
    parser.add_argument(
        "--fit",
        choices=("absmax", "default"),
        default="absmax",
        help="absmax: fit=absmax calib=none; default: the build's own defaults (GPTQ, calibration)",
    )
    args = parser.parse_args(argv)
    config = SHAPES[args.shape]
    args.work.mkdir(parents=True, exist_ok=True)
    gguf_path = args.work / f"random-{args.shape}{'' if args.source == 'F16' else '-' + args.source}.gguf"
    figures: dict[str, object] = {"shape": args.shape, "parameters": config.parameter_count(), "quant": args.quant,
                                  "source": args.source, "fit": args.fit}  # fmt: skip
    if not gguf_path.is_file():
        started = time.monotonic()
        write_gguf(gguf_path, random_model(config), vocabulary(config.vocab_size), qtype=args.source)
        figures["gguf_write_s"] = round(time.monotonic() - started, 1)
    figures["gguf_bytes"] = gguf_path.stat().st_size
    env = dict(os.environ, LLMCU_MODELS=os.environ.get("LLMCU_MODELS", str(ROOT.parent / "shared" / "models")))
    fit = ["fit=absmax", "calib=none"] if args.fit == "absmax" else []
    build = ["target=rzv2l", f"model={gguf_path}", f"quant={args.quant}", *fit, f"build_dir={args.work / 'build'}"]
    shutil.rmtree(args.work / "build", ignore_errors=True)  # a clean build: its time and memory are the figures
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "SCons", "-Q", *build], cwd=ROOT, env=env, capture_output=True,
                            text=True)  # fmt: skip
    if result.returncode != 0:
        print(result.stdout[-3000:], result.stderr[-3000:], file=sys.stderr)
        return 1
    figures["build_s"] = round(time.monotonic() - started, 1)
    figures["build_peak_rss_mib"] = round(_children_peak_mib(), 0)
    (out_dir,) = [path.parent for path in (args.work / "build" / "rzv2l").glob("*/llmcu")]
    model_bin = out_dir / "model.bin"
    figures["model_bin_bytes"] = model_bin.stat().st_size if model_bin.is_file() else 0
    from llmcu.device import qemu_user

    program = out_dir / "llmcu"
    # The A55's work: instructions per token (the plugin counts them; one thread, so the count repeats). Then the
    # emulated run's own clock (ns per token on this machine) with 1 and with 2 threads: how the split scales.
    for name, threads, count in (("instructions", 1, True), ("threads1", 1, False), ("threads2", 2, False)):
        args_run = ["-p", "w1 w2", "-n", str(args.steps), "-t", "0", "-j", str(threads)]
        if model_bin.is_file():
            args_run += ["-w", str(model_bin)]
        started = time.monotonic()
        emulator = qemu_user.QemuUser("qemu-aarch64", "max")  # the RZ/V2L target's [run] qemu, qemu_cpu
        output = qemu_user.run_program(program, args_run, emulator, plugin_dir=args.work / "plugin",
                                       count_instructions=count)  # fmt: skip
        figures[name] = {
            "wall_s": round(time.monotonic() - started, 1),
            "tokens": len(output.tokens),
            "cost_per_token": round(output.summary_number("cost_per_token")),
            "unit": output.header.get("unit", ""),
        }
    one, two = figures["threads1"]["cost_per_token"], figures["threads2"]["cost_per_token"]  # type: ignore[index]
    figures["threads2_speedup"] = round(one / two, 2) if two else None
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
