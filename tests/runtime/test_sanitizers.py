"""The host runtime under AddressSanitizer and UndefinedBehaviorSanitizer (``sanitize=1``): the golden generation
cases, the console's bad lines (``llmcu -c``, the firmware's command loop on standard input), runs that reach
the end of the context, and weights files that must be refused, all with zero sanitizer reports.

Every sanitized program run goes through ``run_sanitized``, which fails the test on any sanitizer output; the
build makes every report fatal (``-fno-sanitize-recover=all``), so a report also means a non-zero exit status.
Sanitized runs of the runtime in the default suite: 8 golden (4 cases x fp32, q8) + 32 console sessions and
their reference runs + 4 at the end of the context + 4 at a tiny temperature + 17 weights files = 65, and 3
deliberate bugs that must be reported; the slow tests add 4 golden q4 runs and 8 under ThreadSanitizer.
"""

from __future__ import annotations

import os
import random
import re
import struct
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from llmcu.builder import codegen, weightsfile
from llmcu.builder.compileflags import sanitizer_flags
from llmcu.builder.options import parse_sanitize
from llmcu.builder.settings import configure
from llmcu.core.config import ModelConfig
from llmcu.core.errors import OptionError
from llmcu.device.protocol import RunOutput, parse
from llmcu.model.checkpoint import random_checkpoint, read_checkpoint
from llmcu.model.oracle import generate
from llmcu.model.quantize import QuantPlan
from llmcu.model.reference import Reference
from llmcu.model.tokenizer import read_tokenizer
from support.build import case_args, scons

# halt_on_error: stop at the first report; detect_leaks: the runtime allocates nothing, so any leak is news.
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:abort_on_error=0:strict_string_checks=1",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
    "TSAN_OPTIONS": "halt_on_error=1",
}
REPORT = re.compile(rb"Sanitizer|runtime error:|SUMMARY:")
READY = b"\x05llmcu ready 1 target=host model=260k quant=q8\n"
FOLLOW_UP = b"run steps=12 temperature=0.0 seed=3 prompt=Lily%20had\n"  # proves the console still works
DIGITS_482_TOKENS = "1234567890" * 48  # one token per digit: BOS, the dummy prefix's space and 480 digits


def build_all(root: Path, models: Path, wanted: dict[str, tuple[list[str], str]]) -> dict[str, Path]:
    """Host builds of stories260K, two scons processes at a time; name -> program."""

    def build(args: list[str]) -> None:
        scons(["target=host", "model=260k", f"build_dir={root}", *args], models)

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(build, [args for args, _ in wanted.values()]))
    programs = {name: root / "host" / folder / "llmcu" for name, (_, folder) in wanted.items()}
    for program in programs.values():
        assert program.is_file(), program
    return programs


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory, stories260k: Path) -> dict[str, Path]:
    """Sanitized fp32 and q8 (the q8 one with a weights file, so that mapping runs sanitized too) and the
    unsanitized q8 it is compared with. (q4 is the slow test's: two more builds.)"""
    wanted = {
        "fp32": (["quant=fp32", "sanitize=1"], "260k-fp32-asan-ubsan"),
        "q8": (["quant=q8", "sanitize=1", "weights_file=yes"], "260k-q8-wfile-asan-ubsan"),
        "plain-q8": (["quant=q8"], "260k-q8"),
    }
    return build_all(tmp_path_factory.mktemp("sanitize"), stories260k.parent, wanted)


def run_sanitized(
    program: Path, args: list[str], *, stdin: bytes = b"", status: int = 0
) -> subprocess.CompletedProcess:
    """Runs a sanitized program; fails on any sanitizer report or an unexpected exit status."""
    result = subprocess.run(
        [str(program), *args], input=stdin, capture_output=True, timeout=300, env={**os.environ, **SANITIZER_ENV}
    )
    assert not REPORT.search(result.stderr), result.stderr.decode(errors="replace")
    assert result.returncode == status, result.stderr.decode(errors="replace")
    return result


