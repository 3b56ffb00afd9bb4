"""One signal policy for llmcu's long-running work, whatever program hosts it.

SCons installs its own SIGINT/SIGTERM/SIGHUP handlers while it builds: they only note the interruption and let the
running action go on, so a `monitor` could not be stopped but by SIGKILL (keeping its serial port busy), a
quantization went on for a minute after Ctrl-C and a console session ended in "Build interrupted". Inside
:func:`python_signals` the signals are Python's again: SIGINT raises KeyboardInterrupt and SIGTERM/SIGHUP raise
:class:`Terminated`, a KeyboardInterrupt too, so that every ``except KeyboardInterrupt`` that stops a generation,
closes a port or finishes a log handles them the same way. The previous handlers come back afterwards.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: stop as for Ctrl-C (``signum`` says which)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signum)


def exit_status(interruption: KeyboardInterrupt) -> int:
    """The shell's status for a process ended by the signal: 128 + its number (130 for Ctrl-C)."""
    return 128 + (interruption.signum if isinstance(interruption, Terminated) else signal.SIGINT)


def describe(interruption: KeyboardInterrupt) -> str:
    return f"stopped by {interruption.args[0]}" if isinstance(interruption, Terminated) else "interrupted (Ctrl-C)"


@contextmanager
def python_signals() -> Iterator[None]:
    """Python's handling of the stop signals for the duration (only the main thread can set handlers: elsewhere
    this changes nothing, and the signals stay with whoever has them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, handler)
