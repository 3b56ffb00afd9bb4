"""The C fuzz targets (tools/fuzz/c/): the console, the tokenizer and the step-wise generation API under
AddressSanitizer and UndefinedBehaviorSanitizer, at a bounded number of generated inputs, and proof that the harness
finds a bug and saves the input that shows it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.build import ROOT

SCRIPT = ROOT / "tools" / "fuzz" / "c" / "run_c_fuzz.py"

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not found")


def run_fuzz(args: list[str], models: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LLMCU_MODELS": str(models), "LLMCU_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)  # fmt: skip


def test_bounded_fuzz_run_is_clean(tmp_path: Path, stories260k: Path) -> None:
    """3,000 generated inputs per target (and their seeds), every one clean: no sanitizer report, no invariant
    broken (see the targets' comments for what they check)."""
    result = run_fuzz(["--iterations", "3000", "--seed", "11", "--work", str(tmp_path)], stories260k.parent, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fuzz: console: 0 files and 3000 generated inputs ran clean (seed 11)" in result.stdout
    assert "fuzz: tokenizer: 0 files and 3000 generated inputs ran clean (seed 11)" in result.stdout
    assert "fuzz: gen: 0 files and 3000 generated inputs ran clean (seed 11)" in result.stdout
    assert not list(tmp_path.glob("crash-*"))


@pytest.mark.fault(
    area="runtime",
    kind="fault",
    what="a planted heap overflow in the console fuzz target, reached only by a mutated input",
    sees=r"runtime error: store to address .*fuzz: the failing input is saved as .*crash-console-[0-9a-f]{16}",
)
def test_the_fuzzer_finds_a_planted_bug_and_keeps_the_input(tmp_path: Path, stories260k: Path, sees) -> None:
    # The bug fires on an input holding "%ff"; the seed is one mutation away from it.
    (tmp_path / "seed.txt").write_bytes(b"run prompt=%fe\n")
    planted = ["console", "--define", "FUZZ_PLANTED_BUG", "--work", str(tmp_path)]
    result = run_fuzz([*planted, "--iterations", "20000", "seed.txt"], stories260k.parent, tmp_path)
    assert result.returncode != 0
    sees(result.stderr)
    [crash] = tmp_path.glob("crash-console-*")
    assert b"%ff" in crash.read_bytes()
    # The saved input replays the finding, and runs clean once the bug is gone.
    replay = run_fuzz([*planted, "--iterations", "0", crash.name], stories260k.parent, tmp_path)
    assert replay.returncode != 0 and "runtime error" in replay.stderr
    clean = run_fuzz(["console", "--work", str(tmp_path / "clean"), "--iterations", "0", str(crash)],
                     stories260k.parent, tmp_path)  # fmt: skip
    assert clean.returncode == 0, clean.stderr
