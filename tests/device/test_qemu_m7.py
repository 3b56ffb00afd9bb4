"""The QEMU twin of the STM32H743 (targets/qemu-m7): the Cortex-M firmware under qemu-system-arm.

fp32 reproduces llama2.c's output for every golden case byte for byte, q8, q4 and q4z produce the host build's
tokens, instruction counts repeat exactly, and faults, refused commands and QEMU trouble come back as
clear errors. The parser tests for the firmware's own lines (ready, error, fault) need no QEMU.
"""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmcu.builder.compileflags import runtime_sources
from llmcu.builder.settings import RunParams
from llmcu.device.console import encode_command
from llmcu.device.protocol import ProtocolParser, RunOutput, parse
from llmcu.device.qemu import (
    CommandRejectedError,
    FirmwareFaultError,
    FirmwareRunError,
    FirmwareTimeoutError,
    QemuNotFoundError,
    QemuSession,
    check_run,
    run_firmware,
)
from llmcu.platform.targets import load_target
from support.build import ROOT, prompt_filling_context, scons

QUANTS = ("fp32", "q8", "q4", "q4z")

needs_qemu = pytest.mark.skipif(
    shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
    reason="qemu-system-arm or arm-none-eabi-gcc missing (tools/setup.sh installs them)",
)


@dataclass(frozen=True)
class Build:
    elf: Path
    gen: Path  # the generated model sources and linker script

    @property
    def linker_script(self) -> Path:
        return self.gen / "firmware.ld"


def build_twin(quant: str, build_root: Path, models_dir: Path) -> Build:
    scons(["target=qemu-m7", "model=260k", f"quant={quant}", f"build_dir={build_root}"], models_dir)
    elf = build_root / "qemu-m7" / f"260k-{quant}" / "firmware.elf"
    assert elf.is_file() and (elf.parent / "gen" / "firmware.ld").is_file()
    return Build(elf, elf.parent / "gen")


def build_host(quant: str, build_root: Path, models_dir: Path) -> Path:
    scons(["target=host", "model=260k", f"quant={quant}", f"build_dir={build_root}"], models_dir)
    program = build_root / "host" / f"260k-{quant}" / "llmcu"
    assert program.is_file()
    return program


