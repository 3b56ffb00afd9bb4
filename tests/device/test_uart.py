"""UART capture (llmcu.device.uart): a scripted firmware on pyserial's loop://, a Python socket peer on socket:// that
misbehaves (garbage, stalls, hang-ups, resets), and the real QEMU twin with its console on a TCP socket.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import create_autospec

import pytest

from llmcu.builder.settings import RunParams, option_values, run_options
from llmcu.device import flashing, runs, uart
from llmcu.device.console import encode_command
from llmcu.device.flasherrors import NoProbeError
from llmcu.device.probes import ProbeInfo
from llmcu.device.protocol import parse
from llmcu.device.qemu import qemu_command, run_firmware
from llmcu.device.runlog import RunInfo, RunLog, read_log
from support.build import ROOT, scons

serial = pytest.importorskip("serial")

PARAMS = RunParams("Once upon a time", 4, 0.0, 0.9, 1)
COMMAND = encode_command(PARAMS)
READY = b"\x05llmcu ready 1 target=stm32h743 model=260k quant=q8\n"
HEADER = b"\x02llmcu 1 target=stm32h743 model=260k quant=q8 unit=cycles clock_hz=480000000\n"
TEXT = b"Once upon a time\n"
RECORDS = b"".join(
    b"\x1etok pos=%d token=%d next=%d cost=%d\n" % (pos, token, nxt, 480_000 * (pos + 1))
    for pos, (token, nxt) in enumerate([(1, 403), (403, 407), (407, 261), (261, 378)])
)
SUMMARY = (
    b"\x1esum tokens=4 prompt_tokens=5 generated=0 cost=4800000 cost_per_token=1200000.0 tok_per_s=400.00 "
    b"peak_stack=512\n"
)
END = b"\x03llmcu end status=ok\n"
RUN = HEADER + TEXT + RECORDS + SUMMARY + END
HALF = HEADER + TEXT + RECORDS[: RECORDS.index(b"\x1etok pos=2")]  # two records, then the board stops
TOKENS = [1, 403, 407, 261, 378]


def run_info(tokenizer: Path | None = None) -> RunInfo:
    return RunInfo("stm32h743", "260k", "q8", "board", board="nucleo-h743zi", tokenizer=tokenizer)


# ---- finding the port ----


def test_find_port_by_usb_id() -> None:
    def ports() -> list[SimpleNamespace]:
        return [
            SimpleNamespace(device="/dev/ttyS0", vid=None, pid=None, serial_number=None, description="n/a"),
            SimpleNamespace(device="/dev/ttyACM1", vid=0x1366, pid=0x0105, serial_number="J", description="J-Link"),
            SimpleNamespace(device="/dev/ttyACM0", vid=0x0483, pid=0x374B, serial_number="066D", description="STLink"),
        ]

    assert uart.find_port(["0483:374b", "0483:374e"], comports=ports) == "/dev/ttyACM0"
    assert uart.find_port(["0483:374B"], serial_number="066D", comports=ports) == "/dev/ttyACM0"
    with pytest.raises(uart.PortNotFoundError, match=r"0483:374f.*/dev/ttyACM1 \(1366:0105: J-Link\).*port="):
        uart.find_port(["0483:374f"], comports=ports)
    with pytest.raises(uart.PortNotFoundError, match=r"more than one.*ttyACM1.*ttyACM0"):
        uart.find_port(["0483:374b", "1366:0105"], comports=ports)


def test_board_file_usb_ids_find_its_port() -> None:
    """The NUCLEO's board file names the ST-LINK's VID:PID; a V2-1 ST-LINK is found by it."""
    from llmcu.platform.stm32h7 import load_board

    board = load_board(ROOT / "targets" / "stm32h743", "nucleo-h743zi")
    stlink = SimpleNamespace(device="/dev/ttyACM3", vid=0x0483, pid=0x374B, serial_number="x", description="STLink")
    assert uart.find_port(board.console.usb_ids, comports=lambda: [stlink]) == "/dev/ttyACM3"
    assert board.console.baud == 115200


@pytest.mark.fault(
    area="uart",
    kind="fault",
    what="port=/dev/llmcu-no-such-port (a board not plugged in)",
    sees=r"cannot open serial port /dev/llmcu-no-such-port: ",
)
def test_open_port_error_names_the_port(sees) -> None:
    with pytest.raises(uart.PortOpenError, match="/dev/llmcu-no-such-port") as info:
        uart.open_port("/dev/llmcu-no-such-port")
    sees(str(info.value))


# ---- loop:// ----


@pytest.mark.fault(
    area="uart",
    kind="input",
    what="stale bytes of an earlier run in the OS buffer, then boot noise (0x00 0xFF) before the ready line",
    sees=r"\d+ stale bytes drained; run status ok",
)
def test_loop_capture_drains_stale_bytes_and_resets_after_opening(sees) -> None:
    port = serial.serial_for_url("loop://", timeout=0.05)
    port.write(b"\x02llmcu 1 stale run from before\nold text \x1etok pos=0")  # in the buffer before the reset
    events: list[str] = []
    received = bytearray()

    def reset() -> None:
        events.append("reset")
        port.write(b"\x00\xff boot noise\r\n" + READY + RUN)  # the board boots and answers at once

    capture = uart.capture_run(port, PARAMS, reset=reset, on_bytes=received.extend, ready_timeout=5, timeout=10)
    assert events == ["reset"] and port.is_open  # an open port given is left open
    assert capture.drained > 0 and b"stale" not in received
    sees(f"{capture.drained} stale bytes drained; run status {capture.output.status}")
    assert capture.output.ok and capture.output.token_sequence() == TOKENS and capture.output.text == TEXT
    assert capture.ready["target"] == "stm32h743" and not capture.attempts
    assert port.read(len(COMMAND) + 10) == COMMAND  # the loop echoes what was sent: the command, once
    assert uart.check_capture(capture) is capture.output
    port.close()


@pytest.mark.fault(
    area="uart",
    kind="fault",
    what="the firmware refuses the command (bad steps), and faults mid-run (HardFault, imprecise bus error)",
    sees=(
        r"(the firmware refused the command: bad_command \(at 'steps'\)|the firmware faulted: HardFault at"
        r" pc=0x08000123.*IMPRECISERR.*addr2line -e fw\.elf 0x08000123)"
    ),
)
def test_loop_capture_of_a_refusal_and_a_fault(sees) -> None:
    for answer, message in [
        (b"\x15llmcu error reason=bad_command detail=steps\n", "refused the command: bad_command.*steps"),
        (HEADER + b"Once\x03llmcu end status=fault reason=HardFault pc=0x08000123 cfsr=0x00000400\n",
         "HardFault at pc=0x08000123.*IMPRECISERR.*addr2line -e fw.elf 0x08000123"),
    ]:  # fmt: skip
        port = serial.serial_for_url("loop://", timeout=0.05)
        port.write(READY + answer)
        capture = uart.capture_run(port, PARAMS, ready_timeout=5, timeout=10)
        assert capture.complete and not capture.output.ok
        with pytest.raises(uart.RunFailedError, match=message) as info:
            uart.check_capture(capture, "fw.elf")
        sees(str(info.value))


# ---- a socket peer that plays the firmware ----


class Peer:
    """A TCP server that plays a board's console: ``script(conn, peer)`` runs on the first connection."""

    def __init__(self, script: Callable[[socket.socket, Peer], None]) -> None:
        self.script = script
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.server.getsockname()[1]}"
        self.reset = threading.Event()
        self.commands: list[bytes] = []
        self.sent = bytearray()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.server.accept()
            with conn:
                self.script(conn, self)
        except BaseException as error:  # reported by close()
            self.error = error

    def boot(self, conn: socket.socket, data: bytes) -> None:
        """What the board prints once the capture has reset it (pyserial's socket:// drops what arrives before
        its open() returns, as a UART drops what the board printed before the port was open)."""
        assert self.reset.wait(10), "the capture did not reset the board after opening the port"
        self.send(conn, data)

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        self.sent += data

    def read_command(self, conn: socket.socket, timeout: float = 10) -> bytes:
        conn.settimeout(timeout)
        line = b""
        while not line.endswith(b"\n"):
            chunk = conn.recv(1)
            if not chunk:
                raise ConnectionError("the capture closed the connection")
            line += chunk
        self.commands.append(line)
        return line

    def close(self) -> None:
        self.thread.join(timeout=10)
        self.server.close()
        if self.error is not None:
            raise self.error


