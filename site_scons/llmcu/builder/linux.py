"""Linux targets (``kind = "linux"``, e.g. rzv2l): the cross toolchain, the weights-file choice, and `run`.

The program is the hosted one (targets/posix/ around the runtime), cross-compiled. Which compiler, in this
order of precedence:

1. ``sdk=PATH``: a Yocto SDK's ``environment-setup-<arch>-poky-linux`` script (Renesas' RZ/V2L SDK is one).
   It is sourced in a clean shell (``env -i bash -c '. script && env -0'``) and its ``CC`` (compiler and
   flags, ``--sysroot`` included), ``CFLAGS``, ``LDFLAGS`` and ``PATH`` are used. The program then links
   dynamically against the SDK's sysroot, which matches the board's root filesystem (Poky SDKs carry no
   static C library by default), so the target's ``-static`` is dropped.
2. ``CC=`` in the environment: a compiler, with flags if you like (``CC="aarch64-linux-gnu-gcc -v"``).
3. ``CROSS_COMPILE=`` in the environment: a prefix, e.g. ``aarch64-linux-gnu-`` gives ``aarch64-linux-gnu-gcc``.
4. the target's ``[toolchain] cc`` (Debian's ``aarch64-linux-gnu-gcc``), linking statically.

The compiler is checked once (``-dumpmachine``) so that a host compiler left in ``CC`` is an error that
says so, not an x86 program copied to the board.

`run`: ``board=user@host[:port]`` copies the program (and model.bin) to the board over SSH and runs it
there (llmcu.device.sshdeploy); ``hil=qemu`` runs it here under qemu-user with the instruction-counting plugin
(llmcu.device.qemu_user); ``hil=auto`` takes the board when one is named, else QEMU.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import OptionError
from ..model.quantize import QuantPlan
from ..model.sources import read_config
from ..platform.destination import Destination, parse_destination
from ..platform.targets import LinuxSpec, Target
from .linuxmem import weight_bytes
from .options import RUN_ONLY


@dataclass(frozen=True)
class Toolchain:
    """How to call the compiler for a Linux target."""

    cc: str  # the compiler driver (absolute, or a name on PATH)
    cflags: tuple[str, ...] = ()  # before the target's flags: the SDK's (CC's words, CFLAGS)
    ldflags: tuple[str, ...] = ()  # before the target's link flags: the SDK's (CC's words, LDFLAGS)
    path: str = ""  # PATH for the compiler (an SDK's); "" keeps the build's
    sysroot: str = ""  # --sysroot of a dynamically linked program (qemu-user needs it as -L)
    static: bool = True  # keep the target's -static
    origin: str = "target.toml"  # where it came from, for messages

    def describe(self) -> str:
        return f"{self.cc} (from {self.origin})"

    @property
    def run_sysroot(self) -> str:
        """What qemu-user needs as ``-L`` to run the program: the sysroot of a dynamically linked one, else ""."""
        return "" if self.static else self.sysroot


@dataclass(frozen=True)
class LinuxSettings:
    """What a Linux target's build and `run` need beyond the common settings."""

    toolchain: Toolchain
    weights_file: bool  # weights in model.bin beside the program, not linked in
    destination: Destination | None = field(metadata=RUN_ONLY)  # board=user@host[:port]
    hil: str = field(metadata=RUN_ONLY)  # none | qemu | auto
    remote_dir: str = field(metadata=RUN_ONLY)  # where the files go on the board
    ram_bytes: int  # the board's RAM (board_ram=, else target.toml's [linux] ram); 0: not checked
    os_reserve_bytes: int  # what the kernel and the BSP's services keep (target.toml's [linux] os_reserve)


# ---- the toolchain ----


