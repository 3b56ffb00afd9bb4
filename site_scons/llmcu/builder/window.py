"""overflow=slide: a KV cache that keeps the first ``sinks`` positions and a ring of the most recent ones, so that a
generation goes on past the context (runtime_c/README.md, "Sliding window"; transformer.c's kv_slot and rope_beyond;
llmcu.model.reference for the oracle)."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import OptionError

DEFAULT_SINKS = 4
DEFAULT_MAX_STEPS = 1024


@dataclass(frozen=True)
class SlidingWindow:
    """The sinks, and the most forward passes one run makes (their records are kept for the output protocol,
    12 bytes each)."""

    sinks: int = DEFAULT_SINKS
    max_steps: int = DEFAULT_MAX_STEPS


def check_window(window: SlidingWindow, seq_len: int) -> None:
    """overflow=slide needs a ring of at least two positions beside the sinks and records for the whole cache."""
    if not 0 <= window.sinks <= seq_len - 2:
        raise OptionError(
            f"sinks={window.sinks} with seq_len={seq_len}: overflow=slide keeps the sinks and a ring of the most "
            f"recent positions in the cache, so sinks must be between 0 and seq_len - 2 = {seq_len - 2}"
        )
    if window.max_steps < seq_len:
        raise OptionError(
            f"max_steps={window.max_steps} is below seq_len={seq_len}: a slid run records at least the whole cache"
        )
