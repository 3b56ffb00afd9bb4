"""Run logs (llmcu.device.runlog) and `scons run`'s choice of runner (llmcu.device.runs): the folder, its files, what
the
summary says, atomic writes and a raw.bin that has every byte even when the run dies."""

from __future__ import annotations

import csv
import errno
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from llmcu.builder.settings import RunOptions, configure, option_values, run_options
from llmcu.core import fileio
from llmcu.core.errors import LlmcuError
from llmcu.device import hostrun, runs
from llmcu.device.protocol import RunOutput, TokenRecord, parse
from llmcu.device.runlog import CSV_COLUMNS, FILES, RunInfo, RunLog, built_kv_type, read_log, token_rows
from llmcu.model.tokenizer import printable, read_tokenizer
from support.build import ROOT, scons

STREAM = (
    b"\x02llmcu 1 target=stm32h743 model=260k quant=q8 unit=cycles clock_hz=480000000\nOnce upon\n"
    b"\x1etok pos=0 token=1 next=403 cost=480000\n\x1etok pos=1 token=403 next=407 cost=960000\n"
    b"\x1esum tokens=2 prompt_tokens=3 generated=0 cost=1440000 cost_per_token=720000.0 tok_per_s=666.66 "
    b"peak_stack=512\n\x03llmcu end status=ok\n"
)
WHEN = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)


def info(tokenizer: Path | None = None, **changes: object) -> RunInfo:
    values: dict = {"target": "stm32h743", "model": "260k", "quant": "q8", "runner": "board",
                    "board": "nucleo-h743zi", "tokenizer": tokenizer}  # fmt: skip
    values.update(changes)
    return RunInfo(**values)


def test_folder_name_files_and_rows(tmp_path: Path, tok512: Path) -> None:
    with RunLog(tmp_path, info(tok512, prompt="Once"), now=WHEN) as log:
        assert log.path.name == "20250304T050607Z-stm32h743-260k-q8"
        early = json.loads((log.path / "summary.json").read_text())  # written when the log opens
        assert early["status"] == "incomplete" and early["reason"] == "running"
        log.write_raw(STREAM[:40])
        assert (log.path / "raw.bin").read_bytes() == STREAM[:40]  # on disk before any close or flush
        log.write_raw(STREAM[40:])
        summary = log.finish(parse(STREAM))
    assert sorted(p.name for p in log.path.iterdir()) == sorted(FILES)  # no temporary files left
    assert summary == read_log(log.path)["summary"]
    assert summary["status"] == "complete" and summary["reason"] == "" and summary["run_status"] == "ok"
    assert (summary["target"], summary["board"], summary["model"], summary["quant"]) == (
        "stm32h743", "nucleo-h743zi", "260k", "q8")  # fmt: skip
    assert summary["tokens"] == 2 and summary["prompt_tokens"] == 3 and summary["peak_stack"] == 512
    assert summary["unit"] == "cycles" and summary["clock_hz"] == 480_000_000
    assert summary["cost_per_token"] == 720000.0 and summary["ms_per_token"] == 1.5 and summary["tok_per_s"] == 666.66
    assert summary["bytes_received"] == len(STREAM) and summary["prompt"] == "Once" and summary["text"] == "Once upon\n"
    assert summary["start_time"].endswith("Z") and summary["end_time"].endswith("Z")
    assert {"llmcu", "python", "platform"} <= set(summary["host"])
    assert 0 < summary["start_marker_time"] <= summary["end_marker_time"]  # host time.time() of the two lines

    rows = read_log(log.path)["tokens"]
    assert [(r["pos"], r["token"], r["next"], r["cost"], r["ms"]) for r in rows] == [
        (0, 1, 403, 480000, 1.0), (1, 403, 407, 960000, 2.0)]  # fmt: skip
    tok = read_tokenizer(tok512)
    assert rows[1]["piece"] == printable(tok.decode(1, 403)).decode() == rows[0]["next_piece"]
    with (log.path / "tokens.csv").open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert tuple(table[0]) == CSV_COLUMNS and len(table) == 2
    assert table[1]["next_piece"] == rows[1]["next_piece"] and table[1]["unit"] == "cycles"

    again = RunLog(tmp_path, info(), now=WHEN)  # the same second: a new folder, not the same one
    assert again.path.name == "20250304T050607Z-stm32h743-260k-q8-1"
    again.close()


def test_cost_units_and_a_tokenizer_that_does_not_match() -> None:
    records = [TokenRecord(0, 1, 9999, 2000)]
    ns = RunOutput(header={"unit": "ns"}, tokens=records)
    instructions = RunOutput(header={"unit": "instructions", "clock_hz": "0"}, tokens=records)
    assert token_rows(ns, None)[0]["ms"] == 0.002
    assert token_rows(instructions, None)[0]["ms"] is None and token_rows(ns, None)[0]["piece"] is None