@pytest.fixture
def peers():
    started: list[Peer] = []

    def start(script: Callable[[socket.socket, Peer], None]) -> Peer:
        peer = Peer(script)
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.close()


@pytest.mark.fault(
    area="uart",
    kind="input",
    what="garbage before the ready line that looks like the protocol (a stray start marker, half an end line, "
    "half a ready line), then the run in 7-byte pieces",
    sees=r"status complete, 4 tokens",
)
def test_socket_garbage_then_a_valid_run(peers, tmp_path: Path, tok512: Path, sees) -> None:
    def script(conn: socket.socket, peer: Peer) -> None:
        # Noise that looks like the protocol: a stray start marker and a half end line.
        peer.boot(conn, b"\xff\xfe\x00garbage \x02 not a header\r\n\x03llmcu en\n\x05ll" + READY)
        assert peer.read_command(conn) == COMMAND
        for at in range(0, len(RUN), 7):  # in small pieces, as a UART delivers
            peer.send(conn, RUN[at : at + 7])
        time.sleep(0.3)

    peer = peers(script)
    text = bytearray()
    with RunLog(tmp_path, run_info(tok512)) as log:
        capture = uart.capture_run(peer.url, PARAMS, reset=peer.reset.set, on_text=text.extend,
                                   on_bytes=log.write_raw, ready_timeout=5, timeout=10)  # fmt: skip
        log.finish(capture.output)
    assert capture.output.ok and capture.output.token_sequence() == TOKENS and bytes(text) == TEXT
    assert capture.port == peer.url and peer.commands == [COMMAND]
    assert (log.path / "raw.bin").read_bytes() == bytes(peer.sent)
    summary = read_log(log.path)["summary"]
    assert summary["status"] == "complete" and summary["tokens"] == 4 and summary["tok_per_s"] == 400.0
    sees(f"status {summary['status']}, {summary['tokens']} tokens")
    assert summary["ms_per_token"] == 2.5 and summary["peak_stack"] == 512


