"""overflow=slide: a sliding-window KV cache with attention sinks (runtime_c/transformer.c's kv_slot and
rope_beyond, llmcu.model.reference's slot and rope_angles).

The QEMU twin (Cortex-M7 kernels), the host (its kernel set and the reference kernels), every KV type, and the
RZ/V2L's NEON kernels under qemu-aarch64 go 400 tokens past a 64-position context and equal the oracle token for
token; the first 64 tokens are the stopped build's; the cost per token stops growing once the window is full;
bad combinations are clear errors.
"""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from llmcu.builder.settings import RunParams, configure, option_values, run_options
from llmcu.core.errors import OptionError
from llmcu.device import qemu
from llmcu.device.protocol import parse
from llmcu.model.checkpoint import read_checkpoint
from llmcu.model.oracle import generate
from llmcu.model.reference import Reference
from llmcu.model.tokenizer import read_tokenizer
from support.build import scons

SEQ_LEN = 64
WINDOW = (4, 1024)  # the default sinks and max_steps
PROMPT = "Once upon a time"
needs_qemu = pytest.mark.skipif(
    shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
    reason="qemu-system-arm or arm-none-eabi-gcc missing",
)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slide")


BUILDS = {
    "twin-q8": ["target=qemu-m7", "quant=q8"],
    "twin-q8-stop": ["target=qemu-m7", "quant=q8", "overflow=stop"],
    "host-q8": ["target=host", "quant=q8"],
    "host-q8-ref": ["target=host", "quant=q8", "kernels=ref"],
    "host-fp32": ["target=host", "quant=fp32"],
    "host-q8-f16": ["target=host", "quant=q8", "kv_type=f16"],
    "host-q8-kvq8": ["target=host", "quant=q8", "kv_type=q8"],
}


class Builds:
    """The variants above, each built the first time a test asks for it (the slow-marked ones only then)."""

    def __init__(self, root: Path, models: Path) -> None:
        self.root, self.models, self.found = root, models, {}

    def __getitem__(self, name: str) -> Path:
        if name not in self.found:
            args = ["model=260k", f"seq_len={SEQ_LEN}", f"build_dir={self.root / name}", *BUILDS[name]]
            if "overflow=stop" not in args:
                args.append("overflow=slide")
            scons(args, self.models)
            target = BUILDS[name][0].split("=")[1]
            (self.found[name],) = (self.root / name / target).glob(
                "*/firmware.elf" if target == "qemu-m7" else "*/llmcu"
            )
        return self.found[name]


@pytest.fixture(scope="module")
def builds(root: Path, stories260k: Path) -> Builds:
    built = Builds(root, stories260k.parent)
    with ThreadPoolExecutor(max_workers=2) as pool:  # the ones the default run uses, two at a time
        list(pool.map(built.__getitem__, ("twin-q8", "twin-q8-stop", "host-q8", "host-fp32")))
    return built


@pytest.fixture(scope="module")
def model(stories260k: Path, tok512: Path):
    return read_checkpoint(stories260k), read_tokenizer(tok512)


def _oracle(model, quant: str, kv_type: str, steps: int, temperature: float, seed: int) -> list[int]:
    ckpt, tok = model
    ref = Reference.from_checkpoint(ckpt, quant, 32, kv_type=kv_type, window=WINDOW, seq_len=SEQ_LEN)
    return generate(ref, tok, PROMPT, steps, temperature, 0.9, seed).tokens


def _host(program: Path, steps: int, temperature: float, seed: int):
    args = ["-p", PROMPT, "-n", str(steps), "-t", repr(temperature), "-s", str(seed)]
    return parse(subprocess.run([str(program), *args], capture_output=True, check=True, timeout=120).stdout)


@needs_qemu
def test_the_twin_goes_400_tokens_past_a_64_position_context(builds, model) -> None:
    out = qemu.run_firmware(builds["twin-q8"], RunParams(PROMPT, 400, 1.0, 0.9, 7))
    assert out.ok and len(out.tokens) == 400 and out.reason == ""
    assert (out.header["window"], out.header["sinks"]) == ("64", "4")
    assert out.token_sequence() == _oracle(model, "q8", "auto", 400, 1.0, 7)
    stopped = qemu.run_firmware(builds["twin-q8-stop"], RunParams(PROMPT, 400, 1.0, 0.9, 7))
    assert stopped.reason == "context_full" and len(stopped.tokens) == SEQ_LEN
    assert out.token_sequence()[: SEQ_LEN + 1] == stopped.token_sequence()  # the same until the cache is full


@needs_qemu
def test_the_cost_per_token_stops_growing_once_the_window_is_full(builds) -> None:
    out = qemu.run_firmware(builds["twin-q8"], RunParams(PROMPT, 250, 0.0, 0.9, 1))
    costs = [record.cost for record in out.tokens]  # exact instruction counts under -icount
    early = sum(costs[8:24]) / 16
    full = [sum(costs[start : start + 16]) / 16 for start in range(SEQ_LEN + 8, len(costs) - 16, 16)]
    assert max(full) - min(full) <= 200  # flat once the window is full: the same work every token
    assert min(full) > early + 10_000  # while it filled, attention grew with the positions


