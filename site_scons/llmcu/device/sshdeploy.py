"""Deploy and run a Linux target's program on a board over SSH: ``scons run board=user@host[:port]``.

llmcu calls the system's OpenSSH client rather than a Python SSH library: it already honours everything a
developer has set up for the board (``~/.ssh/config`` host aliases, ports, ProxyJump, keys, the agent,
known_hosts, ControlMaster), it is installed wherever SSH is used, and it talks to any server a board runs
(OpenSSH or Dropbear). Authentication is by key only: ``BatchMode=yes`` never asks for a password, so a
missing key is an error that says what to do rather than a prompt that hangs the build.

The steps, each one ``ssh`` command (files go over the SSH channel with ``cat``, which needs nothing on the
board beyond a POSIX shell, unlike scp/sftp):

1. ``mkdir -m 700 <remote_dir>/llmcu-<random>`` and copy the program into it,
2. copy ``model.bin`` (a weights_file build),
3. run it there with the run parameters, streaming its output through the protocol parser as it arrives,
   and remove the folder afterwards (a failed run's folder is removed by one more command).

Environment: ``LLMCU_SSH_OPTS`` adds options to every ssh command (e.g. ``-i ~/.ssh/board -F ./ssh_config``);
``LLMCU_REMOTE_EXEC`` is put in front of the program on the board (e.g. ``taskset -c 1`` or ``nice -n -5``;
the tests use ``qemu-aarch64 -cpu max`` to run the aarch64 program on an x86 "board").
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import LlmcuError
from ..platform.destination import Destination
from .procrun import last_lines, stream_command
from .protocol import ByteSink, RunOutput

SSH = "ssh"
CONNECT_TIMEOUT = 10  # seconds
RUN_TIMEOUT = 1800.0
UPLOAD_TIMEOUT = 900.0
ENV_OPTIONS = "LLMCU_SSH_OPTS"
ENV_EXEC = "LLMCU_REMOTE_EXEC"


_UNREACHABLE = (
    "Connection refused",
    "Connection timed out",
    "Operation timed out",
    "No route to host",
    "Network is unreachable",
    "Could not resolve hostname",
    "Name or service not known",
    "Connection reset",
    "Connection closed",
)


class SshError(LlmcuError):
    """An SSH step failed."""


class SshUnreachableError(SshError):
    """The board does not answer on its SSH port."""


class SshAuthError(SshError):
    """The board refused the key (or there is none)."""


class SshHostKeyError(SshError):
    """The board's host key is unknown or changed."""


def ssh_command(destination: Destination, remote: str, *, extra_options: Sequence[str] | None = None) -> list[str]:
    """``ssh`` with key-only, non-interactive options, the user's LLMCU_SSH_OPTS, and the remote command."""
    extra = shlex.split(os.environ.get(ENV_OPTIONS, "")) if extra_options is None else list(extra_options)
    command = [SSH, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}", "-o", "ServerAliveInterval=15"]
    if destination.port:
        command += ["-p", str(destination.port)]
    return [*command, *extra, destination.login, remote]


def classify(destination: Destination, stderr: str) -> SshError:
    """An ssh failure (exit status 255) as an error that says what to do."""
    said = last_lines(stderr, 3)
    port = destination.port or 22
    if "Permission denied" in stderr or "Too many authentication failures" in stderr:
        return SshAuthError(
            f"SSH authentication to {destination.login} failed: llmcu logs in with a key, never a password. Put "
            f"your public key in the board's ~/.ssh/authorized_keys (ssh-copy-id -p {port} {destination.login}), or "
            f"name the key with {ENV_OPTIONS}='-i KEYFILE'. ssh said: {said}"
        )
    if "Host key verification failed" in stderr or "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
        return SshHostKeyError(
            f"the host key of {destination.host} is not known or has changed: connect once with "
            f"`ssh -p {port} {destination.login}` to check and accept it. ssh said: {said}"
        )
    if any(marker in stderr for marker in _UNREACHABLE):
        return SshUnreachableError(
            f"cannot reach {destination.host} on port {port} over SSH: is the board on, on this network, and "
            f"running an SSH server? ssh said: {said}"
        )
    return SshError(f"ssh to {destination} failed: {said}")