@pytest.mark.fault(
    area="uart",
    kind="fault",
    what="the board stalls after two token records (the connection stays open)",
    sees=(
        r"the UART on socket://\S+ went silent: no byte for 0\.6 s in the middle of the run \(2 token records, \d+"
        r" bytes of text so far"
    ),
)
def test_socket_stall_is_a_silence_error_and_the_partial_log_is_kept(peers, tmp_path: Path, tok512: Path, sees) -> None:
    done = threading.Event()

    def script(conn: socket.socket, peer: Peer) -> None:
        peer.boot(conn, READY)
        peer.read_command(conn)
        peer.send(conn, HALF)
        done.wait(10)  # the connection stays open: the board hangs

    peer = peers(script)
    started = time.monotonic()
    log = RunLog(tmp_path, run_info(tok512))
    with pytest.raises(uart.SilenceError, match=r"went silent: no byte for 0.6 s.*2 token records") as caught, log:
        uart.capture_run(
            peer.url, PARAMS, reset=peer.reset.set, on_bytes=log.write_raw, silence=0.6, ready_timeout=5, timeout=30
        )
    done.set()
    assert time.monotonic() - started < 5
    capture = caught.value.capture
    assert capture.reason == "silence" and not capture.complete and len(capture.output.tokens) == 2
    # The RunLog's context manager finished the log from the error's partial capture.
    logged = read_log(log.path)
    assert (log.path / "raw.bin").read_bytes() == READY + HALF
    assert logged["summary"]["status"] == "incomplete" and logged["summary"]["reason"] == "silence"
    assert "went silent" in logged["summary"]["error"]
    assert [row["next"] for row in logged["tokens"]] == [403, 407]
    sees(str(caught.value))


@pytest.mark.fault(
    area="uart",
    kind="fault",
    what="the peer hangs up after two token records (USB cable pulled)",
    sees=r"socket://\S+ closed in the middle of the run: .*\(2 token records received",
)
def test_socket_disconnect_mid_run_keeps_every_byte(peers, tmp_path: Path, sees) -> None:
    raw_at_disconnect: list[bytes] = []
    log = RunLog(tmp_path, run_info())

    def script(conn: socket.socket, peer: Peer) -> None:
        peer.boot(conn, READY)
        peer.read_command(conn)
        peer.send(conn, HALF)
        time.sleep(0.3)  # the capture has the bytes (and raw.bin must have them) before the peer dies

        raw_at_disconnect.append((log.path / "raw.bin").read_bytes())  # another reader, the log still open

    peer = peers(script)
    with pytest.raises(uart.PortClosedError, match=r"closed in the middle of the run.*2 token records") as caught:
        uart.capture_run(peer.url, PARAMS, reset=peer.reset.set, on_bytes=log.write_raw, ready_timeout=5, timeout=30)
    capture = caught.value.capture
    peer.close()
    assert raw_at_disconnect == [READY + HALF]  # flushed as it arrived, not at close
    summary = log.finish(capture.output, reason=capture.reason, error=str(caught.value))
    assert summary["status"] == "incomplete" and summary["reason"] == "disconnected" and summary["tokens"] == 2
    sees(str(caught.value))


