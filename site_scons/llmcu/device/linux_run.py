"""`scons run` for a Linux target (llmcu.builder.linux configures it): on the board over SSH
(llmcu.device.sshdeploy), or here under qemu-user (llmcu.device.qemu_user); logged by llmcu.device.runlog."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import LlmcuError
from .protocol import RunOutput, format_summary

if TYPE_CHECKING:
    from ..builder.settings import BuildSettings


def program_args(settings: BuildSettings, weights_path: str | None) -> list[str]:
    """The program's command line for `run`: the run parameters, the threads, the weights file."""
    return [*settings.run.program_args(), *program_options(settings, weights_path)]


def program_options(settings: BuildSettings, weights_path: str | None) -> list[str]:
    """What every start of the program needs, a run or a console: the threads, the weights file (its path where
    the program runs)."""
    args = ["-j", str(settings.threads)]
    if settings.weights_file and weights_path is not None:
        args += ["-w", weights_path]
    return args


# ---- run ----


def choose_runner(settings: BuildSettings) -> str:
    """ "board" or "qemu" from ``board=`` and ``hil=``."""
    assert settings.linux is not None
    linux = settings.linux
    if linux.hil == "qemu":
        return "qemu"
    if linux.destination is not None:
        return "board"
    if linux.hil == "auto":
        return "qemu"
    name = settings.target.name
    raise LlmcuError(
        f"`run` on {name} needs a board or QEMU: add board=user@host[:port] to run it on an {name} board over SSH, "
        f"or hil=qemu to run it here under {settings.target.run.qemu}"
    )


def _show(piece: bytes) -> None:
    sys.stdout.buffer.write(piece)
    sys.stdout.buffer.flush()


def run(settings: BuildSettings, log_dir: Path | None = None, *, echo: bool = True) -> RunOutput:
    """`scons run` for a Linux target: on the board over SSH or here under qemu-user; logged (llmcu.device.runlog)
    in ``log_dir`` when given."""
    from . import qemu_user, sshdeploy

    assert settings.linux is not None
    runner = choose_runner(settings)
    program = settings.out_dir / "llmcu"
    weights = settings.out_dir / "model.bin" if settings.weights_file else None
    on_text = _show if echo else None
    log = _open_log(settings, log_dir, runner)
    on_bytes = log.write_raw if log is not None else None
    try:
        if runner == "qemu":
            output = qemu_user.run_program(
                program,
                program_args(settings, str(weights) if weights else None),
                qemu_user.QemuUser.of(settings),
                plugin_dir=settings.out_dir.parent.parent / "qemu-plugin",
                on_text=on_text,
                on_bytes=on_bytes,
            )
        else:
            assert settings.linux.destination is not None
            output = sshdeploy.deploy_and_run(
                settings.linux.destination,
                program,
                weights,
                lambda remote_weights: program_args(settings, remote_weights),
                remote_dir=settings.linux.remote_dir,
                on_text=on_text,
                on_bytes=on_bytes,
            )
    except BaseException as error:
        if log is not None:
            _finish_log(log, None, error)
        raise
    if log is not None:
        _finish_log(log, output, None)
    if echo:
        print(f"[llmcu] {format_summary(output)}", flush=True)
        if log is not None:
            print(f"[llmcu] log: {log.path}", flush=True)
    return output


def _open_log(settings: BuildSettings, log_dir: Path | None, runner: str) -> Any:
    if log_dir is None:
        return None
    from . import qemu_user

    try:
        from .runlog import RunLog, run_info
    except ImportError:  # the run log is optional
        return None
    assert settings.linux is not None
    where = str(settings.linux.destination) if runner == "board" and settings.linux.destination else ""
    host = {"qemu": qemu_user.version(settings.target.run.qemu)} if runner == "qemu" else {}
    return RunLog(log_dir, run_info(settings, runner, port=where, host=host))


def _finish_log(log: Any, output: RunOutput | None, error: BaseException | None) -> None:
    if error is None:
        log.finish(output)
    else:
        reason = "interrupted" if isinstance(error, KeyboardInterrupt) else "error"
        log.finish(None, reason=reason, error=str(error) or type(error).__name__)
    log.close()
