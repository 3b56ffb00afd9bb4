"""What flashing shows while it works: tqdm bars on stderr for reading, erasing, programming and verifying, and the
step it is at (for error messages)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from tqdm import tqdm


class FlashBars:
    """tqdm bars on stderr: reading (bytes), erasing and programming (percent, from pyOCD's callback)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.open: list[tqdm] = []

    def bytes(self, description: str, total: int) -> tqdm:
        bar = tqdm(
            total=total, desc=description, unit="B", unit_scale=True, unit_divisor=1024,
            disable=not self.enabled, file=sys.stderr, leave=True,
        )  # fmt: skip
        self.open.append(bar)
        return bar

    def loader(self, region: str) -> Callable[[float], None]:
        return LoaderProgress(self, region)

    def close(self) -> None:
        for bar in self.open:
            bar.close()
        self.open.clear()


class LoaderProgress:
    """pyOCD's MemoryLoader reports 0..1 while erasing, then 0..1 again while programming."""

    PHASES = ("erase", "program")

    def __init__(self, bars: FlashBars, region: str) -> None:
        self.bars = bars
        self.region = region
        self.phase = 0
        self.last = 0.0
        self.bar: tqdm | None = None

    def __call__(self, fraction: float) -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        if self.bar is not None and fraction < self.last and self.phase + 1 < len(self.PHASES):
            self._finish()
            self.phase += 1
        if self.bar is None:
            self.bar = tqdm(
                total=100, desc=f"{self.PHASES[self.phase]} {self.region}", unit="%",
                disable=not self.bars.enabled, file=sys.stderr, leave=True,
            )  # fmt: skip
            self.bars.open.append(self.bar)
        self.last = fraction
        self.bar.update(round(fraction * 100) - self.bar.n)

    def _finish(self) -> None:
        assert self.bar is not None
        self.bar.update(100 - self.bar.n)
        self.bar = None


class FlashStep:
    """What is being done, for error messages."""

    def __init__(self) -> None:
        self.text = "connecting"
        self.region = ""

    def now(self, text: str, region: str = "") -> None:
        self.text = text
        self.region = region
