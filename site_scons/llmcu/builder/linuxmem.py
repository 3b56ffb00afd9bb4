"""Does a Linux target's program fit its board's RAM? The planner's counterpart for the RZ/V2L.

A Linux board has one RAM for everything: the kernel and the BSP's services keep ``os_reserve`` of it
(target.toml), and the program needs the rest for its weights (model.bin, mapped and read in full every token,
so resident; or linked into the program), the tokenizer, the KV cache, the run state and a stack per thread.
The check runs before any C is generated; a build that does not fit is one error that names every part with its
size and what is left, followed by the changes that were planned again and fit (llmcu.builder.advice).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.config import ModelConfig
from ..model.kvcache import kv_cache_bytes
from ..model.quantize import QuantPlan
from ..platform.targets import PROMPT_MAX_BYTES
from .layouts import REFERENCE, stored_bytes
from .memplan import FitError, run_state_bytes

THREAD_STACK_BYTES = 1 << 20  # what a worker thread's stack and its kernel bookkeeping take when resident (1 MiB)
PROGRAM_BYTES = 4 << 20  # the static program's code, libc and heap around the model (4 MiB)


@dataclass(frozen=True)
class LinuxNeeds:
    """What a Linux program keeps in RAM, part by part."""

    weights: int
    tokenizer: int
    kv_cache: int
    run_state: int
    threads: int

    @property
    def parts(self) -> list[tuple[str, int]]:
        return [
            ("weights", self.weights),
            ("tokenizer", self.tokenizer),
            ("KV cache", self.kv_cache),
            ("run state", self.run_state),
            (f"program and {self.threads} thread stack{'s' if self.threads != 1 else ''}",
             PROGRAM_BYTES + self.threads * THREAD_STACK_BYTES),
        ]  # fmt: skip

    @property
    def total(self) -> int:
        return sum(size for _, size in self.parts)


def needs(model: object, kv_type: str, threads: int) -> LinuxNeeds:
    """The RAM a generated model (llmcu.builder.codegen.GeneratedModel) needs with ``kv_type`` and ``threads``."""
    config, seq_len = model.config, model.seq_len  # type: ignore[attr-defined]
    return LinuxNeeds(
        weights=model.weight_bytes(),  # type: ignore[attr-defined]
        tokenizer=model.tokenizer_bytes(),  # type: ignore[attr-defined]
        kv_cache=kv_cache_bytes(config, seq_len, kv_type),
        run_state=run_state_bytes(
            config,
            seq_len,
            model.plan.group_size,
            kv_type,
            model.records,
            PROMPT_MAX_BYTES["linux"],  # type: ignore[attr-defined]
        ),
        threads=max(1, threads),
    )


def weight_bytes(config: ModelConfig, plan: QuantPlan, layout: str = REFERENCE) -> int:
    """The weights' bytes from the model's shape alone (no tensor read): each matrix in its quantization and in the
    kernel set's ``layout`` (llmcu.builder.layouts), the norms in float32, as model.bin stores them."""
    total = 0
    for name, shape in config.tensor_shapes().items():
        *lead, rows, cols = shape if len(shape) >= 2 else (1, *shape)
        count = 1
        for extent in lead:
            count *= extent
        if name in ("rms_att", "rms_ffn", "rms_final"):  # vectors, never in a matrix layout
            total += count * rows * cols * 4
            continue
        total += count * stored_bytes(plan.qtype(name), rows, cols, plan.group_size, layout)
    return total


def estimate(config: ModelConfig, plan: QuantPlan, kv_type: str, threads: int, tokenizer_bytes: int,
             layout: str = REFERENCE) -> LinuxNeeds:  # fmt: skip
    """:func:`needs` from the shape alone, before a model is downloaded or quantized (the preset table of
    docs/models-and-quantization.md); ``layout``: the kernel set's weight layout."""
    return LinuxNeeds(
        weights=weight_bytes(config, plan, layout),
        tokenizer=tokenizer_bytes,
        kv_cache=kv_cache_bytes(config, config.seq_len, kv_type),
        run_state=run_state_bytes(config, config.seq_len, plan.group_size, kv_type, 0, PROMPT_MAX_BYTES["linux"]),
        threads=max(1, threads),
    )


def available(ram_bytes: int, os_reserve_bytes: int) -> int:
    return ram_bytes - os_reserve_bytes


def check(target_name: str, ram_bytes: int, os_reserve_bytes: int, need: LinuxNeeds) -> None:
    """Raises a FitError naming every part when ``need`` exceeds the RAM left beside the OS."""
    if ram_bytes <= 0:
        return
    room = available(ram_bytes, os_reserve_bytes)
    if need.total <= room:
        return
    listing = ", ".join(f"{name} {_mib(size)}" for name, size in need.parts)
    raise FitError(
        f"the program does not fit the {target_name} board's RAM: it needs {_mib(need.total)} ({listing}), and "
        f"{_mib(room)} of the board's {_mib(ram_bytes)} is left beside the {_mib(os_reserve_bytes)} the OS keeps "
        f"(board_ram= if the board has more)"
    )


def _mib(size: int) -> str:
    if size >= 1 << 20:
        return f"{size / (1 << 20):,.1f} MiB"
    return f"{size:,} bytes"
