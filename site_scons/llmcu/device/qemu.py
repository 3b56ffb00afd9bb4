"""Run a firmware under ``qemu-system-arm``: the QEMU twin of a board (targets/qemu-m7).

The firmware prints a ready line, reads one ``run`` command from its console (llmcu.device.console) and answers
with the output protocol (llmcu.device.protocol), then ends the emulation through semihosting with the run's
status as QEMU's exit code. With ``icount`` QEMU runs one instruction per virtual nanosecond, so the
firmware's cost counter counts instructions, the same on every run.

The console is QEMU's standard input and output, or with ``serial_socket=True`` a TCP socket QEMU listens
on, which behaves like a board's UART (the bytes go through a socket, not a pipe).
"""

from __future__ import annotations

import functools
import os
import select
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from ..core.errors import LlmcuError
from ..core.paths import TARGETS_DIR
from ..platform.targets import load_target
from .console import CommandParams, encode_command
from .localport import free_port
from .protocol import ByteSink, ProtocolParser, RunOutput, describe_failure, describe_fault

QEMU = "qemu-system-arm"
# The Cortex-M7 twin (targets/qemu-m7): what an ELF runs on when no machine is named.
TWIN_TARGET = "qemu-m7"


@functools.cache
def twin_machine() -> str:
    """The twin's QEMU machine (-M), from its target.toml's [run] machine."""
    return load_target(TWIN_TARGET, TARGETS_DIR).run.machine


READY_TIMEOUT = 30.0  # seconds from start to the ready line: boot takes well under one
EXIT_TIMEOUT = 10.0  # seconds from the end line to QEMU's exit


class QemuError(LlmcuError):
    """Running a firmware under QEMU failed."""


class QemuNotFoundError(QemuError):
    """qemu-system-arm is not installed."""


class FirmwareTimeoutError(QemuError):
    """The firmware did not answer in time."""


class CommandRejectedError(QemuError):
    """The firmware refused the command line."""


class FirmwareFaultError(QemuError):
    """The firmware reported a fault (HardFault, UsageFault, ...)."""

    def __init__(self, message: str, report: dict[str, str]) -> None:
        super().__init__(message)
        self.report = report


class FirmwareRunError(QemuError):
    """The run ended with an error, or QEMU ended without finishing it."""


def qemu_command(
    elf: Path,
    *,
    machine: str = "",
    icount: bool = True,
    serial: str = "stdio",
    qemu: str = QEMU,
    extra_args: Sequence[str] = (),
    semihosting_args: Sequence[str] = (),
) -> list[str]:
    """The command line: no display, no monitor, semihosting for the exit code, the console on ``serial``.
    ``semihosting_args`` become the firmware's semihosting command line (``("llmcu", "serve")``: a twin that
    serves commands until it is stopped instead of exiting after one run)."""
    command = [qemu, "-M", machine or twin_machine(), "-display", "none", "-monitor", "none", "-serial", serial]
    command += [
        "-semihosting-config",
        ",".join(["enable=on", "target=native", *(f"arg={a}" for a in semihosting_args)]),
    ]
    if icount:
        command += ["-icount", "shift=0"]
    return [*command, *extra_args, "-kernel", str(elf)]


