"""Helpers for tests that drive scons and the built programs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def case_args(case: dict) -> list[str]:
    """A golden case's settings as the program's command-line flags (the same for every hosted target)."""
    return [
        "-p", case["prompt"],
        "-n", str(case["steps"]),
        "-t", repr(case["temperature"]),
        "-P", repr(case["topp"]),
        "-s", str(case["seed"]),
    ]  # fmt: skip


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
