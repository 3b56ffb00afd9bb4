"""Where a build or run came from: the project's git commit and the versions of the tools that made it.

A run log (and the report made from it) records them, so that a figure can be traced to the code and the
compiler that produced it. Each is one short line, or "" when it cannot be known (no git, no such tool).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path


@functools.cache
def git_commit(root: Path) -> str:
    """``<commit>`` of the checkout at ``root``, with ``-dirty`` when files differ from it; "" outside git."""
    if shutil.which("git") is None or not (root / ".git").exists():
        return ""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    return commit + ("-dirty" if dirty else "")


@functools.cache
def tool_version(command: str) -> str:
    """The first line ``command --version`` prints (``arm-none-eabi-gcc (...) 12.2.1 ...``), or ""."""
    if not command or shutil.which(command) is None:
        return ""
    try:
        out = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.strip().splitlines()[0] if out.strip() else ""
