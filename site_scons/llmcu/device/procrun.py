"""Run a command whose standard output is the output protocol (a program under qemu-user, or over ssh)."""

from __future__ import annotations

import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from .protocol import ByteSink, ProtocolParser, RunOutput


@dataclass
class StreamResult:
    output: RunOutput
    returncode: int
    stderr: str
    timed_out: bool = False


def stream_command(
    command: Sequence[str],
    *,
    on_text: ByteSink | None = None,
    on_bytes: ByteSink | None = None,
    stdin: IO[bytes] | int | None = subprocess.DEVNULL,
    timeout: float = 600.0,
    env: dict[str, str] | None = None,
    capture_stderr: bool = True,
) -> StreamResult:
    """Runs ``command``, feeding its standard output to the protocol parser as it arrives (``on_text`` gets
    the generated text, ``on_bytes`` every byte), and collects its standard error (or leaves it on the terminal,
    without ``capture_stderr``). After ``timeout`` seconds the command is killed and the result says so."""
    parser = ProtocolParser(on_text=on_text)
    with tempfile.TemporaryFile() as captured:
        errors = captured if capture_stderr else None
        # In a session of its own: the terminal's Ctrl-C is llmcu's (the run is logged as interrupted and the
        # program killed below), not a signal that kills the program first and looks like a crash.
        process = subprocess.Popen(
            list(command), stdin=stdin, stdout=subprocess.PIPE, stderr=errors, env=env, start_new_session=True
        )
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            process.kill()

        timer = threading.Timer(timeout, expire)
        timer.start()
        try:
            assert process.stdout is not None
            while chunk := process.stdout.read1(65536):
                if on_bytes is not None:
                    on_bytes(chunk)
                parser.feed(chunk)
            code = process.wait()
        finally:
            timer.cancel()
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        captured.seek(0)
        stderr = captured.read().decode("utf-8", errors="replace")
    return StreamResult(parser.output, code, stderr, timed_out.is_set())


def last_lines(text: str, count: int = 6) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-count:]) if lines else "(nothing on stderr)"
