"""The firmware's console command: the C parser (runtime_c/console.c, driven by tests/c/test_console.c on the
host), the host side that writes the command (llmcu.device.console), and the QEMU twin's console answering bad lines
through its UART. The host program's console mode under the sanitizers is in test_sanitizers.py."""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from llmcu.builder.settings import RunParams
from llmcu.core.errors import OptionError
from llmcu.device.console import LINE_MAX, encode_command, percent_encode
from llmcu.device.qemu import QemuSession
from support.build import ROOT, host_c_program, scons


@pytest.fixture(scope="module")
def console_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sources = [ROOT / "tests" / "c" / "test_console.c", ROOT / "runtime_c" / "console.c"]
    return host_c_program(tmp_path_factory.mktemp("console") / "test_console", sources)


def f32_bits(value: float) -> str:
    """The float32 nearest to a double, as the C cast rounds it."""
    return f"{struct.unpack('<I', struct.pack('<f', value))[0]:08x}"


def parse_floats(program: Path, texts: list[str]) -> list[list[str]]:
    """Each text as [console, strtof, (float)strtod] bit patterns, or ["fail"]."""
    result = subprocess.run([str(program), "floats"], input="".join(t + "\n" for t in texts), capture_output=True,
                            text=True, check=True)  # fmt: skip
    return [line.split() for line in result.stdout.splitlines()]


def parse_commands(program: Path, stream: bytes) -> list[str]:
    """One entry per event; a refusal's error line (the driver's "line <hex>") is left out."""
    return [line for line in _driver_lines(program, stream) if not line.startswith("line ")]


def _driver_lines(program: Path, stream: bytes) -> list[str]:
    result = subprocess.run([str(program), "commands"], input=stream, capture_output=True, check=True)
    return result.stdout.decode().splitlines()


def error_lines(program: Path, stream: bytes) -> list[bytes]:
    """The error lines the firmware would write for the refused commands in ``stream``."""
    return [bytes.fromhex(line[5:]) for line in _driver_lines(program, stream) if line.startswith("line ")]


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
    # Every ASCII byte, and UTF-8 sequences of each length at the edges of their ranges (U+0080, U+07FF,
    # U+0800, the last before and first after the surrogates, U+FFFF, U+10000, U+10FFFF).
    data = bytes(range(1, 128)) + "\u0080\u07ff\u0800\ud7ff\ue000\uffff\U00010000\U0010ffff🦙".encode()
    assert parse_commands(console_program, b"run prompt=" + percent_encode(data).encode() + b"\n") == [
        f"ok 256 {f32_bits(1.0)} {f32_bits(0.9)} 1 {data.hex()}"
    ]
    # Lower-case hex and bytes that need no escape are taken as they are.
    assert parse_commands(console_program, b"run prompt=a%2cb,c\n")[0].endswith(b"a,b,c".hex())


