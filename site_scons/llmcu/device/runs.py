"""`scons run` on every target: which runner (host program, QEMU twin, board), the capture, and the run log.

- ``target=host``: the program runs here; its standard output is the protocol stream.
- a firmware target that is QEMU (``qemu-m7``), or a board target with ``hil=qemu``: the twin boots under
  ``qemu-system-arm`` with its console on a TCP socket, captured through llmcu.device.uart like a board's UART.
- a board target (``hil=none``): flashed where its flash differs from the image (llmcu.device.flashing reads it back
  and rewrites only the sectors that differ), then, with its console UART open (``port=``, or found by the
  board's USB VID:PID and the probe's serial number), reset through the probe and captured (llmcu.device.uart).
- ``hil=auto``: the board when pyOCD sees a debug probe, else the QEMU twin; it says which it chose.

Every run writes a log folder (llmcu.device.runlog) and prints its path after the summary line.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ..builder.settings import BuildSettings, FirmwareImage, RunOptions
from ..core.errors import LlmcuError
from ..core.paths import ROOT
from . import flashing, hostrun, qemu, selftest, uart
from .flasherrors import FlashError, NoProbeError
from .flashing import FlashResult
from .localport import free_port
from .probes import PyocdSessionFactory, SessionFactory, select_probe
from .protocol import ByteSink, RunOutput, format_summary
from .runlog import RunLog, run_info

TWIN_RUN_TIMEOUT = 600.0  # seconds for one run on the twin
OPEN_TIMEOUT = 10.0  # seconds for QEMU to open its serial socket


T = TypeVar("T")


class Measurement(Protocol):
    """Something that records while a run is captured, such as a power meter (llmcu.power.runpower): ``begin`` hears
    where the run goes (``host``, ``qemu`` or ``board``) before anything runs, and refuses a runner it cannot
    measure; ``during`` runs the capture (the board's reset included) inside the recording; ``finished`` gets the
    run's finished log folder to write its own files beside it."""

    def begin(self, runner: str) -> None: ...

    def during(self, capture: Callable[[], T]) -> T: ...

    def finished(self, log_dir: Path) -> None: ...


def _measured(measurement: Measurement | None, capture: Callable[[], T]) -> T:
    return capture() if measurement is None else measurement.during(capture)


def _show(piece: bytes) -> None:
    sys.stdout.buffer.write(piece)
    sys.stdout.buffer.flush()


def _shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def run(
    settings: BuildSettings, options: RunOptions, *, echo: bool = True, measurement: Measurement | None = None
) -> RunOutput:
    """Runs the build where its options say, logs it, prints the text, the summary and the log's path;
    ``measurement`` records during a firmware run (the twin's or a board's)."""
    on_text = _show if echo else None
    if not settings.images:
        if measurement is not None:
            measurement.begin("host")
        log = RunLog(options.log_dir, run_info(settings, "host"))
        with _reporting(log):  # run_host_program prints the summary line itself
            output = hostrun.run_host_program(
                settings.out_dir / "llmcu", settings.run.program_args(), echo=echo, on_bytes=log.write_raw
            )
            log.finish(output)
        return output
    runner, image = choose_runner(settings)
    if measurement is not None:
        measurement.begin(runner)
    if runner == "board":
        return run_board(settings, image, options, on_text=on_text, measurement=measurement)
    log = RunLog(options.log_dir, run_info(settings, "qemu", target=image.target.name, host={"qemu": qemu_version()}))
    with _reporting(log), contextlib.ExitStack() as stack:
        if on_text is None:  # the text is not shown: a bar on a terminal instead
            from .progress import TextProgress

            on_text = stack.enter_context(TextProgress(f"{image.target.name} twin", settings.run.steps))
        output = run_twin(image, settings.run, log, on_text=on_text, measurement=measurement)
        if settings.selftest:
            report_selftest(output, image.elf, [settings.out_dir, log.path], echo=echo)
        elif echo:
            print(f"[llmcu] {format_summary(output)}", flush=True)
    return output


def report_selftest(output: RunOutput, elf: Path, folders: list[Path], *, echo: bool = True) -> None:
    """A selftest=1 run: its report (selftest.md and .json) into each folder, a line per region on the console,
    and an error when a test failed (the log keeps everything)."""
    report = selftest.analyse(output, elf)
    for folder in folders:
        path = selftest.write_report(report, folder)
    if echo:
        for region in report.regions:
            speed = (
                f"{region.mb_per_s:,.1f} MB/s"
                if region.mb_per_s
                else f"{region.read_bytes:,} bytes / {region.read_cost:,} {report.unit}"
            )
            tests = "; ".join(f"{name} {verdict}" for name, verdict in region.tests.items())
            print(f"[llmcu] selftest {region.region}: read {speed}" + (f"; {tests}" if tests else ""), flush=True)
        print(f"[llmcu] selftest {'passed' if report.passed else 'FAILED'}: {_shown(path)}", flush=True)
    if not report.passed:
        raise LlmcuError(f"the self-test failed on {report.target}: see {path}")


class _reporting:
    """Finishes the log (RunLog's context manager does that for a failed run) and prints its path either way."""

    def __init__(self, log: RunLog) -> None:
        self.log = log

    def __enter__(self) -> RunLog:
        return self.log

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: object) -> None:
        self.log.__exit__(kind, error, trace)
        summary = self.log.finished or {}
        state = "" if summary.get("status") == "complete" else f" ({summary.get('reason') or 'incomplete'})"
        print(f"[llmcu] log: {_shown(self.log.path)}{state}", flush=True)


