"""Running a host build: its output streamed to the console and parsed (llmcu.device.protocol)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from ..core.errors import LlmcuError
from .protocol import ProtocolParser, RunOutput, describe_failure, format_summary


def run_host_program(
    program: Path,
    args: list[str],
    *,
    echo: bool = True,
    timeout: float = 600,
    on_bytes: Callable[[bytes], None] | None = None,
) -> RunOutput:
    """Run a host build, streaming its text to stdout as it arrives, and parse its protocol output.
    ``on_bytes`` gets every byte of its output as it arrives (llmcu.device.runlog's raw.bin)."""

    def show(piece: bytes) -> None:
        sys.stdout.buffer.write(piece)
        sys.stdout.buffer.flush()

    parser = ProtocolParser(on_text=show if echo else None)
    # In a session of its own, so that Ctrl-C reaches llmcu (which logs the run as interrupted and ends the
    # program) rather than killing the program under it.
    with subprocess.Popen([str(program), *args], stdout=subprocess.PIPE, start_new_session=True) as process:
        try:
            assert process.stdout is not None
            while chunk := process.stdout.read1(65536):
                if on_bytes is not None:
                    on_bytes(chunk)
                parser.feed(chunk)
            code = process.wait(timeout=timeout)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    output = parser.output
    if output.complete and not output.ok:
        raise LlmcuError(f"{program.name} failed: {describe_failure(output)}")
    if code != 0 or not output.ok:
        reason = output.reason or (f"exit status {code}" if code else "no end marker")
        raise LlmcuError(f"{program.name} failed: {reason}")
    if echo:
        print(f"[llmcu] {format_summary(output)}", flush=True)
    return output