@pytest.mark.parametrize(
    ("line", "word"),
    [
        pytest.param(
            b"runn",
            "runn",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: an unknown command word (runn)",
                sees=r"^\x15llmcu error reason=bad_command detail=runn\n$",
            ),
        ),
        pytest.param(
            b"RUN",
            "RUN",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: the command in upper case (RUN)",
                sees=r"^\x15llmcu error reason=bad_command detail=RUN\n$",
            ),
        ),
        pytest.param(
            b"run steps",
            "steps",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: a setting without '=' (steps)",
                sees=r"^\x15llmcu error reason=bad_command detail=steps\n$",
            ),
        ),
        pytest.param(
            b"run steps=",
            "steps",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: steps with an empty value",
                sees=r"^\x15llmcu error reason=bad_command detail=steps\n$",
            ),
        ),
        pytest.param(
            b"run steps=-1",
            "steps",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: a negative number of steps",
                sees=r"^\x15llmcu error reason=bad_command detail=steps\n$",
            ),
        ),
        pytest.param(
            b"run steps=1000000001",
            "steps",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: steps above 10^9",
                sees=r"^\x15llmcu error reason=bad_command detail=steps\n$",
            ),
        ),
        pytest.param(
            b"run steps=1.5",
            "steps",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: a fractional number of steps",
                sees=r"^\x15llmcu error reason=bad_command detail=steps\n$",
            ),
        ),
        pytest.param(
            b"run seed=0",
            "seed",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: seed 0 (would stall the xorshift generator)",
                sees=r"^\x15llmcu error reason=bad_command detail=seed\n$",
            ),
        ),
        pytest.param(
            b"run seed=18446744073709551616",
            "seed",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: a seed of 2^64 (does not fit 64 bits)",
                sees=r"^\x15llmcu error reason=bad_command detail=seed\n$",
            ),
        ),
        pytest.param(
            b"run temperature=-0.5",
            "temperature",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: a negative temperature",
                sees=r"^\x15llmcu error reason=bad_command detail=temperature\n$",
            ),
        ),
        pytest.param(
            b"run temperature=1e39",
            "temperature",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: a temperature beyond the float range (1e39)",
                sees=r"^\x15llmcu error reason=bad_command detail=temperature\n$",
            ),
        ),
        pytest.param(
            b"run topp=1.5",
            "topp",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: top-p above 1",
                sees=r"^\x15llmcu error reason=bad_command detail=topp\n$",
            ),
        ),
        pytest.param(
            b"run topp=nan",
            "topp",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: top-p nan",
                sees=r"^\x15llmcu error reason=bad_command detail=topp\n$",
            ),
        ),
        pytest.param(
            b"run prompt=%0",
            "prompt",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: a percent escape cut short (%0)",
                sees=r"^\x15llmcu error reason=bad_command detail=prompt\n$",
            ),
        ),
        pytest.param(
            b"run prompt=%zz",
            "prompt",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: a percent escape with non-hex digits (%zz)",
                sees=r"^\x15llmcu error reason=bad_command detail=prompt\n$",
            ),
        ),
        pytest.param(
            b"run prompt=%00",
            "prompt",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: a NUL byte escaped in the prompt (%00)",
                sees=r"^\x15llmcu error reason=bad_command detail=prompt\n$",
            ),
        ),
        pytest.param(
            b"run prompt=abc%",
            "prompt",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: a bare '%' at the end of the prompt",
                sees=r"^\x15llmcu error reason=bad_command detail=prompt\n$",
            ),
        ),
        pytest.param(
            b"run foo=1",
            "foo",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: an unknown key (foo)",
                sees=r"^\x15llmcu error reason=bad_command detail=foo\n$",
            ),
        ),
        pytest.param(
            b"run =5",
            "",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: a setting with an empty key (=5)",
                sees=r"^\x15llmcu error reason=bad_command detail=\n$",
            ),
        ),
        pytest.param(
            b"run steps=5 bogus",
            "bogus",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: a stray word after valid settings",
                sees=r"^\x15llmcu error reason=bad_command detail=bogus\n$",
            ),
        ),
    ],
)
def test_bad_commands_name_the_word(console_program: Path, line: bytes, word: str, sees) -> None:
    stream = line + b"\nrun seed=5\n"  # and the reader takes the next command as usual
    assert parse_commands(console_program, stream) == [f"bad {word}", f"ok 256 {f32_bits(1.0)} {f32_bits(0.9)} 5 "]
    [error] = error_lines(console_program, stream)
    sees(error.decode("latin-1"))