def _run(destination: Destination, remote: str, *, stdin: Path | None = None, timeout: float) -> None:
    """One remote command with nothing to stream; raises a classified error when ssh fails."""
    command = ssh_command(destination, remote)
    try:
        if stdin is None:
            result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        else:
            with stdin.open("rb") as data:
                result = subprocess.run(command, stdin=data, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise SshError(f"{SSH} not found: install the OpenSSH client (apt-get install openssh-client)") from None
    except subprocess.TimeoutExpired:
        raise SshError(f"ssh to {destination} did not finish within {timeout:g} s ({remote[:60]}...)") from None
    if result.returncode == 255:
        raise classify(destination, result.stderr)
    if result.returncode != 0:
        raise SshError(f"on {destination}: `{remote}` failed (status {result.returncode}): {last_lines(result.stderr)}")


@dataclass(frozen=True)
class RemoteCopy:
    """The program (and weights) copied into a fresh folder on the board."""

    destination: Destination
    folder: str
    weights: str | None  # the remote weights file's path


def upload(destination: Destination, program: Path, weights: Path | None, remote_dir: str = "/tmp") -> RemoteCopy:
    """Copies ``program`` (and ``weights``) into a new private folder under ``remote_dir`` on the board."""
    for path in (program, weights):
        if path is not None and not path.is_file():
            raise SshError(f"{path} does not exist: build it first")
    folder = f"{remote_dir.rstrip('/') or ''}/llmcu-{secrets.token_hex(6)}"
    q = shlex.quote
    try:
        remote_program = q(folder + "/llmcu")
        _run(destination, f"mkdir -m 700 {q(folder)} && cat > {remote_program} && chmod 700 {remote_program}",
             stdin=program, timeout=UPLOAD_TIMEOUT)  # fmt: skip
        remote_weights = None
        if weights is not None:
            remote_weights = f"{folder}/{weights.name}"
            _run(destination, f"cat > {q(remote_weights)}", stdin=weights, timeout=UPLOAD_TIMEOUT)
    except BaseException:
        with contextlib.suppress(SshError):
            remove(RemoteCopy(destination, folder, None))
        raise
    return RemoteCopy(destination, folder, remote_weights)


def in_folder(folder: str, launch: str, args: Sequence[str]) -> str:
    """The remote command that runs ``launch`` (``./llmcu``, maybe behind a wrapper) with ``args`` in ``folder``
    and removes the folder when it ends, keeping its exit status."""
    q = shlex.quote
    words = " ".join(q(arg) for arg in args)
    return f"cd {q(folder)} && {launch} {words}; status=$?; cd / && rm -rf {q(folder)}; exit $status"


def remove(copy: RemoteCopy) -> None:
    """Removes an uploaded copy's folder from the board."""
    _run(copy.destination, f"rm -rf {shlex.quote(copy.folder)}", timeout=60)


def console_command(copy: RemoteCopy, args: Sequence[str], exec_prefix: str | None = None) -> list[str]:
    """The ssh command that runs the uploaded program's console (``llmcu -c``) on its pipes and removes the folder
    when the console ends (its standard input closed)."""
    prefix = os.environ.get(ENV_EXEC, "") if exec_prefix is None else exec_prefix
    launch = f"{prefix} ./llmcu" if prefix else "./llmcu"
    return ssh_command(copy.destination, in_folder(copy.folder, launch, ["-c", *args]))


def deploy_and_run(
    destination: Destination,
    program: Path,
    weights: Path | None,
    program_args: Callable[[str | None], list[str]],
    *,
    remote_dir: str = "/tmp",
    exec_prefix: str | None = None,
    on_text: ByteSink | None = None,
    on_bytes: ByteSink | None = None,
    timeout: float = RUN_TIMEOUT,
) -> RunOutput:
    """Copies ``program`` (and ``weights``) to a fresh folder on the board, runs it there with
    ``program_args(remote weights path)``, removes the folder, and returns the parsed output."""
    prefix = os.environ.get(ENV_EXEC, "") if exec_prefix is None else exec_prefix
    copy = upload(destination, program, weights, remote_dir)
    finished = False
    try:
        launch = f"{prefix} ./llmcu" if prefix else "./llmcu"
        remote = in_folder(copy.folder, launch, program_args(copy.weights))
        result = stream_command(ssh_command(destination, remote), on_text=on_text, on_bytes=on_bytes, timeout=timeout)
        finished = not result.timed_out and result.returncode != 255
    finally:
        if not finished:
            # The original error says more; a folder left behind is in remote_dir with a random name.
            with contextlib.suppress(SshError):
                remove(copy)
    output = result.output
    if result.timed_out:
        raise SshError(f"the run on {destination} did not finish within {timeout:g} s")
    if result.returncode == 255 and not output.complete:
        raise classify(destination, result.stderr)
    if result.returncode != 0 or not output.ok:
        reason = output.reason or (f"exit status {result.returncode}" if result.returncode else "no end marker")
        raise SshError(f"{program.name} failed on {destination}: {reason}\n{last_lines(result.stderr)}")
    return output