@pytest.mark.fault(
    area="uart",
    kind="fault",
    what="the board resets once mid-run (boot noise and a new ready line)",
    sees=r'"reason": "board_reset", "tokens": 2',
)
def test_socket_reset_mid_run_resends_the_command_once(peers, tmp_path: Path, sees) -> None:
    def script(conn: socket.socket, peer: Peer) -> None:
        peer.boot(conn, READY)
        peer.read_command(conn)
        peer.send(conn, HALF + b"\x00\xffboot\r\n" + READY)  # the board resets in the middle of a record list
        assert peer.read_command(conn) == COMMAND
        peer.send(conn, RUN + READY)  # a board comes back for the next command

    peer = peers(script)
    with RunLog(tmp_path, run_info()) as log:
        capture = uart.capture_run(
            peer.url, PARAMS, reset=peer.reset.set, on_bytes=log.write_raw, ready_timeout=5, timeout=30
        )
        summary = log.finish(capture.output, attempts=capture.attempts)
    assert capture.output.ok and capture.output.token_sequence() == TOKENS and capture.resent == 1
    assert [(a.reason, len(a.tokens), a.complete) for a in capture.attempts] == [("board_reset", 2, False)]
    assert peer.commands == [COMMAND, COMMAND]
    assert summary["status"] == "complete" and summary["attempts"] == [
        {"reason": "board_reset", "tokens": 2, "text_bytes": len(TEXT)}
    ]
    sees(json.dumps(summary["attempts"]))


@pytest.mark.fault(
    area="uart",
    kind="fault",
    what="the board resets mid-run with resend_on_reset=0, and resets twice with the default",
    sees=r"the board reset \(a new ready line\) in the middle of the run, after 2 token records and \d+ bytes of text",
)
def test_socket_reset_without_resend_and_a_second_reset_are_errors(peers, sees) -> None:
    def resets(count: int) -> Callable[[socket.socket, Peer], None]:
        def script(conn: socket.socket, peer: Peer) -> None:
            peer.boot(conn, READY)
            for _ in range(count):
                peer.read_command(conn)
                peer.send(conn, HALF + READY)
            time.sleep(0.5)

        return script

    peer = peers(resets(1))
    with pytest.raises(uart.BoardResetError, match=r"board reset.*2 token records") as caught:
        uart.capture_run(peer.url, PARAMS, reset=peer.reset.set, resend_on_reset=0, ready_timeout=5, timeout=30)
    sees(str(caught.value))
    assert caught.value.capture.reason == "board_reset" and len(caught.value.capture.attempts) == 1

    peer = peers(resets(2))
    with pytest.raises(uart.BoardResetError, match="sent again 1 time") as caught:
        uart.capture_run(peer.url, PARAMS, reset=peer.reset.set, ready_timeout=5, timeout=30)
    sees(str(caught.value))
    assert [a.reason for a in caught.value.capture.attempts] == ["board_reset", "board_reset"]


def test_one_open_port_serves_two_commands(peers) -> None:
    """A board prints its next ready line right after the end line; the next capture on the port starts with it."""

    def script(conn: socket.socket, peer: Peer) -> None:
        peer.boot(conn, READY)
        for _ in range(2):
            peer.read_command(conn)
            peer.send(conn, RUN + READY)
        time.sleep(0.3)

    peer = peers(script)
    handle = uart.open_port(peer.url)
    try:
        first = uart.capture_run(handle, PARAMS, reset=peer.reset.set, ready_timeout=5, timeout=30)
        second = uart.capture_run(handle, PARAMS, poke_after=None, ready_timeout=5, timeout=30)
    finally:
        handle.close()
    assert first.output.ok and second.output.ok and not second.poked and len(peer.commands) == 2
    assert second.ready["target"] == "stm32h743"


@pytest.mark.fault(
    area="uart",
    kind="fault",
    what="a new start marker mid-run without a ready line (a board that restarted the run)",
    sees=r"attempts: \['restarted'\], then ok",
)
def test_socket_new_start_marker_mid_run_takes_the_new_run(peers, sees) -> None:
    def script(conn: socket.socket, peer: Peer) -> None:
        peer.boot(conn, READY)
        peer.read_command(conn)
        peer.send(conn, HALF + RUN)
        time.sleep(0.3)

    peer = peers(script)
    capture = uart.capture_run(peer.url, PARAMS, reset=peer.reset.set, ready_timeout=5, timeout=30)
    assert capture.output.ok and capture.output.token_sequence() == TOKENS
    assert [a.reason for a in capture.attempts] == ["restarted"] and capture.resent == 0
    sees(f"attempts: {[a.reason for a in capture.attempts]}, then {capture.output.status}")


