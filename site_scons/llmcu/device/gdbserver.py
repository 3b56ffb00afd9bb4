"""What every `scons debug` server is (llmcu.device.debug for the firmware and the host, llmcu.device.debug_linux
for a Linux target): where gdb connects, how to end it, and waiting for a server to listen."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.errors import LlmcuError

SERVER_TIMEOUT = 10.0  # seconds for a gdb server to listen


def wait_listening(port: int, process: Any = None, timeout: float = SERVER_TIMEOUT) -> None:
    """Waits until something listens on localhost:``port`` (a server that is starting)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        if process is not None and process.poll() is not None:
            raise LlmcuError(f"the gdb server exited with status {process.returncode} before it listened")
        if time.monotonic() > deadline:
            raise LlmcuError(f"no gdb server listens on port {port} after {timeout:g} s")
        time.sleep(0.05)


@dataclass
class DebugServer:
    """A running gdb server: where gdb connects, and how to end it."""

    address: str  # "localhost:3333"
    describe: str  # what is being served, for the user
    stop: Callable[[], None]
    gdb_setup: tuple[str, ...]  # gdb commands once connected (reset and halt on a board)