# ---- choosing the runner ----


def attached_probes() -> tuple[list[str], str]:
    """The debug probes pyOCD sees (their unique IDs), or an empty list and why."""
    try:
        probes = PyocdSessionFactory().probes()
    except ImportError:
        return [], "pyocd is not installed"
    except Exception as error:  # a USB backend that is missing or not allowed: no board to run on
        return [], f"pyocd could not list probes: {error}"
    if not probes:
        return [], "pyocd sees no debug probe"
    return [probe.uid for probe in probes], ""


def choose_runner(
    settings: BuildSettings, probes: Callable[[], tuple[list[str], str]] = attached_probes
) -> tuple[str, FirmwareImage]:
    """("qemu" | "board", the image to run) for a firmware build, from its target and ``hil=``."""
    own = settings.images[0]
    if own.target.run.method == "qemu-system":
        return "qemu", own
    twin = next((image for image in settings.images if image.target.run.method == "qemu-system"), None)
    hil = settings.firmware.hil if settings.firmware is not None else "none"
    if hil == "qemu":
        if twin is None:
            raise LlmcuError(f"target {own.target.name} has no QEMU twin, so hil=qemu cannot run it")
        return "qemu", twin
    if hil == "auto":
        found, why = probes()
        if found:
            print(f"[llmcu] hil=auto: debug probe {found[0]} attached, running on the {own.board or 'board'}")
            return "board", own
        if twin is None:
            raise LlmcuError(f"hil=auto: no board to run on ({why}) and target {own.target.name} has no QEMU twin")
        print(f"[llmcu] hil=auto: no board ({why}), running the QEMU twin {twin.target.name}", flush=True)
        return "qemu", twin
    return "board", own


# ---- the QEMU twin, over a serial socket ----


def qemu_version(binary: str = qemu.QEMU) -> str:
    try:
        result = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.splitlines()[0].strip() if result.stdout else ""


def start_qemu_serial(
    elf: Path,
    machine: str,
    stderr: Any,
    extra_args: tuple[str, ...] = (),
    *,
    semihosting_args: tuple[str, ...] = (),
    own_session: bool = False,
) -> tuple[Any, str]:
    """Starts QEMU with the firmware's console on a TCP socket that waits for us: (process, socket:// URL).
    ``own_session``: QEMU in a session of its own, out of reach of the terminal's Ctrl-C (a console session
    turns that into a stop byte)."""
    if shutil.which(qemu.QEMU) is None:
        raise qemu.QemuNotFoundError(
            f"{qemu.QEMU} not found: install it with `apt-get install qemu-system-arm` (or run tools/setup.sh)"
        )
    if not elf.is_file():
        raise qemu.QemuError(f"firmware {elf} does not exist: build it first")
    port = free_port()
    command = qemu.qemu_command(
        elf,
        machine=machine,
        serial=f"tcp:127.0.0.1:{port},server=on,wait=on",
        extra_args=extra_args,
        semihosting_args=semihosting_args,
    )
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=own_session
    )
    return process, f"socket://127.0.0.1:{port}"


