"""Power meters at their boundary (a fake LPM01A on a socket, a PPK2 byte stream behind ppk2-api), CSV
import, the estimate, and the alignment and energy arithmetic on synthetic data with known answers."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from llmcu.builder.options import build_options, parse_options, validate
from llmcu.builder.settings import PowerSettings, power_settings
from llmcu.core.errors import OptionError
from llmcu.power import check_choice, make_meter, measure_during
from llmcu.power.base import MeterError, Samples
from llmcu.power.csvmeter import CsvMapping, parse_mapping, read_csv
from llmcu.power.energy import analyse, integrate, write_power
from llmcu.power.estimate import ANCHORS, EstimateMeter, RunCurrentModel
from llmcu.power.lpm01a import Lpm01aMeter, StreamParser, decode_ascii_sample, decode_binary_sample
from llmcu.power.runrecord import load_run
from support.build import ROOT
from support.power import FakeShield, make_run_dir

# ---- alignment and energy: synthetic data with known answers ----


def step_samples(host_t0: float = 1000.0, rate: float = 10_000.0) -> Samples:
    """4 s at 10 kHz: 20 mA idle, 100 mA from 1.0 s to 3.0 s (both ends included), 20 mA after."""
    t = np.arange(0, 4.0 + 0.5 / rate, 1 / rate)
    current = np.where((t >= 1.0 - 1e-9) & (t <= 3.0 + 1e-9), 0.100, 0.020)
    return Samples("test", t, current, supply_v=3.3, host_t0=host_t0, host_t0_uncertainty_s=0.0)


def test_integrate_is_exact_for_piecewise_linear_data() -> None:
    t = np.array([0.0, 1.0, 2.0, 3.0])
    y = np.array([0.0, 2.0, 2.0, 0.0])
    assert integrate(t, y, 0.0, 3.0) == pytest.approx(4.0)
    assert integrate(t, y, 0.5, 2.5) == pytest.approx(0.5 * 1.5 + 2.0 + 0.5 * 1.5)
    assert integrate(t, y, -5.0, 0.0) == 0.0
    assert integrate(t, y, 2.0, 9.0) == pytest.approx(1.0)  # clipped to the data


def test_energy_per_token_known_answer(tmp_path: Path) -> None:
    """100 mA for 2 s of generation, 200 tokens, 3.3 V: 0.2 C, 0.66 J, 3.3 mJ/token."""
    latency = 0.004
    run_dir = make_run_dir(tmp_path, tokens=200, markers=(1001.0 + latency / 2, 1003.0 + latency / 2))
    result, _, window = analyse(load_run(run_dir), step_samples(), link_latency_s=latency)
    g = result["generation"]
    assert window.start_s == pytest.approx(1.0) and window.end_s == pytest.approx(3.0)
    assert result["window"]["method"] == "host receive times of the start and end lines"
    assert g["charge_c"] == pytest.approx(0.2, rel=1e-6)
    assert g["energy_j"] == pytest.approx(0.66, rel=1e-6)
    assert g["energy_per_token_mj"] == pytest.approx(3.3, rel=1e-6)
    assert g["avg_current_a"] == pytest.approx(0.100, rel=1e-6)
    assert g["avg_power_w"] == pytest.approx(0.33, rel=1e-6)
    assert result["idle"]["avg_current_a"] == pytest.approx(0.020, rel=1e-3)
    assert g["energy_per_token_above_idle_mj"] == pytest.approx(0.08 * 3.3 * 2 / 200 * 1e3, rel=1e-3)
    assert g["compute_s"] == pytest.approx(200 * 4_800_000 / 480e6)  # the cycle counts: 2 s of forward passes
    assert result["estimated"] is False and result["label"] == "measured"
    # the uncertainty: half the link latency plus clock drift; moving both edges inwards loses 100 mA x u each
    u = result["window"]["alignment_uncertainty_s"]
    assert u == pytest.approx(latency / 2 + 100e-6 * 3.0, rel=1e-6)
    assert g["energy_per_token_uncertainty_mj"] == pytest.approx(2 * u * 0.1 * 3.3 / 200 * 1e3, rel=0.02)


def test_meter_marks_win_over_host_times(tmp_path: Path) -> None:
    samples = step_samples(host_t0=None)  # type: ignore[arg-type]
    samples.marks = {"gpio_rise": [1.0], "gpio_fall": [3.0]}
    run_dir = make_run_dir(tmp_path, tokens=200)  # no host markers at all
    result, _, window = analyse(load_run(run_dir), samples)
    assert result["window"]["method"] == "meter trigger input (GPIO edges)"
    assert window.uncertainty_s == pytest.approx(1e-4)
    assert result["generation"]["energy_per_token_mj"] == pytest.approx(3.3, rel=1e-6)


def test_start_mark_plus_host_interval(tmp_path: Path) -> None:
    samples = step_samples(host_t0=None)  # type: ignore[arg-type]
    samples.marks = {"trigger": [1.0]}  # LPM01A trigsrc d7: the acquisition started on the GPIO edge
    run_dir = make_run_dir(tmp_path, tokens=200, markers=(5000.25, 5002.25))
    result, _, window = analyse(load_run(run_dir), samples)
    assert (window.start_s, window.end_s) == (pytest.approx(1.0), pytest.approx(3.0))
    assert "host interval" in result["window"]["method"]


@pytest.mark.fault(
    area="power",
    kind="input",
    what="a run log without start/end marker times, and meter samples without trigger marks",
    sees=(
        r"summary\.json has no start_marker_time/end_marker_time \(host times of the protocol's start and end"
        r" lines\) and the meter saw no trigger: the generation cannot be placed on the meter's timeline"
    ),
)
def test_alignment_needs_markers_or_marks(tmp_path: Path, sees) -> None:
    run_dir = make_run_dir(tmp_path, tokens=10)
    with pytest.raises(MeterError, match="start_marker_time") as excinfo:
        analyse(load_run(run_dir), step_samples())
    sees(str(excinfo.value))


@pytest.mark.fault(
    area="power",
    kind="input",
    what="run markers 1000 s after the meter's 4 s of samples ended (the meter was not running during the run)",
    sees=(
        r"the generation \(999\.997-1000\.997 s on the meter's clock\) lies outside the samples \(0\.000-4\.000"
        r" s\): was the meter running during the run\?"
    ),
)
def test_generation_outside_the_samples_is_an_error(tmp_path: Path, sees) -> None:
    run_dir = make_run_dir(tmp_path, tokens=10, markers=(2000.0, 2001.0))  # 1000 s after the meter stopped
    with pytest.raises(MeterError, match="outside the samples") as excinfo:
        analyse(load_run(run_dir), step_samples())
    sees(str(excinfo.value))


def test_write_power_files(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path, tokens=200, markers=(1001.0025, 1003.0025))
    result = write_power(run_dir, step_samples())
    saved = json.loads((run_dir / "power.json").read_text())
    assert saved["generation"]["energy_per_token_mj"] == pytest.approx(result["generation"]["energy_per_token_mj"])
    lines = (run_dir / "power.csv").read_text().splitlines()
    assert lines[0] == "t_s,host_time_s,current_a,phase"
    assert len(lines) == 1 + 40_001
    assert lines[20_000].endswith(",generation") and lines[1].endswith(",idle")
    assert "estimated" not in (run_dir / "power.csv").read_text()


class Recorder:
    """A meter that notes what was done to it."""

    name, estimated = "recorder", False

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def start(self) -> None:
        self.events.append("start")

    def stop(self) -> Samples:
        self.events.append("stop")
        return Samples("recorder", np.zeros(2), np.zeros(2))

    def close(self) -> None:
        self.events.append("close")


def test_measure_during_starts_first_and_always_stops() -> None:
    events: list[str] = []
    result, samples = measure_during(lambda: events.append("run") or "output", Recorder(events))
    assert (result, len(samples)) == ("output", 2)
    assert events == ["start", "run", "stop", "close"]


@pytest.mark.fault(
    area="power",
    kind="fault",
    what="the run fails (RuntimeError 'board did not answer') while the meter records",
    sees=r"^board did not answer$",
)
def test_measure_during_stops_the_meter_when_the_run_fails(sees) -> None:
    events: list[str] = []

    def failing() -> None:
        events.append("run")
        raise RuntimeError("board did not answer")

    with pytest.raises(RuntimeError, match="did not answer") as excinfo:
        measure_during(failing, Recorder(events))
    assert events == ["start", "run", "stop", "close"]  # the meter is stopped and closed all the same
    sees(str(excinfo.value))  # the run's own error, not one from the meter


def test_power_options() -> None:
    table = build_options(["host", "stm32h743"], ["260k"])
    assert power_settings(parse_options({}, table)) == PowerSettings("none", "", 3.3, "board")
    values = parse_options(
        {"power": "ppk2", "power_port": "/dev/ttyACM3", "power_voltage": "1.8", "power_supply": "meter"}, table
    )
    assert power_settings(values) == PowerSettings("ppk2", "/dev/ttyACM3", 1.8, "meter")


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param(
            {"power": "multimeter"},
            marks=pytest.mark.fault(
                area="power",
                kind="input",
                what="power=multimeter (a meter llmcu does not know)",
                sees=r"power='multimeter' is not allowed; choose one of: none, ppk2, lpm01a, estimate",
            ),
        ),
        pytest.param(
            {"power_voltage": "12"},
            marks=pytest.mark.fault(
                area="power",
                kind="input",
                what="power_voltage=12 (above the meters' 5 V)",
                sees=r"power_voltage='12' is not valid \(must be between 0\.8 and 5\.0\)",
            ),
        ),
    ],
)
def test_power_option_errors(arguments: dict[str, str], sees) -> None:
    table = build_options(["host", "stm32h743"], ["260k"])
    with pytest.raises(OptionError) as excinfo:
        validate(arguments, table)
    sees(str(excinfo.value))


def test_power_choice_by_runner() -> None:
    check_choice(PowerSettings("estimate", "", 3.3, "board"), runner="qemu")
    check_choice(PowerSettings("none", "", 3.3, "board"), runner="host")
    assert make_meter(PowerSettings("none", "", 3.3, "board"), runner="board") is None
    assert isinstance(make_meter(PowerSettings("estimate", "", 3.3, "board"), runner="qemu"), EstimateMeter)


@pytest.mark.parametrize(
    ("settings", "runner"),
    [
        pytest.param(
            PowerSettings("ppk2", "", 3.3, "board"),
            "qemu",
            marks=pytest.mark.fault(
                area="power",
                kind="input",
                what="power=ppk2 for a QEMU run (no real supply to measure)",
                sees=r"power=ppk2 measures a real board's supply, and a QEMU run has none: use power=estimate",
            ),
        ),
        pytest.param(
            PowerSettings("estimate", "", 3.3, "board"),
            "host",
            marks=pytest.mark.fault(
                area="power",
                kind="input",
                what="power=estimate with target=host",
                sees=r"power=estimate is for firmware targets .*; target=host runs on this computer",
            ),
        ),
        pytest.param(
            PowerSettings("lpm01a", "", 3.3, "board"),
            "board",
            marks=pytest.mark.fault(
                area="power",
                kind="input",
                what="power=lpm01a without power_port=",
                sees=r"power=lpm01a needs the shield's serial port: power_port=/dev/ttyACMn",
            ),
        ),
    ],
)
def test_power_choice_refusals(settings: PowerSettings, runner: str, sees) -> None:
    with pytest.raises((OptionError, MeterError)) as excinfo:
        check_choice(settings, runner=runner)
        make_meter(settings, runner=runner)
    sees(str(excinfo.value))


# ---- the estimate ----


def test_estimate_is_labelled_and_follows_the_model(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path, tokens=200, cost=4_800_000)  # 10 ms per pass at 480 MHz
    meter = EstimateMeter()
    meter.start()
    result = write_power(run_dir, meter.stop(), targets_dir=ROOT / "targets")
    current = ANCHORS[0][1]  # nucleo-h743zi: VOS0, 480 MHz
    g = result["generation"]
    assert result["estimated"] is True and result["label"] == "estimated" and g["label"] == "estimated"
    assert g["avg_current_a"] == pytest.approx(current)
    assert g["energy_per_token_mj"] == pytest.approx(current * 3.3 * 0.010 * 1e3, rel=1e-9)
    assert result["meter"]["model"]["source"].startswith("ST DS12110")
    assert result["meter"]["model"]["vos"] == 0 and result["meter"]["model"]["cpu_hz"] == 480e6
    assert (run_dir / "power.csv").read_text().splitlines()[0] == "t_s,estimated_current_a,phase"


def test_estimate_on_the_qemu_twin_counts_instructions(tmp_path: Path) -> None:
    run_dir = make_run_dir(
        tmp_path, tokens=50, cost=2_400_000, unit="instructions", clock_hz=0, target="qemu-m7",
        settings={"built_for": "stm32h743"},
    )  # fmt: skip
    model = RunCurrentModel(vos=0, cpu_hz=480e6, cycles_per_instruction=2.0)
    result, samples, _ = analyse(load_run(run_dir), EstimateMeter().stop(), model=model)
    assert samples.estimated and samples.duration_s == pytest.approx(50 * 2_400_000 * 2.0 / 480e6)
    assert result["generation"]["energy_per_token_mj"] == pytest.approx(ANCHORS[0][1] * 3.3 * 0.010 * 1e3)


def test_estimate_scales_with_the_clock() -> None:
    assert RunCurrentModel(vos=1, cpu_hz=200e6).current_a == pytest.approx(ANCHORS[1][1] / 2)
    assert RunCurrentModel(run_current_a=0.2).current_a == 0.2


@pytest.mark.fault(
    area="power",
    kind="input",
    what="an estimate for a 480 MHz CPU clock at VOS1 (which goes up to 400 MHz)",
    sees=r"a 480 MHz CPU clock is outside VOS1 \(up to 400 MHz\)",
)
def test_estimate_refuses_a_clock_outside_the_voltage_scale(sees) -> None:
    with pytest.raises(MeterError, match="outside VOS1") as excinfo:
        RunCurrentModel(vos=1, cpu_hz=480e6)
    sees(str(excinfo.value))


@pytest.mark.fault(
    area="power",
    kind="input",
    what="power=estimate applied to a target=host run log (costs in ns)",
    sees=r"power=estimate models an STM32H743 \(its cost unit is cycles, .*\); this run counts ns \(host\)",
)
def test_estimate_refuses_the_host(tmp_path: Path, sees) -> None:
    run_dir = make_run_dir(tmp_path, tokens=5, cost=1000, unit="ns", target="host")
    with pytest.raises(MeterError, match="counts ns") as excinfo:
        analyse(load_run(run_dir), EstimateMeter().stop())
    sees(str(excinfo.value))


# ---- CSV import ----


def test_csv_units_from_headers(tmp_path: Path) -> None:
    path = tmp_path / "bench.csv"
    path.write_text("# exported by a bench SMU\nTime (ms),Current (mA),Voltage (V)\n0,10,3.3\n1,20,3.3\n2,30,3.29\n")
    samples = read_csv(path, start_time=1234.5)
    assert list(samples.t_s) == pytest.approx([0.0, 0.001, 0.002])
    assert list(samples.current_a) == pytest.approx([0.010, 0.020, 0.030])
    assert samples.voltage_v is not None and samples.voltage_v[-1] == pytest.approx(3.29)
    assert samples.host_t0 == 1234.5 and samples.source == "csv"


def test_csv_column_mapping_by_index_and_name(tmp_path: Path) -> None:
    path = tmp_path / "scope.csv"
    path.write_text("idx;stamp;CH1\n0;0,5;250\n1;0,6;500\n")  # semicolons and decimal commas
    samples = read_csv(path, parse_mapping("time=stamp:s,current=2:uA"))
    assert list(samples.t_s) == pytest.approx([0.0, 0.1])
    assert list(samples.current_a) == pytest.approx([250e-6, 500e-6])
    assert samples.voltage_v is None
    by_index = read_csv(path, CsvMapping(time=1, current=2, current_unit="nA", delimiter=";"))
    assert by_index.current_a[1] == pytest.approx(500e-9)


def test_csv_absolute_times_give_the_host_clock(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("timestamp,I_mA\n2024-05-01T12:00:00+00:00,5\n2024-05-01T12:00:00.5+00:00,7\n")
    samples = read_csv(path, parse_mapping("time=timestamp:iso,current=I_mA"))
    assert samples.host_t0 == pytest.approx(1714564800.0)
    assert list(samples.t_s) == pytest.approx([0.0, 0.5]) and samples.current_a[1] == pytest.approx(0.007)


@pytest.mark.parametrize(
    ("content", "mapping"),
    [
        pytest.param(
            "when,amps\n0,1\n",
            None,
            marks=pytest.mark.fault(
                area="power",
                kind="input",
                what="meter CSV whose headers name no time column (when,amps), no column mapping",
                sees=r"CSV: no time column found among when, amps; name it with a column mapping \(time=COLUMN\[:UNIT",
            ),
        ),
        pytest.param(
            "when,amps\n0,1\n",
            CsvMapping(time="when", current="I"),
            marks=pytest.mark.fault(
                area="power",
                kind="input",
                what="meter CSV column mapping current=I for a file without that column",
                sees=r"CSV has no column 'I' for current; its columns: when, amps",
            ),
        ),
        pytest.param(
            "when,amps\n0,1\n",
            CsvMapping(time="when", current="amps", current_unit="kA"),
            marks=pytest.mark.fault(
                area="power",
                kind="input",
                what="meter CSV current unit kA",
                sees=r"unknown current unit 'kA'; use one of a, ma, ua, na",
            ),
        ),
        pytest.param(
            "time,current\n0,1\n1,x\n",
            None,
            marks=pytest.mark.fault(
                area="power",
                kind="input",
                what="meter CSV with a non-numeric current (x) in its second data row",
                sees=r"bad\.csv: data row 3 \('1,x'\): could not convert string to float: 'x'",
            ),
        ),
    ],
)
def test_csv_errors_name_the_problem(tmp_path: Path, content: str, mapping: CsvMapping | None, sees) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(MeterError) as excinfo:
        read_csv(path, mapping)
    sees(str(excinfo.value))


# ---- LPM01A: a fake shield on a TCP socket (pyserial socket://) ----


def shield_stream() -> str:
    lines = ["1000-04\r\n"] * 500  # 100 mA
    lines.append("TimeStamp: 0s 500ms, buff 0%\r\n")
    lines += ["2500-05\r\n"] * 500  # 25 mA
    lines.append("\x00TimeStamp: 1s 0ms, buff 3%\r\n")
    return "".join(lines)


def test_lpm01a_session_and_stream() -> None:
    shield = FakeShield(shield_stream())
    shield.start()
    meter = Lpm01aMeter(f"socket://127.0.0.1:{shield.port}", voltage_v=3.0, freq_hz=1000)
    meter.start()
    time.sleep(0.05)
    samples = meter.stop()
    meter.close()
    shield.join(timeout=5)
    assert shield.commands == [
        "stop", "htc", "version", "volt 3000m", "acqmode dyn", "output current", "format ascii_dec", "freq 1k",
        "acqtime 0", "trigdelay 0", "trigsrc sw", "start", "stop", "hrc",
    ]  # fmt: skip
    assert len(samples) == 1000 and samples.rate_hz == pytest.approx(1000)
    assert samples.current_a[:500] == pytest.approx(np.full(500, 0.1))
    assert samples.current_a[500:] == pytest.approx(np.full(500, 0.025))
    assert samples.supply_v == 3.0 and samples.info["firmware"] == "1.0.7"
    assert samples.host_t0 is not None and abs(samples.host_t0 - time.time()) < 10
    assert samples.warnings == []


@pytest.mark.fault(
    area="power",
    kind="fault",
    what="the LPM01A refuses 'freq 5k' (error, then 'Error detail: frequency not compatible ...')",
    sees=r"the LPM01A refused 'freq 5k': frequency not compatible with acquisition mode$",
)
def test_lpm01a_refusal_carries_the_error_detail(sees) -> None:
    shield = FakeShield("", refuse={"freq 5k": "frequency not compatible with acquisition mode"})
    shield.start()
    meter = Lpm01aMeter(f"socket://127.0.0.1:{shield.port}", freq_hz=5000)
    with pytest.raises(MeterError, match="refused 'freq 5k': frequency not compatible") as excinfo:
        meter.start()
    sees(str(excinfo.value))
    meter.close()
    shield.join(timeout=5)


@pytest.mark.fault(
    area="power",
    kind="fault",
    what="the LPM01A's port accepts the connection but never answers (command_timeout_s=0.3)",
    sees=(
        r"no answer from the LPM01A at socket://127\.0\.0\.1:\d+ to 'htc' within 0\.3 s: is it an X-NUCLEO-LPM01A"
        r" \(USB virtual COM port, \d+ baud\)\?"
    ),
)
def test_lpm01a_silence_is_an_error(sees) -> None:
    server = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    meter = Lpm01aMeter(f"socket://127.0.0.1:{server.getsockname()[1]}", command_timeout_s=0.3)
    with pytest.raises(MeterError, match="no answer from the LPM01A") as excinfo:
        meter.start()
    sees(str(excinfo.value))
    meter._serial.close()
    server.close()


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param(
            {"voltage_v": 5.0},
            marks=pytest.mark.fault(
                area="power",
                kind="input",
                what="LPM01A supply voltage 5.0 V",
                sees=r"the LPM01A supplies 1\.8-3\.3 V, not 5\.0 V",
            ),
        ),
        pytest.param(
            {"freq_hz": 20_000},
            marks=pytest.mark.fault(
                area="power",
                kind="input",
                what="LPM01A at 20 kHz in the ascii_dec format",
                sees=r"the LPM01A streams ascii_dec for long at 5000 Hz at most; use bin_hexa",
            ),
        ),
        pytest.param(
            {"freq_hz": 3_000},
            marks=pytest.mark.fault(
                area="power",
                kind="input",
                what="LPM01A sampling frequency 3000 Hz (not one the shield offers)",
                sees=r"LPM01A frequency 3000 Hz is not one of \(100000, 50000, .*, 1\)",
            ),
        ),
    ],
)
def test_lpm01a_settings_are_checked(settings: dict[str, float], sees) -> None:
    with pytest.raises(MeterError) as excinfo:
        Lpm01aMeter("loop://", **settings)  # type: ignore[arg-type]
    sees(str(excinfo.value))


def test_lpm01a_sample_decoding() -> None:
    assert decode_ascii_sample("6409-07") == pytest.approx(640.9e-6)
    assert decode_ascii_sample("1234+00") == 1234.0
    assert decode_binary_sample(0x52, 0xA0) == pytest.approx(640.9e-6, rel=1e-4)  # UM2269's example


@pytest.mark.fault(
    area="power",
    kind="fault",
    what="the LPM01A reports an overcurrent mid-acquisition (ASCII stream: 'PowerShield > Error: overcurrent')",
    sees=r"^LPM01A: Error: overcurrent$",
)
def test_lpm01a_ascii_metadata_and_overcurrent(sees) -> None:
    parser = StreamParser(binary=False)
    for chunk in (b"1000-0", b"4\r\n2000-04\r\nevent 1 ris\r\n", b"PowerShield > Error: overcurrent\r\n", b"end\r\n"):
        parser.feed(chunk)
    assert list(parser.values) == pytest.approx([0.1, 0.2])
    assert parser.events == [(2, "ris")] and parser.ended
    assert parser.errors == ["Error: overcurrent"]
    sees("\n".join(Lpm01aMeter("loop://", freq_hz=1000)._samples(parser).warnings))  # what the run reports


@pytest.mark.fault(
    area="power",
    kind="fault",
    what="the LPM01A reports an overcurrent mid-acquisition (bin_hexa stream: an F0 F5 frame between samples)",
    sees=r"LPM01A: overcurrent: the target drew more than the selected range",
)
def test_lpm01a_binary_stream_byte_by_byte(sees) -> None:
    stream = bytes([0x52, 0xA0, 0x30, 0x64])  # 640.9 uA, 0x064 x 16^-3 = 24.4 mA
    stream += bytes([0xF0, 0xF3, 0x00, 0x00, 0x03, 0xE8, 0x07, 0xFF, 0xFF])  # timestamp 1000 ms, buffer 7 %
    stream += bytes([0xF0, 0xF5, 0xFF, 0xFF])  # overcurrent
    stream += bytes([0x52, 0xA0, 0xF0, 0xF4, 0xFF, 0xFF])  # a sample, then the end
    stream += b"PowerShield > Acquisition completed\r\n"
    parser = StreamParser(binary=True)
    for byte in stream:
        parser.feed(bytes([byte]))
    assert list(parser.values) == pytest.approx([640.9e-6, 0x64 / 16**3, 640.9e-6], rel=1e-4)
    assert parser.timestamps == [(2, 1.0, 7)]
    assert parser.ended and any("overcurrent" in e for e in parser.errors)
    assert parser.messages[-1] == "Acquisition completed"
    sees("\n".join(Lpm01aMeter("loop://", freq_hz=1000, data_format="bin_hexa")._samples(parser).warnings))


# ---- PPK2: its byte stream through ppk2-api, with the serial port replaced ----

R3 = 0.9  # range-3 shunt in the fake's metadata: current = adc * 4 * (1.8 / 163840) / 0.9 = adc / 20480 A
METADATA = "".join(
    [
        "Calibrated: 0\n",
        *(f"R{i}: {r}\n" for i, r in enumerate((1000.0, 100.0, 10.0, R3, 0.05))),
        *(f"{key}{i}: {value}\n" for key, value in (("GS", 0), ("GI", 1), ("O", 0), ("S", 0), ("I", 0), ("UG", 1))
          for i in range(5)),
        "HW: 9173\nmode: 2\nIA: 56\nEND\n",
    ]
)  # fmt: skip


def ppk2_words(idle: int, active: int, *, drop_at: int, dropped: int, channel: int) -> bytes:
    """A recording as the PPK2 sends it: idle at 25 mA, ``active`` samples at 100 mA with logic input
    ``channel`` high, idle again; the sample counter skips ``dropped`` values at ``drop_at``."""
    words = []
    counter = 0
    for i in range(idle + active + idle):
        if i == drop_at:
            counter += dropped
        high = idle <= i < idle + active
        adc = 2048 if high else 512
        words.append(adc | 3 << 14 | (counter & 0x3F) << 18 | (high << channel) << 24)
        counter += 1
    return np.array(words, dtype="<u4").tobytes()


class FakePpk2:
    """The PPK2's USB serial port as ppk2-api uses it: opcodes in, metadata or the sample stream out."""

    instances: ClassVar[list[FakePpk2]] = []
    recording: ClassVar[bytes] = b""

    def __init__(self, port: str, **kwargs: object) -> None:
        self.port = port
        self.baudrate = 0
        self.written = bytearray()
        self.out = bytearray()
        self.closed = False
        FakePpk2.instances.append(self)

    @property
    def in_waiting(self) -> int:
        return min(len(self.out), 4093)  # odd chunk sizes: samples arrive cut across reads

    def read(self, size: int = 1) -> bytes:
        data = bytes(self.out[:size])
        del self.out[:size]
        return data

    def write(self, data: bytes) -> int:
        self.written += data
        if data[:1] == b"\x19":
            self.out += METADATA.encode()
        elif data[:1] == b"\x06":
            self.out += FakePpk2.recording
        return len(data)

    def reset_input_buffer(self) -> None:
        self.out.clear()

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_ppk2(monkeypatch: pytest.MonkeyPatch) -> type[FakePpk2]:
    ppk2_api = pytest.importorskip("ppk2_api.ppk2_api")
    monkeypatch.setattr(ppk2_api.serial, "Serial", FakePpk2)
    monkeypatch.setattr("llmcu.power.ppk2.DECODE_BATCH", 999)  # batch edges inside the stream
    FakePpk2.instances.clear()
    return FakePpk2


