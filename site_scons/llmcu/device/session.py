"""`scons console`: one running image answers many prompts, typed in a terminal or read from a file.

Each line is a prompt, sent to the firmware (or the host program) as a ``run`` command with the session's
settings; the text streams as it is generated and each answer ends with its speed. Lines that start with ``/``
are the session's own commands::

    /set temperature=0.8 topp=0.95 seed=7 steps=64    change settings for the next prompts
    /temperature 0.8   /topp 0.9   /seed 7   /steps 64 the same, one at a time
    /show                                             the settings
    /raw run steps=abc                                send a line as it is (the firmware's reply is shown)
    /help   /quit                                     (end of input quits too)

Ctrl-C during a generation sends the stop byte (runtime_c/console.h, CONSOLE_STOP): the run ends after its
current token with ``reason=stopped`` and the session goes on; a second Ctrl-C before it ends leaves the
session. A line the firmware refuses gets its error and the session goes on. A port that vanishes (a board's
USB cable, a program that died) is reported and opened again (llmcu.device.channels); the log keeps going.

Everything goes into one log folder, ``<log_dir>/<UTC time>-console-<target>-<model>-<quant>/``::

    raw.bin          every byte received in the session
    exchanges.jsonl  one JSON object per line sent: prompt, settings, status, text, tokens, speed
    transcript.md    the conversation as a person reads it
    runs/            a run log (llmcu.device.runlog) per generation: tokens.csv, summary.json, ...
"""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from ..core import interrupts
from ..core.errors import LlmcuError, OptionError
from . import uart
from .channels import Channel, wait_for
from .console import encode_command
from .protocol import RunOutput, describe_failure, format_summary
from .runlog import RunInfo, RunLog, new_log_folder, safe_name

SETTINGS = ("steps", "temperature", "topp", "seed")
REOPEN_ATTEMPTS = 3
HELP = """commands (a line without / is a prompt):
  /set KEY=VALUE ...     change steps, temperature, topp or seed for the next prompts
  /steps N  /temperature F  /topp F  /seed N
  /show                  the current settings
  /raw LINE              send LINE to the firmware as it is
  /help                  this text
  /quit                  end the session (so does the end of the input)
Ctrl-C stops a generation; a second Ctrl-C ends the session."""


@dataclass(frozen=True)
class Settings:
    """What the next prompt runs with; starts from the build's steps=, temperature=, topp= and seed=."""

    prompt: str = ""
    steps: int = 256
    temperature: float = 1.0
    topp: float = 0.9
    seed: int = 1

    def changed(self, assignments: dict[str, str]) -> Settings:
        """A copy with ``assignments`` applied; an OptionError names a bad key or value."""
        values: dict[str, Any] = {}
        for key, text in assignments.items():
            if key not in SETTINGS:
                raise OptionError(f"unknown setting {key!r}: the settings are {', '.join(SETTINGS)}")
            try:
                values[key] = float(text) if key in ("temperature", "topp") else int(text, 0)
            except ValueError:
                raise OptionError(f"{key}={text!r} is not a number") from None
        updated = replace(self, **values)
        encode_command(updated)  # the firmware's own limits, checked before anything is sent
        return updated

    def describe(self) -> str:
        return " ".join(f"{key}={getattr(self, key)!r}" for key in SETTINGS)


@dataclass
class Exchange:
    """One line sent and what came back."""

    index: int
    line: str  # what the user typed
    kind: str  # prompt | raw
    settings: dict[str, Any]
    status: str = ""  # ok | stopped | rejected | error | failed
    reason: str = ""
    error: str = ""
    text: str = ""
    tokens: list[int] | None = None
    summary: dict[str, str] | None = None
    seconds: float = 0.0  # from the command sent to the end line, on the host's clock
    host_tok_per_s: float | None = None  # tokens / seconds seen here (the wire and the host included)
    run_log: str = ""