def compile_test_firmware(build: Build, out: Path, defines: tuple[str, ...]) -> Path:
    """The firmware again with extra defines, from the same generated sources, kernel set and linker script (the
    build has no option for test-only code). The kernel set must be the build's: the generated weights are in
    its matrix layout (llmcu.builder.layouts), which the reference kernels would misread."""
    target = load_target("qemu-m7", ROOT / "targets")
    sources = runtime_sources(target.kernel_set)
    sources += [*target.board_sources, build.gen / "model_weights.c", build.gen / "model_data.S"]
    command = [target.cc, *target.all_cflags, *defines, f'-DLLMCU_TARGET_NAME="{target.name}"',
               f"-I{ROOT / 'runtime_c'}", f"-I{build.gen}", f"-I{ROOT / 'targets' / 'cortex-m'}", f"-Wa,-I{build.gen}",
               f"-I{target.folder}",
               *map(str, sources), "-T", str(build.linker_script), *target.ldflags,
               *(f"-l{lib}" for lib in target.libs), "-o", str(out)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def build_root(shared_build_root: Path) -> Path:
    return shared_build_root


@pytest.fixture(scope="module")
def twins(build_root: Path, stories260k: Path) -> dict[str, Build]:
    with ThreadPoolExecutor(2) as pool:  # scons builds one file at a time: two builds use both cores
        return dict(zip(QUANTS, pool.map(lambda quant: build_twin(quant, build_root, stories260k.parent), QUANTS),
                        strict=True))  # fmt: skip


@pytest.fixture(scope="module")
def hosts(build_root: Path, stories260k: Path) -> dict[str, Path]:
    quants = ("q8", "q4", "q4z")
    with ThreadPoolExecutor(2) as pool:
        return dict(zip(quants, pool.map(lambda quant: build_host(quant, build_root, stories260k.parent), quants),
                        strict=True))  # fmt: skip


@pytest.fixture(scope="module")
def fault_twin(twins: dict[str, Build], build_root: Path) -> Path:
    """The q8 twin with the test-only `fault` command (-DLLMCU_FAULT_TEST)."""
    return compile_test_firmware(twins["q8"], build_root / "fault-test.elf", ("-DLLMCU_FAULT_TEST",))


def elf_symbols(elf: Path) -> dict[str, tuple[int, int]]:
    """name -> (address, size) from arm-none-eabi-nm."""
    listing = subprocess.run(["arm-none-eabi-nm", "-S", str(elf)], capture_output=True, text=True, check=True)
    symbols = {}
    for fields in map(str.split, listing.stdout.splitlines()):
        if len(fields) == 4:
            symbols[fields[3]] = (int(fields[0], 16), int(fields[1], 16))
        elif len(fields) == 3:
            symbols[fields[2]] = (int(fields[0], 16), 0)
    return symbols


def params_of(case: dict) -> RunParams:
    return RunParams(case["prompt"], case["steps"], case["temperature"], case["topp"], case["seed"])


def run_host(program: Path, params: RunParams) -> RunOutput:
    result = subprocess.run([str(program), *params.program_args()], capture_output=True, check=True, timeout=120)
    return parse(result.stdout)


# ---- the twin ----


@needs_qemu
def test_fp32_twin_reproduces_every_golden_case(twins: dict[str, Build], golden_cases: list[dict]) -> None:
    for case in golden_cases:
        out = run_firmware(twins["fp32"].elf, params_of(case))
        assert out.ok
        assert out.text.decode("utf-8", errors="replace") == case["stdout"], case["prompt"]
        assert out.header["target"] == "qemu-m7" and out.header["unit"] == "instructions"
        assert out.header["quant"] == "fp32" and out.header["clock_hz"] == "0"


@needs_qemu
@pytest.mark.parametrize("quant", ["q8", "q4", "q4z"])
def test_quantized_twin_equals_the_host_build(
    quant: str, twins: dict[str, Build], hosts: dict[str, Path], golden_cases: list[dict]
) -> None:
    for case in golden_cases:
        twin = run_firmware(twins[quant].elf, params_of(case))
        host = run_host(hosts[quant], params_of(case))
        assert twin.ok and host.ok
        assert twin.token_sequence() == host.token_sequence(), (quant, case["prompt"])
        assert twin.text == host.text


# Greedy prompts whose run fills the whole 512-token context (no BOS before it) with these weights.
@needs_qemu
@pytest.mark.parametrize("quant", ["q8", "q4", "q4z"])
def test_quantized_twin_equals_the_host_to_the_end_of_the_context(
    quant: str, twins: dict[str, Build], hosts: dict[str, Path]
) -> None:
    """Every position of the KV cache written and attended over (q16's blocks and pairs up to the last one)."""
    params = RunParams(prompt_filling_context(hosts[quant], 512), 512, 0.0, 0.9, 1)
    twin, host = run_firmware(twins[quant].elf, params), run_host(hosts[quant], params)
    assert host.ok and twin.ok
    assert host.summary_number("tokens") == 512
    assert twin.token_sequence() == host.token_sequence() and twin.text == host.text


@needs_qemu
def test_q16_attention_cost_per_position(twins: dict[str, Build]) -> None:
    """The performance issue's goal for the attention that the twin's q8 build uses by default (q16): at most
    1,000 more instructions per extra cached position (exact counts under -icount, position 255 against 1)."""
    out = run_firmware(twins["q8"].elf, RunParams("Once upon a time", 256, 0.0, 0.9, 1))
    cost = {record.pos: record.cost for record in out.tokens}
    assert (cost[255] - cost[1]) / 254 <= 1000, cost[255] - cost[1]


@needs_qemu
def test_instruction_counts_repeat_exactly(twins: dict[str, Build]) -> None:
    """Two runs, one over QEMU's stdio and one over a TCP socket: the same counts, token for token."""
    params = RunParams("Once upon a time", 48, 0.0, 0.9, 1)
    first = run_firmware(twins["q8"].elf, params)
    second = run_firmware(twins["q8"].elf, params, serial_socket=True)
    costs = [record.cost for record in first.tokens]
    assert len(costs) == 48 and all(cost > 100_000 for cost in costs)
    assert [record.cost for record in second.tokens] == costs
    assert first.summary == second.summary
    stack = elf_symbols(twins["q8"].elf)
    assert 0 < int(first.summary["peak_stack"]) < stack["__stack_top"][0] - stack["__stack_limit"][0]


@needs_qemu
def test_fault_report(fault_twin: Path) -> None:
    with QemuSession(fault_twin) as session:
        session.wait_ready()
        out = session.exchange(b"fault\n", timeout=30)
        code = session.wait_exit()
    assert out.complete and out.status == "fault" and out.reason == "UsageFault"
    assert int(out.end["cfsr"], 16) == 1 << 16  # UNDEFINSTR
    assert code == 128 + 6  # board_fatal(6): the UsageFault's exception number
    # The reported pc is in main(), where the test build's `udf` sits, and sp in the stack.
    symbols = elf_symbols(fault_twin)
    main, main_size = symbols["main"]
    assert main <= int(out.end["pc"], 16) < main + main_size
    assert symbols["__stack_limit"][0] <= int(out.end["sp"], 16) < symbols["__stack_top"][0]
    with pytest.raises(FirmwareFaultError, match=r"UsageFault at pc=0x[0-9a-f]{8}.*UNDEFINSTR.*addr2line"):
        check_run(out, code, fault_twin)


@needs_qemu
def test_bad_commands_are_answered_and_the_firmware_carries_on(twins: dict[str, Build]) -> None:
    elf = twins["q8"].elf
    with QemuSession(elf) as session:
        ready = session.wait_ready()
        assert ready["target"] == "qemu-m7" and ready["quant"] == "q8" and ready["version"] == "1"
        for line, reason, detail in [
            (b"run steps=many\n", "bad_command", "steps"),
            (b"walk steps=3\n", "bad_command", "walk"),
            (b"run prompt=" + b"x" * 2000 + b"\n", "line_too_long", None),
            (b"run \x02\x15=1\n", "bad_command", "??"),  # protocol markers never come back (ETX, the stop byte,
            # is dropped by the reader: runtime_c/console.h, CONSOLE_STOP)
        ]:
            out = session.exchange(line, timeout=30)
            assert out.status == "rejected" and out.reason == reason and out.end.get("detail") == detail, line
            with pytest.raises(CommandRejectedError, match=reason):
                check_run(out, None, elf)
            session.wait_ready()
        out = session.exchange(encode_command(RunParams("Hello", 3, 0.0, 0.9, 1)), timeout=60)
        assert check_run(out, session.wait_exit(), elf).ok and len(out.tokens) == 3


@needs_qemu
def test_run_errors_say_what_happened(twins: dict[str, Build]) -> None:
    elf = twins["q8"].elf
    params = RunParams("Once upon a time", 256, 0.0, 0.9, 1)
    with pytest.raises(QemuNotFoundError, match="apt-get install qemu-system-arm"):
        run_firmware(elf, params, qemu="qemu-system-arm-not-installed")
    with pytest.raises(FirmwareTimeoutError, match="no ready line"):
        run_firmware(elf, params, extra_args=["-S"], ready_timeout=1)  # -S: QEMU starts with the CPU stopped
    with pytest.raises(FirmwareTimeoutError, match="no end of the run"):
        run_firmware(elf, params, timeout=0.1)
    with pytest.raises(FirmwareRunError, match="prompt_too_long"):  # a token per digit, 512 in the context
        run_firmware(elf, RunParams("1234567890" * 90, 256, 0.0, 0.9, 1))


# ---- the parser's view of the firmware's own lines (no QEMU) ----


def test_parser_sees_ready_refusal_and_fault_lines() -> None:
    ready = b"\xffboot\r\n\x05llmcu ready 1 target=qemu-m7 model=260k quant=q8\n"
    out = parse(ready)
    assert out.ready == {"version": "1", "target": "qemu-m7", "model": "260k", "quant": "q8"} and not out.complete

    out = parse(ready + b"\x15llmcu error reason=bad_command detail=steps\n")
    assert out.complete and out.status == "rejected" and out.end["detail"] == "steps" and not out.ok

    fault = b"\x03llmcu end status=fault reason=UsageFault pc=0x0000220c cfsr=0x00010000\n"
    out = parse(ready + fault)  # a fault before any run started
    assert out.complete and out.status == "fault" and out.end["pc"] == "0x0000220c"

    run = b"\x02llmcu 1 target=qemu-m7 unit=instructions\nOnce upon\n\x1etok pos=0 token=1 next=403 cost=9\n"
    out = parse(run + b"\x1etok pos=1 tok" + fault)  # a fault in the middle of a record
    assert out.status == "fault" and out.reason == "UsageFault" and len(out.tokens) == 1
    out = parse(run[: run.index(b"upon")] + fault)  # a fault in the middle of the text
    assert out.status == "fault" and out.text == b"Once "


def test_parser_streams_the_firmware_exchange_byte_by_byte() -> None:
    stream = (
        b"\x05llmcu ready 1 target=qemu-m7 model=260k quant=q8\n"
        b"\x02llmcu 1 target=qemu-m7 model=260k quant=q8 unit=instructions clock_hz=0\nHi\n"
        b"\x1etok pos=0 token=1 next=320 cost=1703520\n"
        b"\x1esum tokens=1 prompt_tokens=2 generated=0 cost=1703520 cost_per_token=1703520.0 tok_per_s=0.00 "
        b"peak_stack=536\n\x03llmcu end status=ok\n"
    )
    parser = ProtocolParser()
    for byte in stream:
        parser.feed(bytes([byte]))
    assert parser.output.ok and parser.output.ready["quant"] == "q8" and parser.output.text == b"Hi\n"
