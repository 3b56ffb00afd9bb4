"""Helpers for tests that drive scons and the built programs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def case_args(case: dict) -> list[str]:
    """A golden case's settings as the program's command-line flags (the same for every hosted target)."""
    return [
        "-p", case["prompt"],
        "-n", str(case["steps"]),
        "-t", repr(case["temperature"]),
        "-P", repr(case["topp"]),
        "-s", str(case["seed"]),
    ]  # fmt: skip


def llmcu_errors(result: subprocess.CompletedProcess) -> list[str]:
    """The `llmcu: error:` lines a scons run printed on its standard error."""
    return [line for line in result.stderr.splitlines() if line.startswith("llmcu: error:")]


# Story openings for a test that needs a greedy run to fill the whole context. Which one does depends on the
# build's bytes, which are the same on every machine (llmcu.model.portable), so the choice is too; a test asks
# prompt_filling_context rather than naming one, so that a change to the quantizer does not break it.
STORY_OPENINGS = (
    "Once upon a time", "There was a big tree", "Lily", "Sara went to the beach", "Tom", "One day", "The sun",
    "Ben and Mia", "A little bird", "Tim had a red ball", "Mom said", "The dog",
)  # fmt: skip


def prompt_filling_context(program: Path, context: int, openings: tuple[str, ...] = STORY_OPENINGS) -> str:
    """The first opening whose greedy run on the host ``program`` reaches ``context`` tokens without ending."""
    from llmcu.device.protocol import parse

    reached = {}
    for opening in openings:
        result = subprocess.run(
            [str(program), "-p", opening, "-n", str(context), "-t", "0"], capture_output=True, timeout=120
        )
        reached[opening] = parse(result.stdout).summary_number("tokens")
        if reached[opening] == context:
            return opening
    raise AssertionError(f"no opening fills the {context}-token context: {reached}")


def scons(
    args: list[str],
    models_dir: Path,
    *,
    check: bool = True,
    timeout: float = 600,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run scons in the project root (or in ``cwd``, a copy of it) with LLMCU_MODELS pointing at
    ``models_dir``; ``env`` adds or replaces environment variables."""
    env = dict(os.environ, LLMCU_MODELS=str(models_dir), LLMCU_OFFLINE="1", **(env or {}))
    result = subprocess.run(
        [sys.executable, "-m", "SCons", "-Q", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"scons {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


# The runtime's C contract flags (llmcu.platform.targets.CONTRACT_CFLAGS) and warnings, for host test drivers.
HOST_C_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Wshadow", "-Wdouble-promotion", "-Werror", "-ffp-contract=off",
                "-fno-fast-math"]  # fmt: skip


def host_c_program(program: Path, sources: list[Path], optimisation: str = "-O2") -> Path:
    """A test driver and runtime sources compiled with the host's gcc (the test is skipped without one)."""
    import pytest

    if shutil.which("gcc") is None:
        pytest.skip("gcc not found")
    command = ["gcc", *HOST_C_FLAGS, optimisation, f"-I{ROOT / 'runtime_c'}", *map(str, sources), "-o", str(program)]
    subprocess.run(command, check=True)
    return program