@pytest.mark.fault(
    area="power",
    kind="fault",
    what="the USB link drops 3 PPK2 samples mid-recording (the sample counter skips 3)",
    sees=r"the USB link dropped 3 PPK2 samples \(0\.03 ms\)",
)
def test_ppk2_source_mode_stream_decoding(fake_ppk2: type[FakePpk2], tmp_path: Path, sees) -> None:
    from llmcu.power.ppk2 import Ppk2Meter

    fake_ppk2.recording = ppk2_words(2000, 10_000, drop_at=7000, dropped=3, channel=2)
    meter = Ppk2Meter("/dev/fake-ppk2", mode="source", voltage_v=3.3, sample_rate_hz=100_000, trigger_channel=2)
    run_dir = make_run_dir(tmp_path, tokens=50)
    _, samples = measure_during(lambda: time.sleep(0.05), meter)
    port = fake_ppk2.instances[0]
    assert port.closed
    # ppk2-api's opcodes: stop (a stale stream), metadata, regulator at 3300 mV (3300 - 800 + 32 = 9 * 256 +
    # 228: 3 + 9, 228), source-meter mode, DUT power on, start, stop
    assert bytes(port.written) == bytes([0x07, 0x19, 0x0D, 12, 228, 0x11, 0x02, 0x0C, 0x01, 0x06, 0x07])
    assert len(samples) == 14_000 and samples.info["dropped_samples"] == 3
    sees("\n".join(samples.warnings))
    assert samples.t_s[-1] == pytest.approx((14_000 - 1 + 3) / 100_000)
    assert samples.current_a[:2000] == pytest.approx(np.full(2000, 0.025))
    assert samples.current_a[2000:12_000] == pytest.approx(np.full(10_000, 0.1))
    assert samples.marks == {"gpio_rise": [pytest.approx(0.02)], "gpio_fall": [pytest.approx(0.12003)]}
    assert samples.supply_v == 3.3 and samples.host_t0 is not None
    result, _, window = analyse(load_run(run_dir), samples)
    assert result["window"]["method"] == "meter trigger input (GPIO edges)"
    assert window.duration_s == pytest.approx(0.10003)
    assert result["generation"]["avg_current_a"] == pytest.approx(0.1, rel=2e-3)
    assert result["generation"]["energy_per_token_mj"] == pytest.approx(0.1 * 3.3 * 0.10003 / 50 * 1e3, rel=2e-3)