@pytest.mark.fault(
    area="uart",
    kind="fault",
    what="the disk fills up as the run log is finished (the rename of tokens.jsonl fails with ENOSPC)",
    sees=r"cannot write \S+/tokens\.jsonl: No space left on device \(the file system is full: .*another log_dir=\)",
)
def test_atomic_summary_survives_a_failed_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sees) -> None:
    log = RunLog(tmp_path, info())
    log.write_raw(STREAM)
    before = (log.path / "summary.json").read_text()

    def broken_replace(source: object, target: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left") as excinfo:
        log.finish(parse(STREAM))
    monkeypatch.undo()
    assert isinstance(excinfo.value, LlmcuError) and excinfo.value.errno == errno.ENOSPC  # a clear error, still OSError
    sees(str(excinfo.value))
    assert (log.path / "summary.json").read_text() == before  # the old file, whole
    assert json.loads(before)["reason"] == "running"
    assert sorted(os.listdir(log.path)) == ["raw.bin", "summary.json"]  # the temporary files are gone


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        pytest.param(
            RuntimeError("the probe went away"),
            "error",
            marks=pytest.mark.fault(
                area="uart",
                kind="fault",
                what="the runner raises (RuntimeError 'the probe went away') after one token record",
                sees=r'"status": "incomplete",\s*"reason": "error",\s*"error": "the probe went away"',
            ),
        ),
        pytest.param(
            KeyboardInterrupt(),
            "interrupted",
            marks=pytest.mark.fault(
                area="uart",
                kind="fault",
                what="Ctrl-C (KeyboardInterrupt) after one token record",
                sees=r'"status": "incomplete",\s*"reason": "interrupted",\s*"error": "KeyboardInterrupt"',
            ),
        ),
    ],
)
def test_context_manager_logs_a_failure_from_raw_bin(tmp_path: Path, error: BaseException, reason: str, sees) -> None:
    with pytest.raises(type(error)), RunLog(tmp_path, info()) as log:
        log.write_raw(STREAM[: STREAM.index(b"\x1etok pos=1")])
        raise error
    logged = read_log(log.path)
    assert logged["summary"]["status"] == "incomplete" and logged["summary"]["reason"] == reason
    assert [row["next"] for row in logged["tokens"]] == [403]
    sees((log.path / "summary.json").read_text())


@pytest.mark.fault(
    area="uart",
    kind="fault",
    what="the host program exits with status 3 after two token records (no summary line, no end marker)",
    sees=r"^dies\.sh failed: exit status 3$",
)
def test_host_program_that_dies_leaves_its_bytes(tmp_path: Path, sees) -> None:
    partial = STREAM[: STREAM.index(b"\x1esum")]
    program = tmp_path / "dies.sh"
    (tmp_path / "partial.bin").write_bytes(partial)
    program.write_text(f"#!/bin/sh\ncat '{tmp_path / 'partial.bin'}'\nexit 3\n")
    program.chmod(0o755)
    with pytest.raises(LlmcuError, match="exit status 3") as excinfo, RunLog(tmp_path / "logs", info()) as log:
        hostrun.run_host_program(program, [], echo=False, on_bytes=log.write_raw)
    assert (log.path / "raw.bin").read_bytes() == partial
    summary = read_log(log.path)["summary"]
    assert summary["status"] == "incomplete" and summary["reason"] == "error" and summary["tokens"] == 2
    sees(str(excinfo.value))
    sees(summary["error"])  # the summary keeps the same message


def test_kv_type_of_the_build(tmp_path: Path) -> None:
    (tmp_path / "model_config.h").write_text("#define LLMCU_KV_TYPE 1\n")
    assert built_kv_type(tmp_path, "auto") == "f16" and built_kv_type(tmp_path, "q8") == "q8"
    assert built_kv_type(tmp_path / "missing", "auto") == "auto"


# ---- `scons run` ----


def test_host_run_alias_prints_the_log_after_the_summary(tmp_path: Path, stories260k: Path, tok512: Path) -> None:
    args = ["target=host", "model=260k", "quant=q8", "kernels=ref", f"build_dir={tmp_path / 'build'}"]
    args.append(f"log_dir={tmp_path / 'logs'}")
    result = scons([*args, "run", "prompt=Once upon a time", "steps=40", "temperature=0"], stories260k.parent)
    lines = result.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("[llmcu] 40 tokens"))
    folder = Path(re.fullmatch(r"\[llmcu\] log: (.*)", lines[at + 1]).group(1))  # type: ignore[union-attr]
    assert folder.parent == tmp_path / "logs" and folder.name.endswith("-host-260k-q8")
    logged = read_log(folder)
    summary, rows = logged["summary"], logged["tokens"]
    output = parse((folder / "raw.bin").read_bytes())
    assert output.ok and len(rows) == summary["tokens"] == 40 and summary["status"] == "complete"
    with (folder / "tokens.csv").open(newline="") as handle:  # a piece may hold a newline (BOS is "\n<s>\n")
        table = list(csv.DictReader(handle))
    assert [int(row["next"]) for row in table] == [row["next"] for row in rows]
    assert "".join(row["next_piece"] for row in rows) + "\n" == summary["text"] == output.text.decode()
    assert summary["runner"] == "host" and summary["kv_type"] == "q16" and summary["unit"] == "ns"
    assert summary["settings"]["steps"] == 40 and summary["settings"]["temperature"] == 0.0
    assert summary["tok_per_s"] > 0 and summary["cost_per_token"] > 0 and summary["peak_stack"] > 0
    assert all(row["ms"] == row["cost"] / 1e6 for row in rows)


