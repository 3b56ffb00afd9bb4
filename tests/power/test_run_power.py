"""`scons run power=...`: the meter records the run and power.json/power.csv land in its log (llmcu.power.runpower)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmcu.builder.settings import RunParams, configure
from llmcu.device import runs
from llmcu.device.runlog import RunLog, run_info
from llmcu.power import PowerSettings
from llmcu.power.estimate import ANCHORS
from llmcu.power.runpower import MeterMeasurement
from support.build import scons
from support.power import FakeShield

needs_qemu = pytest.mark.skipif(runs.shutil.which("qemu-system-arm") is None, reason="qemu-system-arm not found")


def _costs(log_dir: Path) -> np.ndarray:
    rows = [json.loads(line) for line in (log_dir / "tokens.jsonl").read_text().splitlines()]
    return np.array([row["cost"] for row in rows], dtype=np.float64)


@needs_qemu
def test_scons_run_power_estimate_on_the_twin(tmp_path: Path, stories260k: Path, tok512: Path) -> None:
    """README's workflow: the energy per token is the datasheet's current at the board's clock over the run's
    instruction counts; meters that need a board, and any meter on the host, are refused before anything runs."""
    args = ["target=qemu-m7", f"model={stories260k}", f"tokenizer={tok512}", f"build_dir={tmp_path / 'build'}"]
    logs = tmp_path / "logs"
    result = scons([*args, "run", "power=estimate", "prompt=Once upon a time", "steps=40", f"log_dir={logs}"],
                   stories260k.parent)  # fmt: skip
    assert "[llmcu] power: " in result.stdout and "mJ/token (estimated)" in result.stdout
    (folder,) = logs.iterdir()
    power = json.loads((folder / "power.json").read_text())
    assert power["estimated"] and (folder / "power.csv").read_text().count("\n") > 2
    cpu_hz, current_a = ANCHORS[0]  # the NUCLEO-H743ZI's 480 MHz at VOS0
    costs = _costs(folder)
    expected_mj = current_a * 3.3 * costs.sum() / cpu_hz / costs.size * 1e3
    assert power["generation"]["energy_per_token_mj"] == pytest.approx(expected_mj, rel=1e-6)
    for refused, words in (("power=ppk2", "a QEMU run has none"), ("power=lpm01a", "a QEMU run has none")):
        failed = scons([*args, "run", refused, f"log_dir={logs}"], stories260k.parent, check=False)
        assert failed.returncode != 0 and words in failed.stderr
    host = scons([f"model={stories260k}", f"tokenizer={tok512}", f"build_dir={tmp_path / 'build'}", "run",
                  "power=estimate"], stories260k.parent, check=False)  # fmt: skip
    assert host.returncode != 0 and "llmcu: error: power= does not apply to target host" in host.stderr
    assert len(list(logs.iterdir())) == 1  # nothing ran


@needs_qemu
def test_a_meter_on_a_socket_records_the_run_and_writes_power_files(
    tmp_path: Path, stories260k: Path, tok512: Path
) -> None:
    """An X-NUCLEO-LPM01A (a fake speaking its protocol on pyserial's socket://) records while the run is
    captured (the twin's UART standing in for the board's): started before, stopped after the end line, and
    power.json holds the energy of the 100 mA it streamed."""
    settings = configure(
        {"target": "qemu-m7", "model": str(stories260k), "tokenizer": str(tok512), "build_dir": str(tmp_path)},
        download=False,
    )
    scons(["target=qemu-m7", f"model={stories260k}", f"tokenizer={tok512}", f"build_dir={tmp_path}"],
          stories260k.parent)  # fmt: skip
    shield = FakeShield("".join(["1000-04\r\n"] * 4000) + "TimeStamp: 4s 0ms, buff 0%\r\n")
    shield.start()
    measurement = MeterMeasurement(
        PowerSettings("lpm01a", f"socket://127.0.0.1:{shield.port}", 3.3, "board"), echo=False
    )
    measurement.begin("board")  # the twin's UART stands in for the board's
    log = RunLog(tmp_path / "logs", run_info(settings, "qemu", target="qemu-m7"))
    with log:  # run_twin finishes the log, and the measurement writes power.json beside it
        output = runs.run_twin(settings.images[0], RunParams("Once upon a time", 24, 0.0, 0.9, 1), log,
                               measurement=measurement)  # fmt: skip
    shield.join(timeout=5)
    assert output.ok and shield.commands[shield.commands.index("start") :] == ["start", "stop", "hrc"]
    power = json.loads((log.path / "power.json").read_text())
    assert not power["estimated"] and power["generation"]["avg_current_a"] == pytest.approx(0.1, rel=1e-3)
    assert measurement.result is not None and (log.path / "power.csv").is_file()
