"""The host build end to end: scons builds it, fp32 reproduces llama2.c, q8/q4 equal the Python oracle."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from llmcu.oracle import generate
from llmcu.reference import Reference

from buildutil import scons
from llmcu.checkpoint import read_checkpoint
from llmcu.protocol import parse
from llmcu.tokenizer import read_tokenizer

QUANTS = ("fp32", "q8", "q4")


@pytest.fixture(scope="module")
def build_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("build")


@pytest.fixture(scope="module")
def programs(build_root: Path, stories260k: Path) -> dict[str, Path]:
    """Build stories260K in all three quantizations (one scons call each)."""
    built = {}
    for quant in QUANTS:
        scons(["target=host", "model=260k", f"quant={quant}", f"build_dir={build_root}"], stories260k.parent)
        program = build_root / "host" / f"260k-{quant}" / "llmcu"
        assert program.is_file()
        built[quant] = program
    return built


def run_program(program: Path, case: dict, *, quiet: bool) -> bytes:
    args = [
        str(program),
        "-p", case["prompt"],
        "-n", str(case["steps"]),
        "-t", repr(case["temperature"]),
        "-P", repr(case["topp"]),
        "-s", str(case["seed"]),
    ]  # fmt: skip
    if quiet:
        args.append("-q")
    return subprocess.run(args, capture_output=True, check=True, timeout=120).stdout


def test_fp32_reproduces_every_golden_case(programs: dict[str, Path], golden_cases: list[dict]) -> None:
    for case in golden_cases:
        stdout = run_program(programs["fp32"], case, quiet=True)
        assert stdout.decode("utf-8", errors="replace") == case["stdout"], case["prompt"]


def test_records_frame_the_same_text(programs: dict[str, Path], golden_cases: list[dict]) -> None:
    case = golden_cases[0]
    out = parse(run_program(programs["fp32"], case, quiet=False))
    assert out.ok
    assert out.text.decode() == case["stdout"]
    assert out.header["model"] == "260k" and out.header["quant"] == "fp32" and out.header["unit"] == "ns"
    assert int(out.summary["tokens"]) == len(out.tokens) == case["steps"]
    assert [record.pos for record in out.tokens] == list(range(len(out.tokens)))
    assert all(record.cost > 0 for record in out.tokens)


@pytest.mark.parametrize("quant", ["q8", "q4"])
def test_quantized_builds_equal_the_python_reference(
    quant: str, programs: dict[str, Path], golden_cases: list[dict], stories260k: Path, tok512: Path
) -> None:
    ckpt = read_checkpoint(stories260k)
    tok = read_tokenizer(tok512, ckpt.config.vocab_size)
    model = Reference.from_checkpoint(ckpt, quant=quant, group_size=32)
    for case in golden_cases:
        out = parse(run_program(programs[quant], case, quiet=False))
        assert out.ok
        oracle = generate(
            model, tok, case["prompt"], case["steps"], case["temperature"], case["topp"], case["seed"]
        )
        c_tokens = [out.tokens[0].token] + [record.next for record in out.tokens]
        assert c_tokens[: len(oracle.tokens)] == oracle.tokens, (quant, case["prompt"])
        assert out.text == oracle.text


def test_noop_rebuild_does_nothing(programs: dict[str, Path], build_root: Path, stories260k: Path) -> None:
    # `scons -q` exits 0 only when every target is up to date.
    result = scons(
        ["-q", "target=host", "model=260k", "quant=q8", f"build_dir={build_root}"],
        stories260k.parent,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_option_change_rebuilds_only_that_variant(build_root: Path, stories260k: Path) -> None:
    args = ["target=host", "model=260k", "quant=q8", "group_size=64", f"build_dir={build_root}"]
    scons(args, stories260k.parent)
    assert (build_root / "host" / "260k-q8-g64" / "llmcu").is_file()
    assert scons(["-q", *args], stories260k.parent, check=False).returncode == 0


def test_run_alias_prints_text_and_summary(
    programs: dict[str, Path], build_root: Path, stories260k: Path
) -> None:
    result = scons(
        [
            "target=host", "model=260k", "quant=q8", f"build_dir={build_root}", "run",
            "prompt=Once upon a time", "steps=40", "temperature=0",
        ],
        stories260k.parent,
    )  # fmt: skip
    assert "Once upon a time" in result.stdout
    assert "40 tokens" in result.stdout and "tok/s" in result.stdout


def test_unknown_option_is_an_error(stories260k: Path) -> None:
    result = scons(["quantt=q8"], stories260k.parent, check=False)
    assert result.returncode != 0
    assert "unknown option quantt" in result.stderr and "group_size" in result.stderr


def test_bad_value_names_allowed_values(stories260k: Path) -> None:
    result = scons(["quant=q3"], stories260k.parent, check=False)
    assert result.returncode != 0
    assert "fp32" in result.stderr and "q4" in result.stderr


def test_help_lists_options(stories260k: Path) -> None:
    result = scons(["-h"], stories260k.parent)
    for name in ("target", "model", "quant", "group_size", "prompt", "steps", "temperature", "topp", "seed"):
        assert f"\n{name}:" in result.stdout
    assert "fp32|q8|q4" in result.stdout


def test_missing_model_is_one_clear_error(tmp_path: Path) -> None:
    result = scons(["model=15m"], tmp_path, check=False)
    assert result.returncode != 0
    assert "stories15M.bin" in result.stderr and str(tmp_path) in result.stderr
    assert "Traceback" not in result.stderr


def test_build_outputs_live_under_the_variant_dir(programs: dict[str, Path]) -> None:
    out = programs["q8"].parent
    for name in (
        "gen/model_config.h",
        "gen/model_weights.c",
        "gen/model_data.S",
        "gen/model_data.bin",
        "quant_report.json",
        "quant_report.md",
    ):
        assert (out / name).is_file(), name
    header = (out / "gen" / "model_config.h").read_text()
    assert "#define LLMCU_QTYPE_WQ 1" in header and "#define LLMCU_HIDDEN_DIM 172" in header
