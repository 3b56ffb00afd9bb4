"""Synthetic run logs for the power and report tests: a protocol stream written through llmcu.device.runlog."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

from llmcu.device.protocol import parse
from llmcu.device.runlog import RunInfo, RunLog


def protocol_stream(
    tokens: int,
    cost: int,
    *,
    unit: str = "cycles",
    clock_hz: int = 480_000_000,
    target: str = "stm32h743",
    slope: int = 0,
) -> bytes:
    """A complete run as a board prints it: start line, text, one record per pass, summary, end line."""
    lines = [f"\x02llmcu 1 target={target} model=stories260K quant=q8 unit={unit} clock_hz={clock_hz}\n"]
    lines.append("Once upon a time, there was a tiny model.\n")
    lines += [f"\x1etok pos={i} token={i + 1} next={i + 2} cost={cost + slope * i}\n" for i in range(tokens)]
    tok_per_s = clock_hz / cost if unit == "cycles" else 0
    lines.append(
        f"\x1esum tokens={tokens} prompt_tokens=5 generated={tokens - 5} cost={tokens * cost} cost_per_token={cost} "
        f"tok_per_s={tok_per_s:.2f} peak_stack=2344\n"
    )
    lines.append("\x03llmcu end status=ok\n")
    return "".join(lines).encode()


def make_run_dir(
    root: Path,
    *,
    tokens: int = 200,
    cost: int = 4_800_000,
    unit: str = "cycles",
    clock_hz: int = 480_000_000,
    target: str = "stm32h743",
    board: str = "nucleo-h743zi",
    build: Path | None = None,
    markers: tuple[float, float] | None = None,
    settings: dict | None = None,
    slope: int = 0,
) -> Path:
    """A log folder as llmcu.device.runlog writes it; ``markers`` are the host times of the start and end lines."""
    stream = protocol_stream(tokens, cost, unit=unit, clock_hz=clock_hz, target=target, slope=slope)
    values = {"build": str(build)} if build is not None else {}
    values.update(settings or {})
    info = RunInfo(target=target, model="stories260K", quant="q8", runner="board", board=board, settings=values)
    log = RunLog(root, info)
    log.write_raw(stream)
    log.finish(parse(stream))
    path = log.path / "summary.json"
    summary = json.loads(path.read_text())
    # the whole stream arrived in one write here, so replace runlog's own marker times: given ones, or none
    summary["start_marker_time"], summary["end_marker_time"] = markers if markers is not None else (None, None)
    path.write_text(json.dumps(summary, indent=2))
    return log.path


# ---- LPM01A: a fake shield on a TCP socket (pyserial socket://) ----


class FakeShield(threading.Thread):
    """Speaks the PowerShield command protocol: acks, refusals with an error detail, a streamed acquisition."""

    def __init__(self, stream: str, refuse: dict[str, str] | None = None) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.refuse = refuse or {}
        self.commands: list[str] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]

    def run(self) -> None:
        connection, _ = self.server.accept()
        with connection:
            buffer = b""
            while data := connection.recv(4096):
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    self.answer(connection, line.decode().strip())
        self.server.close()

    def answer(self, connection: socket.socket, command: str) -> None:
        self.commands.append(command)
        name = command.split()[0]
        if command in self.refuse:
            reply = f"PowerShield > error {command}\r\nPowerShield > Error detail: {self.refuse[command]}\r\n"
        elif name == "version":
            reply = "PowerShield > ack version 1.0.7\r\n"
        elif name == "start":
            reply = "PowerShield > ack start\r\n" + self.stream
        elif name == "stop":
            reply = "PowerShield > ack stop\r\nPowerShield > Acquisition completed\r\n"
        else:
            reply = f"PowerShield > ack {command}\r\n"
        connection.sendall(reply.encode())