def test_socket_waiting_firmware_is_poked_for_a_ready_line(peers) -> None:
    """No reset hook: the firmware printed its ready line before the port opened; an empty line gets a new one."""

    def script(conn: socket.socket, peer: Peer) -> None:
        assert peer.read_command(conn) == b"\n"
        peer.send(conn, READY)
        assert peer.read_command(conn) == COMMAND
        peer.send(conn, RUN)
        time.sleep(0.3)

    peer = peers(script)
    capture = uart.capture_run(peer.url, PARAMS, poke_after=0.2, ready_timeout=5, timeout=30)
    assert capture.poked and capture.output.ok


@pytest.fixture
def stop():
    event = threading.Event()
    yield event
    event.set()


@pytest.mark.fault(
    area="uart",
    kind="input",
    what="only garbage with protocol bytes (STX, RS, ETX) and no ready line",
    sees=(
        r"no ready line from the firmware on socket://\S+ within 0\.5 s \(\d+ bytes received; last bytes: .*noise"
        r" without"
    ),
)
def test_socket_garbage_without_a_ready_line(peers, stop, sees) -> None:
    def garbage(conn: socket.socket, peer: Peer) -> None:
        peer.boot(conn, b"\x02\x1e\x03 noise without a ready line\n" * 3)
        stop.wait(10)

    peer = peers(garbage)
    with pytest.raises(uart.ReadyTimeoutError) as caught:
        uart.capture_run(peer.url, PARAMS, reset=peer.reset.set, ready_timeout=0.5, poke_after=None, timeout=30)
    assert caught.value.capture.reason == "ready_timeout"
    sees(str(caught.value))


@pytest.mark.fault(
    area="uart",
    kind="fault",
    what="the board's bring-up never finishes (no HSE: a dead crystal), reported on the reset clock",
    sees=r"the firmware faulted before it was ready: the board could not bring itself up: hse_not_ready: "
    r"the HSE oscillator never started .*\(silicon revision Y\)",
)
def test_socket_boot_that_never_finishes(peers, stop, sees) -> None:
    def boot_fails(conn: socket.socket, peer: Peer) -> None:
        peer.boot(conn, b"\x03llmcu end status=fault reason=hse_not_ready stage=boot rev=Y clock_hz=64000000\n")
        stop.wait(10)

    peer = peers(boot_fails)
    with pytest.raises(uart.RunFailedError) as caught:
        uart.capture_run(peer.url, PARAMS, reset=peer.reset.set, ready_timeout=5, timeout=30)
    sees(str(caught.value))


@pytest.mark.fault(
    area="uart",
    kind="fault",
    what="the firmware faults while booting (a BusFault report before the ready line)",
    sees=r"the firmware faulted before it was ready: BusFault at pc=0x08000400",
)
def test_socket_fault_at_boot(peers, stop, sees) -> None:
    def fault_at_boot(conn: socket.socket, peer: Peer) -> None:
        peer.boot(conn, b"\x03llmcu end status=fault reason=BusFault pc=0x08000400 cfsr=0x00000200\n")
        stop.wait(10)

    peer = peers(fault_at_boot)
    with pytest.raises(uart.RunFailedError) as caught:
        uart.capture_run(peer.url, PARAMS, reset=peer.reset.set, ready_timeout=5, timeout=30)
    sees(str(caught.value))


@pytest.mark.fault(
    area="uart",
    kind="input",
    what="boot noise that contains the end and start markers' bytes (ETX, then STX) before the ready line",
    sees=r"status ok, 5 tokens",
)
def test_socket_noise_with_protocol_bytes_before_the_ready_line_is_skipped(peers, sees) -> None:
    def script(conn: socket.socket, peer: Peer) -> None:
        # before the fix this was a ProtocolError ("bad start line") that ended the capture
        peer.boot(conn, b"rom \x03 x \x02 junk\r\n" + READY)
        peer.read_command(conn)
        peer.send(conn, RUN)
        time.sleep(0.3)

    peer = peers(script)
    capture = uart.capture_run(peer.url, PARAMS, reset=peer.reset.set, ready_timeout=5, timeout=30)
    sees(f"status {capture.output.status}, {len(capture.output.token_sequence())} tokens")


def _noise_then(tail: bytes, stop: threading.Event) -> Callable[[socket.socket, Peer], None]:
    def script(conn: socket.socket, peer: Peer) -> None:
        peer.boot(conn, READY)
        peer.read_command(conn)
        peer.send(conn, HALF + b"\x00\xff brown-out\r\n" + tail)
        stop.wait(10)

    return script


