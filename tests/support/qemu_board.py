"""A stand-in for a board behind a probe, for testing the board path without one: "flashing" starts the QEMU
twin halted (-S) with its console on a TCP socket, and "reset" lets the CPU run (the monitor's ``cont``),
so the console sees the boot only after the reset, as on a board."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from pathlib import Path

from llmcu.device.qemu import qemu_command
from llmcu.hil.board import FlashRequest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class QemuBoard:
    """A Programmer (llmcu.hil.board) whose board is the twin ELF under QEMU; the console is ``url``."""

    def __init__(self, twin_elf: Path, serial_port: int = 0) -> None:
        self.twin_elf = twin_elf
        self.serial_port = serial_port or free_port()
        self.monitor_port = free_port()
        self.flashed: list[FlashRequest] = []
        self.resets = 0
        self.process: subprocess.Popen | None = None
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop)

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.serial_port}"

    def flash(self, request: FlashRequest) -> None:
        self.flashed.append(request)
        monitor = ["-chardev", f"socket,id=mon0,host=127.0.0.1,port={self.monitor_port},server=on,wait=off",
                   "-mon", "chardev=mon0,mode=readline", "-S"]  # fmt: skip
        serial = f"tcp:127.0.0.1:{self.serial_port},server=on,wait=off"
        command = qemu_command(self.twin_elf, serial=serial, extra_args=monitor)
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=self._stderr)  # fmt: skip
        # The console is opened with retries (llmcu.device.uart.open_port), so QEMU need not be listening yet.

    def reset(self, request: FlashRequest) -> None:
        self.resets += 1
        with socket.create_connection(("127.0.0.1", self.monitor_port), timeout=5) as monitor:
            monitor.sendall(b"cont\n")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
        self._stderr.close()
