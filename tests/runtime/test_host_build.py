"""The host build end to end: scons builds it, fp32 reproduces llama2.c, q8/q4 equal the Python oracle."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from llmcu.core.config import ModelConfig
from llmcu.device.protocol import parse
from llmcu.model.checkpoint import random_checkpoint, read_checkpoint, write_checkpoint
from llmcu.model.oracle import generate
from llmcu.model.reference import Reference
from llmcu.model.tokenizer import read_tokenizer
from support.build import case_args, scons

QUANTS = ("fp32", "q8", "q4", "q4z")


@pytest.fixture(scope="module")
def build_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("build")


@pytest.fixture(scope="module")
def programs(build_root: Path, stories260k: Path) -> dict[str, Path]:
    """Build stories260K in every quantization (one scons call each)."""

    def build(quant: str) -> Path:
        scons(["target=host", "model=260k", f"quant={quant}", f"build_dir={build_root}"], stories260k.parent)
        program = build_root / "host" / f"260k-{quant}" / "llmcu"
        assert program.is_file()
        return program

    with ThreadPoolExecutor(2) as pool:  # scons builds one file at a time: two builds use both cores
        return dict(zip(QUANTS, pool.map(build, QUANTS), strict=True))


def run_program(program: Path, case: dict, *, quiet: bool) -> bytes:
    args = [str(program), *case_args(case)]
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


@pytest.mark.parametrize("quant", ["q8", "q4", "q4z"])
def test_quantized_builds_equal_the_python_reference(
    quant: str, programs: dict[str, Path], golden_cases: list[dict], stories260k: Path, tok512: Path
) -> None:
    ckpt = read_checkpoint(stories260k)
    tok = read_tokenizer(tok512, ckpt.config.vocab_size)
    model = Reference.from_checkpoint(ckpt, quant=quant, group_size=32)
    for case in golden_cases:
        out = parse(run_program(programs[quant], case, quiet=False))
        assert out.ok
        oracle = generate(model, tok, case["prompt"], case["steps"], case["temperature"], case["topp"], case["seed"])
        assert out.token_sequence() == oracle.tokens, (quant, case["prompt"])
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


def test_run_alias_prints_text_and_summary(programs: dict[str, Path], build_root: Path, stories260k: Path) -> None:
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


@pytest.mark.parametrize(
    "quant", ["fp32", pytest.param("q8", marks=pytest.mark.slow), pytest.param("q4", marks=pytest.mark.slow), "q4z"]
)
def test_unshared_classifier_model_from_a_path_equals_the_oracle(
    quant: str, tmp_path_factory: pytest.TempPathFactory, tok512: Path
) -> None:
    """A checkpoint given by path, with an unshared classifier, GQA and rows that end in short groups."""
    work = tmp_path_factory.mktemp(f"unshared-{quant}")
    config = ModelConfig(dim=48, hidden_dim=100, n_layers=2, n_heads=6, n_kv_heads=2, vocab_size=512, seq_len=48,
                         shared_classifier=False)  # fmt: skip
    ckpt = random_checkpoint(config, seed=11, scale=0.2)
    write_checkpoint(work / "tiny.bin", ckpt, version=1)
    scons(
        [f"model={work / 'tiny.bin'}", f"tokenizer={tok512}", f"quant={quant}", "group_size=16",
         f"build_dir={work}"],
        tok512.parent,
    )  # fmt: skip
    program = next(work.glob("host/tiny-*/llmcu"))
    model = Reference.from_checkpoint(read_checkpoint(work / "tiny.bin"), quant=quant, group_size=16)
    tok = read_tokenizer(tok512, 512)
    for case in ({"prompt": "Once", "steps": 40, "temperature": 0.0, "topp": 0.9, "seed": 1},
                 {"prompt": "", "steps": 48, "temperature": 1.0, "topp": 0.9, "seed": 7}):  # fmt: skip
        out = parse(run_program(program, case, quiet=False))
        oracle = generate(model, tok, case["prompt"], case["steps"], case["temperature"], case["topp"], case["seed"])
        assert out.token_sequence() == oracle.tokens
        assert out.text == oracle.text


@pytest.mark.slow
def test_15m_shaped_model_builds_fast_and_runs(tmp_path: Path, tokenizer_32k: Path) -> None:
    """What keeps a 15M build quick, asserted by its cause rather than by a clock: the weights reach the object
    through the assembler's .incbin of model_data.bin, never through the C compiler (model_weights.c holds only
    the tables that point into it)."""
    write_checkpoint(tmp_path / "r15m.bin", random_checkpoint(ModelConfig(288, 768, 6, 6, 6, 32000, 256, True)))
    for quant in QUANTS:
        scons([f"model={tmp_path / 'r15m.bin'}", f"tokenizer={tokenizer_32k}", f"quant={quant}",
               f"build_dir={tmp_path}"], tokenizer_32k.parent)  # fmt: skip
        gen = tmp_path / "host" / f"r15m-{quant}" / "gen"
        data = (gen / "model_data.bin").stat().st_size
        assert data > 5 << 20 and (gen / "model_weights.c").stat().st_size * 32 < data, quant  # tables, not tensors
        assert ".incbin" in (gen / "model_data.S").read_text()
        program = tmp_path / "host" / f"r15m-{quant}" / "llmcu"
        out = parse(subprocess.run([str(program), "-n", "8"], capture_output=True, check=True).stdout)
        assert out.ok and len(out.tokens) == 8