def connect_qemu(process: Any, url: str, stderr: Any, timeout: float = OPEN_TIMEOUT) -> Any:
    """Opens QEMU's serial socket once it listens; QEMU (wait=on) starts the firmware on this connection."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return uart.open_port(url)
        except uart.PortOpenError:
            if process.poll() is not None:
                raise qemu.QemuError(f"QEMU exited with status {process.returncode}: {_stderr_text(stderr)}") from None
            if time.monotonic() > deadline:
                raise qemu.QemuError(f"QEMU's serial socket {url} did not open within {timeout:g} s") from None
            time.sleep(0.05)


def _stderr_text(stderr: Any, max_lines: int = 4) -> str:
    stderr.seek(0)
    lines = stderr.read().decode("utf-8", errors="replace").strip().splitlines()
    if not lines:
        return "(nothing on stderr)"
    return "\n".join(lines[:max_lines]) + (" ..." if len(lines) > max_lines else "")


def run_twin(
    image: FirmwareImage,
    params: Any,
    log: RunLog | None = None,
    *,
    on_text: ByteSink | None = None,
    timeout: float = TWIN_RUN_TIMEOUT,
    silence: float = uart.SILENCE,
    extra_args: tuple[str, ...] = (),
    measurement: Measurement | None = None,
) -> RunOutput:
    """Boots the twin with its console on a TCP socket, captures one run through llmcu.device.uart (the path a
    board's UART takes; inside ``measurement`` when given), and checks QEMU's exit status. Raises a QemuError or a
    uart.CaptureError."""
    machine = image.target.run.machine
    with tempfile.TemporaryFile() as stderr:
        # QEMU in a session of its own: Ctrl-C is llmcu's (the run is logged as interrupted, QEMU killed below)
        process, url = start_qemu_serial(image.elf, machine, stderr, extra_args, own_session=True)
        try:
            handle = connect_qemu(process, url, stderr)
            try:
                capture = _measured(
                    measurement,
                    lambda: uart.capture_run(
                        handle,
                        params,
                        on_text=on_text,
                        on_bytes=log.write_raw if log is not None else None,
                        ready_timeout=qemu.READY_TIMEOUT,
                        silence=silence,
                        timeout=timeout,
                        # QEMU starts the firmware when we connect, and pyserial's socket open() drops what came
                        # in meanwhile: a ready line lost that way is asked for again with an empty line.
                        poke_after=1.0,
                        resend_on_reset=0,  # the twin does not reset
                    ),
                )
            except uart.PortClosedError as error:
                code = process.wait(timeout=qemu.EXIT_TIMEOUT)
                error.args = (f"{error} ({_exit_text(code)}; QEMU said: {_stderr_text(stderr)})",)
                raise
            finally:
                handle.close()
            output = capture.output
            code = None if output.status == "rejected" else _wait_exit(process)
            try:
                qemu.check_run(output, code, image.elf, _stderr_text(stderr))
            except LlmcuError as error:
                if log is not None:
                    reason = f"qemu exit status {code}" if output.ok else ""
                    log.finish(output, reason=reason, error=str(error), attempts=capture.attempts)
                raise
            if log is not None:
                log.finish(output, attempts=capture.attempts)
                if measurement is not None:
                    measurement.finished(log.path)
            return output
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()


def _exit_text(code: int) -> str:
    """QEMU's end in words: a signal (killed by the user, the OOM killer, a CI timeout) or its exit status."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"QEMU was killed by {signal.Signals(-code).name}"
        return f"QEMU was killed by signal {-code}"
    return f"QEMU exit status {code}"


def _wait_exit(process: Any) -> int:
    try:
        return process.wait(timeout=qemu.EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise qemu.FirmwareTimeoutError(
            f"QEMU did not exit within {qemu.EXIT_TIMEOUT:g} s after the run ended"
        ) from None


# ---- a board ----


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""


def board_port(usb_ids: tuple[str, ...], probe_uid: str, comports: Callable[[], Any] | None = None) -> str:
    """The board's console: the port with the board's USB VID:PID and the probe's serial number (an ST-LINK's
    virtual COM port carries the probe's unique ID), or else the only one with the board's VID:PID."""
    if probe_uid:
        with contextlib.suppress(uart.PortNotFoundError):
            return uart.find_port(usb_ids, serial_number=probe_uid, comports=comports)
    return uart.find_port(usb_ids, comports=comports)


@dataclass(frozen=True)
class PreparedBoard:
    """A flashed board, ready to be reset and heard: its console port, baud rate and reset hook."""

    port: str
    baud: int
    reset: Callable[[], None]
    probe_uid: str
    host: dict[str, str]


def prepare_board(
    settings: BuildSettings,
    image: FirmwareImage,
    options: RunOptions,
    *,
    flash_firmware: Callable[..., FlashResult] = flashing.flash_firmware,
    session_factory: SessionFactory | None = None,
    comports: Callable[[], Any] | None = None,
) -> PreparedBoard:
    """Flashes the board when its flash differs from the image (llmcu.device.flashing compares by reading back)
    and finds its console; the reset (through the probe) is left to the caller, once its port is open."""
    board = settings.board_file
    if board is None:
        raise LlmcuError(f"target {settings.target.name} has no board file, so llmcu cannot find its console")
    factory = session_factory or PyocdSessionFactory()
    try:
        result = flash_firmware(
            image.out_dir,
            settings.target,
            probe_uid=options.probe or None,
            reset=False,  # the reset comes once the console is open, so that no byte of the boot is lost
            progress=sys.stderr.isatty(),
            session_factory=factory,  # the QSPI flash algorithm: flashalgo/qspi.flm beside the ELF
        )
    except FlashError as error:
        if isinstance(error, NoProbeError) or "not installed" in str(error):
            raise LlmcuError(
                f"{error}; without a board, add hil=qemu to run this build's QEMU twin with the board's memory "
                "budget (hil=auto runs on the board when a probe is attached, else on the twin)"
            ) from None
        raise
    for line in result.lines():
        print(f"[llmcu] flash: {line}", flush=True)
    probe_uid = result.probe.uid
    port = options.port or board_port(board.console.usb_ids, probe_uid, comports)

    def reset() -> None:
        probe = select_probe(factory.probes(), probe_uid)
        session = factory.open(probe, {"target_override": settings.target.pyocd_target})
        try:
            session.target.reset()
        finally:
            session.close()

    host = {"pyocd": _version("pyocd"), "pyserial": _version("pyserial"), "probe": probe_uid}
    return PreparedBoard(port, board.console.baud, reset, probe_uid, host)


def run_board(
    settings: BuildSettings,
    image: FirmwareImage,
    options: RunOptions,
    *,
    on_text: ByteSink | None = None,
    flash_firmware: Callable[..., FlashResult] = flashing.flash_firmware,
    session_factory: SessionFactory | None = None,
    comports: Callable[[], Any] | None = None,
    measurement: Measurement | None = None,
) -> RunOutput:
    """Flashes the board when its flash differs from the image, opens its console, resets it through the probe
    and captures the run (inside ``measurement``: a meter starts before the reset); the log gets every byte."""
    board = prepare_board(
        settings, image, options, flash_firmware=flash_firmware, session_factory=session_factory, comports=comports
    )
    port, reset, host = board.port, board.reset, board.host
    log = RunLog(options.log_dir, run_info(settings, "board", port=port, host=host))
    with _reporting(log):
        capture = _measured(
            measurement,
            lambda: uart.capture_run(
                port,
                settings.run,
                baud=board.baud,
                reset=reset,
                on_text=on_text,
                on_bytes=log.write_raw,
                open_timeout=OPEN_TIMEOUT,
            ),
        )
        output = uart.check_capture(capture, str(image.elf))
        log.finish(output, attempts=capture.attempts)
        if measurement is not None:
            measurement.finished(log.path)
        if settings.selftest:  # a bring-up firmware: the memories' report, with MB/s from the board's cycles
            report_selftest(output, image.elf, [settings.out_dir, log.path], echo=on_text is not None)
        elif on_text is not None:
            print(f"[llmcu] {format_summary(output)}", flush=True)
    return output
