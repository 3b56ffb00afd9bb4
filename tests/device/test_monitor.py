"""`scons monitor` (llmcu.device.monitor): a running console, decoded, without a byte sent to it.

The bytes are a real console session's (the host program's console speaks the firmware's protocol byte for
byte), served on a socket:// port that goes away in the middle of a run and comes back: the monitor reports it,
reopens the port, keeps one log, and shows every run after it. raw=1 shows the bytes.
"""

from __future__ import annotations

import contextlib
import io
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from llmcu.builder.settings import option_values, run_options
from llmcu.core.errors import LlmcuError
from llmcu.device import monitor
from llmcu.device.protocol import RunOutput, TokenRecord


@pytest.fixture(scope="module")
def console_bytes(q8_build_root: Path) -> bytes:
    """What a console prints for two prompts and a refused line."""
    root = q8_build_root
    lines = b"run steps=12 temperature=0.0 prompt=Once\nrun steps=oops\nrun steps=9 seed=4 prompt=The%20dog\n"
    result = subprocess.run([str(root / "host" / "260k-q8" / "llmcu"), "-c"], input=lines, capture_output=True,
                            check=True, timeout=60)  # fmt: skip
    return result.stdout


class FlakyPort:
    """A TCP 'board console' that sends ``first`` on the first connection and then drops it (a pulled cable),
    refuses connections for a moment, then sends ``second`` to the next one. Records what the monitor sent."""

    def __init__(self, first: bytes, second: bytes, gone: float = 0.6) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.received = b""
        self.parts = (first, second)
        self.gone = gone
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        time.sleep(0.1)

    def _serve(self) -> None:
        for number, part in enumerate(self.parts):
            server = socket.socket()
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", self.port))
            server.listen(1)
            client, _ = server.accept()
            server.close()
            client.settimeout(0.3)
            time.sleep(0.2)  # pyserial's socket open() empties what arrived while it was connecting
            for at in range(0, len(part), 64):
                client.sendall(part[at : at + 64])
                time.sleep(0.002)
            with contextlib.suppress(TimeoutError):
                self.received += client.recv(4096)
            client.close()
            if number == 0:
                time.sleep(self.gone)


def test_monitor_decodes_reconnects_and_logs(console_bytes: bytes, tmp_path: Path) -> None:
    cut = console_bytes.index(b"\x1etok") + 20  # in the middle of the first run's records
    port = FlakyPort(console_bytes[:cut], console_bytes[cut:])
    out = io.StringIO()
    log = monitor.monitor(f"socket://127.0.0.1:{port.port}", tmp_path / "logs", name="test", out=out, duration=4.0,
                          reconnect_wait=0.1)  # fmt: skip
    shown = out.getvalue()
    assert port.received == b""  # listening only: nothing was sent to the console
    assert "[ready] target=host model=260k quant=q8" in shown
    assert "[run] version=1 target=host" in shown
    assert "Once upon a time" in shown
    assert "went away" in shown and "is back after" in shown
    # the run cut by the disconnection: its end line is shown, its timing is not (its records were cut);
    # the refusal and the next whole run are decoded
    assert "[refused] bad_command (at 'steps')" in shown
    assert "The dog" in shown
    assert "[timing] 12 tokens" not in shown
    assert shown.count("[timing] 9 tokens:") == 1 and " ms/token (min " in shown and "tok/s" in shown
    assert shown.count("[end] ok") == 2
    assert (log.path / "raw.bin").read_bytes() == console_bytes  # every byte of both connections
    assert (log.path / "monitor.txt").read_text() == shown


def test_raw_shows_the_bytes(console_bytes: bytes, tmp_path: Path) -> None:
    port = FlakyPort(console_bytes, b"")
    out = io.StringIO()
    monitor.monitor(f"socket://127.0.0.1:{port.port}", tmp_path, out=out, raw=True, duration=1.5, reconnect_wait=0.1)
    shown = out.getvalue()
    assert "\\x05llmcu ready 1 target=host" in shown and "\\x1etok pos=0 token=1" in shown
    assert "\\x03llmcu end status=ok\n" in shown


def test_timing_line_uses_the_clock() -> None:
    output = RunOutput(header={"unit": "cycles", "clock_hz": "480000000"})
    output.tokens = [TokenRecord(pos, 1, 2, cost) for pos, cost in enumerate((480_000, 960_000, 1_440_000))]
    expected = "[timing] 3 tokens: 2.000 ms/token (min 1.000, median 2.000, max 3.000), 500.0 tok/s"
    assert monitor.timing_line(output) == expected
    twin = RunOutput(header={"unit": "instructions", "clock_hz": "0"}, tokens=output.tokens)
    assert monitor.timing_line(twin) == (
        "[timing] 3 tokens: 960,000 instructions/token (min 480,000, median 960,000, max 1,440,000)"
    )


def test_a_port_that_never_comes_back_is_reported(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    out = io.StringIO()
    monitor.monitor(f"socket://127.0.0.1:{free}", tmp_path, out=out, duration=0.5, reconnect_wait=0.1)
    assert "waiting for it to come back" in out.getvalue()


def test_monitor_needs_a_port_where_no_console_runs(tmp_path: Path, stories260k: Path, monkeypatch) -> None:
    from llmcu.builder.settings import configure

    monkeypatch.setenv("LLMCU_MODELS", str(stories260k.parent))
    settings = configure({"target": "host", "model": "260k", "quant": "q8"})
    with pytest.raises(LlmcuError, match="give port=DEVICE or a pyserial URL"):
        monitor.monitor_build(settings, run_options(option_values({"log_dir": str(tmp_path)})))
