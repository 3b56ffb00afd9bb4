"""The host side of the firmware's console command (runtime_c/console.h, targets/cortex-m/firmware_main.c).

A flashed firmware waits for one line that says what to generate::

    run steps=256 temperature=0.8 topp=0.95 seed=1 prompt=Once%20upon%20a%20time\\n

Numbers go as Python writes them (``repr`` for floats, the shortest text that reads back as the same
double), so the firmware's parser sees the same digits the host program gets on its command line. The
prompt is UTF-8 with every byte outside ``A-Z a-z 0-9 - . _ ~`` written as ``%XX``.
"""

from __future__ import annotations

import math
from typing import Protocol

from ..core.errors import OptionError

LINE_MAX = 1024  # bytes before the newline: CONSOLE_LINE_MAX in runtime_c/console.h
MAX_STEPS = 1_000_000_000
PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class CommandParams(Protocol):
    """What a run needs; llmcu.builder.settings.RunParams is one."""

    @property
    def prompt(self) -> str: ...
    @property
    def steps(self) -> int: ...
    @property
    def temperature(self) -> float: ...
    @property
    def topp(self) -> float: ...
    @property
    def seed(self) -> int: ...


def percent_encode(data: bytes) -> str:
    return "".join(chr(byte) if byte in PLAIN else f"%{byte:02X}" for byte in data)


def encode_command(params: CommandParams) -> bytes:
    """The ``run`` line for ``params``, newline included; raises OptionError for what the firmware would refuse."""
    steps, seed = int(params.steps), int(params.seed)
    # + 0.0 turns -0.0 into 0.0: the firmware's numbers have no sign.
    temperature, topp = float(params.temperature) + 0.0, float(params.topp) + 0.0
    if not 0 <= steps <= MAX_STEPS:
        raise OptionError(f"steps={steps} is out of range: 0..{MAX_STEPS}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise OptionError(f"temperature={temperature!r} must be a finite number >= 0")
    if not 0.0 <= topp <= 1.0:  # also refuses NaN
        raise OptionError(f"topp={topp!r} must be between 0 and 1")
    if not 1 <= seed < 1 << 64:
        raise OptionError(f"seed={seed} must be between 1 and 2^64-1 (0 would stall the sampler's generator)")
    prompt = params.prompt.encode("utf-8")
    if b"\0" in prompt:
        raise OptionError("the prompt contains a NUL character, which the firmware cannot take")
    line = (
        f"run steps={steps} temperature={temperature!r} topp={topp!r} seed={seed} prompt={percent_encode(prompt)}"
    ).encode("ascii")
    if len(line) > LINE_MAX:
        raise OptionError(
            f"the prompt is too long for the firmware's console: the command is {len(line)} bytes with the prompt "
            f"percent-encoded, at most {LINE_MAX} fit"
        )
    return line + b"\n"