@pytest.mark.parametrize(
    "prompt",
    [
        pytest.param(
            b"\x80",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console prompt: a lone UTF-8 continuation byte (%80)",
                sees=r"^\x15llmcu error reason=bad_utf8 detail=prompt\n$",
            ),
        ),
        pytest.param(
            b"ab\xc3",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console prompt: a two-byte UTF-8 sequence cut short at the end",
                sees=r"^\x15llmcu error reason=bad_utf8 detail=prompt\n$",
            ),
        ),
        pytest.param(
            b"\xe2\x82x",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console prompt: a three-byte UTF-8 sequence broken by an ASCII byte",
                sees=r"^\x15llmcu error reason=bad_utf8 detail=prompt\n$",
            ),
        ),
        pytest.param(
            b"\xc0\xaf",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console prompt: an overlong UTF-8 encoding of '/' (C0 AF)",
                sees=r"^\x15llmcu error reason=bad_utf8 detail=prompt\n$",
            ),
        ),
        pytest.param(
            b"\xe0\x80\x80",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console prompt: an overlong three-byte encoding of U+0000",
                sees=r"^\x15llmcu error reason=bad_utf8 detail=prompt\n$",
            ),
        ),
        pytest.param(
            b"\xed\xa0\x80",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console prompt: a UTF-16 surrogate (U+D800) encoded in UTF-8",
                sees=r"^\x15llmcu error reason=bad_utf8 detail=prompt\n$",
            ),
        ),
        pytest.param(
            b"\xf4\x90\x80\x80",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console prompt: a code point above U+10FFFF (F4 90 80 80)",
                sees=r"^\x15llmcu error reason=bad_utf8 detail=prompt\n$",
            ),
        ),
        pytest.param(
            b"\xff\xfe",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console prompt: bytes FF FE, never valid in UTF-8",
                sees=r"^\x15llmcu error reason=bad_utf8 detail=prompt\n$",
            ),
        ),
        pytest.param(
            b"\xf8\x88\x80\x80\x80",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console prompt: a five-byte sequence (F8 lead byte)",
                sees=r"^\x15llmcu error reason=bad_utf8 detail=prompt\n$",
            ),
        ),
    ],
)
def test_prompts_that_are_not_utf8_are_refused(console_program: Path, prompt: bytes, sees) -> None:
    """Percent-encoded or raw, a prompt must decode to UTF-8; the reader then takes the next command."""
    for line in (b"run steps=3 prompt=" + percent_encode(prompt).encode(), b"run prompt=" + prompt + b" steps=3"):
        stream = line + b"\nrun seed=5\n"
        assert parse_commands(console_program, stream) == [
            "bad_utf8 prompt",
            f"ok 256 {f32_bits(1.0)} {f32_bits(0.9)} 5 ",
        ]
        [error] = error_lines(console_program, stream)
        sees(error.decode("latin-1"))


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        pytest.param(
            b"run\0 steps=3",
            "run?",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: a NUL byte on the wire after the command word (would have run with the defaults)",
                sees=r"^\x15llmcu error reason=bad_command detail=run\?\n$",
            ),
        ),
        pytest.param(
            b"run steps=3\0",
            "steps",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: a NUL byte at the end of a setting",
                sees=r"^\x15llmcu error reason=bad_command detail=steps\n$",
            ),
        ),
        pytest.param(
            b"run prompt=a\rb",
            "prompt",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: a raw carriage return inside the prompt",
                sees=r"^\x15llmcu error reason=bad_command detail=prompt\n$",
            ),
        ),
        pytest.param(
            b"run prompt=\x1b[2J",
            "prompt",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: a raw escape sequence (ESC [2J) in the prompt",
                sees=r"^\x15llmcu error reason=bad_command detail=prompt\n$",
            ),
        ),
        pytest.param(
            b"run prompt=x\x7f",
            "prompt",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: a raw DEL byte in the prompt",
                sees=r"^\x15llmcu error reason=bad_command detail=prompt\n$",
            ),
        ),
        pytest.param(
            b"\x02llmcu 1\x03",
            "?llmcu",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: protocol markers (STX, ETX) echoed back at the firmware",
                sees=r"^\x15llmcu error reason=bad_command detail=\?llmcu\n$",
            ),
        ),
        pytest.param(
            b"run " + b"k" * 100 + b"=1",
            "k" * 32,
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: an unknown 100-character key (the detail is cut to 32)",
                sees=r"^\x15llmcu error reason=bad_command detail=k{32}\n$",
            ),
        ),
    ],
)
def test_raw_control_bytes_are_refused(console_program: Path, line: bytes, shown: str, sees) -> None:
    """Control bytes must come percent-encoded; raw ones (a NUL included, which must not end the line early)
    get the command refused, and the reader goes on with the next line."""
    stream = line + b"\nrun seed=5\n"
    lines = parse_commands(console_program, stream)
    assert lines[0].startswith("bad ") and lines[1] == f"ok 256 {f32_bits(1.0)} {f32_bits(0.9)} 5 "
    [error] = error_lines(console_program, stream)
    assert error.decode("latin-1") == f"\x15llmcu error reason=bad_command detail={shown}\n"
    sees(error.decode("latin-1"))


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


def test_a_stop_byte_between_runs_is_ignored(console_program: Path) -> None:
    """ETX is a stop request during a run (runtime_c/console.h, CONSOLE_STOP); one that arrives after its run
    ended (a Ctrl-C that crossed the end line) must not spoil the next command."""
    lines = parse_commands(console_program, b"\x03run seed=5\x03\n\x03\n")
    assert lines == [f"ok 256 {f32_bits(1.0)} {f32_bits(0.9)} 5 ", "empty"]


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


# ---- the console of the QEMU twin, through its UART ----

needs_qemu = pytest.mark.skipif(
    shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
    reason="qemu-system-arm or arm-none-eabi-gcc missing (tools/setup.sh installs them)",
)
DIGITS_482_TOKENS = "1234567890" * 48  # BOS, the dummy prefix's space and one token per digit