def import_sdk(script: str | Path) -> dict[str, str]:
    """The environment a Yocto SDK's environment-setup script sets up, sourced in a clean shell."""
    path = Path(script).expanduser()
    if not path.is_file():
        raise OptionError(f"sdk={script}: no such file (expected a Yocto SDK's environment-setup-* script)")
    try:
        result = subprocess.run(
            ["env", "-i", "bash", "-c", '. "$1" >/dev/null && env -0', "llmcu-sdk", str(path.resolve())],
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise OptionError(f"sdk={script}: cannot source it with bash: {error}") from None
    if result.returncode != 0:
        why = result.stderr.decode(errors="replace").strip() or f"exit status {result.returncode}"
        raise OptionError(f"sdk={script}: sourcing it failed: {why}")
    values = {}
    for item in result.stdout.split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            values[key] = value
    if not values.get("CC"):
        raise OptionError(f"sdk={script}: the script sets no CC; is it a Yocto SDK environment-setup script?")
    return values


def _driver(words: list[str], path: str, where: str) -> str:
    if not words:
        raise OptionError(f"{where}: no compiler named")
    found = shutil.which(words[0], path=path or None)
    if found is None:
        raise OptionError(f"{where}: compiler {words[0]} not found" + (f" on the SDK's PATH ({path})" if path else ""))
    return found


def _sysroot(words: list[str]) -> str:
    for index, word in enumerate(words):
        if word.startswith("--sysroot="):
            return word.split("=", 1)[1]
        if word == "--sysroot" and index + 1 < len(words):
            return words[index + 1]
    return ""


def resolve_toolchain(target: Target, sdk: str, environ: Mapping[str, str] | None = None) -> Toolchain:
    """The compiler for ``target`` from ``sdk=``, ``CC``, ``CROSS_COMPILE`` or target.toml (module docstring)."""
    env = os.environ if environ is None else environ
    if sdk:
        values = import_sdk(sdk)
        words = shlex.split(values["CC"])
        path = values.get("PATH", "")
        extra = words[1:]
        return Toolchain(
            cc=_driver(words, path, f"sdk={sdk}"),
            cflags=(*extra, *shlex.split(values.get("CFLAGS", ""))),
            ldflags=(*extra, *shlex.split(values.get("LDFLAGS", ""))),
            path=path,
            sysroot=_sysroot(words) or values.get("SDKTARGETSYSROOT", ""),
            static=False,
            origin=f"sdk={sdk}",
        )
    if env.get("CC"):
        words = shlex.split(env["CC"])
        return Toolchain(cc=words[0], cflags=tuple(words[1:]), ldflags=tuple(words[1:]), origin="CC")
    if env.get("CROSS_COMPILE"):
        return Toolchain(cc=f"{env['CROSS_COMPILE']}gcc", origin="CROSS_COMPILE")
    return Toolchain(cc=target.cc)


def check_toolchain(toolchain: Toolchain, target: Target) -> None:
    """The compiler exists and builds for the target's architecture (``[toolchain] arch``)."""
    arch = target.toolchain_arch or target.cc.split("-", 1)[0]
    env = dict(os.environ, PATH=toolchain.path) if toolchain.path else None
    hint = "install it (tools/setup.sh installs gcc-aarch64-linux-gnu) or name another with sdk=, CC= or CROSS_COMPILE="
    try:
        result = subprocess.run(
            [toolchain.cc, *toolchain.cflags, "-dumpmachine"], capture_output=True, text=True, timeout=30, env=env
        )
    except FileNotFoundError:
        raise OptionError(f"target {target.name}: compiler {toolchain.describe()} not found; {hint}") from None
    except (OSError, subprocess.TimeoutExpired) as error:
        raise OptionError(f"target {target.name}: cannot run {toolchain.describe()}: {error}") from None
    machine = result.stdout.strip()
    if result.returncode != 0 or not machine:
        raise OptionError(f"target {target.name}: {toolchain.describe()} failed: {result.stderr.strip()}")
    if arch and not machine.startswith(arch):
        raise OptionError(
            f"target {target.name}: {toolchain.describe()} builds for {machine}, not {arch}: unset CC (or "
            "CROSS_COMPILE) or point it at a cross compiler"
        )


# ---- the build's settings ----


def estimated_data_bytes(checkpoint: Path, tokenizer: Path, plan: QuantPlan) -> int:
    """model_data.bin's size from the checkpoint's shape, without reading the weights: each matrix in its
    quantization, the norms, and the tokenizer (its file plus the encoder's sorted order)."""
    config = read_config(checkpoint)
    vocabulary = tokenizer.stat().st_size if tokenizer.suffix == ".bin" else 16 * config.vocab_size  # pieces
    return weight_bytes(config, plan) + vocabulary + 8 * config.vocab_size


def runs_in_qemu(target: Target, hil: str, board: str) -> bool:
    """Whether `run` on a Linux target takes qemu-user (see :func:`choose_runner`)."""
    return target.kind == "linux" and (hil == "qemu" or (hil == "auto" and not board))


def resolve_threads(option: str, target: Target, in_qemu: bool = False) -> int:
    """``threads=``: a count, or auto = the target's ``[cpu] threads`` (1 for a run under qemu-user, so
    instruction counts repeat). Firmware has no threads."""
    if target.kind == "baremetal":
        if option not in ("auto", "1"):
            raise OptionError(f"threads={option}: target {target.name} is firmware and runs one thread")
        return 1
    if option != "auto":
        return int(option)
    if in_qemu:
        return 1
    return target.threads


def configure(
    target: Target, values: Mapping[str, Any], checkpoint: Path, tokenizer: Path, plan: QuantPlan
) -> LinuxSettings:
    """The Linux part of settings.configure (``values``: checked options): toolchain, weights file, destination."""
    spec = _linux_spec(target)
    toolchain = resolve_toolchain(target, values["sdk"])
    check_toolchain(toolchain, target)
    choice = values["weights_file"]
    if choice == "auto":
        weights_file = estimated_data_bytes(checkpoint, tokenizer, plan) > spec.weights_file_above
    else:
        weights_file = choice == "yes"
    board = values["board"]
    ram, reserve = board_memory(target, values["board_ram"])
    return LinuxSettings(
        toolchain=toolchain,
        weights_file=weights_file,
        destination=parse_destination(board) if board else None,
        hil=values["hil"],
        remote_dir=spec.remote_dir,
        ram_bytes=ram,
        os_reserve_bytes=reserve,
    )


def board_memory(target: Target, board_ram: int = 0) -> tuple[int, int]:
    """The board's RAM (``board_ram`` bytes, else target.toml's ``[linux] ram``) and what its OS keeps of it
    (``os_reserve``, at most a quarter: a small board_ram= for a small board keeps most of it)."""
    spec = _linux_spec(target)
    ram = board_ram or spec.ram
    return ram, min(spec.os_reserve, ram // 4)


def _linux_spec(target: Target) -> LinuxSpec:
    if target.linux is None:
        raise OptionError(f"target {target.name} is not a Linux target")
    return target.linux


def construction_variables(target: Target, linux: LinuxSettings, scons_env: Mapping[str, Any]) -> dict[str, Any]:
    """SCons construction variables that make the hosted program build a Linux target's program
    (``scons_env``: the build's execution environment, ENV, which an SDK's PATH is put in)."""
    toolchain = linux.toolchain
    ldflags = [flag for flag in target.ldflags if toolchain.static or flag != "-static"]
    variables: dict[str, Any] = {
        "CC": toolchain.cc,
        "LINK": toolchain.cc,
        "CCFLAGS": [*toolchain.cflags, *target.all_cflags],
        "LINKFLAGS": [*toolchain.ldflags, *target.cpu_flags, *ldflags],
    }
    if toolchain.path:
        variables["ENV"] = {**scons_env, "PATH": toolchain.path}
    return variables


def posix_defines(default_threads: int) -> list[tuple[str, str]]:
    """Preprocessor definitions of a hosted or Linux program: the thread pool and its default size."""
    return [("LLMCU_PTHREADS", "1"), ("LLMCU_THREADS", str(default_threads))]