class SessionLog:
    """The session's log folder; every byte received goes to raw.bin at once."""

    def __init__(self, root: Path, info: RunInfo, *, now: datetime | None = None) -> None:
        started = now or datetime.now(UTC)
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        base = f"{stamp}-console-{safe_name(info.target)}-{safe_name(info.model)}-{safe_name(info.quant)}"
        try:
            path = self.path = new_log_folder(Path(root), base)
            self._raw = (path / "raw.bin").open("wb", buffering=0)
            self._exchanges = (path / "exchanges.jsonl").open("a", encoding="utf-8")
            self._transcript = (path / "transcript.md").open("a", encoding="utf-8")
        except OSError as error:
            raise LlmcuError(
                f"cannot create the session log under {root}: {error.strerror or error}; choose another log_dir="
            ) from error
        self.info = info
        self._transcript.write(
            f"# llmcu console: {info.target} {info.model} {info.quant} ({info.runner})\n\n"
            f"Started {started.isoformat(timespec='seconds')}.\n\n"
        )
        self._transcript.flush()

    def write_raw(self, data: bytes) -> None:
        self._raw.write(data)

    def note(self, text: str) -> None:
        self._transcript.write(f"_{text}_\n\n")
        self._transcript.flush()

    def add(self, exchange: Exchange) -> None:
        self._exchanges.write(json.dumps(asdict(exchange), ensure_ascii=False) + "\n")
        self._exchanges.flush()
        marker = "$" if exchange.kind == "raw" else ">"
        self._transcript.write(f"{marker} {exchange.line}\n\n")
        if exchange.text:
            self._transcript.write(exchange.text.rstrip("\n") + "\n\n")
        outcome = exchange.status + (f" ({exchange.reason})" if exchange.reason else "")
        if exchange.error:
            outcome += f": {exchange.error}"
        self._transcript.write(f"_{outcome}; {exchange.settings}_\n\n")
        self._transcript.flush()

    def close(self) -> None:
        for stream in (self._raw, self._exchanges, self._transcript):
            with contextlib.suppress(OSError):
                stream.close()