@pytest.mark.fault(
    area="uart",
    kind="fault",
    what="noise in the middle of the records (a brown-out) and then nothing",
    sees=r"the output on socket://\S+ stopped following the protocol \(unexpected line after the text: "
    r".*brown-out.*\) and no new run started within 0\.5 s",
)
def test_socket_noise_mid_run(peers, stop, sees) -> None:
    peer = peers(_noise_then(b"", stop))
    with pytest.raises(uart.CaptureError) as caught:
        uart.capture_run(peer.url, PARAMS, reset=peer.reset.set, ready_timeout=5, silence=0.5, timeout=30)
    assert caught.value.capture.reason == "protocol_error" and len(caught.value.capture.output.tokens) == 2
    sees(str(caught.value))


@pytest.mark.fault(
    area="uart",
    kind="fault",
    what="noise mid-run followed by a HardFault report",
    sees=r"the firmware faulted: HardFault at pc=0x08000200.*PRECISERR BFARVALID",
)
def test_socket_noise_then_a_fault_report(peers, stop, sees) -> None:
    fault = b"\x03llmcu end status=fault reason=HardFault pc=0x08000200 cfsr=0x00008200\n"
    peer = peers(_noise_then(fault, stop))
    capture = uart.capture_run(peer.url, PARAMS, reset=peer.reset.set, ready_timeout=5, silence=5, timeout=30)
    assert capture.output.status == "fault" and len(capture.output.tokens) == 2  # the report after the noise
    with pytest.raises(uart.RunFailedError) as caught:
        uart.check_capture(capture)
    sees(str(caught.value))


@pytest.mark.fault(
    area="uart",
    kind="fault",
    what="a board that never stops sending text (never silent, never done)",
    sees=r"the run on socket://\S+ did not end within 0\.8 s \(0 token records so far",
)
def test_socket_run_that_never_ends(peers, stop, sees) -> None:
    def trickle(conn: socket.socket, peer: Peer) -> None:
        peer.boot(conn, READY)
        peer.read_command(conn)
        peer.send(conn, HEADER)
        with contextlib.suppress(OSError):  # the capture hangs up when its time is over
            while not stop.wait(0.05):  # never silent, never done
                peer.send(conn, b"a")

    peer = peers(trickle)
    with pytest.raises(uart.CaptureTimeoutError) as caught:
        uart.capture_run(peer.url, PARAMS, reset=peer.reset.set, ready_timeout=5, silence=5, timeout=0.8)
    sees(str(caught.value))


# ---- the QEMU twin's console on a TCP socket ----

needs_qemu = pytest.mark.skipif(
    subprocess.run(["sh", "-c", "command -v qemu-system-arm && command -v arm-none-eabi-gcc"],
                   capture_output=True).returncode != 0,
    reason="qemu-system-arm or arm-none-eabi-gcc missing (tools/setup.sh installs them)",
)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def twin_elf(tmp_path_factory: pytest.TempPathFactory, stories260k: Path) -> Path:
    # its own build folder: the tests below interrupt `scons run` in it, which must not wait on another's lock
    build_root = tmp_path_factory.mktemp("uart-twin")
    scons(["target=qemu-m7", "model=260k", "quant=q8", f"build_dir={build_root}"], stories260k.parent)
    return build_root / "qemu-m7" / "260k-q8" / "firmware.elf"


@needs_qemu
def test_qemu_twin_captured_over_its_serial_socket_equals_a_direct_run(twin_elf: Path, tmp_path: Path) -> None:
    params = RunParams("Once upon a time", 64, 0.0, 0.9, 1)
    port = _free_port()
    command = qemu_command(twin_elf, serial=f"tcp:127.0.0.1:{port},server=on,wait=on")
    with subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE) as qemu:  # fmt: skip
        try:
            with RunLog(tmp_path, run_info()) as log:
                capture = uart.capture_run(f"socket://127.0.0.1:{port}", params, on_bytes=log.write_raw,
                                           open_timeout=10, poke_after=1.0, ready_timeout=30, timeout=120)  # fmt: skip
                log.finish(capture.output)
            assert qemu.wait(timeout=10) == 0
        finally:
            qemu.kill()
    direct = run_firmware(twin_elf, params)
    output = uart.check_capture(capture)
    assert output.token_sequence() == direct.token_sequence() and output.text == direct.text
    assert [r.cost for r in output.tokens] == [r.cost for r in direct.tokens]  # icount: exactly the same work
    assert capture.ready["target"] == "qemu-m7"
    assert parse((log.path / "raw.bin").read_bytes()).token_sequence() == direct.token_sequence()


