"""`scons debug` on a Linux target (the RZ/V2L): gdb on the aarch64 program, with the build's run arguments.

- here (``hil=qemu``, or no ``board=``): qemu-user's gdb stub (``qemu-aarch64 -g PORT``), which holds the program
  before its first instruction until gdb connects;
- on the board (``board=user@host[:port]``): the program (and model.bin) copied into a fresh folder as `run` does,
  ``gdbserver`` started there over SSH, and the gdb port forwarded through that same SSH connection (``-L``), so
  nothing but SSH has to reach the board and the port is open on the board's loopback only. The folder is removed
  when the session ends. ``LLMCU_REMOTE_GDBSERVER`` replaces ``gdbserver 127.0.0.1:{port}`` (another path, or
  the tests' qemu-aarch64 on an x86 "board"); whatever it is must print gdbserver's ``Listening on port`` once gdb
  may connect.

gdb is gdb-multiarch (it reads the aarch64 ELF); the sources are mapped as for the firmware (llmcu.device.debug).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from ..builder.settings import BuildSettings
from ..core.errors import LlmcuError
from . import linux_run, qemu_user, sshdeploy
from .gdbserver import SERVER_TIMEOUT, DebugServer

REMOTE_GDBSERVER = "gdbserver 127.0.0.1:{port}"
ENV_GDBSERVER = "LLMCU_REMOTE_GDBSERVER"
READY = "Listening on port"
LINUX_GDBS = ("gdb-multiarch", "aarch64-linux-gnu-gdb")


def listening(port: int, tables: tuple[str, ...] = ("/proc/net/tcp", "/proc/net/tcp6")) -> bool:
    """Whether a socket of this machine listens on ``port``, read from the kernel's tables rather than by
    connecting: qemu-user's stub takes the first connection as its gdb, so a probe would use it up."""
    wanted = f":{port:04X}"
    for table in tables:
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 3 and fields[1].endswith(wanted) and fields[3] == "0A":  # 0A: LISTEN
                    return True
    return False


def _program(settings: BuildSettings) -> tuple[Path, Path | None]:
    program = settings.out_dir / "llmcu"
    if not program.is_file():
        raise LlmcuError(f"{program} does not exist: build it first")
    weights = settings.out_dir / "model.bin" if settings.weights_file else None
    return program, weights


def start_qemu_server(settings: BuildSettings, port: int) -> DebugServer:
    """The program under qemu-user with its gdb stub on ``port``; its output goes to this terminal."""
    assert settings.linux is not None
    program, weights = _program(settings)
    emulator = qemu_user.QemuUser.of(settings)
    args = linux_run.program_args(settings, str(weights) if weights else None)
    command = emulator.command(program, args, gdb_port=port)
    try:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
    except FileNotFoundError:
        raise LlmcuError(f"{emulator.qemu} not found: install qemu-user (tools/setup.sh does)") from None

    def stop() -> None:
        if process.poll() is None:
            process.kill()
        process.wait()

    deadline = time.monotonic() + SERVER_TIMEOUT
    while not listening(port):
        if process.poll() is not None or time.monotonic() > deadline:
            stop()
            raise LlmcuError(f"{emulator.qemu} did not open its gdb stub on port {port} (status {process.returncode})")
        time.sleep(0.02)
    # after `target remote`: gdb reloads the libraries from the sysroot
    setup = (f"set sysroot {emulator.sysroot}",) if emulator.sysroot else ()
    return DebugServer(f"localhost:{port}", f"{program.name} under {emulator.qemu} -g", stop, setup)


def start_board_server(settings: BuildSettings, port: int, remote_port: int = 0) -> DebugServer:
    """gdbserver on the board over SSH with its port forwarded to localhost:``port``."""
    assert settings.linux is not None and settings.linux.destination is not None
    destination = settings.linux.destination
    program, weights = _program(settings)
    remote_port = remote_port or port
    copy = sshdeploy.upload(destination, program, weights, settings.linux.remote_dir)
    server = os.environ.get(ENV_GDBSERVER, REMOTE_GDBSERVER).format(port=remote_port)
    remote = sshdeploy.in_folder(copy.folder, f"{server} ./llmcu", linux_run.program_args(settings, copy.weights))
    options = [*shlex.split(os.environ.get(sshdeploy.ENV_OPTIONS, "")), "-o", "ExitOnForwardFailure=yes",
               "-L", f"127.0.0.1:{port}:127.0.0.1:{remote_port}"]  # fmt: skip
    process = subprocess.Popen(sshdeploy.ssh_command(destination, remote, extra_options=options),
                               stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    ready, said = threading.Event(), []
    assert process.stderr is not None
    threading.Thread(target=_relay, args=(process.stderr, ready, said), daemon=True).start()

    def stop() -> None:
        if process.poll() is None:
            process.kill()
        process.wait()
        with contextlib.suppress(sshdeploy.SshError):
            sshdeploy.remove(copy)  # gone already when the program ended; not when the session was cut

    deadline = time.monotonic() + SERVER_TIMEOUT + sshdeploy.CONNECT_TIMEOUT
    while not ready.wait(0.05):
        if process.poll() is not None or time.monotonic() > deadline:
            stop()
            raise _server_failed(destination, process.returncode, "".join(said))
    return DebugServer(f"localhost:{port}", f"{program.name} under gdbserver on {destination}", stop, ())


def _relay(stream: IO[bytes], ready: threading.Event, said: list[str]) -> None:
    """The SSH session's standard error to ours, line by line, noting gdbserver's ready line."""
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace")
        said.append(line)
        sys.stderr.write(line)
        sys.stderr.flush()
        if READY in line:
            ready.set()


def _server_failed(destination: object, status: int | None, said: str) -> LlmcuError:
    if status == 127 or "not found" in said:
        return LlmcuError(
            f"gdbserver is not installed on {destination}: add it to the board's image (Yocto: IMAGE_INSTALL:append = "
            f'" gdbserver", or EXTRA_IMAGE_FEATURES += "tools-debug"), or name another with {ENV_GDBSERVER}'
        )
    if status == 255:
        return sshdeploy.classify(destination, said)  # type: ignore[arg-type]
    tail = said.strip().splitlines()[-3:]
    return LlmcuError(f"gdbserver on {destination} did not start (status {status}): {' / '.join(tail)}")
