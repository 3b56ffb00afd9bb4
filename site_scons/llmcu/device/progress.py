"""A progress bar for a run whose text is not shown (a benchmark's twin runs, `run` without echo).

The runtime writes the text one token's piece at a time, so each piece that arrives moves the bar one step of
the ``steps`` asked for; pieces that arrive together in one read count once, so the bar may end short of its
total when the run ends (it is closed then). Shown only on a terminal (tqdm on stderr).
"""

from __future__ import annotations

import sys
from types import TracebackType


class TextProgress:
    """Use as ``on_text``; close it (or use it as a context manager) when the run ends."""

    def __init__(self, description: str, steps: int, *, enabled: bool | None = None) -> None:
        from tqdm import tqdm

        shown = sys.stderr.isatty() if enabled is None else enabled
        self.bar = tqdm(total=steps or None, desc=description, unit="tok", leave=False, file=sys.stderr,
                        dynamic_ncols=True, disable=not shown)  # fmt: skip
        self.pieces = 0

    def __call__(self, piece: bytes) -> None:
        self.pieces += 1
        if self.bar.total is None or self.bar.n < self.bar.total:
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> TextProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