@needs_qemu
def test_qemu_twin_run_alias_writes_a_log(twin_elf: Path, tmp_path: Path, stories260k: Path) -> None:
    build_root = twin_elf.parents[2]
    args = ["target=qemu-m7", "model=260k", "quant=q8", f"build_dir={build_root}", f"log_dir={tmp_path}"]
    result = scons([*args, "run", "prompt=Once upon a time", "steps=16", "temperature=0"], stories260k.parent)
    lines = result.stdout.splitlines()
    summary_at = next(i for i, line in enumerate(lines) if line.startswith("[llmcu] 16 tokens"))
    match = re.fullmatch(r"\[llmcu\] log: (.*)", lines[summary_at + 1])
    assert match, result.stdout
    folder = Path(match.group(1))
    assert folder.parent == tmp_path and re.fullmatch(r"\d{8}T\d{6}Z-qemu-m7-260k-q8", folder.name)
    logged = read_log(folder)
    assert logged["summary"]["status"] == "complete" and logged["summary"]["runner"] == "qemu"
    assert logged["summary"]["unit"] == "instructions" and len(logged["tokens"]) == 16
    assert logged["summary"]["host"]["qemu"].startswith("QEMU emulator version")
    assert all(row["ms"] is None for row in logged["tokens"])  # instructions have no clock


@needs_qemu
def test_run_twin_reports_a_qemu_that_cannot_start(twin_elf: Path) -> None:
    image = SimpleNamespace(elf=twin_elf, target=SimpleNamespace(run=SimpleNamespace(machine="no-such-machine")))
    with pytest.raises(runs.qemu.QemuError, match="QEMU exited with status"):
        runs.run_twin(image, PARAMS)  # type: ignore[arg-type]


def _qemu_running(elf: Path) -> int | None:
    """The pid of the qemu-system-arm that runs this firmware (its command line names the ELF), from /proc."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if argv[0].endswith(b"qemu-system-arm") and str(elf).encode() in argv:
                    return int(entry.name)
    return None


@needs_qemu
@pytest.mark.fault(
    area="uart",
    kind="fault",
    what="QEMU SIGKILLed while the twin is generating (`scons run`, console on a TCP socket)",
    sees=r"closed in the middle of the run: .*\(\d+ token records received; .*QEMU was killed by SIGKILL",
)
def test_qemu_killed_mid_run_keeps_the_partial_log(twin_elf: Path, tmp_path: Path, stories260k: Path, sees) -> None:
    build_root = twin_elf.parents[2]
    args = ["target=qemu-m7", "model=260k", "quant=q8", f"build_dir={build_root}", f"log_dir={tmp_path}"]
    env = dict(os.environ, LLMCU_MODELS=str(stories260k.parent), LLMCU_OFFLINE="1")
    command = [sys.executable, "-m", "SCons", "-Q", *args, "run", "prompt=Once upon a time", "steps=0", "temperature=0"]
    scons_run = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed: list[int] = []
    try:
        deadline = time.monotonic() + 300
        qemu_pid = None
        while time.monotonic() < deadline and scons_run.poll() is None and not killed:
            qemu_pid = qemu_pid or _qemu_running(twin_elf)  # found once, before it generates
            raws = list(tmp_path.glob("*/raw.bin"))
            raw = raws[0].read_bytes() if raws else b""
            if qemu_pid and b"\x02llmcu" in raw:
                # QEMU generates faster than the capture reads (the socket buffers its output), so it is paused
                # and let run in short steps until the log holds some of the story, then killed mid-generation.
                # (The token records follow the text, all at once; a kill among them was a matter of luck.)
                os.kill(qemu_pid, signal.SIGSTOP)
                time.sleep(0.2)  # the capture drains what is in the socket
                raw = raws[0].read_bytes()
                if len(raw) - raw.index(b"\x02llmcu") >= 300:
                    assert b"\x03llmcu end" not in raw
                    os.kill(qemu_pid, signal.SIGKILL)
                    killed.append(qemu_pid)
                else:
                    os.kill(qemu_pid, signal.SIGCONT)
                    time.sleep(0.03)
            time.sleep(0.005)
        out, err = scons_run.communicate(timeout=120)
    finally:
        if scons_run.poll() is None:
            scons_run.kill()
    assert killed, f"QEMU was not seen generating:\n{scons_run.stdout}"
    assert scons_run.returncode != 0, out + err
    sees(err + out)
    folder = next(tmp_path.iterdir())
    assert re.search(rf"\[llmcu\] log: {re.escape(str(folder))} \(disconnected\)", out), out
    logged = read_log(folder)
    summary = logged["summary"]
    assert summary["status"] == "incomplete" and summary["reason"] == "disconnected"
    assert "QEMU was killed by SIGKILL" in summary["error"]
    raw = (folder / "raw.bin").read_bytes()
    parsed = parse(raw)
    records = len(parsed.tokens)  # killed during the text: the records, which follow it, have not come
    # everything QEMU sent before it died is in raw.bin, and the story so far in the log: nothing lost
    assert records == raw.count(b"\x1etok") == 0 and len(parsed.text) >= 150
    assert parsed.text.startswith(b"Once upon a time")
    assert len(logged["tokens"]) == summary["tokens"] == records


# ---- a board run, with llmcu.device.flashing and the probe faked at their boundary ----


class FakeProbes:
    """llmcu.device.flashing's SessionFactory: one probe, whose session's reset boots the peer's firmware."""

    def __init__(self, peer: Peer, events: list[str]) -> None:
        self.peer, self.events = peer, events

    def probes(self) -> list:
        return [ProbeInfo("066DFF48", "STM32 STLink")]

    def open(self, probe: object, options: dict) -> SimpleNamespace:
        def reset() -> None:
            self.events.append(f"reset {options['target_override']}")
            self.peer.reset.set()

        return SimpleNamespace(target=SimpleNamespace(reset=reset), close=lambda: self.events.append("close"))