class _StopOnInterrupt:
    """While a generation runs, Ctrl-C (SIGINT) sends the stop byte; a second one ends the session. Only the
    main thread may set signal handlers: elsewhere Ctrl-C keeps Python's default."""

    def __init__(self, channel: Channel, say: Callable[[str], None]) -> None:
        self.channel = channel
        self.say = say
        self.requested = False
        self.previous: Any = None

    def _handler(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.say("stopping the generation (Ctrl-C again to leave the session)")
        self.channel.stop()

    def __enter__(self) -> _StopOnInterrupt:
        with contextlib.suppress(ValueError):
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


class ConsoleSession:
    """Sends lines to one channel and shows and logs what comes back."""

    def __init__(self, channel: Channel, info: RunInfo, log_dir: Path, settings: Settings, *,
                 out: TextIO | None = None, echo_text: bool = True, timeout: float = uart.TIMEOUT) -> None:  # fmt: skip
        self.channel = channel
        self.info = info
        self.settings = settings
        self.out = out or sys.stdout
        self.echo_text = echo_text
        self.timeout = timeout
        self.log = SessionLog(log_dir, info)
        self.exchanges: list[Exchange] = []
        self.handle: Any = None
        self.first = True  # the next capture is the first on this handle: poke for a ready line
        self.reset_done = False  # a board is reset once, at the start of the session

    # -- output --

    def say(self, text: str) -> None:
        print(f"[llmcu] {text}", file=self.out, flush=True)

    def _text(self, piece: bytes) -> None:
        if not self.echo_text:
            return
        buffer = getattr(self.out, "buffer", None)
        if buffer is not None:
            buffer.write(piece)
            buffer.flush()
        else:
            self.out.write(piece.decode("utf-8", errors="replace"))
            self.out.flush()

    # -- the session --

    def serve(self, lines: Iterable[str]) -> list[Exchange]:
        """Answers every line until /quit or the end of ``lines``; returns the exchanges."""
        try:
            self._open()
            self.say(f"console on {self.channel.name}; {self.settings.describe()}; /help for commands")
            for line in lines:
                if not self.handle_line(line.rstrip("\r\n")):
                    break
        except KeyboardInterrupt as stop:
            self.say(f"session ended: {interrupts.describe(stop)}")
            self.log.note(f"session ended: {interrupts.describe(stop)}")
        finally:
            self.channel.close()
            self.log.close()
            self.say(f"session log: {self.log.path}")
        return self.exchanges

    def handle_line(self, line: str) -> bool:
        """One line; False when the session should end."""
        if not line.strip():
            return True
        if not line.startswith("/"):
            self.ask(line)
            return True
        name, _, rest = line[1:].strip().partition(" ")
        rest = rest.strip()
        if name in ("quit", "exit", "q"):
            return False
        if name == "help":
            print(HELP, file=self.out, flush=True)
        elif name == "show":
            self.say(self.settings.describe())
        elif name == "raw":
            self.send_raw(rest)
        elif name == "set" or name in SETTINGS:
            try:
                words = shlex.split(rest) if name == "set" else [f"{name}={rest}"]
                assignments = dict(word.split("=", 1) for word in words if "=" in word)
                if len(assignments) != len(words) or not words:
                    raise OptionError("write /set KEY=VALUE ... (or /KEY VALUE)")
                self.settings = self.settings.changed(assignments)
            except (OptionError, ValueError) as error:
                self.say(f"error: {error}")
            else:
                self.say(self.settings.describe())
                self.log.note(f"settings: {self.settings.describe()}")
        else:
            self.say(f"error: unknown command /{name}; /help lists them")
        return True

    def ask(self, prompt: str) -> Exchange:
        """Runs one prompt with the session's settings."""
        params = replace(self.settings, prompt=prompt)
        try:
            command = encode_command(params)
        except OptionError as error:
            self.say(f"error: {error}")
            return self._record(Exchange(len(self.exchanges) + 1, prompt, "prompt", self._settings(), "error",
                                         error=str(error)))  # fmt: skip
        return self._exchange(prompt, "prompt", command)

    def send_raw(self, line: str) -> Exchange:
        """Sends ``line`` as it is (a debugging aid, and how a refused line is tried)."""
        return self._exchange(line, "raw", line.encode("utf-8", errors="surrogateescape") + b"\n")

    def _settings(self) -> dict[str, Any]:
        return {key: getattr(self.settings, key) for key in SETTINGS}

    def _record(self, exchange: Exchange) -> Exchange:
        self.exchanges.append(exchange)
        self.log.add(exchange)
        return exchange

    def _open(self) -> None:
        self.handle = self.channel.open()

    def _reopen(self, why: str) -> bool:
        """After the channel failed: open it again (a few attempts); False when it stays away."""
        for attempt in range(1, REOPEN_ATTEMPTS + 1):
            self.say(f"{why}; opening {self.channel.name} again (attempt {attempt} of {REOPEN_ATTEMPTS})")
            self.log.note(f"{why}; reopening (attempt {attempt})")
            try:
                self._open()
                self.first = True  # poke for a ready line: the new channel may have printed it already
                return True
            except LlmcuError as error:
                why = str(error)
                wait_for(1.0)
        self.say(f"giving up: {why}")
        return False

    def _exchange(self, line: str, kind: str, command: bytes) -> Exchange:
        exchange = Exchange(len(self.exchanges) + 1, line, kind, self._settings())
        run_info = replace(self.info, prompt=line if kind == "prompt" else "",
                           settings={**self.info.settings, **self._settings()})  # fmt: skip
        run_log = RunLog(self.log.path / "runs", run_info)
        exchange.run_log = str(run_log.path.relative_to(self.log.path))

        def on_bytes(data: bytes) -> None:
            self.log.write_raw(data)
            run_log.write_raw(data)

        reset = self.channel.reset if not self.reset_done else None
        self.reset_done = True
        started = time.monotonic()
        try:
            with _StopOnInterrupt(self.channel, self.say):
                capture = uart.capture_run(
                    self.handle,
                    command,
                    reset=reset,
                    on_text=self._text,
                    on_bytes=on_bytes,
                    ready_timeout=self.channel.ready_timeout,
                    silence=self.channel.silence,
                    timeout=self.timeout,
                    resend_on_reset=0 if kind == "raw" else 1,
                    poke_after=self.channel.poke_after if self.first else 0.5,
                )
        except uart.CaptureError as error:
            run_log.finish(error.capture.output, reason=error.capture.reason or "error", error=str(error))
            run_log.close()
            exchange.status, exchange.reason, exchange.error = "failed", error.capture.reason, str(error)
            exchange.text = error.capture.output.text.decode("utf-8", errors="replace")
            self._end_text(exchange.text)
            self.say(f"error: {error}")
            self._record(exchange)
            gone = isinstance(error, uart.PortClosedError | uart.SilenceError | uart.ReadyTimeoutError)
            if gone and not self._reopen(f"{self.channel.name} is gone ({error.capture.reason})"):
                raise KeyboardInterrupt from None  # nothing left to talk to: the session ends
            return exchange
        except KeyboardInterrupt:
            run_log.finish(None, reason="interrupted", error="session ended by Ctrl-C")
            run_log.close()
            exchange.status, exchange.reason = "failed", "interrupted"
            self._record(exchange)
            raise
        self.first = False
        exchange.seconds = round(time.monotonic() - started, 6)
        output = capture.output
        run_log.finish(output, attempts=capture.attempts)
        run_log.close()
        self._describe(exchange, output)
        return self._record(exchange)

    def _end_text(self, text: str) -> None:
        if text and not text.endswith("\n"):
            self._text(b"\n")

    def _describe(self, exchange: Exchange, output: RunOutput) -> None:
        exchange.text = output.text.decode("utf-8", errors="replace")
        exchange.tokens = output.token_sequence()
        exchange.summary = dict(output.summary)
        exchange.reason = output.reason
        if output.status == "rejected":
            detail = output.end.get("detail")
            exchange.status = "rejected"
            exchange.error = f"the firmware refused the line: {output.reason}" + (f" (at {detail!r})" if detail else "")
            self.say(f"error: {exchange.error}")
            return
        if output.status != "ok":
            exchange.status = "error"
            exchange.error = f"the run failed: {describe_failure(output)}"
            self._end_text(exchange.text)
            self.say(f"error: {exchange.error}")
            return
        exchange.status = "stopped" if output.reason == "stopped" else "ok"
        generated = int(output.summary.get("generated", "0") or 0)
        if exchange.seconds > 0 and generated:
            exchange.host_tok_per_s = round(generated / exchange.seconds, 2)
        seen = f"; {exchange.host_tok_per_s:.1f} tok/s seen here" if exchange.host_tok_per_s else ""
        why = f" ({output.reason})" if output.reason else ""
        self.say(f"{format_summary(output)}{seen}{why}")


def input_lines(source: str = "", *, stdin: TextIO | None = None, prompt: str = "llmcu> ") -> Iterator[str]:
    """The session's lines: from a file (``prompts=``), the terminal (with line editing and history), or
    standard input when it is not a terminal (a pipe, a here-document)."""
    if source:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise OptionError(f"prompts={source}: cannot read it ({error})") from None
        yield from text.splitlines()
        return
    stream = stdin or sys.stdin
    if not stream.isatty():
        yield from stream
        return
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())
    while True:
        try:
            yield input(prompt)
        except EOFError:
            print(file=sys.stdout)
            return
        except KeyboardInterrupt:  # at the prompt: a fresh line, as a shell does
            print(file=sys.stdout)
            continue