@pytest.mark.parametrize(
    ("name", "quant", "kv_type"),
    [("host-q8", "q8", "auto"), ("host-fp32", "fp32", "auto"),
     pytest.param("host-q8-ref", "q8", "auto", marks=pytest.mark.slow),
     pytest.param("host-q8-f16", "q8", "f16", marks=pytest.mark.slow),
     pytest.param("host-q8-kvq8", "q8", "q8", marks=pytest.mark.slow)],
)  # fmt: skip
def test_host_builds_equal_the_oracle_past_the_context(builds, model, name: str, quant: str, kv_type: str) -> None:
    for temperature, seed in ((0.0, 1), (1.0, 11)):
        out = _host(builds[name], 300, temperature, seed)
        assert out.ok and out.header["window"] == "64"
        assert out.token_sequence() == _oracle(model, quant, kv_type, 300, temperature, seed), (name, temperature)


@pytest.mark.skipif(shutil.which("qemu-aarch64") is None or shutil.which("aarch64-linux-gnu-gcc") is None,
                    reason="qemu-aarch64 or the aarch64 cross compiler missing")  # fmt: skip
def test_neon_kernels_under_qemu_aarch64(root: Path, stories260k: Path, model) -> None:
    scons(["target=rzv2l", "model=260k", "quant=q8", f"seq_len={SEQ_LEN}", "overflow=slide", f"build_dir={root}"],
          stories260k.parent)  # fmt: skip
    (program,) = (root / "rzv2l").glob("260k-q8-ctx64-slide/llmcu")
    args = ["-cpu", "max", str(program), "-p", PROMPT, "-n", "300", "-t", "1.0", "-s", "3"]
    out = parse(subprocess.run(["qemu-aarch64", *args], capture_output=True, check=True, timeout=300).stdout)
    assert out.token_sequence() == _oracle(model, "q8", "auto", 300, 1.0, 3)


def test_steps_zero_means_max_steps(root: Path, stories260k: Path) -> None:
    scons(["target=host", "model=260k", "quant=q8", f"seq_len={SEQ_LEN}", "overflow=slide", "max_steps=90",
           f"build_dir={root / 'max'}"], stories260k.parent)  # fmt: skip
    (program,) = (root / "max" / "host").glob("*/llmcu")
    for steps, reason in ((0, ""), (500, "max_steps")):  # 0 asks for max_steps; more is cut there, and said
        out = parse(subprocess.run([str(program), "-p", "Hi", "-n", str(steps), "-t", "1.0", "-s", "9"],
                                   capture_output=True, check=True).stdout)  # fmt: skip
        assert len(out.tokens) == 90 and out.reason == reason


def test_bad_combinations(stories260k: Path, monkeypatch) -> None:
    monkeypatch.setenv("LLMCU_MODELS", str(stories260k.parent))

    def configured(**options: str):
        return configure({"target": "host", "model": "260k", **options})

    with pytest.raises(OptionError, match=r"sinks=63 with seq_len=64: .* between 0 and seq_len - 2 = 62"):
        configured(seq_len="64", overflow="slide", sinks="63")
    with pytest.raises(OptionError, match="max_steps=32 is below seq_len=64"):
        configured(seq_len="64", overflow="slide", max_steps="32")
    with pytest.raises(OptionError, match="go with overflow=slide"):
        configured(sinks="2")
    with pytest.raises(OptionError, match="overflow='wrap' is not allowed; choose one of: stop, slide"):
        configured(overflow="wrap")
    settings = configured(seq_len="64", overflow="slide", sinks="0")
    assert settings.window.sinks == 0 and settings.out_dir.name == "260k-fp32-ctx64-slide-sinks0"


def test_a_console_session_slides_too(builds, model, tmp_path: Path, stories260k: Path, monkeypatch) -> None:
    """`scons console` on a slid build: each prompt may go past the context, and equals the oracle."""
    from llmcu.device import session

    monkeypatch.setenv("LLMCU_MODELS", str(stories260k.parent))
    program = builds["host-q8"]
    settings = configure({"target": "host", "model": "260k", "quant": "q8", "seq_len": str(SEQ_LEN),
                                  "overflow": "slide", "build_dir": str(program.parents[2])})  # fmt: skip
    assert settings.out_dir == program.parent
    lines = ["/set steps=200 temperature=1.0 seed=5", PROMPT, PROMPT]
    exchanges = session.console(settings, run_options(option_values({"log_dir": str(tmp_path)})), lines=lines)
    expected = _oracle(model, "q8", "auto", 200, 1.0, 5)
    assert [e.tokens for e in exchanges] == [expected, expected]  # the cache starts afresh for every prompt