def test_board_run_flashes_opens_the_console_then_resets(
    peers, tmp_path: Path, stories260k: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmcu.builder.settings import configure

    monkeypatch.setenv("LLMCU_MODELS", str(stories260k.parent))
    settings = configure({"target": "stm32h743", "model": "260k", "quant": "q8"}, download=False)
    events: list[str] = []

    def script(conn: socket.socket, peer: Peer) -> None:
        events.append("console open")
        peer.boot(conn, b"\x00" + READY)
        assert peer.read_command(conn) == encode_command(settings.run)
        peer.send(conn, RUN + READY)
        time.sleep(0.3)

    peer = peers(script)
    probes = FakeProbes(peer, events)

    def flashed(image: Path, target: object, **options: object) -> SimpleNamespace:
        events.append(f"flash reset={options['reset']}")
        assert image == settings.images[0].out_dir and target is settings.target
        assert options["session_factory"] is probes
        return SimpleNamespace(probe=probes.probes()[0], lines=lambda: ["internal flash: unchanged, not reprogrammed"])

    # flashing.flash_firmware's own signature: a call the real function would refuse fails here too
    fake = create_autospec(flashing.flash_firmware, side_effect=flashed)
    options = run_options(option_values({"log_dir": str(tmp_path), "port": peer.url}))
    output = runs.run_board(settings, settings.images[0], options, flash_firmware=fake, session_factory=probes)
    assert output.ok and output.token_sequence() == TOKENS
    assert events == ["flash reset=False", "console open", "reset stm32h743xx", "close"]
    printed = capsys.readouterr().out
    assert "[llmcu] flash: internal flash: unchanged" in printed
    folder = Path(re.search(r"\[llmcu\] log: (\S+)", printed).group(1))  # type: ignore[union-attr]
    summary = read_log(ROOT / folder if not folder.is_absolute() else folder)["summary"]
    assert summary["runner"] == "board" and summary["port"] == peer.url and summary["status"] == "complete"
    assert summary["board"] == "nucleo-h743zi" and summary["host"]["probe"] == "066DFF48"

    fake.side_effect = NoProbeError("no debug probe found (is the board connected? `pyocd list`)")
    with pytest.raises(runs.LlmcuError, match=r"no debug probe found.*add hil=qemu"):
        runs.run_board(settings, settings.images[0], options, flash_firmware=fake, session_factory=probes)


def test_board_console_is_the_probes_own_port() -> None:
    def ports() -> list[SimpleNamespace]:
        return [
            SimpleNamespace(device="/dev/ttyACM0", vid=0x0483, pid=0x374B, serial_number="AAAA", description="a"),
            SimpleNamespace(device="/dev/ttyACM1", vid=0x0483, pid=0x374B, serial_number="066DFF48", description="b"),
        ]

    assert runs.board_port(("0483:374b",), "066DFF48", ports) == "/dev/ttyACM1"
    with pytest.raises(uart.PortNotFoundError, match="more than one"):
        runs.board_port(("0483:374b",), "", ports)
