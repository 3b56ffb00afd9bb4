"""`scons console` (llmcu.device.session, .channels): many prompts on one running image.

On the host program and on the QEMU twin: prompts answered in order on one process, /commands that change the
settings, a line the firmware refuses answered and the session going on, Ctrl-C turned into a stop byte that
ends the generation after its current token (reason=stopped) while the session goes on, everything in one log
folder. A board's console is exercised at its serial boundary: a socket:// port in front of the real console
program that vanishes in the middle of a session and comes back (reported, reopened, the log kept, the board
reset once). `scons console prompts=FILE` end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from llmcu.builder.settings import BuildSettings, configure, option_values, run_options
from llmcu.device import channels, session
from llmcu.device.protocol import parse
from llmcu.device.runlog import RunInfo
from support.build import scons

needs_qemu = pytest.mark.skipif(
    shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
    reason="qemu-system-arm or arm-none-eabi-gcc missing (tools/setup.sh installs them)",
)


@pytest.fixture(scope="module")
def build_root(q8_build_root: Path) -> Path:
    return q8_build_root


def _settings(target: str, build_root: Path, models: Path, **extra: str) -> BuildSettings:
    os.environ["LLMCU_MODELS"] = str(models)
    return configure({"target": target, "model": "260k", "quant": "q8", "build_dir": str(build_root), **extra})


@pytest.fixture(scope="module")
def host_build(build_root: Path, stories260k: Path) -> BuildSettings:
    return _settings("host", build_root, stories260k.parent)


@pytest.fixture(scope="module")
def twin_build(build_root: Path, stories260k: Path) -> BuildSettings:
    return _settings("qemu-m7", build_root, stories260k.parent)


def _host_tokens(settings: BuildSettings, prompt: str, steps: int, temperature: float, seed: int) -> list[int]:
    args = ["-p", prompt, "-n", str(steps), "-t", repr(temperature), "-P", "0.9", "-s", str(seed)]
    result = subprocess.run([str(settings.out_dir / "llmcu"), *args], capture_output=True, check=True, timeout=60)
    return parse(result.stdout).token_sequence()


class Interrupting:
    """A port that sends this process a SIGINT (a Ctrl-C in the terminal) right after the command of chosen
    prompts has gone out: the stop byte then follows the command whatever the runner's speed (the host program
    is done with 200 tokens in 10 ms)."""

    def __init__(self, handle, interrupt: set[int]) -> None:
        self.__dict__.update(handle=handle, interrupt=interrupt, commands=0)

    def __getattr__(self, name: str):
        return getattr(self.handle, name)

    def __setattr__(self, name: str, value) -> None:
        setattr(self.handle, name, value)

    def write(self, data: bytes) -> int:
        written = self.handle.write(data)
        if data.startswith(b"run "):
            self.__dict__["commands"] += 1
            if self.commands in self.interrupt:
                self.handle.flush()
                os.kill(os.getpid(), signal.SIGINT)
        return written


class InterruptingSession(session.ConsoleSession):
    def __init__(self, *args, interrupt: set[int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.interrupt = interrupt

    def _open(self) -> None:
        super()._open()
        self.handle = Interrupting(self.handle, self.interrupt)
        self.channel.handle = self.handle  # the stop byte goes through it too


def _serve(settings, tmp_path: Path, lines: list[str], interrupt: set[int] = frozenset()) -> session.ConsoleSession:
    options = run_options(option_values({"log_dir": str(tmp_path / "logs")}))
    channel, info = session.open_channel(settings, options)
    run = settings.run
    start = session.Settings("", run.steps, run.temperature, run.topp, run.seed)
    console = InterruptingSession(channel, info, options.log_dir, start, interrupt=set(interrupt), echo_text=False)
    console.serve(lines)
    return console


SCRIPT = [
    "/set steps=24 temperature=0 seed=3",
    "Once upon a time",
    "/raw run steps=many",  # refused by the firmware: the session goes on
    "/topp 1.5",  # refused here, before anything is sent
    "/nonsense",
    "/temperature 1.0",
    "The dog",
    "/quit",
    "never sent",
]


def _check_script(console: session.ConsoleSession, host: BuildSettings) -> None:
    exchanges = console.exchanges
    assert [(e.kind, e.status) for e in exchanges] == [("prompt", "ok"), ("raw", "rejected"), ("prompt", "ok")]
    first, refused, second = exchanges
    assert "bad_command" in refused.error and "steps" in refused.error
    assert first.settings == {"steps": 24, "temperature": 0.0, "topp": 0.9, "seed": 3}
    assert second.settings["temperature"] == 1.0
    # the same tokens as the host program run on its own with the same settings (q8 is bit-identical)
    assert first.tokens == _host_tokens(host, "Once upon a time", 24, 0.0, 3)
    assert second.tokens == _host_tokens(host, "The dog", 24, 1.0, 3)
    assert first.text.startswith("Once upon a time")

    folder = console.log.path
    assert folder.name.split("-", 1)[1].startswith(f"console-{console.info.target}-260k-q8")
    records = [json.loads(line) for line in (folder / "exchanges.jsonl").read_text().splitlines()]
    assert [record["line"] for record in records] == ["Once upon a time", "run steps=many", "The dog"]
    transcript = (folder / "transcript.md").read_text()
    assert "> Once upon a time" in transcript and "$ run steps=many" in transcript and "never sent" not in transcript
    runs_dir = folder / "runs"
    summaries = [json.loads((path / "summary.json").read_text()) for path in sorted(runs_dir.iterdir())]
    assert [summary["status"] for summary in summaries] == ["complete", "incomplete", "complete"]
    raw = (folder / "raw.bin").read_bytes()
    assert raw.count(b"\x05llmcu ready") >= 3 and raw.count(b"\x03llmcu end status=ok") == 2


def test_host_console_answers_a_script(host_build: BuildSettings, tmp_path: Path) -> None:
    _check_script(_serve(host_build, tmp_path, SCRIPT), host_build)


@needs_qemu
def test_twin_console_serves_many_prompts_on_one_qemu(twin_build, host_build, tmp_path: Path) -> None:
    console = _serve(twin_build, tmp_path, SCRIPT)
    _check_script(console, host_build)
    # one QEMU served them all: a single boot (reset=power_on once), ready again after every line
    raw = (console.log.path / "raw.bin").read_bytes()
    assert raw.count(b"reset=") == raw.count(b"\x05llmcu ready")


@pytest.mark.parametrize("where", ["host", pytest.param("twin", marks=needs_qemu)])
def test_ctrl_c_stops_the_generation_and_the_session_goes_on(where: str, request, tmp_path: Path) -> None:
    settings = request.getfixturevalue(f"{where}_build")
    lines = ["/set steps=200 temperature=0", "Once upon a time", "Once upon a time"]
    # The host program makes its 200 tokens in about 10 ms: on a machine busy with other tests the stop byte, sent
    # microseconds after the command, can still arrive after them. Three tries (each its own session) tell that
    # apart from a stop that never works; the twin takes a second and needs one.
    for attempt in range(3 if where == "host" else 1):
        console = _serve(settings, tmp_path / f"try{attempt}", lines, interrupt={1})
        if console.exchanges[0].status == "stopped":
            break
    stopped, whole = console.exchanges
    assert (stopped.status, stopped.reason) == ("stopped", "stopped")
    assert (whole.status, whole.reason) == ("ok", "")
    assert len(whole.tokens) == 201
    # stopped before the end, and what it produced is the start of the whole run. "At once" is the twin's to show
    # (200 tokens take it about a second): the host program makes them in 8 ms, less than a busy machine may take
    # to schedule the stop byte's writer.
    assert 2 <= len(stopped.tokens) < (100 if where == "twin" else len(whole.tokens))
    assert whole.tokens[: len(stopped.tokens)] == stopped.tokens
    summary = json.loads((console.log.path / stopped.run_log / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["run_reason"] == "stopped"


def test_settings_are_checked_before_anything_is_sent() -> None:
    start = session.Settings(steps=10)
    assert start.changed({"seed": "7", "topp": "0.5"}).describe() == "steps=10 temperature=1.0 topp=0.5 seed=7"
    for bad, message in [({"seed": "0"}, "seed=0"), ({"topp": "x"}, "not a number"), ({"top": "1"}, "unknown")]:
        with pytest.raises(session.OptionError, match=message):
            start.changed(bad)


def test_lines_come_from_a_file_or_a_pipe(tmp_path: Path) -> None:
    script = tmp_path / "prompts.txt"
    script.write_text("Once\n/steps 5\nThe cat\n", encoding="utf-8")
    assert list(session.input_lines(str(script))) == ["Once", "/steps 5", "The cat"]
    with pytest.raises(session.OptionError, match="cannot read"):
        list(session.input_lines(str(tmp_path / "missing.txt")))
    with open(script, encoding="utf-8") as piped:  # not a terminal: read as it is
        assert [line.strip() for line in session.input_lines(stdin=piped)] == ["Once", "/steps 5", "The cat"]


# ---- a board's console, at its serial boundary ----


class VanishingBoard:
    """A 'board' on a TCP port: each connection is relayed to one console program (the firmware's console
    protocol, byte for byte), which stays up across connections as a board does. ``drop()`` closes the
    connection and stops listening for ``gone`` seconds (a USB port that went away and came back)."""

    def __init__(self, program: Path) -> None:
        self.process = subprocess.Popen([str(program), "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.client: socket.socket | None = None
        self.drop_after_bytes = 0
        self.sent = 0
        self.resets = 0
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._pump_out, daemon=True).start()

    def _listen(self) -> socket.socket:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(1)
        return server

    def _accept(self) -> None:
        while not self.closed.is_set():
            with self._listen() as server:
                client, _ = server.accept()
            self.client = client
            while True:
                try:
                    data = client.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    break
                if self.client is not client:
                    break  # dropped: the bytes after the drop never reach the board
                self.process.stdin.write(data)
                self.process.stdin.flush()
            if self.client is client:
                self.client = None

    def _pump_out(self) -> None:
        while chunk := self.process.stdout.read1(4096):
            client = self.client
            if client is None:
                continue  # nobody listening: the bytes are lost, as on a UART
            try:
                if self.drop_after_bytes and self.sent + len(chunk) > self.drop_after_bytes:
                    self.drop_after_bytes = 0
                    self.client = None  # what follows is lost until the port is opened again
                    client.sendall(chunk[:10])
                    client.shutdown(socket.SHUT_RDWR)
                    client.close()
                    continue
                self.sent += len(chunk)
                client.sendall(chunk)
            except OSError:  # the session closed its end first
                continue

    def reset(self) -> None:
        """What a reset through the probe shows on the console: a fresh ready line (an empty line makes the
        console program print one)."""
        self.resets += 1
        self.process.stdin.write(b"\n")
        self.process.stdin.flush()

    def close(self) -> None:
        self.closed.set()
        self.process.kill()
        self.process.wait()


def test_board_console_survives_a_vanished_port(host_build: BuildSettings, tmp_path: Path) -> None:
    board = VanishingBoard(host_build.out_dir / "llmcu")
    try:
        channel = channels.board_channel(
            f"socket://127.0.0.1:{board.port}", 115200, board.reset, "test board", {"probe": "fake"}
        )
        channel.poke_after = 0.3
        info = RunInfo("host", "260k", "q8", "board", port=channel.port)
        console = session.ConsoleSession(
            channel, info, tmp_path / "logs", session.Settings(steps=40, temperature=0.0), echo_text=False
        )

        def lines():
            yield "Once upon a time"
            board.drop_after_bytes = board.sent + 200  # in the middle of the next answer
            yield "The dog"
            yield "The cat"

        console.serve(lines())
    finally:
        board.close()
    first, cut, after = console.exchanges
    assert first.status == "ok" and after.status == "ok"
    assert cut.status == "failed" and cut.reason == "disconnected"
    assert after.tokens == _host_tokens(host_build, "The cat", 40, 0.0, 1)
    assert board.resets == 1  # reset once, at the start; not again when the port came back
    transcript = (console.log.path / "transcript.md").read_text()
    assert "reopening" in transcript
    assert (console.log.path / "raw.bin").read_bytes().count(b"\x03llmcu end status=ok") >= 2


def test_scons_console_reads_prompts_from_a_file(host_build, build_root: Path, stories260k: Path, tmp_path) -> None:
    script = tmp_path / "prompts.txt"
    script.write_text("/steps 16\nOnce upon a time\n/raw run bogus\nThe dog\n", encoding="utf-8")
    result = scons(
        ["target=host", "model=260k", "quant=q8", f"build_dir={build_root}", "console", f"prompts={script}",
         "temperature=0", f"log_dir={tmp_path / 'logs'}"],
        stories260k.parent,
    )  # fmt: skip
    assert result.stdout.count(" tok/s seen here") == 2
    assert "refused the line: bad_command" in result.stdout
    (folder,) = (tmp_path / "logs").iterdir()
    assert len((folder / "exchanges.jsonl").read_text().splitlines()) == 3
