"""The step-wise API (llmcu.h: llmcu_begin, llmcu_next, llmcu_cancel, llmcu_strerror) from an application of its
own (tests/runtime/apps/step_api.c): compiled against a host build's generated model and the runtime's sources,
with no llmcu port functions of its own (the optional hooks' weak defaults), it prints the pieces as they come.
An fp32 build's pieces are llama2.c's run.c output byte for byte (the golden cases); a q8 build's are llmcu's own
program's (`-q`); the error paths return codes, never crash."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from llmcu.builder.compileflags import runtime_sources
from llmcu.platform.targets import load_target
from support.build import ROOT, scons

APP = Path(__file__).parent / "apps" / "step_api.c"
HOST = load_target("host", ROOT / "targets")
GOLDEN = ROOT.parent / "shared" / "golden" / "stories260K_llama2c_run.json"

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")


def build_app(build: Path, out: Path, std: str = "c99") -> Path:
    """The application linked with the runtime (the host target's kernel set, whose weight layout the build's
    generated model is in) and that model, every file compiled as part of the application (warnings are errors)."""
    gen = build / "gen"
    sources = [APP, *runtime_sources(HOST.kernel_set), gen / "model_weights.c", gen / "model_data.S"]
    program = out / f"step_api-{std}"
    command = ["gcc", f"-std={std}", "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(ROOT / "runtime_c"), "-I",
               str(gen), *map(str, sources), "-lm", "-o", str(program)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=gen)  # model_data.S .incbins its .bin
    assert result.returncode == 0, result.stderr
    return program


@pytest.fixture(scope="module")
def apps(shared_build_root: Path, stories260k: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    built = {}
    for quant in ("fp32", "q8"):
        scons(["target=host", "model=260k", f"quant={quant}", f"build_dir={shared_build_root}"], stories260k.parent)
        build = shared_build_root / "host" / f"260k-{quant}"
        built[quant] = build_app(build, tmp_path_factory.mktemp(quant))
        built[f"{quant}-program"] = build / "llmcu"
    return built


def run_app(program: Path, prompt: str, steps: int, temperature: float, topp: float, seed: int) -> str:
    result = subprocess.run([str(program), prompt, str(steps), repr(temperature), repr(topp), str(seed)],
                            capture_output=True, timeout=120, check=True)  # fmt: skip
    return result.stdout.decode()


def test_fp32_pieces_are_llama2c_byte_for_byte(apps: dict[str, Path]) -> None:
    if not GOLDEN.is_file():
        pytest.skip(f"{GOLDEN} not found")
    cases = json.loads(GOLDEN.read_text())
    assert cases
    for case in cases:
        out = run_app(apps["fp32"], case["prompt"], case["steps"], case["temperature"], case["topp"], case["seed"])
        assert out == case["stdout"], case


@pytest.mark.parametrize(("prompt", "temperature", "seed"), [("Once upon a time", 0.0, 1), ("The dog", 1.0, 7)])
def test_q8_pieces_equal_the_program(apps: dict[str, Path], prompt: str, temperature: float, seed: int) -> None:
    program = subprocess.run([str(apps["q8-program"]), "-q", "-p", prompt, "-n", "64", "-t", repr(temperature),
                              "-P", "0.9", "-s", str(seed)], capture_output=True, check=True, timeout=120)  # fmt: skip
    assert run_app(apps["q8"], prompt, 64, temperature, 0.9, seed) == program.stdout.decode()


def test_error_paths_return_codes(apps: dict[str, Path]) -> None:
    result = subprocess.run([str(apps["q8"]), "--errors"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "next after the end: -4 (llmcu_next after the generation ended (LLMCU_DONE))" in result.stdout
    assert "reason after cancel: stopped, passes 1" in result.stdout
    assert "prompt of more bytes than the encoder takes: -2" in result.stdout


def test_a_c11_and_a_cpp_application(apps: dict[str, Path], shared_build_root: Path, tmp_path: Path) -> None:
    """-std=c11 builds the same; a C++ program calls the API through llmcu.h's extern "C" and gets the same text."""
    build = shared_build_root / "host" / "260k-q8"
    c11 = build_app(build, tmp_path, "c11")
    expected = run_app(c11, "Once upon a time", 32, 0.0, 0.9, 1)
    assert expected == run_app(apps["q8"], "Once upon a time", 32, 0.0, 0.9, 1)
    if shutil.which("g++") is None:
        pytest.skip("g++ not installed")
    gen = build / "gen"
    objects = []
    for source in [*runtime_sources(HOST.kernel_set), gen / "model_weights.c", gen / "model_data.S"]:
        obj = tmp_path / f"{source.name}.o"
        subprocess.run(["gcc", "-std=c99", "-O2", "-c", "-I", str(ROOT / "runtime_c"), "-I", str(gen), str(source),
                        "-o", str(obj)], check=True, cwd=gen)  # fmt: skip
        objects.append(str(obj))
    program = tmp_path / "step_api_cpp"
    subprocess.run(["g++", "-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(ROOT / "runtime_c"), "-I",
                    str(gen), str(APP.with_name("step_api_cpp.cpp")), *objects, "-lm", "-o", str(program)],
                   check=True)  # fmt: skip
    out = subprocess.run([str(program), "Once upon a time", "32"], capture_output=True, check=True, timeout=60)
    assert out.stdout.decode() == expected