# ---- the option ----


def test_sanitize_values() -> None:
    assert parse_sanitize("none") == parse_sanitize("0") == parse_sanitize("") == ()
    assert parse_sanitize("1") == parse_sanitize("undefined,address") == ("address", "undefined")
    assert parse_sanitize("thread") == ("thread",) and parse_sanitize("undefined,thread") == ("thread", "undefined")
    assert sanitizer_flags(("address", "undefined")) == [
        "-fsanitize=address,undefined,float-cast-overflow",
        "-fno-sanitize-recover=all",
        "-fno-omit-frame-pointer",
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(
            "memory",
            "unknown sanitizer memory",
            marks=pytest.mark.fault(
                area="options",
                kind="input",
                what="sanitize=memory (a clang-only sanitizer)",
                sees=r"sanitize='memory' is not valid \(unknown sanitizer memory\); allowed: none\|1\|",
            ),
        ),
        pytest.param(
            "address,thread",
            "cannot be combined",
            marks=pytest.mark.fault(
                area="options",
                kind="input",
                what="sanitize=address,thread (gcc cannot combine them)",
                sees=r"thread and address sanitizers cannot be combined",
            ),
        ),
    ],
)
def test_bad_sanitize_values_are_refused(value: str, message: str, sees) -> None:
    with pytest.raises(OptionError, match=message) as excinfo:
        configure({"sanitize": value}, download=False)
    sees(str(excinfo.value))


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(
            "qemu-m7",
            marks=pytest.mark.fault(
                area="options",
                kind="input",
                what="sanitize=1 with a firmware target (qemu-m7)",
                sees=r"sanitize=address,undefined: sanitizers run on target=host only; target qemu-m7 is firmware",
            ),
        ),
        pytest.param(
            "rzv2l",
            marks=pytest.mark.fault(
                area="options",
                kind="input",
                what="sanitize=1 with the cross-compiled Linux target (rzv2l)",
                sees=r"sanitizers run on target=host only; target rzv2l is cross-compiled for linux",
            ),
        ),
    ],
)
def test_sanitize_is_host_only(target: str, stories260k: Path, monkeypatch: pytest.MonkeyPatch, sees) -> None:
    monkeypatch.setenv("LLMCU_MODELS", str(stories260k.parent))
    with pytest.raises(OptionError) as excinfo:
        configure({"target": target, "sanitize": "1"}, download=False)
    sees(str(excinfo.value))


def test_sanitized_builds_live_apart(stories260k: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMCU_MODELS", str(stories260k.parent))
    plain = configure({"quant": "q8"}, download=False)
    sanitized = configure({"quant": "q8", "sanitize": "1"}, download=False)
    assert plain.sanitize == () and sanitized.sanitize == ("address", "undefined")
    assert sanitized.out_dir == plain.out_dir.with_name("260k-q8-asan-ubsan")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            "int *a = malloc(4 * sizeof *a); int v = a[argc + 3]; free(a); return v;",
            marks=pytest.mark.fault(
                area="runtime",
                kind="fault",
                what="a heap read one past a malloc'd array, compiled with sanitize=1's flags",
                sees=r"ERROR: AddressSanitizer: heap-buffer-overflow",
            ),
        ),
        pytest.param(
            "int a[4] = {0}; return a[argc + 3];",
            marks=pytest.mark.fault(
                area="runtime",
                kind="fault",
                what="an array index one past the end, compiled with sanitize=1's flags",
                sees=r"runtime error: index 4 out of bounds for type 'int ?\[4\]'",
            ),
        ),
        pytest.param(
            "int x = 0x7fffffff; return (x + argc) & 1;",
            marks=pytest.mark.fault(
                area="runtime",
                kind="fault",
                what="a signed integer overflow, compiled with sanitize=1's flags",
                sees=r"runtime error: signed integer overflow: 2147483647 \+ 1",
            ),
        ),
        pytest.param(
            "float f = 3e9f * (float)argc; return (int)f & 1;",
            marks=pytest.mark.fault(
                area="runtime",
                kind="fault",
                what="a float converted to an int it does not fit (UB in C; GCC's undefined leaves it out, sanitize=1 "
                "adds float-cast-overflow)",
                sees=r"runtime error: 3e\+09 is outside the range of representable values of type 'int'",
            ),
        ),
    ],
)
def test_a_report_fails_the_run(body: str, tmp_path: Path, sees) -> None:
    """The flags make any report fatal: a deliberate bug ends its program with a non-zero status."""
    source = tmp_path / "bug.c"
    source.write_text(f"#include <stdlib.h>\nint main(int argc, char **argv) {{ (void)argv; {body} }}\n")
    program = tmp_path / "bug"
    subprocess.run(["gcc", "-O0", *sanitizer_flags(("address", "undefined")), str(source), "-o", str(program)],
                   check=True)  # fmt: skip
    result = subprocess.run([str(program)], capture_output=True, env={**os.environ, **SANITIZER_ENV}, timeout=60)
    assert result.returncode != 0
    sees(result.stderr.decode(errors="replace"))


