"""`scons debug`: gdb on the firmware (or the host program), with the sources found where the build put them.

- the QEMU twin: QEMU's gdb stub (``-gdb tcp:...``, halted at reset with ``-S``) and the twin's console driven
  by llmcu, which sends the build's ``run`` command (prompt=, steps=, ...) once the firmware is ready, so that a
  breakpoint in the forward pass is reached; the text is printed as it comes;
- a board: the image is flashed where it differs (as `flash` does), then pyOCD's gdb server is started on the
  probe `flash` would choose (``probe=``), and gdb resets and halts the target through it;
- the host program: gdb with the program and the build's run arguments;
- a Linux target's program (the RZ/V2L): qemu-user's gdb stub here, or gdbserver on the board over SSH
  (llmcu.device.debug_linux).

``debug=server`` starts only the server and prints how to attach (an IDE, another terminal). gdb is
``arm-none-eabi-gdb`` when present, else ``gdb-multiarch`` (``gdb`` for the host program). The build is
reproducible (llmcu.builder.compileflags.prefix_map_flags): its debug information names the source tree ``.`` and
the build directory ``/llmcu-build``; gdb gets ``set substitute-path`` for both, so it shows the sources.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..builder.settings import BuildSettings, RunOptions
from ..core.errors import LlmcuError
from ..core.paths import ROOT
from . import flashing, qemu, uart
from .gdbserver import DebugServer, wait_listening
from .probes import PyocdSessionFactory, select_probe
from .runs import choose_runner

ARM_GDBS = ("arm-none-eabi-gdb", "gdb-multiarch")
HOST_GDBS = ("gdb", "gdb-multiarch")


class GdbNotFoundError(LlmcuError):
    """No gdb that can debug this build is installed."""


def find_gdb(arm: bool, which: Callable[[str], str | None] = shutil.which, names: Sequence[str] = ()) -> str:
    """The gdb to use (the first of ``names``, else of the Arm or the host gdbs), or a GdbNotFoundError that says
    which package to install."""
    names = tuple(names) or (ARM_GDBS if arm else HOST_GDBS)
    for name in names:
        path = which(name)
        if path:
            return path
    package = "gdb-multiarch" if "gdb-multiarch" in names else "gdb"
    raise GdbNotFoundError(
        f"`debug` needs {' or '.join(names)}, and none is installed: `apt-get install {package}` (tools/setup.sh "
        "installs it)"
    )


def source_commands(settings: BuildSettings) -> list[str]:
    """gdb commands that map the reproducible build's source names back to this checkout and build directory."""
    build_dir = settings.out_dir.parents[1].resolve()
    return [
        f"set substitute-path /llmcu-build {build_dir}",
        f"directory {ROOT}",
    ]


def gdb_command(
    gdb: str, program: Path, settings: BuildSettings, commands: Sequence[str], *, batch: bool = False,
    args: Sequence[str] = (),
) -> list[str]:  # fmt: skip
    """gdb on ``program`` with the source mapping, then ``commands`` (each an ``-ex``)."""
    command = [gdb, "-q", "-nx"] + (["-batch"] if batch else [])
    for line in [*source_commands(settings), *commands]:
        command += ["-ex", line]
    if args:
        return [*command, "--args", str(program), *args]
    return [*command, str(program)]


# ---- the QEMU twin ----


def start_twin_server(settings: BuildSettings, image: Any, port: int, *, echo: bool = True) -> DebugServer:
    """QEMU halted at reset with its gdb stub on ``port``, its console driven by a thread that sends the build's
    run command when the firmware is ready (and prints the text)."""
    from .runs import connect_qemu, start_qemu_serial

    machine = image.target.run.machine
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
    process, url = start_qemu_serial(
        image.elf, machine, stderr, ("-gdb", f"tcp:127.0.0.1:{port}", "-S"),
        semihosting_args=("llmcu", "serve"), own_session=True,
    )  # fmt: skip
    handle = connect_qemu(process, url, stderr)
    done = threading.Event()

    def show(piece: bytes) -> None:
        if echo:
            sys.stdout.buffer.write(piece)
            sys.stdout.buffer.flush()

    def drive() -> None:
        # The firmware runs only when gdb says `continue`: no time limit for the ready line or the run.
        with contextlib.suppress(Exception):
            uart.capture_run(handle, settings.run, on_text=show, ready_timeout=1e9, silence=1e9, timeout=1e9,
                             resend_on_reset=0, poke_after=None)  # fmt: skip
        done.set()

    driver = threading.Thread(target=drive, name="llmcu-debug-console", daemon=True)
    driver.start()

    def stop() -> None:
        with contextlib.suppress(Exception):
            handle.close()
        if process.poll() is None:
            process.kill()
        process.wait()
        stderr.close()

    try:
        wait_listening(port, process)
    except LlmcuError:
        stop()
        raise
    return DebugServer(f"localhost:{port}", f"QEMU twin {machine} ({image.elf})", stop, ())


# ---- a board ----


