"""The output protocol's number formatting (runtime_c/format.c), driven on the host by tests/c/test_format.c:
fmt_u64 and fmt_ratio against Python's integers. They divide without libgcc's 64-bit division (which costs
the M7 firmware 750 bytes of flash), so their shift-and-add arithmetic is checked at the edges and at random."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from support.build import ROOT, host_c_program

U64_MAX = 2**64 - 1


@pytest.fixture(scope="module")
def format_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """At -Os, as the M7 firmware compiles format.c (tests/builder/test_hot_code.py)."""
    sources = [ROOT / "tests" / "c" / "test_format.c", ROOT / "runtime_c" / "format.c"]
    return host_c_program(tmp_path_factory.mktemp("format") / "test_format", sources, "-Os")


def run(program: Path, cases: list[str]) -> list[str]:
    result = subprocess.run([program], input="".join(f"{case}\n" for case in cases), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def expected_ratio(num: int, den: int, decimals: int) -> str:
    """fmt_ratio's contract: num / den rounded half up to 0..9 decimals; den 0 gives "0"; a denominator too large
    for remainder * 10 to fit 64 bits loses low bits of both operands first."""
    if den == 0:
        return "0"
    decimals = min(max(decimals, 0), 9)
    while den > U64_MAX // 10:
        num >>= 1
        den >>= 1
    scaled, rem = divmod(num * 10**decimals, den)
    if rem >= den - rem:
        scaled += 1
    whole, frac = divmod(scaled, 10**decimals)
    return f"{whole}.{frac:0{decimals}d}" if decimals else str(whole)


def edge_values() -> list[int]:
    values = {0, 1, 9, 10, 11, 99, 100, 101, U64_MAX, U64_MAX - 1, U64_MAX // 10, U64_MAX // 10 * 10}
    for bit in range(64):
        values |= {2**bit - 1, 2**bit, 2**bit + 1}
    for digits in range(1, 20):
        values |= {10**digits - 1, 10**digits, 10**digits + 1}
    return sorted(v for v in values if 0 <= v <= U64_MAX)


def test_u64_digits_at_the_edges_and_at_random(format_program: Path) -> None:
    rng = random.Random(20261121)
    values = edge_values() + [rng.getrandbits(rng.randint(1, 64)) for _ in range(20000)]
    assert run(format_program, [f"u64 {v}" for v in values]) == [str(v) for v in values]


def test_ratio_rounds_half_up_like_exact_arithmetic(format_program: Path) -> None:
    rng = random.Random(7)
    cases = [(7, 2, 1), (1, 3, 2), (2, 3, 2), (5, 10, 0), (15, 10, 0), (199, 200, 2), (999999, 1000000, 5), (0, 5, 3),
             (5, 0, 2), (U64_MAX, 1, 0), (U64_MAX, U64_MAX, 9), (U64_MAX, U64_MAX - 1, 9), (1, U64_MAX, 9),
             (U64_MAX, 3, 2), (123, 7, -1), (123, 7, 12)]  # fmt: skip
    for _ in range(20000):
        num = rng.getrandbits(rng.randint(0, 64))
        den = rng.getrandbits(rng.randint(1, 64))
        cases.append((num, den, rng.randint(0, 9)))
    got = run(format_program, [f"ratio {n} {d} {k}" for n, d, k in cases])
    wrong = [(case, text) for case, text in zip(cases, got, strict=True) if text != expected_ratio(*case)]
    assert wrong == []
