"""Run a Linux target's program here under qemu-user (``qemu-aarch64 -cpu max``), counting instructions.

The instruction count per token comes from llmcu's TCG plugin (tools/qemu-plugin/llmcu_insn.c), built here
on first use with the host's C compiler: the program asks for the running count with a read(2) on the
descriptor named by ``LLMCU_COUNTER_FD`` and the plugin answers through a pipe (targets/rzv2l/board.c).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..builder.settings import BuildSettings
from ..core.errors import LlmcuError
from ..core.paths import ROOT
from .procrun import StreamResult, last_lines, stream_command
from .protocol import ByteSink, RunOutput

PLUGIN_SOURCES = (ROOT / "tools" / "qemu-plugin" / "llmcu_insn.c", ROOT / "tools" / "qemu-plugin" / "qemu_plugin_api.h")
PLUGIN_NAME = "libllmcu_insn.so"
COUNTER_FD = 1021  # the descriptor the plugin's pipe is placed at in the QEMU process (and so in the guest)
RUN_TIMEOUT = 1800.0


class QemuUserError(LlmcuError):
    """qemu-user is missing, or the program failed under it."""


def version(qemu: str = "qemu-aarch64") -> str:
    """``qemu-aarch64 --version``'s first line, or "" when it cannot be run."""
    try:
        result = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.splitlines()[0].strip() if result.stdout else ""


def plugin_library(directory: Path, cc: str = "") -> Path:
    """The instruction-counting plugin, compiled into ``directory`` unless it is there and newer than its sources."""
    library = directory / PLUGIN_NAME
    newest = max(source.stat().st_mtime for source in PLUGIN_SOURCES)
    if library.is_file() and library.stat().st_mtime >= newest:
        return library
    compiler = cc or os.environ.get("HOST_CC") or "gcc"
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{PLUGIN_NAME}.{os.getpid()}"
    command = [compiler, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-o", str(partial), str(PLUGIN_SOURCES[0])]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise QemuUserError(f"cannot build the QEMU plugin: host compiler {compiler} not found") from None
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise QemuUserError(f"cannot build the QEMU plugin {PLUGIN_SOURCES[0]}:\n{result.stderr.strip()}")
    partial.replace(library)  # atomic: a concurrent build sees the old library or the new one
    return library


@dataclass(frozen=True)
class QemuUser:
    """How a Linux target's program runs on this machine: qemu-user's program and its -cpu (the target's [run]
    qemu and qemu_cpu), and the sysroot a dynamically linked program's loader and libraries come from."""

    qemu: str
    cpu: str
    sysroot: str = ""  # "": a static program

    @classmethod
    def of(cls, settings: BuildSettings) -> QemuUser:
        """For a Linux build: its target's qemu-user, with its toolchain's sysroot."""
        assert settings.linux is not None
        run = settings.target.run
        return cls(run.qemu, run.qemu_cpu, settings.linux.toolchain.run_sysroot)

    def command(self, program: Path, args: Sequence[str], *, plugin: Path | None = None,
                plugin_args: Sequence[str] = (), gdb_port: int = 0) -> list[str]:  # fmt: skip
        """The command line; with ``plugin`` the guest's counter reads instructions; with ``gdb_port`` the
        program waits before its first instruction for gdb on that port."""
        command = [self.qemu, "-cpu", self.cpu]
        if gdb_port:
            command += ["-g", str(gdb_port)]
        if self.sysroot:
            command += ["-L", self.sysroot]  # a dynamically linked program's loader and libraries
        if plugin is not None:
            command += ["-plugin", ",".join([str(plugin), f"fd={COUNTER_FD}", *plugin_args])]
            command += ["-E", f"LLMCU_COUNTER_FD={COUNTER_FD}"]
        return [*command, str(program), *args]


def run_program(
    program: Path,
    args: Sequence[str],
    emulator: QemuUser,
    *,
    plugin_dir: Path | None = None,
    count_instructions: bool = True,
    on_text: ByteSink | None = None,
    on_bytes: ByteSink | None = None,
    timeout: float = RUN_TIMEOUT,
) -> RunOutput:
    """Runs ``program`` under qemu-user and returns its parsed output; raises a QemuUserError when it fails."""
    if shutil.which(emulator.qemu) is None:
        raise QemuUserError(f"{emulator.qemu} not found: install qemu-user (tools/setup.sh does)")
    if not program.is_file():
        raise QemuUserError(f"{program} does not exist: build it first")
    plugin = None
    if count_instructions:
        plugin = plugin_library(plugin_dir if plugin_dir is not None else program.parent / "qemu-plugin")
    result = stream_command(emulator.command(program, args, plugin=plugin), on_text=on_text, on_bytes=on_bytes,
                            timeout=timeout)  # fmt: skip
    check(result, program, emulator.qemu, timeout)
    return result.output


def check(result: StreamResult, program: Path, runner: str, timeout: float) -> None:
    output = result.output
    if result.timed_out:
        raise QemuUserError(f"{program.name} under {runner} did not finish within {timeout:g} s")
    if result.returncode != 0 or not output.ok:
        reason = output.reason or (f"exit status {result.returncode}" if result.returncode else "no end marker")
        raise QemuUserError(f"{program.name} failed under {runner}: {reason}\n{last_lines(result.stderr)}")