# ---- the golden generation cases ----


def test_fp32_golden_cases(builds: dict[str, Path], golden_cases: list[dict]) -> None:
    """Sanitized fp32 prints llama2.c's text byte for byte, as the unsanitized build does (test_host_build)."""
    for case in golden_cases:
        stdout = run_sanitized(builds["fp32"], [*case_args(case), "-q"]).stdout
        assert stdout.decode("utf-8", errors="replace") == case["stdout"], case["prompt"]


def golden_cases_equal_the_unsanitized_build(sanitized: Path, plain: Path, golden_cases: list[dict]) -> None:
    for case in golden_cases:
        out = parse(run_sanitized(sanitized, case_args(case)).stdout)
        expected = parse(subprocess.run([str(plain), *case_args(case)], capture_output=True, check=True,
                                        timeout=60).stdout)  # fmt: skip
        assert out.ok and expected.ok
        assert out.text == expected.text and out.token_sequence() == expected.token_sequence(), case["prompt"]


def test_q8_golden_cases_equal_the_unsanitized_build(builds: dict[str, Path], golden_cases: list[dict]) -> None:
    golden_cases_equal_the_unsanitized_build(builds["q8"], builds["plain-q8"], golden_cases)


@pytest.mark.slow
def test_q4_golden_cases_equal_the_unsanitized_build(
    tmp_path: Path, stories260k: Path, golden_cases: list[dict]
) -> None:
    wanted = {"q4": (["quant=q4", "sanitize=1"], "260k-q4-asan-ubsan"), "plain-q4": (["quant=q4"], "260k-q4")}
    programs = build_all(tmp_path, stories260k.parent, wanted)
    golden_cases_equal_the_unsanitized_build(programs["q4"], programs["plain-q4"], golden_cases)


# ---- the console (-c): bad lines, each answered, the next command served ----


def console_session(program: Path, stream: bytes) -> list[bytes]:
    """Feeds the stream to ``llmcu -c``; returns what came back between ready lines, one answer per line: a
    run's output, an error line, or b"" for a line that got nothing but the ready line again."""
    stdout = run_sanitized(program, ["-c"], stdin=stream).stdout
    assert stdout.startswith(READY) and stdout.endswith(READY), stdout[-200:]
    return stdout.split(READY)[1:-1]


