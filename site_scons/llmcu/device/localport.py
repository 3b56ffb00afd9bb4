"""A free TCP port on this machine's loopback, for a server llmcu starts (QEMU's serial and gdb stubs, gdb servers).

The port is free when asked; a server that then fails to bind it says so (the callers wait for it to listen)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
