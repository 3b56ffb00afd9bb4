#!/usr/bin/env python3
"""Which model preset fits which Linux board: docs/models-and-quantization.md's preset table, from the shapes.

tools/preset_fit.py [--target rzv2l] [--ram 2G,1G] [--quants q4,q8,fp32]

Nothing is downloaded or quantized: the RAM a build needs comes from the preset's [shape] the way the build's own
check counts it (llmcu.builder.linuxmem: the weights as model.bin stores them, the tokenizer, the KV cache of the
whole context, the run state, the program and a stack per thread), with the KV type ``kv_type=auto`` tries first
(q16 for quantized weights, f32 for fp32) and the target's threads. Each board column is the RAM left beside
the OS (target.toml's os_reserve, at most a quarter of the board's RAM, as ``board_ram=`` does).
"""

from __future__ import annotations

import argparse
import sys

from llmcu.builder import layouts, linux, linuxmem
from llmcu.core.paths import MODELS_DIR, TARGETS_DIR
from llmcu.model import presets
from llmcu.model.quantize import QuantPlan
from llmcu.platform.targets import load_target, parse_size


def _size(size: int) -> str:
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


def tokenizer_bytes(preset: presets.Preset) -> int:
    """The tokenizer as model.bin stores it: a tokenizer.bin's size (the preset's, when recorded), else about 16
    bytes a piece for a vocabulary read from a GGUF file; plus the encoder's sorted order (8 bytes a piece)."""
    vocab = preset.shape.vocab_size
    own = preset.tokenizer.size if preset.tokenizer is not None and preset.tokenizer.size else 16 * vocab
    return own + 8 * vocab


def rows(target_name: str, boards: list[str], quants: list[str]) -> list[str]:
    target = load_target(target_name, TARGETS_DIR)
    threads = linux.resolve_threads("auto", target)
    rooms = [linuxmem.available(*linux.board_memory(target, parse_size(board, "--ram"))) for board in boards]
    header = ["preset", "download", "quant", "weights", "KV cache", "needs"]
    header += [f"{board.rstrip('BGMgmb')} {board.rstrip('Bb')[-1].upper()}B board: {_size(room)} free"
               for board, room in zip(boards, rooms, strict=True)]  # fmt: skip
    out = ["| " + " | ".join(header) + " |", "|---|---:|---|---:|---:|---:|" + ":---:|" * len(boards)]
    for preset in presets.list_presets(MODELS_DIR).values():
        download = preset.checkpoint.size
        for quant in quants:
            plan = QuantPlan.parse(quant, 32)
            kv_type = "f32" if quant == "fp32" else "q16"
            need = linuxmem.estimate(preset.shape, plan, kv_type, threads, tokenizer_bytes(preset),
                                     layouts.for_kernel_set(target.kernel_set))  # fmt: skip
            fits = ["yes" if need.total <= room else "no" for room in rooms]
            cells = [f"`{preset.name}`", _size(download) if download else "?", quant, _size(need.weights),
                     f"{_size(need.kv_cache)} ({kv_type})", _size(need.total), *fits]  # fmt: skip
            out.append("| " + " | ".join(cells) + " |")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="rzv2l")
    parser.add_argument("--ram", default="2G,1G", help="board RAM sizes, comma-separated")
    parser.add_argument("--quants", default="q4,q8,fp32")
    args = parser.parse_args()
    print("\n".join(rows(args.target, args.ram.split(","), args.quants.split(","))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