# ---- a session for a build ----


def console(settings: Any, options: Any, *, prompts: str = "", lines: Iterable[str] | None = None) -> list[Exchange]:
    """`scons console`: a session on the runner `run` would use (llmcu.builder.settings.BuildSettings and
    llmcu.device.runs.RunOptions), with lines from ``lines``, the ``prompts`` file or the terminal."""
    channel, info = open_channel(settings, options)
    params = settings.run
    start = Settings("", params.steps, params.temperature, params.topp, params.seed)
    session = ConsoleSession(channel, info, options.log_dir, start)
    return session.serve(lines if lines is not None else input_lines(prompts))


def open_channel(settings: Any, options: Any) -> tuple[Channel, RunInfo]:
    """The channel to the runner a build's `run` would use, and the log's description of it."""
    from . import channels, qemu_user, runs
    from .runlog import run_info

    if not settings.images and settings.linux is None:  # the host program
        program = settings.out_dir / "llmcu"
        if not program.is_file():
            raise LlmcuError(f"{program} does not exist: build it first")
        channel = channels.process_channel([str(program), "-c"], f"host program {runs._shown(program)}", "host")
        return channel, run_info(settings, "host")
    if settings.linux is not None:
        from .linux_run import choose_runner, program_options

        program = settings.out_dir / "llmcu"
        weights = settings.out_dir / "model.bin" if settings.weights_file else None
        linux = settings.linux
        if choose_runner(settings) == "board":  # copied over SSH; the console runs there on ssh's pipes
            from . import sshdeploy

            assert linux.destination is not None
            copy = sshdeploy.upload(linux.destination, program, weights, linux.remote_dir)
            args = program_options(settings, copy.weights)
            name = f"{settings.target.name} board {linux.destination}"
            channel = channels.process_channel(sshdeploy.console_command(copy, args), name, "board")
            return channel, run_info(settings, "board", port=str(linux.destination))
        args = ["-c", *program_options(settings, str(weights) if weights else None)]
        emulator = qemu_user.QemuUser.of(settings)
        host = {"qemu": qemu_user.version(emulator.qemu)}
        command = emulator.command(program, args)
        channel = channels.process_channel(command, f"{runs._shown(program)} under {emulator.qemu}", "qemu", host)
        return channel, run_info(settings, "qemu", host=host)
    runner, image = runs.choose_runner(settings)
    if runner == "qemu":
        machine = image.target.run.machine
        host = {"qemu": runs.qemu_version()}
        channel = channels.twin_channel(image.elf, machine, host)
        return channel, run_info(settings, "qemu", target=image.target.name, host=host)
    board = runs.prepare_board(settings, image, options)
    name = f"{settings.board or settings.target.name} board on {board.port}"
    channel = channels.board_channel(board.port, board.baud, board.reset, name, board.host)
    return channel, run_info(settings, "board", port=board.port, host=board.host)