def _expected_follow_up(program: Path) -> RunOutput:
    return parse(run_sanitized(program, ["-p", "Lily had", "-n", "12", "-t", "0.0", "-s", "3"]).stdout)


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(
            b"run prompt=" + b"a" * 2000,
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: a 2,011-byte command line",
                sees=r"^\x15llmcu error reason=line_too_long\n$",
            ),
        ),
        pytest.param(
            b"run prompt=" + b"a" * (1025 - 11),
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: a line one byte over the 1,024 limit",
                sees=r"^\x15llmcu error reason=line_too_long\n$",
            ),
        ),
        pytest.param(
            bytes(random.Random(7).choice(range(256)) for _ in range(5000)).replace(b"\n", b""),
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: 5,000 random bytes without a newline",
                sees=r"^\x15llmcu error reason=line_too_long\n$",
            ),
        ),
        pytest.param(
            b"\xff\xfe\x00\x01garbage\x80\x1b[0m",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: a short line of binary garbage",
                sees=r"^\x15llmcu error reason=bad_command detail=\?\?\?\?garbage\?\?\?0m\n$",
            ),
        ),
        pytest.param(
            b"run steps=3 prompt=%C3%28",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: a percent-encoded prompt that is not UTF-8 (C3 28)",
                sees=r"^\x15llmcu error reason=bad_utf8 detail=prompt\n$",
            ),
        ),
        pytest.param(
            b"run steps=3 prompt=ab%00cd",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: %00 in the prompt (run end to end)",
                sees=r"^\x15llmcu error reason=bad_command detail=prompt\n$",
            ),
        ),
        pytest.param(
            b"run prompt=100%",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: an unescaped '%' ending the prompt (run end to end)",
                sees=r"^\x15llmcu error reason=bad_command detail=prompt\n$",
            ),
        ),
        pytest.param(
            b"generate steps=3",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: an unknown command (generate)",
                sees=r"^\x15llmcu error reason=bad_command detail=generate\n$",
            ),
        ),
        pytest.param(
            b"run steps=99999999999",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: steps out of range (99999999999, run end to end)",
                sees=r"^\x15llmcu error reason=bad_command detail=steps\n$",
            ),
        ),
        pytest.param(
            b"run temperature=inf",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: temperature inf",
                sees=r"^\x15llmcu error reason=bad_command detail=temperature\n$",
            ),
        ),
        pytest.param(
            b"run topp=1.0000001",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: top-p just above 1 (1.0000001)",
                sees=r"^\x15llmcu error reason=bad_command detail=topp\n$",
            ),
        ),
        pytest.param(
            b"run seed=-1",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: a negative seed",
                sees=r"^\x15llmcu error reason=bad_command detail=seed\n$",
            ),
        ),
    ],
)
def test_console_refuses_and_carries_on(builds: dict[str, Path], line: bytes, sees) -> None:
    program = builds["q8"]
    answers = console_session(program, line + b"\n" + FOLLOW_UP)
    assert len(answers) == 2, answers
    error, run = answers[0], parse(answers[1])
    assert error.startswith(b"\x15llmcu error reason=") and error.count(b"\n") == 1
    sees(error.decode("latin-1"))
    assert run.ok and run.token_sequence() == _expected_follow_up(program).token_sequence()


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(
            b"",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: an empty line",
                sees=r"^\x05llmcu ready 1 target=host model=260k quant=q8\n$",
            ),
        ),
        pytest.param(
            b"\r",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: a line of only '\\r'",
                sees=r"^\x05llmcu ready 1 target=host model=260k quant=q8\n$",
            ),
        ),
        pytest.param(
            b" \t \r",
            marks=pytest.mark.fault(
                area="uart",
                kind="input",
                what="console: spaces, a tab and '\\r'",
                sees=r"^\x05llmcu ready 1 target=host model=260k quant=q8\n$",
            ),
        ),
    ],
)
def test_console_answers_a_blank_line_with_ready(builds: dict[str, Path], line: bytes, sees) -> None:
    """A blank line is not a command: no error, no run, the ready line again (as a shell prints its prompt)."""
    program = builds["q8"]
    stdout = run_sanitized(program, ["-c"], stdin=line + b"\n").stdout
    assert stdout == READY + READY
    sees(stdout[len(READY) :].decode("latin-1"))
    answers = console_session(program, line + b"\n" + FOLLOW_UP)
    assert answers[0] == b"" and parse(answers[1]).ok


