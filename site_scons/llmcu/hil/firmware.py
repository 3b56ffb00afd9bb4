"""The firmware a HIL session runs: one scons build with ``hil=qemu``, which links the board's image and its
QEMU twin's image from the same memory plan (the board's budget), so both modes test the same build."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..builder.settings import configure
from ..core.errors import LlmcuError
from ..core.paths import ROOT, TARGETS_DIR
from ..model.kvcache import KV_TYPES
from ..platform.targets import Target, load_target


class FirmwareBuildError(LlmcuError):
    """The HIL firmware did not build."""


@dataclass(frozen=True)
class FirmwareBuild:
    target: Target  # the target under test
    board: str  # its board ("" for a target without boards)
    model: str
    quant: str
    elf: Path  # the board's firmware (the twin's own firmware when the target is a QEMU target)
    twin: str  # the QEMU twin's target name ("" when there is none)
    twin_elf: Path | None
    kv_type: str = "f32"  # the KV cache type the build chose (kv_type=auto is resolved by the planner)


def built_kv_type(gen_dir: Path) -> str:
    """The KV type in a build's generated model_config.h (LLMCU_KV_TYPE, runtime_c/llmcu.h)."""
    match = re.search(r"#define LLMCU_KV_TYPE (\d+)", (gen_dir / "model_config.h").read_text())
    code = int(match.group(1)) if match else 0
    return KV_TYPES[code] if code < len(KV_TYPES) else str(code)


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def build_arguments(target: Target, *, model: str, quant: str, build_dir: Path, board: str = "") -> dict[str, str]:
    arguments = {"target": target.name, "model": model, "quant": quant, "build_dir": str(build_dir)}
    if target.run.method != "qemu-system" and target.twin:
        arguments["hil"] = "qemu"
    if board:
        arguments["board"] = board
    return arguments


def build_firmware(target_name: str, *, model: str, quant: str, build_dir: Path, board: str = "",
                   env: Mapping[str, str] | None = None, timeout: float = 900) -> FirmwareBuild:  # fmt: skip
    """Builds (or finds up to date) the firmware and its twin; ``env`` adds to the environment (LLMCU_MODELS)."""
    target = load_target(target_name, TARGETS_DIR)
    if target.kind != "baremetal":
        raise FirmwareBuildError(f"HIL tests need a firmware target; {target_name} is a {target.kind} target")
    arguments = build_arguments(target, model=model, quant=quant, build_dir=build_dir, board=board)
    extra = dict(env or {})
    with _environment(extra):
        settings = configure(arguments, download=False)
    result = subprocess.run(
        [sys.executable, "-m", "SCons", "-Q", *(f"{key}={value}" for key, value in arguments.items())],
        cwd=ROOT, env={**os.environ, **extra}, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise FirmwareBuildError(f"the HIL firmware for {target_name} did not build "
                                 f"(scons {' '.join(f'{k}={v}' for k, v in arguments.items())}):\n{tail}")  # fmt: skip
    images = {image.name: image for image in settings.images}
    twin_name = target.qemu_target
    firmware = images["firmware"].elf
    twin_elf = images["twin"].elf if "twin" in images else (firmware if twin_name == target.name else None)
    kv_type = built_kv_type(settings.gen_dir)
    return FirmwareBuild(target, settings.board, settings.model_name, quant, firmware, twin_name, twin_elf, kv_type)