def test_ppk2_ampere_mode_averages(fake_ppk2: type[FakePpk2]) -> None:
    from llmcu.power.ppk2 import Ppk2Meter

    fake_ppk2.recording = ppk2_words(1000, 2000, drop_at=-1, dropped=0, channel=0)
    meter = Ppk2Meter("/dev/fake-ppk2", mode="ampere", voltage_v=1.8, sample_rate_hz=1000)
    meter.start()
    time.sleep(0.05)
    samples = meter.stop()
    meter.close()
    written = bytes(fake_ppk2.instances[0].written)
    assert written[2:4] == bytes([0x11, 0x01])  # ampere-meter mode
    assert len(samples) == 40 and samples.info["averaged"] == 100
    assert samples.current_a[10:30] == pytest.approx(np.full(20, 0.1))
    assert samples.warnings == [] and samples.marks == {}


@pytest.mark.fault(
    area="power",
    kind="fault",
    what="power=ppk2 without the ppk2-api package (its import fails)",
    sees=r"power=ppk2 needs the ppk2-api package \(Nordic PPK2 support\): pip install 'ppk2-api>=[\d.]+'",
)
def test_ppk2_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, sees) -> None:
    from llmcu.power.ppk2 import Ppk2Meter

    monkeypatch.setitem(sys.modules, "ppk2_api", None)
    with pytest.raises(MeterError, match="pip install 'ppk2-api") as excinfo:
        Ppk2Meter("/dev/ttyACM0").start()
    sees(str(excinfo.value))