@pytest.mark.fault(
    area="runtime",
    kind="input",
    what="console: a prompt of 513 tokens for a 512-token context (511 digits)",
    sees=r"\x03llmcu end status=error reason=prompt_too_long prompt_tokens=513 context=512\n$",
)
def test_console_prompt_longer_than_the_context(builds: dict[str, Path], sees) -> None:
    program = builds["q8"]
    answers = console_session(program, b"run steps=3 prompt=" + b"7" * 511 + b"\n" + FOLLOW_UP)
    refused, run = parse(answers[0]), parse(answers[1])
    assert refused.complete and refused.status == "error" and refused.reason == "prompt_too_long"
    assert refused.end["prompt_tokens"] == "513" and refused.end["context"] == "512"  # BOS, the space, 511 digits
    assert refused.tokens == [] and refused.text == b""  # nothing generated
    sees(answers[0].decode())
    assert run.ok and run.token_sequence() == _expected_follow_up(program).token_sequence()


STORY = "Once upon a time, there was a little girl named Lily. She liked to play in the park with her dog. "


def test_a_prompt_is_bounded_by_its_tokens_not_its_characters(builds: dict[str, Path]) -> None:
    """650 characters that merge to far fewer tokens than the 512-token context: taken (the encoder's working
    buffer holds a token per byte, whatever the context), through the console and the command line alike."""
    program = builds["q8"]
    prompt = (STORY * 10)[:650]  # with its spaces percent-encoded, a console line of under 1024 bytes
    line = b"run steps=0 temperature=0 prompt=" + prompt.replace(" ", "%20").encode() + b"\n"
    run = parse(console_session(program, line)[0])
    assert run.ok and 100 < run.summary_number("prompt_tokens") < 300 < run.summary_number("tokens")
    direct = parse(run_sanitized(program, ["-p", prompt, "-n", "0", "-t", "0"]).stdout)
    assert direct.token_sequence() == run.token_sequence()
    # longer than the command line's encoder takes (16384 bytes on hosted programs): refused by bytes
    refused = parse(run_sanitized(program, ["-p", "a" * 16385], status=3).stdout)
    assert refused.reason == "prompt_too_long" and refused.end["prompt_bytes"] == "16385"
    assert refused.end["max_bytes"] == "16384"
    quiet = run_sanitized(program, ["-p", STORY * 60, "-q"], status=3)
    assert re.search(rb"the prompt is \d+ tokens \(BOS included\); the context holds 512", quiet.stderr)


# ---- the end of the context ----


@pytest.mark.parametrize(
    ("args", "generated"),
    [
        pytest.param(
            ["-p", DIGITS_482_TOKENS, "-n", "600", "-t", "0.0"],
            31,
            marks=pytest.mark.fault(
                area="runtime",
                kind="input",
                what="steps=600 for a 512-token context, with a 482-token prompt",
                sees=r"\x1esum tokens=512 .*\x03llmcu end status=ok reason=context_full\n$",
            ),
        ),
        pytest.param(
            ["-p", DIGITS_482_TOKENS, "-n", "1000000000", "-t", "1.0", "-s", "9"],
            31,
            marks=pytest.mark.fault(
                area="runtime",
                kind="input",
                what="steps=10^9 (the largest the program takes)",
                sees=r"\x1esum tokens=512 .*\x03llmcu end status=ok reason=context_full\n$",
            ),
        ),
        pytest.param(
            ["-p", "1234567890" * 51, "-n", "513", "-t", "0.0"],
            1,
            marks=pytest.mark.fault(
                area="runtime",
                kind="input",
                what="a prompt that fills the context exactly (512 tokens) and steps=513",
                sees=r"generated=1 .*\x03llmcu end status=ok reason=context_full\n$",
            ),
        ),
    ],
)
def test_generation_stops_at_the_end_of_the_context(
    builds: dict[str, Path], args: list[str], generated: int, sees
) -> None:
    stdout = run_sanitized(builds["q8"], args).stdout
    out = parse(stdout)
    assert out.ok and out.reason == "context_full"
    assert len(out.tokens) == 512 and [t.pos for t in out.tokens] == list(range(512))
    assert int(out.summary["generated"]) == generated
    sees(stdout.decode("utf-8", errors="replace"))


