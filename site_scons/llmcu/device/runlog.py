r"""Run logs: every run (host program, QEMU twin, board) leaves a folder that says what happened.

``<log_dir>/<UTC timestamp>-<target>-<model>-<quant>/`` (``log_dir`` defaults to ``logs/`` in the project)::

    raw.bin        every byte received, written through to the OS as it arrives (a crash loses nothing)
    tokens.jsonl   one JSON object per forward pass
    tokens.csv     the same rows: pos,token,next,piece,next_piece,cost,unit,ms
    summary.json   what ran where, with which settings, how it ended and how fast

``summary.json`` also has ``start_marker_time`` and ``end_marker_time``: the host's ``time.time()`` when the
bytes with the protocol's start line and end line arrived (what aligns a power meter's samples with the run).

``piece`` is the text of ``token`` (decoded after the token before it, as the runtime printed it one pass
earlier); ``next_piece`` is what this pass printed. In tokens.csv, made for spreadsheets and line tools, a piece's
control characters are written as escapes (``\n``, ``\r``, ``\t``, ``\\``, ``\xHH``), so that every row is one
line; tokens.jsonl keeps the pieces as they are. ``cost`` is in the header's unit (ns on the host, cycles
on a board, instructions on the QEMU twin); ``ms`` is there when the clock is known (ns, or cycles with a
``clock_hz``). ``summary.json`` is written when the log is opened (status ``incomplete``, reason
``running``) and again at the end; it and the token files are replaced atomically (llmcu.core.fileio), so a reader
never sees half of one. ``status`` is ``complete`` only for a whole run that ended with ``status=ok``;
otherwise ``reason`` says why (``silence``, ``disconnected``, ``board_reset``, ``fault: ...``, ...).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import platform
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__
from ..core.errors import LlmcuError, ProtocolError
from ..core.fileio import OutputWriteError, write_text_atomic
from ..core.paths import ROOT
from ..core.provenance import git_commit, tool_version
from ..model.kvcache import KV_TYPES
from ..model.sources import read_vocab
from ..model.tokenizer import BOS, Tokenizer, printable
from .protocol import ETX, STX, ProtocolParser, RunOutput, describe_fault

LOG_VERSION = 1
FILES = ("raw.bin", "tokens.jsonl", "tokens.csv", "summary.json")
CSV_COLUMNS = ("pos", "token", "next", "piece", "next_piece", "cost", "unit", "ms")


@dataclass(frozen=True)
class RunInfo:
    """What is being run, where: the log's identity and the summary's description of the run."""

    target: str
    model: str
    quant: str
    runner: str  # host | qemu | board
    board: str = ""
    kv_type: str = ""
    port: str = ""
    prompt: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    tokenizer: Path | None = None
    host: dict[str, str] = field(default_factory=dict)  # versions beyond the defaults (qemu, pyocd, ...)


def run_info(
    settings: Any, runner: str, *, target: str = "", port: str = "", host: dict[str, str] | None = None
) -> RunInfo:
    """The RunInfo of a build (llmcu.builder.settings.BuildSettings); ``target`` is the one that runs (the twin,
    say)."""
    run = settings.run
    firmware = settings.firmware
    values: dict[str, Any] = {
        "steps": run.steps,
        "temperature": run.temperature,
        "topp": run.topp,
        "seed": run.seed,
        "group_size": settings.plan.group_size,
        "quant_overrides": dict(settings.plan.overrides),
        "seq_len": settings.seq_len,
        "kernels": settings.kernel_set or "ref",
        "build": str(settings.out_dir),
        "checkpoint": str(settings.checkpoint),
        "tokenizer": str(settings.tokenizer),
    }
    values.update(fit=settings.plan.fit, calibration=settings.plan.calibration, numerics=settings.numerics)
    if settings.window is not None:  # overflow=slide: the cache keeps sinks and a ring of the context
        values.update(overflow="slide", sinks=settings.window.sinks, max_steps=settings.window.max_steps)
    if firmware is not None:
        values.update(weights=firmware.weights, kv=firmware.kv, stack=firmware.stack_bytes, hil=firmware.hil)
        values["watchdog_s"] = firmware.watchdog_s
    if settings.target.clock_hz:
        values["clock_hz"] = settings.target.clock_hz  # the chip's (for a twin, the board it stands for)
    if target and target != settings.target.name:
        values["built_for"] = settings.target.name
    provenance = {"git_commit": git_commit(ROOT), "compiler": tool_version(settings.target.cc)}
    host = {**provenance, **(host or {})}
    return RunInfo(
        target=target or settings.target.name,
        model=settings.model_name,
        quant=settings.quant_label,
        runner=runner,
        board=settings.board,
        kv_type=built_kv_type(settings.gen_dir, settings.kv_type),
        port=port,
        prompt=run.prompt,
        settings=values,
        tokenizer=settings.tokenizer,
        host={key: value for key, value in host.items() if value},
    )


def built_kv_type(gen_dir: Path, kv_type: str) -> str:
    """The KV type the build chose (``auto`` is resolved by the planner into model_config.h)."""
    if kv_type != "auto":
        return kv_type
    try:
        match = re.search(r"#define LLMCU_KV_TYPE (\d+)", (Path(gen_dir) / "model_config.h").read_text())
    except OSError:
        match = None
    return KV_TYPES[int(match.group(1))] if match and int(match.group(1)) < len(KV_TYPES) else kv_type


def safe_name(text: str) -> str:
    """``text`` as a part of a folder name: letters, digits and ``._+=-``, anything else ``_``."""
    return "".join(c if c.isalnum() or c in "._+=-" else "_" for c in text) or "_"


def new_log_folder(root: Path, base: str) -> Path:
    """A new folder ``root/base`` (``base-1``, ``base-2``, ... for two logs in the same second); an OSError when
    ``root`` cannot take it."""
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(1000):
        path = root / (base if attempt == 0 else f"{base}-{attempt}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise LlmcuError(f"cannot create a log folder under {root}: too many named {base}")


def host_versions() -> dict[str, str]:
    versions = {
        "llmcu": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }
    for module in ("numpy", "serial"):
        loaded = sys.modules.get(module)
        if loaded is not None:
            versions["pyserial" if module == "serial" else module] = str(getattr(loaded, "__version__", "?"))
    return versions


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RunLog:
    """One run's log folder. Feed :meth:`write_raw` every byte received; call :meth:`finish` at the end.

    As a context manager it finishes the log when the block raises before :meth:`finish` was called and closes
    ``raw.bin``: with a llmcu.device.uart.CaptureError, from its partial capture and reason (``silence``, ...);
    with another error, from what ``raw.bin`` holds (reason ``error``, or ``interrupted`` for Ctrl-C).
    """

    def __init__(self, root: Path, info: RunInfo, *, now: datetime | None = None) -> None:
        self.info = info
        self.started = now or _now()
        stamp = self.started.strftime("%Y%m%dT%H%M%SZ")
        base = f"{stamp}-{safe_name(info.target)}-{safe_name(info.model)}-{safe_name(info.quant)}"
        root = Path(root)
        try:
            path = self.path = new_log_folder(root, base)
            self.raw_path = path / "raw.bin"
            self._raw = self.raw_path.open("wb", buffering=0)  # unbuffered: every write reaches the OS at once
        except OSError as error:  # before the run starts: nothing is lost yet, so say where and stop
            raise LlmcuError(
                f"cannot create the run log under {root}: {error.strerror or error}; "
                "choose another log_dir= (a writable folder)"
            ) from error
        self.received = 0
        self.start_marker_time: float | None = None  # host time.time() when the start line arrived
        self.end_marker_time: float | None = None  # and the end line (what aligns a power meter with the run)
        self.finished: dict[str, Any] | None = None
        self._write_summary(self._summary(RunOutput(), status="incomplete", reason="running"))

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: object) -> None:
        if self.finished is None:
            capture = getattr(
                error, "capture", None
            )  # a llmcu.device.uart.CaptureError: what arrived, and why it stopped
            if error is None:
                self.finish(None)
            elif capture is not None:
                self.finish(
                    capture.output, reason=capture.reason or "error", error=str(error), attempts=capture.attempts
                )
            else:
                reason = "interrupted" if isinstance(error, KeyboardInterrupt) else "error"
                self.finish(None, reason=reason, error=str(error) or type(error).__name__)
        self.close()

    def close(self) -> None:
        if not self._raw.closed:
            self._raw.close()

    def write_raw(self, data: bytes) -> None:
        """Appends received bytes to raw.bin (unbuffered: they are in the file when this returns)."""
        now = time.time()
        self._raw.write(data)
        self.received += len(data)
        start = data.rfind(STX)
        if start >= 0:  # a (new) run starts: the last start marker is the run's
            self.start_marker_time, self.end_marker_time = now, None
        if self.start_marker_time is not None and data.find(ETX, start + 1) >= 0:
            self.end_marker_time = now

    def parse_raw(self) -> RunOutput:
        """What raw.bin holds, parsed as far as it follows the protocol."""
        parser = ProtocolParser()
        with contextlib.suppress(ProtocolError):  # keep what was parsed before the bytes stopped making sense
            parser.feed(self.raw_path.read_bytes())
        return parser.output

    def finish(
        self,
        output: RunOutput | None,
        *,
        reason: str = "",
        error: str = "",
        attempts: Iterable[RunOutput] = (),
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Writes tokens.jsonl, tokens.csv and summary.json (atomically) and returns the summary.

        ``output`` is the run as parsed (None: parse raw.bin); ``reason`` why it is incomplete when the
        output does not say (``silence``, ``disconnected``, ...); ``error`` the error message, if any;
        ``attempts`` the runs a board reset cut short."""
        if self.finished is not None:
            return self.finished
        self.close()
        if output is None:
            output = self.parse_raw()
        rows = token_rows(output, self._tokenizer(output))
        _write_log_file(self.path / "tokens.jsonl", "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _csv_cell(row[key]) for key in CSV_COLUMNS})
        _write_log_file(self.path / "tokens.csv", buffer.getvalue())

        if output.complete and output.status == "ok" and not reason:
            status, why = "complete", ""
        else:
            status, why = "incomplete", reason or _output_reason(output)
        summary = self._summary(output, status=status, reason=why, rows=rows, error=error, attempts=attempts)
        summary.update(extra or {})
        self._write_summary(summary)
        self.finished = summary
        return summary

    def _tokenizer(self, output: RunOutput) -> Tokenizer | None:
        if not output.tokens or self.info.tokenizer is None:
            return None
        try:
            return read_vocab(self.info.tokenizer)
        except LlmcuError:
            return None  # the rows go without text; the ids are what matter

    def _write_summary(self, summary: dict[str, Any]) -> None:
        _write_log_file(self.path / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")

    def _summary(
        self,
        output: RunOutput,
        *,
        status: str,
        reason: str,
        rows: list[dict[str, Any]] | None = None,
        error: str = "",
        attempts: Iterable[RunOutput] = (),
    ) -> dict[str, Any]:
        info = self.info
        ended = _now()
        unit, clock_hz = output.header.get("unit", ""), _int(output.header.get("clock_hz"))
        costs = [record.cost for record in output.tokens]
        s = output.summary
        cost_per_token = _number(s.get("cost_per_token"))
        if cost_per_token is None and costs:
            cost_per_token = sum(costs) / len(costs)
        tok_per_s = _number(s.get("tok_per_s")) or None  # 0: the clock is not known
        ms_per_token = _ms(cost_per_token, unit, clock_hz) if cost_per_token is not None else None
        if tok_per_s is None and ms_per_token:
            tok_per_s = 1000.0 / ms_per_token
        return {
            "log_version": LOG_VERSION,
            "status": status,
            "reason": reason,
            "error": error,
            "run_status": output.status,
            "run_reason": output.reason,
            "fault": output.end if output.status == "fault" else {},
            "target": info.target,
            "runner": info.runner,
            "board": info.board,
            "port": info.port,
            "model": info.model,
            "quant": info.quant,
            "kv_type": info.kv_type,
            "settings": info.settings,
            "prompt": info.prompt,
            "header": output.header,
            "text": output.text.decode("utf-8", errors="replace"),
            "tokens": len(output.tokens),
            "prompt_tokens": _int(s.get("prompt_tokens")),
            "generated": _int(s.get("generated")),
            "unit": unit,
            "clock_hz": clock_hz,
            "cost_total": _int(s.get("cost")) if "cost" in s else (sum(costs) if costs else None),
            "cost_per_token": cost_per_token,
            "ms_per_token": round(ms_per_token, 6) if ms_per_token is not None else None,
            "tok_per_s": tok_per_s,
            "peak_stack": _int(s.get("peak_stack")),
            "restarts": output.restarts,
            "attempts": [
                {"reason": attempt.reason, "tokens": len(attempt.tokens), "text_bytes": len(attempt.text)}
                for attempt in attempts
            ],
            "start_time": _iso(self.started),
            "end_time": _iso(ended),
            "wall_seconds": round((ended - self.started).total_seconds(), 3),
            "start_marker_time": self.start_marker_time,
            "end_marker_time": self.end_marker_time,
            "bytes_received": self.received,
            "files": list(FILES),
            "host": {**host_versions(), **info.host},
        }


_CSV_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _csv_cell(value: object) -> object:
    """A CSV cell: None empty, text with its control characters escaped (one row, one line)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        return value
    return "".join(_CSV_ESCAPES.get(c, f"\\x{ord(c):02x}" if ord(c) < 0x20 or ord(c) == 0x7F else c) for c in value)


def _write_log_file(path: Path, text: str) -> None:
    """write_text_atomic for a log file: a failed write's advice names log_dir=, where the logs go."""
    try:
        write_text_atomic(path, text)
    except OutputWriteError as error:
        error.args = (str(error).replace("build_dir=", "log_dir="),)
        raise


def _output_reason(output: RunOutput) -> str:
    if not output.complete:
        return output.reason or ("no start marker" if not output.header else "no end marker")
    if output.status == "fault":
        return f"fault: {describe_fault(output.end)}"
    return f"{output.status or 'unknown'}: {output.reason}" if output.reason else output.status or "unknown"


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def _int(text: str | None) -> int | None:
    value = _number(text)
    return int(value) if value is not None else None


def _ms(cost: float, unit: str, clock_hz: float | None) -> float | None:
    """Milliseconds of a cost, when its clock is known: ns, or cycles at ``clock_hz``."""
    if unit == "ns":
        return cost / 1e6
    if unit == "cycles" and clock_hz:
        return cost * 1000.0 / clock_hz
    return None


def _text(piece: bytes) -> str:
    return piece.decode("utf-8", errors="backslashreplace")


def token_rows(output: RunOutput, tok: Tokenizer | None) -> list[dict[str, Any]]:
    """One row per token record: ids, text pieces (when the tokenizer is given), cost and milliseconds."""
    unit, clock_hz = output.header.get("unit", ""), _number(output.header.get("clock_hz"))
    rows = []
    prev = -1
    for record in output.tokens:
        piece = next_piece = None
        if tok is not None:
            piece = _decode(tok, prev, record.token)
            next_piece = "" if record.next == BOS else _decode(tok, record.token, record.next)
        ms = _ms(record.cost, unit, clock_hz)
        rows.append(
            {
                "pos": record.pos,
                "token": record.token,
                "next": record.next,
                "piece": piece,
                "next_piece": next_piece,
                "cost": record.cost,
                "unit": unit,
                "ms": round(ms, 6) if ms is not None else None,
            }
        )
        prev = record.token
    return rows


def _decode(tok: Tokenizer, prev: int, token: int) -> str | None:
    try:
        return _text(printable(tok.decode(prev, token)))
    except LlmcuError:
        return None  # an id outside this tokenizer: the run and the tokenizer do not match


def read_log(path: Path) -> dict[str, Any]:
    """A log folder's summary and token rows (for tools and tests)."""
    folder = Path(path)
    summary = json.loads((folder / "summary.json").read_text())
    tokens_file = folder / "tokens.jsonl"
    rows = [json.loads(line) for line in tokens_file.read_text().splitlines()] if tokens_file.is_file() else []
    return {"summary": summary, "tokens": rows}