@pytest.mark.fault(
    area="power",
    kind="input",
    what="PPK2 sample rate 3000 Hz (does not divide the PPK2's 100 kHz)",
    sees=r"PPK2 sample rate 3000 Hz must divide 100000 Hz",
)
def test_ppk2_sample_rate_must_divide_the_raw_rate(sees) -> None:
    from llmcu.power.ppk2 import Ppk2Meter

    with pytest.raises(MeterError, match="divide") as excinfo:
        Ppk2Meter("/dev/ttyACM0", sample_rate_hz=3000)
    sees(str(excinfo.value))


@pytest.mark.fault(
    area="power",
    kind="fault",
    what="power_port= names a serial port that never answers the PPK2's metadata request",
    sees=r"^/dev/ttyUSB0 did not send PPK2 calibration metadata: is it a PPK2\?$",
)
def test_ppk2_silent_port_is_not_a_ppk2(fake_ppk2: type[FakePpk2], monkeypatch: pytest.MonkeyPatch, sees) -> None:
    from llmcu.power.ppk2 import Ppk2Meter

    monkeypatch.setattr(FakePpk2, "write", lambda self, data: len(data))  # never answers
    with pytest.raises(MeterError, match="did not send PPK2 calibration metadata") as excinfo:
        Ppk2Meter("/dev/ttyUSB0").start()
    sees(str(excinfo.value))