def test_steps_equal_to_the_context_are_no_cut(builds: dict[str, Path]) -> None:
    out = parse(run_sanitized(builds["q8"], ["-p", DIGITS_482_TOKENS, "-n", "512", "-t", "0.0"]).stdout)
    assert out.ok and out.reason == "" and len(out.tokens) == 512


@pytest.mark.parametrize(
    "topp",
    [
        pytest.param(
            "0.9",
            marks=pytest.mark.fault(
                area="runtime",
                kind="input",
                what="temperature=1e-45 with top-p 0.9: logits / temperature overflow (was <unk> at every step)",
                sees=r"^Once upon a time, there was a little girl",
            ),
        ),
        pytest.param(
            "1.0",
            marks=pytest.mark.fault(
                area="runtime",
                kind="input",
                what="temperature=1e-45 without top-p: logits / temperature overflow",
                sees=r"^Once upon a time, there was a little girl",
            ),
        ),
    ],
)
def test_a_tiny_temperature_is_greedy(
    builds: dict[str, Path], topp: str, stories260k: Path, tok512: Path, sees
) -> None:
    """Dividing the logits by a denormal temperature overflows to inf and softmax to NaN, after which run.c's
    sampler picks token 0 (<unk>) forever; the runtime and the Python reference sample greedily instead."""
    args = ["-p", "Once upon a time", "-n", "40", "-P", topp, "-s", "5"]
    tiny = parse(run_sanitized(builds["q8"], [*args, "-t", "1e-45"]).stdout)
    greedy = parse(run_sanitized(builds["q8"], [*args, "-t", "0"]).stdout)
    assert tiny.ok and tiny.token_sequence() == greedy.token_sequence()
    model = Reference.from_checkpoint(read_checkpoint(stories260k), quant="q8", group_size=32)
    oracle = generate(model, read_tokenizer(tok512, 512), "Once upon a time", 40, 1e-45, float(topp), 5)
    assert oracle.tokens == tiny.token_sequence()
    sees(tiny.text.decode())


# ---- the weights file, checked before it is mapped ----


def _model_bin(program: Path) -> bytes:
    return (program.parent / "model.bin").read_bytes()


def _reheader(data: bytes, offset: int, value: bytes) -> bytes:
    """``data`` with header bytes changed at ``offset`` and the header's own checksum made right again, so
    that the check after the checksum is the one that refuses it."""
    head = bytearray(data[:64])
    head[offset : offset + len(value)] = value
    head[60:64] = struct.pack("<I", zlib.crc32(bytes(head[:60])))
    return bytes(head) + data[64:]


def _flip(data: bytes, at: int) -> bytes:
    damaged = bytearray(data)
    damaged[at] ^= 0x10
    return bytes(damaged)


