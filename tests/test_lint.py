"""The Python code stays ruff clean (lint and format), like the rest of the suite it runs in CI."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from support.build import ROOT

PATHS = ["site_scons", "tests", "tools", "SConstruct"]


def _ruff(*args: str) -> subprocess.CompletedProcess:
    command = [shutil.which("ruff")] if shutil.which("ruff") else [sys.executable, "-m", "ruff"]
    return subprocess.run([*command, *args], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.parametrize("args", [("check", *PATHS), ("format", "--check", *PATHS)], ids=["check", "format"])
def test_ruff(args: tuple[str, ...]) -> None:
    result = _ruff(*args)
    assert result.returncode == 0, result.stdout + result.stderr
