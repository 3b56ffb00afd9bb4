"""The command channel of a running program, opened for a session of many commands (`scons console`).

Every runner speaks the same console protocol (targets/cortex-m/firmware_main.c, targets/posix/main.c): a
ready line, one ``run ...`` line, the output protocol, ready again. What differs is how the bytes travel:

- the host program (and a Linux build under qemu-user) runs as ``llmcu -c`` on pipes, wrapped here in
  :class:`PipePort` so that llmcu.device.uart reads it as it reads a serial port;
- the QEMU twin boots with its console on a TCP socket and ``serve`` on its semihosting command line, so that
  it stays up after a run instead of exiting (targets/qemu-m7/board.c);
- a board is flashed when its flash differs from the image, reset once, and its console UART is opened.

Each channel can be opened again after it failed (a board's USB port that came back, a program or a QEMU
that is started anew), which is how a session survives a vanished port. The processes run in sessions of
their own, so that a Ctrl-C typed in the terminal reaches llmcu (which sends the stop byte) and not them.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import LlmcuError
from . import qemu, uart

STOP = b"\x03"  # CONSOLE_STOP in runtime_c/console.h: stop the run after the current token
REOPEN_TIMEOUT = 30.0  # seconds a vanished board port gets to come back


class PipePort:
    """A child process's stdin and stdout as the part of a pyserial port that llmcu.device.uart uses:
    ``read(n)`` waits up to ``timeout``, ``in_waiting``, ``write``, ``flush``, ``close``. The end of its
    output is a SerialException, as a closed socket is for pyserial."""

    def __init__(self, process: subprocess.Popen, name: str, timeout: float = uart.POLL) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self.port = name
        self.timeout = timeout
        self._fd = process.stdout.fileno()
        self._buffer = bytearray()
        self._ended = False

    def _pull(self, wait: float) -> None:
        if self._ended:
            return
        ready, _, _ = select.select([self._fd], [], [], max(wait, 0.0))
        if ready:
            chunk = os.read(self._fd, 65536)
            if chunk:
                self._buffer += chunk
            else:
                self._ended = True

    def _gone(self) -> Exception:
        import serial

        code = self.process.poll()
        status = "is still running" if code is None else f"exited with status {code}"
        return serial.SerialException(f"{self.port} closed its output ({status})")

    def read(self, size: int = 1) -> bytes:
        if not self._buffer:
            self._pull(self.timeout if self.timeout is not None else 3600.0)
        if not self._buffer and self._ended:
            raise self._gone()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    @property
    def in_waiting(self) -> int:
        self._pull(0.0)
        return len(self._buffer)

    def write(self, data: bytes) -> int:
        import serial

        assert self.process.stdin is not None
        try:
            self.process.stdin.write(data)
        except (BrokenPipeError, ValueError) as error:
            raise serial.SerialException(f"cannot write to {self.port}: {error}") from None
        return len(data)

    def flush(self) -> None:
        import serial

        assert self.process.stdin is not None
        try:
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError) as error:
            raise serial.SerialException(f"cannot write to {self.port}: {error}") from None

    def reset_input_buffer(self) -> None:
        self._buffer.clear()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.close()  # the console ends at the end of its input
                self.process.wait(timeout=2.0)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


@dataclass
class Channel:
    """How a session reaches one runner. ``open()`` returns a port-like handle (closing the previous one);
    the firmware's ready line is on its way or was printed already (the capture pokes for it)."""

    name: str  # what the user reads: "host program build/host/260k-q8/llmcu", "QEMU twin qemu-m7", ...
    runner: str  # host | qemu | board | qemu-user
    opener: Callable[[], Any]
    ready_timeout: float = uart.READY_TIMEOUT
    silence: float = uart.SILENCE
    reset: Callable[[], None] | None = None  # a board's reset through its probe, for the first open
    poke_after: float | None = 1.0
    host: dict[str, str] = field(default_factory=dict)  # versions for the log
    port: str = ""
    handle: Any = None
    closers: list[Callable[[], None]] = field(default_factory=list)

    def open(self) -> Any:
        self.close()
        self.handle = self.opener()
        return self.handle

    def stop(self) -> None:
        """Asks the running generation to stop (one ETX byte); a channel already gone is no error here."""
        if self.handle is None:
            return
        try:
            self.handle.write(STOP)
            self.handle.flush()
        except Exception:  # the capture reports a vanished port with the whole story
            pass

    def close(self) -> None:
        handle, self.handle = self.handle, None
        if handle is not None:
            with contextlib.suppress(Exception):  # a port that is gone already
                handle.close()
        while self.closers:
            self.closers.pop()()


def process_channel(command: Sequence[str], name: str, runner: str, host: dict[str, str] | None = None) -> Channel:
    """A console on a child process's pipes: the host program (``llmcu -c``) or the same under qemu-user."""

    def opener() -> PipePort:
        try:
            process = subprocess.Popen(
                list(command),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=sys.stderr,
                start_new_session=True,  # the terminal's Ctrl-C is llmcu's to turn into a stop byte
            )
        except OSError as error:
            raise LlmcuError(f"cannot start {command[0]}: {error}") from None
        return PipePort(process, name)

    return Channel(name, runner, opener, ready_timeout=60.0, poke_after=None, host=dict(host or {}))


def twin_channel(elf: Path, machine: str, host: dict[str, str] | None = None) -> Channel:
    """The QEMU twin, booted to serve commands until the session ends (``serve`` on its semihosting command
    line); opening it again boots a new one."""
    from .runs import _shown, connect_qemu, start_qemu_serial

    channel = Channel(f"QEMU twin {machine} ({_shown(elf)})", "qemu", lambda: None, ready_timeout=qemu.READY_TIMEOUT,
                      poke_after=1.0, host=dict(host or {}))  # fmt: skip

    def opener() -> Any:
        stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by the channel's closer)
        process, url = start_qemu_serial(elf, machine, stderr, semihosting_args=("llmcu", "serve"), own_session=True)

        def end() -> None:
            if process.poll() is None:
                process.kill()
            process.wait()
            stderr.close()

        channel.closers.append(end)
        channel.port = url
        return connect_qemu(process, url, stderr)

    channel.opener = opener
    return channel


def board_channel(port: str, baud: int, reset: Callable[[], None], name: str, host: dict[str, str]) -> Channel:
    """A board's console UART. The first open resets the board (through ``reset``) so that the session starts
    at a fresh ready line; opening it again (the port vanished) waits for the port and does not reset."""

    def opener() -> Any:
        return uart.open_port(port, baud=baud, open_timeout=REOPEN_TIMEOUT)

    return Channel(name, "board", opener, reset=reset, poke_after=2.0, host=dict(host), port=port)


def wait_for(seconds: float) -> None:
    """A pause between attempts to reopen a channel (a function, so that tests can skip it)."""
    time.sleep(seconds)
