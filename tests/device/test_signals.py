"""One signal policy under SCons (llmcu.core.interrupts), with real signals sent to real `scons` processes.

SCons's own handlers only note an interruption and let the action run on; llmcu's long-running aliases take the
signals back: `monitor` ends on SIGINT, SIGTERM and SIGHUP and releases its port, a quantization stops within a
second or so, and an interrupted run is logged as `interrupted` with its program killed, not orphaned.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmcu.core.config import ModelConfig
from llmcu.model.checkpoint import random_checkpoint, write_checkpoint
from support.build import ROOT, scons


def start_scons(args: list[str], models_dir: Path, **env: str) -> subprocess.Popen:
    environment = dict(os.environ, LLMCU_MODELS=str(models_dir), LLMCU_OFFLINE="1", **env)
    return subprocess.Popen(
        [sys.executable, "-m", "SCons", "-Q", *args],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a stray signal from the test stays with scons
    )


def wait_for_output(process: subprocess.Popen, marker: bytes, timeout: float) -> bytes:
    """Reads scons's output until ``marker`` appears (the process keeps running)."""
    seen = b""
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    os.set_blocking(process.stdout.fileno(), False)
    while marker not in seen:
        if time.monotonic() > deadline or process.poll() is not None:
            raise AssertionError(f"no {marker!r} from scons: {seen.decode(errors='replace')[-2000:]}")
        chunk = process.stdout.read()
        seen += chunk or b""
        time.sleep(0.05)
    return seen


