"""What every llmcu command line does the same way: a project error is one ``llmcu-<name>: error: ...`` line and an
exit status, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from ..core.errors import LlmcuError


def reported(program: str, work: Callable[[], int], *, status: int = 1) -> int:
    """``work()``'s exit status; for an LlmcuError, the error on standard error and ``status``."""
    try:
        return work()
    except LlmcuError as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return status