@pytest.fixture
def models(stories260k: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLMCU_MODELS", str(stories260k.parent))
    monkeypatch.setenv("LLMCU_OFFLINE", "1")
    return stories260k.parent


def test_runner_choice(models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    board = {"target": "stm32h743", "model": "260k", "quant": "q8"}
    auto = configure({**board, "hil": "auto"}, download=False)
    assert [image.target.name for image in auto.images] == ["stm32h743", "qemu-m7"]  # both are built

    runner, image = runs.choose_runner(auto, probes=lambda: (["066DFF48"], ""))
    assert (runner, image.target.name) == ("board", "stm32h743")
    assert "debug probe 066DFF48 attached" in capsys.readouterr().out

    assert runs.choose_runner(configure({**board, "hil": "qemu"}, download=False))[0] == "qemu"
    assert runs.choose_runner(configure(board, download=False))[0] == "board"
    twin = configure({**board, "target": "qemu-m7", "hil": "auto"}, download=False)
    assert runs.choose_runner(twin, probes=lambda: pytest.fail("no probe lookup for QEMU itself"))[0] == "qemu"


@pytest.mark.fault(
    area="uart",
    kind="fault",
    what="hil=auto with no debug probe attached (pyocd lists none)",
    sees=r"no board \(pyocd sees no debug probe\), running the QEMU twin qemu-m7",
)
def test_runner_choice_without_a_probe_is_the_qemu_twin(models: Path, capsys: pytest.CaptureFixture[str], sees) -> None:
    auto = configure({"target": "stm32h743", "model": "260k", "quant": "q8", "hil": "auto"}, download=False)
    runner, image = runs.choose_runner(auto, probes=lambda: ([], "pyocd sees no debug probe"))
    assert (runner, image.target.name) == ("qemu", "qemu-m7")
    sees(capsys.readouterr().out)


def test_run_options() -> None:
    assert run_options(option_values({})) == RunOptions(ROOT / "logs", "", "", "", False, "gdb", 3333)
    assert run_options(option_values({"log_dir": "/tmp/x", "port": "socket://h:1"})) == RunOptions(
        Path("/tmp/x"), "socket://h:1", "", "", False, "gdb", 3333
    )


@pytest.mark.fault(
    area="uart",
    kind="input",
    what="log_dir= that cannot be created (a path below an ordinary file)",
    sees=r"cannot create the run log under .*blocker/logs: .*; choose another log_dir=",
)
def test_log_dir_that_cannot_be_created(tmp_path: Path, sees) -> None:
    (tmp_path / "blocker").write_text("a file, not a folder")
    with pytest.raises(LlmcuError) as excinfo:
        RunLog(tmp_path / "blocker" / "logs", info(), now=WHEN)
    sees(str(excinfo.value))


def test_csv_rows_stay_one_line_whatever_the_pieces(tmp_path: Path, tok512: Path) -> None:
    """A piece holding a carriage return or a newline (byte tokens <0x0D> and <0x0A>: ids 16 and 13) is written
    escaped in tokens.csv, so that line tools and spreadsheets see one row per pass; tokens.jsonl keeps it as is."""
    stream = (
        b"\x02llmcu 1 target=host model=260k quant=q8 unit=ns\nA\r\n\n"
        b"\x1etok pos=0 token=1 next=16 cost=1000\n\x1etok pos=1 token=16 next=13 cost=1000\n"
        b"\x1etok pos=2 token=13 next=9 cost=1000\n"
        b"\x1esum tokens=3 prompt_tokens=1 generated=2 cost=3000 cost_per_token=1000.0 tok_per_s=1e6 peak_stack=1\n"
        b"\x03llmcu end status=ok\n"
    )
    with RunLog(tmp_path, info(tok512, runner="host", target="host"), now=WHEN) as log:
        log.write_raw(stream)
        log.finish(parse(stream))
    rows = read_log(log.path)["tokens"]
    assert rows[0]["next_piece"] == "\r" and rows[1]["next_piece"] == "\n"
    lines = (log.path / "tokens.csv").read_text().splitlines()
    assert len(lines) == 1 + len(rows)
    assert lines[1].split(",")[4] == "\\r" and lines[2].split(",")[4] == "\\n"
