"""Running a host build: its output streamed to the console and parsed (llmcu.device.protocol)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..core.errors import LlmcuError
from .procrun import stream_command
from .protocol import ByteSink, RunOutput, describe_failure, format_summary


def run_host_program(
    program: Path,
    args: list[str],
    *,
    echo: bool = True,
    timeout: float = 600,
    on_bytes: ByteSink | None = None,
) -> RunOutput:
    """Run a host build, streaming its text to stdout as it arrives, and parse its protocol output.
    ``on_bytes`` gets every byte of its output as it arrives (llmcu.device.runlog's raw.bin)."""

    def show(piece: bytes) -> None:
        sys.stdout.buffer.write(piece)
        sys.stdout.buffer.flush()

    # Its standard error stays on the terminal (a sanitizer's report, say).
    result = stream_command([str(program), *args], on_text=show if echo else None, on_bytes=on_bytes,
                            timeout=timeout, capture_stderr=False)  # fmt: skip
    output, code = result.output, result.returncode
    if result.timed_out:
        raise LlmcuError(f"{program.name} did not finish within {timeout:g} s and was stopped")
    if output.complete and not output.ok:
        raise LlmcuError(f"{program.name} failed: {describe_failure(output)}")
    if code != 0 or not output.ok:
        reason = output.reason or (f"exit status {code}" if code else "no end marker")
        raise LlmcuError(f"{program.name} failed: {reason}")
    if echo:
        print(f"[llmcu] {format_summary(output)}", flush=True)
    return output