def test_measured_run_end_to_end(tmp_path: Path) -> None:
    """The run path's wiring: the meter starts, the run is captured into a RunLog (which notes when the start
    and end lines arrive), the meter stops, and power.json lands in the log folder."""
    from llmcu.device.protocol import parse
    from llmcu.device.runlog import RunInfo, RunLog
    from support.power import protocol_stream

    shield = FakeShield(shield_stream())  # 1 s of samples at 1 kHz: 100 mA, then 25 mA
    shield.start()
    meter = make_meter(PowerSettings("lpm01a", f"socket://127.0.0.1:{shield.port}", 3.3, "board"), runner="board")
    stream = protocol_stream(40, 4_800_000)
    head, rest = stream.split(b"\n", 1)
    log = RunLog(tmp_path, RunInfo("stm32h743", "stories260K", "q8", "board", board="nucleo-h743zi"))

    def capture() -> str:
        time.sleep(0.1)  # boot, ready line, command
        log.write_raw(head + b"\n")
        time.sleep(0.2)  # generation
        log.write_raw(rest)
        log.finish(parse(stream))
        return "captured"

    assert meter is not None
    result, samples = measure_during(capture, meter)
    shield.join(timeout=5)
    power = write_power(log.path, samples)
    assert result == "captured" and power["source"] == "lpm01a"
    assert power["window"]["method"] == "host receive times of the start and end lines"
    assert 0.05 < power["window"]["start_s"] < power["window"]["end_s"] < 0.5  # inside the 100 mA half
    assert power["generation"]["duration_s"] == pytest.approx(0.2, abs=0.05)
    assert power["generation"]["avg_current_a"] == pytest.approx(0.1)
    assert power["generation"]["energy_per_token_mj"] == pytest.approx(
        0.1 * 3.3 * power["generation"]["duration_s"] / 40 * 1e3
    )
    assert (log.path / "power.csv").is_file()