def stop(process: subprocess.Popen, signum: int, within: float) -> tuple[int, bytes, float]:
    """Sends ``signum``; the exit status, the rest of the output and how long it took (killed after ``within``)."""
    started = time.monotonic()
    process.send_signal(signum)
    try:
        rest, _ = process.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError(f"scons did not stop within {within} s of {signal.Signals(signum).name}") from None
    return process.returncode, rest or b"", time.monotonic() - started


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_monitor_stops_on_a_signal_and_releases_the_port(signum: int, tmp_path: Path, stories260k: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    process = start_scons(
        ["target=qemu-m7", "monitor", f"port=socket://127.0.0.1:{port}", f"log_dir={tmp_path}"], stories260k.parent
    )
    with server:
        server.settimeout(60)
        connection, _ = server.accept()
        with connection:
            wait_for_output(process, b"monitoring socket://", 60)
            time.sleep(0.5)  # pyserial's socket:// drops what arrives while it opens
            connection.sendall(b"\x02llmcu 1 target=qemu-m7 unit=instructions\nOnce upon")
            time.sleep(0.5)
            code, rest, _ = stop(process, signum, within=10)
            assert code == 0 and b"monitor stopped" in rest, rest
            why = "interrupted (Ctrl-C)" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
            assert why.encode() in rest, rest
            connection.settimeout(5)
            assert connection.recv(16) == b""  # the port is closed: the peer sees the end of the stream
    (folder,) = tmp_path.iterdir()
    assert (folder / "raw.bin").read_bytes().startswith(b"\x02llmcu 1") and (folder / "monitor.txt").is_file()


def test_quantization_stops_within_a_second_or_two(tmp_path: Path, tokenizer_32k: Path) -> None:
    """A stories15M-shaped checkpoint takes ~20 s to calibrate and fit: SIGINT stops it at once, exit status 130,
    and no generated file is left behind for a later build to trust."""
    checkpoint = tmp_path / "shaped15m.bin"
    write_checkpoint(checkpoint, random_checkpoint(ModelConfig(288, 768, 6, 6, 6, 32000, 256, True), seed=3))
    args = [f"model={checkpoint}", f"tokenizer={tokenizer_32k}", "quant=q8", f"build_dir={tmp_path / 'build'}"]
    process = start_scons(args, tokenizer_32k.parent, LLMCU_QUANT_CACHE="0")
    wait_for_output(process, b"llmcu: host", 60)  # the settings line: the quantizer starts next
    time.sleep(4)
    code, rest, took = stop(process, signal.SIGINT, within=10)
    assert code == 130 and b"llmcu: interrupted (Ctrl-C)" in rest, rest
    assert took < 2.5, took
    assert not list((tmp_path / "build").rglob("model_weights.c")) and not list((tmp_path / "build").rglob("*.tmp*"))


def test_an_interrupted_run_is_logged_as_interrupted(tmp_path: Path, stories260k: Path, tok512: Path) -> None:
    """A run on the twin (QEMU counts instructions: a few hundred tokens take seconds): SIGTERM ends scons with 143,
    QEMU is killed (no orphan) and the run log says interrupted, not disconnected."""
    args = ["target=qemu-m7", f"model={stories260k}", f"tokenizer={tok512}"]
    args += [f"build_dir={tmp_path / 'build'}", f"log_dir={tmp_path / 'logs'}"]
    scons(args, stories260k.parent)  # built first: the signal is for the run
    process = start_scons([*args, "run", "steps=0", "prompt=Once upon a time"], stories260k.parent)
    wait_for_output(process, b"Once upon a time", 60)
    time.sleep(0.3)
    code, rest, _ = stop(process, signal.SIGTERM, within=10)
    assert code == 143 and b"llmcu: stopped by SIGTERM" in rest, rest
    (folder,) = (tmp_path / "logs").iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "incomplete" and summary["reason"] == "interrupted", summary
    program = str(tmp_path / "build")
    orphans = subprocess.run(["pgrep", "-f", program], capture_output=True, text=True).stdout.split()
    assert not orphans, f"the program outlived scons: {orphans}"


def test_ctrl_c_at_the_console_prompt_under_scons_gives_a_fresh_line(tmp_path: Path, stories260k: Path) -> None:
    """`scons console` on a terminal (a pseudo-terminal here, so that ^C is the terminal's SIGINT to scons's
    process group): Ctrl-C at the prompt is a fresh prompt, as in a shell, not SCons's "Build interrupted"; the
    session goes on and /quit ends it with status 0."""
    import pty

    args = [f"model={stories260k}", "tokenizer=" + str(stories260k.parent / "tok512.bin"),
            f"build_dir={tmp_path / 'build'}", f"log_dir={tmp_path / 'logs'}"]  # fmt: skip
    scons(args, stories260k.parent)
    environment = dict(os.environ, LLMCU_MODELS=str(stories260k.parent), LLMCU_OFFLINE="1", TERM="dumb")
    pid, master = pty.fork()
    if pid == 0:  # the child: scons on the terminal's slave side
        os.chdir(ROOT)
        os.execve(sys.executable, [sys.executable, "-m", "SCons", "-Q", *args, "console"], environment)
    seen = b""

    def read_until(marker: bytes, timeout: float = 60) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while marker not in seen:
            assert time.monotonic() < deadline, f"no {marker!r}: {seen.decode(errors='replace')[-1500:]}"
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    break

    try:
        read_until(b"llmcu> ")
        mark = len(seen)
        # The terminal's interrupt character: SIGINT to the foreground group. Sent as a person would, a moment
        # after the prompt, and again every 2 s: readline sets the terminal's modes around the prompt, and a byte
        # that reaches the terminal while it does (a loaded machine) can be flushed unread.
        deadline, resend = time.monotonic() + 10, 0.0
        while b"llmcu> " not in seen[mark:]:  # a fresh prompt
            assert time.monotonic() < deadline, seen[mark:]
            if time.monotonic() >= resend:
                time.sleep(0.3)
                os.write(master, b"\x03")
                resend = time.monotonic() + 2
            if select.select([master], [], [], 0.2)[0]:
                seen += os.read(master, 4096)
        os.write(master, b"/steps 8\n")
        os.write(master, b"Once upon a time\n")
        read_until(b"8 tokens")
        os.write(master, b"/quit\n")
        _, status = os.waitpid(pid, 0)
    finally:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        os.close(master)
    assert os.waitstatus_to_exitcode(status) == 0, seen.decode(errors="replace")[-1500:]
    assert b"Build interrupted" not in seen and b"Traceback" not in seen