class QemuSession:
    """One QEMU process running a firmware, and its console. Use as a context manager: QEMU is killed on exit."""

    def __init__(
        self,
        elf: Path,
        *,
        machine: str = "",  # "": the twin's (twin_machine)
        icount: bool = True,
        serial_socket: bool = False,
        qemu: str = QEMU,
        extra_args: Sequence[str] = (),
        connect_timeout: float = 10.0,
    ) -> None:
        self.elf = Path(elf)
        if shutil.which(qemu) is None:
            raise QemuNotFoundError(
                f"{qemu} not found: install it with `apt-get install qemu-system-arm` (or run tools/setup.sh)"
            )
        if not self.elf.is_file():
            raise QemuError(f"firmware {self.elf} does not exist: build it first")
        self._pending = b""  # received but not yet given to a parser
        self._eof = False
        self._socket: socket.socket | None = None
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in __exit__)
        if serial_socket:
            port = free_port()
            serial = f"tcp:127.0.0.1:{port},server=on,wait=on"
        else:
            serial = "stdio"
        self.command = qemu_command(
            self.elf, machine=machine, icount=icount, serial=serial, qemu=qemu, extra_args=extra_args
        )
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL if serial_socket else subprocess.PIPE,
            stdout=subprocess.DEVNULL if serial_socket else subprocess.PIPE,
            stderr=self._stderr,
        )
        if serial_socket:
            self._socket = self._connect(port, connect_timeout)

    def _connect(self, port: int, timeout: float) -> socket.socket:
        """QEMU waits (wait=on) for this connection before it starts the firmware."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return socket.create_connection(("127.0.0.1", port), timeout=1.0)
            except OSError:
                if self.process.poll() is not None:
                    self.close()
                    raise QemuError(
                        f"QEMU exited with status {self.process.returncode}: {self.stderr_text()}"
                    ) from None
                if time.monotonic() > deadline:
                    self.close()
                    raise QemuError(f"QEMU's serial socket on port {port} did not open within {timeout} s") from None
                time.sleep(0.02)

    def __enter__(self) -> QemuSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self._stderr.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self._socket is not None:
            self._socket.close()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()

    def stderr_text(self, max_lines: int = 4) -> str:
        """What QEMU said, its first lines only (a fatal error comes with a register dump)."""
        self._stderr.seek(0)
        lines = self._stderr.read().decode("utf-8", errors="replace").strip().splitlines()
        if not lines:
            return "(nothing on stderr)"
        return "\n".join(lines[:max_lines]) + (" ..." if len(lines) > max_lines else "")

    # ---- the console ----

    def send(self, data: bytes) -> None:
        if self._socket is not None:
            self._socket.sendall(data)
        else:
            assert self.process.stdin is not None
            self.process.stdin.write(data)
            self.process.stdin.flush()

    def _receive(self, timeout: float) -> bytes | None:
        """Bytes from the console; None when nothing came within timeout, b"" once QEMU closed it."""
        source = self._socket if self._socket is not None else self.process.stdout
        assert source is not None
        ready, _, _ = select.select([source], [], [], max(timeout, 0.0))
        if not ready:
            return None
        if self._socket is not None:
            return self._socket.recv(65536)
        return os.read(source.fileno(), 65536)

    def read_until(
        self, parser: ProtocolParser, done: Callable[[RunOutput], bool], timeout: float, waiting_for: str
    ) -> RunOutput:
        """Feeds the console to ``parser`` until ``done(output)`` or the end of the output. Bytes after the
        point where ``done`` became true stay for the next call."""
        deadline = time.monotonic() + timeout
        while True:
            data, self._pending = self._pending, b""
            for at in range(len(data)):
                parser.feed(data[at : at + 1])
                if done(parser.output):
                    self._pending = data[at + 1 :]
                    return parser.output
            if self._eof:
                return parser.output
            chunk = self._receive(deadline - time.monotonic())
            if chunk is None:
                received = parser.output.preamble[-200:] or parser.output.text[-200:]
                raise FirmwareTimeoutError(
                    f"no {waiting_for} from {self.elf.name} under QEMU within {timeout:g} s "
                    f"(last bytes received: {received!r})"
                )
            if not chunk:
                self._eof = True
            self._pending += chunk

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> dict[str, str]:
        """Waits for the firmware's ready line and returns its fields."""
        output = self.read_until(ProtocolParser(), lambda out: bool(out.ready) or out.complete, timeout, "ready line")
        if output.ready:
            return output.ready
        if output.status == "fault":
            raise FirmwareFaultError(
                f"{self.elf.name} faulted before it was ready: {describe_fault(output.end)}", output.end
            )
        code = self.wait_exit()
        raise FirmwareRunError(
            f"{self.elf.name} ended (QEMU exit status {code}) without a ready line; QEMU said: {self.stderr_text()}"
        )

    def exchange(self, line: bytes, *, timeout: float, on_text: ByteSink | None = None) -> RunOutput:
        """Sends one command line and reads the answer: a whole run, a refusal or a fault report."""
        self.send(line)
        return self.read_until(ProtocolParser(on_text), lambda out: out.complete, timeout, "end of the run")

    def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise FirmwareTimeoutError(f"QEMU did not exit within {timeout:g} s after the run ended") from None


def check_run(output: RunOutput, exit_code: int | None, elf: Path, stderr: str = "") -> RunOutput:
    """Raises the error that says what went wrong, or returns the output of a good run."""
    if output.status == "fault":
        pc = output.end.get("pc", "")
        where = f"; the source line: arm-none-eabi-addr2line -e {elf} {pc}" if pc.strip("0x") else ""  # 0: no frame
        raise FirmwareFaultError(f"{elf.name} faulted: {describe_fault(output.end)}{where}", output.end)
    if output.status == "rejected":
        detail = output.end.get("detail")
        raise CommandRejectedError(
            f"{elf.name} refused the command: {output.reason}" + (f" (at {detail!r})" if detail else "")
        )
    if not output.complete:
        raise FirmwareRunError(
            f"QEMU exited with status {exit_code} before the end of the run "
            f"({len(output.tokens)} token records received); QEMU said: {stderr or '(nothing)'}"
        )
    if output.status != "ok":
        raise FirmwareRunError(f"the run on {elf.name} failed: {describe_failure(output)}")
    if exit_code != 0:
        raise FirmwareRunError(f"the run on {elf.name} ended well but QEMU exited with status {exit_code}: {stderr}")
    return output


def run_firmware(
    elf: Path,
    params: CommandParams,
    *,
    machine: str = "",  # "": the twin's (twin_machine)
    icount: bool = True,
    timeout: float = 600.0,
    ready_timeout: float = READY_TIMEOUT,
    on_text: ByteSink | None = None,
    serial_socket: bool = False,
    qemu: str = QEMU,
    extra_args: Sequence[str] = (),
    progress: bool = False,
) -> RunOutput:
    """Boots ``elf`` under QEMU, runs one generation with ``params`` and returns what it printed.

    ``on_text`` gets the generated text as it streams; without it, ``progress`` shows a bar on a terminal.
    Raises a QemuError subclass when QEMU is missing,
    the firmware is not ready in ``ready_timeout`` seconds, the run takes longer than ``timeout``, the
    firmware refuses the command or faults, or QEMU ends otherwise than with exit status 0 after a good run.
    """
    command = encode_command(params)
    if on_text is None and progress:  # nothing streams: a bar says the run is getting on
        from .progress import TextProgress

        with TextProgress(f"{elf.parent.name} on QEMU", int(params.steps)) as bar:
            return run_firmware(elf, params, machine=machine, icount=icount, timeout=timeout,
                                ready_timeout=ready_timeout, on_text=bar, serial_socket=serial_socket, qemu=qemu,
                                extra_args=extra_args)  # fmt: skip
    with QemuSession(
        elf, machine=machine, icount=icount, serial_socket=serial_socket, qemu=qemu, extra_args=extra_args
    ) as session:
        session.wait_ready(ready_timeout)
        output = session.exchange(command, timeout=timeout, on_text=on_text)
        # After a refusal the firmware waits for another command; after anything else QEMU ends (or has).
        exit_code = None if output.status == "rejected" else session.wait_exit()
        return check_run(output, exit_code, session.elf, session.stderr_text())