def start_board_server(
    settings: BuildSettings,
    image: Any,
    probe_uid: str,
    port: int,
    *,
    session_factory: Any = None,
    server_factory: Callable[[Any], Any] | None = None,
    flash: bool = True,
) -> DebugServer:
    """Flashes the image where the board's flash differs, then starts pyOCD's gdb server on the chosen probe."""
    factory = session_factory or PyocdSessionFactory()
    if flash:
        result = flashing.flash_firmware(
            image.out_dir, settings.target, probe_uid=probe_uid or None, reset=False,
            progress=sys.stderr.isatty(), session_factory=factory,
        )  # fmt: skip
        for line in result.lines():
            print(f"[llmcu] flash: {line}", flush=True)
    probe = select_probe(factory.probes(), probe_uid or None)
    session = factory.open(probe, {"target_override": settings.target.pyocd_target, "gdbserver_port": port})
    if server_factory is None:
        from pyocd.gdbserver import GDBServer

        def server_factory(opened: Any) -> Any:
            return GDBServer(opened, core=0)

    try:
        server = server_factory(session)
        server.start()
    except BaseException:
        with contextlib.suppress(Exception):
            session.close()
        raise

    def stop() -> None:
        with contextlib.suppress(Exception):
            server.stop()
        with contextlib.suppress(Exception):
            session.close()

    return DebugServer(
        f"localhost:{port}", f"{settings.board or settings.target.name} through probe {probe.uid}", stop,
        ("monitor reset halt",),
    )  # fmt: skip


# ---- `scons debug` ----


def debug(
    settings: BuildSettings,
    options: RunOptions,
    *,
    port: int | None = None,
    commands: Sequence[str] = (),
    batch: bool = False,
    runner: str = "",
) -> int:
    """Starts the server and gdb (``debug=gdb``) or the server alone (``debug=server``, until Ctrl-C) on
    ``gdb_port=`` (``port`` instead, when given); returns gdb's exit status. ``commands`` go to gdb after it
    connected (with ``batch`` gdb runs them and exits)."""
    mode = options.debug
    port = options.gdb_port if port is None else port
    if settings.linux is not None:
        return _debug_linux(settings, mode=mode, port=port, commands=commands, batch=batch, runner=runner)
    if not settings.images:
        program = settings.out_dir / "llmcu"
        if not program.is_file():
            raise LlmcuError(f"{program} does not exist: build it first")
        gdb = find_gdb(arm=False)
        command = gdb_command(gdb, program, settings, commands, batch=batch, args=settings.run.program_args())
        return _run_gdb(command)
    if runner:
        image = next(i for i in settings.images if (i.target.run.method == "qemu-system") == (runner == "qemu"))
    else:
        runner, image = choose_runner(settings)
    gdb = find_gdb(arm=True) if mode == "gdb" else ""
    if runner == "qemu":
        if shutil.which(qemu.QEMU) is None:
            raise qemu.QemuNotFoundError(f"{qemu.QEMU} not found: `apt-get install qemu-system-arm`")
        server = start_twin_server(settings, image, port)
    else:
        server = start_board_server(settings, image, options.probe, port)
    target = f"target extended-remote {server.address}"
    return _session(server, settings, image.elf, ARM_GDBS[1], gdb, target, commands, batch=batch)


def _session(
    server: DebugServer, settings: BuildSettings, program: Path, shown_gdb: str, gdb: str, target: str,
    commands: Sequence[str], *, batch: bool,
) -> int:  # fmt: skip
    """gdb on ``program`` through ``server`` (``target``, the server's setup, then ``commands``), or with no
    ``gdb`` the server alone until Ctrl-C, with how to attach; the server is stopped either way."""
    try:
        print(f"[llmcu] gdb server for {server.describe} on {server.address}", flush=True)
        if not gdb:
            print(
                f"[llmcu] attach with: {shown_gdb} {program} -ex '{target}' "
                f"(and `set substitute-path /llmcu-build {settings.out_dir.parents[1].resolve()}`); Ctrl-C ends it",
                flush=True,
            )
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
            return 0
        return _run_gdb(gdb_command(gdb, program, settings, [target, *server.gdb_setup, *commands], batch=batch))
    finally:
        server.stop()


def _debug_linux(
    settings: BuildSettings, *, mode: str, port: int, commands: Sequence[str], batch: bool, runner: str
) -> int:
    """A Linux target's program under qemu-user's gdb stub, or under gdbserver on the board (llmcu.device.debug_linux):
    the board when ``board=`` names one (and ``hil=qemu`` does not say otherwise), else QEMU."""
    from . import debug_linux

    assert settings.linux is not None
    if not runner:
        runner = "board" if settings.linux.destination is not None and settings.linux.hil != "qemu" else "qemu"
    gdb = find_gdb(arm=True, names=debug_linux.LINUX_GDBS) if mode == "gdb" else ""
    if runner == "board":
        server = debug_linux.start_board_server(settings, port)
    else:
        server = debug_linux.start_qemu_server(settings, port)
    return _session(server, settings, settings.out_dir / "llmcu", debug_linux.LINUX_GDBS[0], gdb,
                    f"target remote {server.address}", commands, batch=batch)  # fmt: skip


def _run_gdb(command: Sequence[str]) -> int:
    """gdb in this terminal; Ctrl-C is gdb's (it interrupts the target), not llmcu's."""
    previous = signal.getsignal(signal.SIGINT)
    with contextlib.suppress(ValueError):  # only the main thread may change signal handling
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.run(list(command), cwd=ROOT, check=False).returncode
    finally:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGINT, previous)
