"""The firmware's console command: the C parser (runtime_c/console.c, driven by tests/c/test_console.c on the
host) and the host side that writes the command (llmcu.console)."""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from buildutil import ROOT
from llmcu.console import LINE_MAX, encode_command, percent_encode
from llmcu.errors import OptionError
from llmcu.project import RunParams


@pytest.fixture(scope="module")
def console_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found")
    program = tmp_path_factory.mktemp("console") / "test_console"
    subprocess.run(
        ["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Wshadow", "-Wdouble-promotion", "-Werror",
         "-ffp-contract=off", "-fno-fast-math", f"-I{ROOT / 'runtime_c'}",
         str(ROOT / "tests" / "c" / "test_console.c"), str(ROOT / "runtime_c" / "console.c"), "-o", str(program)],
        check=True,
    )  # fmt: skip
    return program


def f32_bits(value: float) -> str:
    """The float32 nearest to a double, as the C cast rounds it."""
    return f"{struct.unpack('<I', struct.pack('<f', value))[0]:08x}"


def parse_floats(program: Path, texts: list[str]) -> list[list[str]]:
    """Each text as [console, strtof, (float)strtod] bit patterns, or ["fail"]."""
    result = subprocess.run([str(program), "floats"], input="".join(t + "\n" for t in texts), capture_output=True,
                            text=True, check=True)  # fmt: skip
    return [line.split() for line in result.stdout.splitlines()]


def parse_commands(program: Path, stream: bytes) -> list[str]:
    result = subprocess.run([str(program), "commands"], input=stream, capture_output=True, check=True)
    return result.stdout.decode().splitlines()


def test_golden_and_typical_floats_parse_exactly(console_program: Path, golden_cases: list[dict]) -> None:
    """Every value the host sends for the golden cases (Python's repr) is the float strtof and strtod give."""
    texts = {repr(float(case[key])) for case in golden_cases for key in ("temperature", "topp")}
    texts |= {"0.8", "0.95", "1.0", "0.9", "0.0", "0", "1", ".5", "5.", "00.10", "1e-05", "2.5E+3", "1.1"}
    texts |= {"0.7", "0.99", "100.0", "0.30000000000000004"}
    texts |= {"3.4028234663852886e+38", "1e-45", "123456789012345678901234"}  # the float range's ends, many digits
    texts = sorted(texts)
    for text, (console, strtof, strtod) in zip(texts, parse_floats(console_program, texts), strict=True):
        assert console == strtof == strtod == f32_bits(float(text)), text


def test_random_floats_parse_like_the_c_library(console_program: Path) -> None:
    rng = random.Random(1234)
    shortest = [repr(rng.random() * 10 ** rng.randint(-3, 3)) for _ in range(3000)]  # up to 17 digits
    short = [f"{rng.randint(0, 10**7)}e{rng.randint(-12, 6)}" for _ in range(3000)]  # up to 8 digits
    fixed = [f"{rng.random() * 2:.{rng.randint(1, 8)}f}" for _ in range(3000)]
    texts = shortest + short + fixed
    for text, (console, strtof, strtod) in zip(texts, parse_floats(console_program, texts), strict=True):
        # Python's repr round-trips the double, so the host program and the reference use (float)double.
        assert console == strtod == f32_bits(float(text)), text
        if text in short or text in fixed:  # short decimals: also exactly strtof's direct rounding
            assert console == strtof, text


def test_malformed_floats_are_refused(console_program: Path) -> None:
    bad = ["", ".", "e5", "1e", "1e+", "-1", "+1", "inf", "nan", "1.2.3", "0x10", "1,5", "1 ", " 1", "1e5x"]
    assert parse_floats(console_program, bad) == [["fail"]] * len(bad)


def test_commands_and_defaults(console_program: Path) -> None:
    lines = parse_commands(
        console_program,
        b"run\n"
        b"  run   steps=5\tseed=42  \r\n"
        b"run prompt=Hi%20there%21 temperature=0.0 topp=0.95 steps=0 seed=18446744073709551615\n"
        b"run steps=1 steps=2\n"
        b"\n   \n",
    )
    assert lines == [
        f"ok 256 {f32_bits(1.0)} {f32_bits(0.9)} 1 ",
        f"ok 5 {f32_bits(1.0)} {f32_bits(0.9)} 42 ",
        f"ok 0 {f32_bits(0.0)} {f32_bits(0.95)} 18446744073709551615 {b'Hi there!'.hex()}",
        f"ok 2 {f32_bits(1.0)} {f32_bits(0.9)} 1 ",  # the last one wins
        "empty",
        "empty",
    ]