# How each damaged file is made from the good one (the other cases are a path, a directory or a foreign file).
DAMAGE = {
    "empty": lambda good: b"",
    "short": lambda good: good[:40],
    "magic": lambda good: b"LLMCU-WX" + good[8:],
    "header_crc": lambda good: _flip(good, 45),
    "version": lambda good: _reheader(good, 8, (2).to_bytes(4, "little")),
    "header_bytes": lambda good: _reheader(good, 12, (128).to_bytes(4, "little")),
    "data_size": lambda good: _reheader(good, 24, (len(good) - 64 - 4).to_bytes(8, "little")),
    "truncated": lambda good: good[:-1000],
    "longer": lambda good: good + b"\0" * 16,
    "data_crc": lambda good: _flip(good, 64 + len(good) // 3),
}


@pytest.fixture(scope="module")
def foreign_weights(tmp_path_factory: pytest.TempPathFactory, stories260k: Path, tok512: Path) -> dict[str, Path]:
    """Genuine weights files of other builds, written as those builds would write them."""
    out = tmp_path_factory.mktemp("foreign")
    tokenizer = read_tokenizer(tok512, 512)
    shapes = {
        "other_quant": (read_checkpoint(stories260k), "q4", "260k q4"),
        "other_shape": (random_checkpoint(ModelConfig(48, 128, 2, 6, 2, 512, 64, True), seed=3), "q8", "tiny q8"),
    }
    files = {}
    for name, (checkpoint, quant, label) in shapes.items():
        model = codegen.prepare(checkpoint, tokenizer, QuantPlan.parse(quant, 32))
        layout = weightsfile.describe(model.config, model.plan, model.blobs, len(model.data), label)
        files[name] = out / f"{name}.bin"
        weightsfile.write_weights_file(files[name], layout, model.data)
    return files


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            "missing",
            marks=pytest.mark.fault(
                area="deploy",
                kind="input",
                what="weights file: a path that does not exist",
                sees=r"cannot open the weights file .*missing\.bin: No such file or directory",
            ),
        ),
        pytest.param(
            "directory",
            marks=pytest.mark.fault(
                area="deploy",
                kind="input",
                what="weights file: a directory",
                sees=r"the weights file .* is not a regular file \(it is a directory\)",
            ),
        ),
        pytest.param(
            "empty",
            marks=pytest.mark.fault(
                area="deploy",
                kind="input",
                what="weights file: an empty file",
                sees=r"is not an llmcu weights file \(0 bytes, shorter than the 64-byte header: it is empty\)",
            ),
        ),
        pytest.param(
            "short",
            marks=pytest.mark.fault(
                area="deploy",
                kind="input",
                what="weights file: cut inside the header (40 bytes)",
                sees=r"\(40 bytes, shorter than the 64-byte header\)",
            ),
        ),
        pytest.param(
            "magic",
            marks=pytest.mark.fault(
                area="deploy",
                kind="input",
                what="weights file: wrong magic (LLMCU-WX)",
                sees=r"is not an llmcu weights file \(it does not start with \"LLMCU-WF\"\)",
            ),
        ),
        pytest.param(
            "checkpoint",
            marks=pytest.mark.fault(
                area="deploy",
                kind="input",
                what="weights file: the llama2.c checkpoint given instead",
                sees=r"it does not start with \"LLMCU-WF\"",
            ),
        ),
        pytest.param(
            "header_crc",
            marks=pytest.mark.fault(
                area="deploy",
                kind="input",
                what="weights file: a flipped bit in the header's label (header checksum wrong)",
                sees=r"is corrupt: its header's checksum does not match",
            ),
        ),
        pytest.param(
            "version",
            marks=pytest.mark.fault(
                area="deploy",
                kind="input",
                what="weights file: format version 2 (header checksum right)",
                sees=r"is weights file format 2 with a 64-byte header; this program reads format 1 \(64 bytes\)",
            ),
        ),
        pytest.param(
            "header_bytes",
            marks=pytest.mark.fault(
                area="deploy",
                kind="input",
                what="weights file: a 128-byte header size field",
                sees=r"is weights file format 1 with a 128-byte header",
            ),
        ),
        pytest.param(
            "data_size",
            marks=pytest.mark.fault(
                area="deploy",
                kind="input",
                what="weights file: a data size field 4 bytes short (header checksum right)",
                sees=r"does not belong to this program: it holds '260k q8 x86_panels' "
                r"\(layout [0-9a-f]{16}, \d+ bytes of data\)",
            ),
        ),
        pytest.param(
            "truncated",
            marks=pytest.mark.fault(
                area="deploy",
                kind="input",
                what="weights file: the last 1,000 data bytes cut off",
                sees=r"bytes, but its header says \d+: the file is truncated",
            ),
        ),
        pytest.param(
            "longer",
            marks=pytest.mark.fault(
                area="deploy",
                kind="input",
                what="weights file: 16 bytes appended",
                sees=r"bytes, but its header says \d+: the file is longer than written",
            ),
        ),
        pytest.param(
            "data_crc",
            marks=pytest.mark.fault(
                area="deploy",
                kind="input",
                what="weights file: a flipped bit in the weights (data CRC-32 wrong)",
                sees=r"is corrupt: the CRC-32 of its data is [0-9a-f]{8}, its header says [0-9a-f]{8}",
            ),
        ),
        pytest.param(
            "other_quant",
            marks=pytest.mark.fault(
                area="deploy",
                kind="input",
                what="weights file: the q4 build's file for a q8 program",
                sees=r"does not belong to this program: it holds '260k q4'.*built for '260k q8 x86_panels'",
            ),
        ),
        pytest.param(
            "other_shape",
            marks=pytest.mark.fault(
                area="deploy",
                kind="input",
                what="weights file: a file for another model shape (dim 48, 2 layers)",
                sees=r"does not belong to this program: it holds 'tiny q8' \(layout [0-9a-f]{16}",
            ),
        ),
    ],
)
def test_weights_file_is_refused_before_mapping(
    case: str, builds: dict[str, Path], foreign_weights: dict[str, Path], stories260k: Path, tmp_path: Path, sees
) -> None:
    program = builds["q8"]
    path = tmp_path / f"{case}.bin"
    if case == "directory":
        path.mkdir()
    elif case == "checkpoint":
        path = stories260k
    elif case in foreign_weights:
        path = foreign_weights[case]
    elif case in DAMAGE:
        path.write_bytes(DAMAGE[case](_model_bin(program)))
    result = run_sanitized(program, ["-n", "4", "-w", str(path)], status=4)
    assert result.stdout == b""  # refused before anything ran
    assert result.stderr.count(b"\n") == 1  # one line that says why
    sees(result.stderr.decode())


