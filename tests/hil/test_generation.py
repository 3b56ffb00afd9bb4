"""Hardware-in-the-loop tests: each runs unchanged on a board (`--hil board`, or `--hil auto` with a
connected board in `--hardware-map`) and on the target's QEMU twin (`--hil qemu`, and `--hil auto` here,
where no board is attached). The `device` fixture (llmcu.hil.plugin) is flashed and ready.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmcu.builder.settings import RunParams
from llmcu.device.protocol import RunOutput, parse
from llmcu.hil.device import Device
from llmcu.hil.firmware import FirmwareBuild
from support.build import ROOT


@pytest.fixture(scope="module")
def host_program(
    pytestconfig: pytest.Config, hil_firmware: FirmwareBuild, hil_build_env: dict[str, str], tmp_path_factory
) -> Path:
    """The host build of the same model, quantization and KV cache type (the board's budget may have made
    the firmware's cache f16): the reference for the device's tokens."""
    build_dir = tmp_path_factory.mktemp("hil-host")
    args = ["target=host", f"model={pytestconfig.getoption('--hil-model')}", f"quant={hil_firmware.quant}",
            f"kv_type={hil_firmware.kv_type}", f"build_dir={build_dir}"]  # fmt: skip
    env = {**os.environ, **hil_build_env}
    result = subprocess.run([sys.executable, "-m", "SCons", "-Q", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    programs = list((build_dir / "host").glob("*/llmcu"))
    assert len(programs) == 1, programs
    return programs[0]


def run_host(program: Path, params: RunParams) -> RunOutput:
    result = subprocess.run([str(program), *params.program_args()], capture_output=True, check=True, timeout=120)
    return parse(result.stdout)


def greedy_case(golden_cases: list[dict]) -> dict:
    return next(case for case in golden_cases if case["temperature"] == 0 and case["prompt"])


def test_greedy_output_equals_the_host_build(
    device: Device, host_program: Path, hil_firmware: FirmwareBuild, golden_cases: list[dict]
) -> None:
    """The golden prompt, greedy: the device's tokens and text are the host build's, byte for byte (and
    llama2.c's for fp32)."""
    case = greedy_case(golden_cases)
    params = RunParams(case["prompt"], case["steps"], 0.0, case["topp"], case["seed"])
    out = device.run(params)
    host = run_host(host_program, params)
    assert out.ok and host.ok
    assert out.header["quant"] == hil_firmware.quant and out.header["model"] == host.header["model"]
    assert len(out.tokens) == case["steps"]
    assert out.token_sequence() == host.token_sequence()
    assert out.text == host.text
    if hil_firmware.quant == "fp32":
        assert out.text.decode("utf-8") == case["stdout"]


def test_the_device_reports_its_cost_per_token(device: Device, hil_firmware: FirmwareBuild) -> None:
    """One cost record per forward pass in the device's unit (cycles on a board, instructions on the twin),
    and a summary that adds them up."""
    steps = 24
    out = device.run(RunParams("Once upon a time", steps, 0.0, 0.9, 1))
    unit = out.header["unit"]
    assert unit == device.info.unit
    assert [record.pos for record in out.tokens] == list(range(steps))
    costs = [record.cost for record in out.tokens]
    assert all(cost > 10_000 for cost in costs), costs  # a forward pass of stories260K is millions
    assert int(out.summary["tokens"]) == steps and int(out.summary["cost"]) == sum(costs)
    assert float(out.summary["cost_per_token"]) == pytest.approx(sum(costs) / steps, rel=1e-6)
    assert 0 < int(out.summary["peak_stack"]) <= 64 * 1024
    if unit == "cycles":  # a board: its clock turns cycles into time
        assert 0 < int(out.header["clock_hz"]) <= hil_firmware.target.clock_hz
        assert float(out.summary["tok_per_s"]) > 0
    else:
        assert unit == "instructions" and out.header["clock_hz"] == "0"
    print(f"{device.info.runs_on}: {float(out.summary['cost_per_token']):,.0f} {unit}/token")


def test_a_bad_command_gets_an_error_line(device: Device) -> None:
    """A command the firmware cannot parse is answered with an error line naming the bad key, and the
    firmware takes the next command."""
    out = device.send(b"run steps=many\n")
    assert out.complete and out.status == "rejected"
    assert out.reason == "bad_command" and out.end.get("detail") == "steps"
    out = device.send(b"walk steps=3\n")
    assert out.status == "rejected" and out.end.get("detail") == "walk"
    out = device.run(RunParams("Hello", 3, 0.0, 0.9, 1))
    assert out.ok and len(out.tokens) == 3