def test_every_byte_but_nul_decodes(console_program: Path) -> None:
    data = bytes(range(1, 256))
    assert parse_commands(console_program, b"run prompt=" + percent_encode(data).encode() + b"\n") == [
        f"ok 256 {f32_bits(1.0)} {f32_bits(0.9)} 1 {data.hex()}"
    ]
    # Lower-case hex and bytes that need no escape are taken as they are.
    assert parse_commands(console_program, b"run prompt=a%2cb,c\n")[0].endswith(b"a,b,c".hex())


@pytest.mark.parametrize(
    ("line", "word"),
    [
        (b"runn", "runn"),
        (b"RUN", "RUN"),
        (b"run steps", "steps"),
        (b"run steps=", "steps"),
        (b"run steps=-1", "steps"),
        (b"run steps=1000000001", "steps"),
        (b"run steps=1.5", "steps"),
        (b"run seed=0", "seed"),
        (b"run seed=18446744073709551616", "seed"),
        (b"run temperature=-0.5", "temperature"),
        (b"run temperature=1e39", "temperature"),
        (b"run topp=1.5", "topp"),
        (b"run topp=nan", "topp"),
        (b"run prompt=%0", "prompt"),
        (b"run prompt=%zz", "prompt"),
        (b"run prompt=%00", "prompt"),
        (b"run prompt=abc%", "prompt"),
        (b"run foo=1", "foo"),
        (b"run =5", ""),
        (b"run steps=5 bogus", "bogus"),
    ],
)
def test_bad_commands_name_the_word(console_program: Path, line: bytes, word: str) -> None:
    assert parse_commands(console_program, line + b"\n") == [f"bad {word}"]


def test_line_length_bound(console_program: Path) -> None:
    fits = b"run prompt=" + b"a" * (LINE_MAX - len(b"run prompt="))
    assert len(fits) == LINE_MAX
    lines = parse_commands(console_program, fits + b"\n" + fits + b"b\n" + b"x" * 5000 + b"\nrun seed=7\n")
    assert lines == [
        f"ok 256 {f32_bits(1.0)} {f32_bits(0.9)} 1 {(b'a' * (LINE_MAX - 11)).hex()}",
        "too_long",
        "too_long",
        f"ok 256 {f32_bits(1.0)} {f32_bits(0.9)} 7 ",  # the reader starts afresh after a long line
    ]


def test_encoded_golden_commands_round_trip(console_program: Path, golden_cases: list[dict]) -> None:
    cases = [RunParams(c["prompt"], c["steps"], c["temperature"], c["topp"], c["seed"]) for c in golden_cases]
    cases.append(RunParams('Ünïcode 🦙 and 100% "quotes"\ttabs\nnewlines', 7, 1e-05, 1.0, 2**64 - 1))
    lines = parse_commands(console_program, b"".join(encode_command(params) for params in cases))
    for params, line in zip(cases, lines, strict=True):
        f32_t, f32_p = f32_bits(params.temperature), f32_bits(params.topp)
        assert line == f"ok {params.steps} {f32_t} {f32_p} {params.seed} {params.prompt.encode().hex()}"


def test_encode_command_text() -> None:
    line = encode_command(RunParams("Once upon a time", 256, 0.0, 0.9, 1))
    assert line == b"run steps=256 temperature=0.0 topp=0.9 seed=1 prompt=Once%20upon%20a%20time\n"
    assert b"temperature=0.0 " in encode_command(RunParams("", 1, -0.0, 0.5, 1))  # no sign, ever
    assert b"temperature=1.0 " in encode_command(RunParams("", 1, 1, 1, 1))  # ints are sent as floats


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (RunParams("a\0b", 1, 1.0, 0.9, 1), "NUL"),
        (RunParams("x" * 1000, 1, 1.0, 0.9, 1), "too long"),
        (RunParams("é" * 200, 1, 1.0, 0.9, 1), "percent-encoded"),
        (RunParams("", -1, 1.0, 0.9, 1), "steps"),
        (RunParams("", 1, float("nan"), 0.9, 1), "temperature"),
        (RunParams("", 1, float("inf"), 0.9, 1), "temperature"),
        (RunParams("", 1, 1.0, 1.5, 1), "topp"),
        (RunParams("", 1, 1.0, 0.9, 0), "seed"),
        (RunParams("", 1, 1.0, 0.9, 2**64), "seed"),
    ],
)
def test_encode_command_refuses_what_the_firmware_would(params: RunParams, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        encode_command(params)