def test_good_weights_file_runs(builds: dict[str, Path], tmp_path: Path) -> None:
    """The file the build wrote, beside the program or copied elsewhere, runs the same tokens as linked-in q8."""
    program = builds["q8"]
    copy = tmp_path / "copy.bin"
    copy.write_bytes(_model_bin(program))
    args = ["-p", "Once", "-n", "40", "-t", "0.0"]
    beside = parse(run_sanitized(program, args).stdout)
    moved = parse(run_sanitized(program, [*args, "-w", str(copy)]).stdout)
    linked = parse(subprocess.run([str(builds["plain-q8"]), *args], capture_output=True, check=True).stdout)
    assert beside.ok and beside.token_sequence() == moved.token_sequence() == linked.token_sequence()


# ---- ThreadSanitizer: the matmul thread pool ----


@pytest.mark.slow
def test_thread_pool_under_thread_sanitizer(tmp_path: Path, stories260k: Path, golden_cases: list[dict]) -> None:
    """sanitize=thread,undefined with two threads: no data race in the pool, the tokens of one thread."""
    scons(["target=host", "model=260k", "quant=q8", "sanitize=thread,undefined", f"build_dir={tmp_path}"],
          stories260k.parent)  # fmt: skip
    program = tmp_path / "host" / "260k-q8-tsan-ubsan" / "llmcu"
    for case in golden_cases:
        one = parse(run_sanitized(program, [*case_args(case), "-j", "1"]).stdout)
        two = parse(run_sanitized(program, [*case_args(case), "-j", "2"]).stdout)
        assert one.ok and two.ok and one.token_sequence() == two.token_sequence()