@pytest.fixture(scope="module")
def twin(shared_build_root: Path, stories260k: Path) -> Path:
    root = shared_build_root
    scons(["target=qemu-m7", "model=260k", "quant=q8", f"build_dir={root}"], stories260k.parent)
    elf = root / "qemu-m7" / "260k-q8" / "firmware.elf"
    assert elf.is_file()
    return elf


@needs_qemu
@pytest.mark.fault(
    area="uart",
    kind="input",
    what="the twin's UART: invalid UTF-8, a NUL byte, blank lines, binary garbage, then a prompt of 513 tokens",
    sees=r"\x15llmcu error reason=bad_utf8 detail=prompt\n.*\x15llmcu error reason=bad_command detail=run\?\n"
    r".*\x03llmcu end status=error reason=prompt_too_long",
)
def test_twin_console_refuses_bad_lines_and_carries_on(twin: Path, sees) -> None:
    """The firmware itself, over its (emulated) UART: every bad line is answered and the next one served; a
    prompt longer than the context ends its run with an error, not with memory corruption."""
    seen = b""
    with QemuSession(twin) as session:
        session.wait_ready()
        for line, reason, detail in [
            (b"run steps=3 prompt=%E2%82\n", "bad_utf8", "prompt"),
            (b"run\0 steps=3\n", "bad_command", "run?"),
            (b"\xff\xfe\x80garbage\x1b[0m\n", "bad_command", "???garbage??0m"),
            (b"run prompt=" + bytes(range(1, 10)) + b"\n", "bad_command", "prompt"),
        ]:
            out = session.exchange(line, timeout=30)
            assert out.status == "rejected" and out.reason == reason and out.end.get("detail") == detail, line
            seen += out.preamble
            session.wait_ready()
        for blank in (b"\n", b"\r\n", b" \t\r\n"):  # not commands: the ready line again, nothing else
            session.send(blank)
            session.wait_ready()
        out = session.exchange(encode_command(RunParams("7" * 511, 3, 0.0, 0.9, 1)), timeout=60)
        assert out.complete and out.status == "error" and out.reason == "prompt_too_long" and out.tokens == []
        assert out.end["prompt_tokens"] == "513" and out.end["context"] == "512"
        seen += b"\x03llmcu end status=" + out.status.encode() + b" reason=" + out.reason.encode()
        assert session.wait_exit() != 0
    sees(seen.decode("latin-1"))


@needs_qemu
@pytest.mark.fault(
    area="runtime",
    kind="input",
    what="the twin: steps=600 for its 512-token context, with a 482-token prompt",
    sees=r"context_full",
)
def test_twin_stops_at_the_end_of_the_context(twin: Path, sees) -> None:
    with QemuSession(twin) as session:
        session.wait_ready()
        out = session.exchange(encode_command(RunParams(DIGITS_482_TOKENS, 600, 0.0, 0.9, 1)), timeout=300)
        assert session.wait_exit() == 0
    assert out.ok and out.reason == "context_full"
    assert len(out.tokens) == 512 and int(out.summary["generated"]) == 31
    sees(out.reason)


# ---- the prompt option: UTF-8 before it reaches any target ----


@pytest.mark.parametrize(
    ("prompt", "where"),
    [
        pytest.param(
            b"Once \xff".decode("utf-8", "surrogateescape"),
            "byte 0xff at byte 5",
            marks=pytest.mark.fault(
                area="options",
                kind="input",
                what="prompt= with a byte that is not UTF-8 (0xFF), as the shell passes it",
                sees=r"prompt=.Once \\udcff. is not valid \(not UTF-8: byte 0xff at byte 5; write the prompt in UTF-8",
            ),
        ),
        pytest.param(
            b"caf\xc3".decode("utf-8", "surrogateescape"),
            "byte 0xc3 at byte 3",
            marks=pytest.mark.fault(
                area="options",
                kind="input",
                what="prompt= ending in a cut UTF-8 sequence (Latin-1 or a truncated argument)",
                sees=r"not UTF-8: byte 0xc3 at byte 3",
            ),
        ),
    ],
)
def test_prompt_option_must_be_utf8(prompt: str, where: str, sees) -> None:
    """Bytes that are not UTF-8 on the scons command line used to end `scons run` in a UnicodeEncodeError
    traceback (writing the run log, or encoding the firmware's command); now they are an option error."""
    from llmcu.builder.settings import configure

    with pytest.raises(OptionError, match=where) as excinfo:
        configure({"prompt": prompt}, download=False)
    sees(str(excinfo.value))
