"""Power meters at their boundary (a fake LPM01A on a socket, a PPK2 byte stream behind ppk2-api), CSV
import, the estimate, and the alignment and energy arithmetic on synthetic data with known answers."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from buildutil import ROOT
from llmcu.errors import OptionError
from llmcu.options import build_options, validate
from llmcu.power import PowerSettings, check_choice, make_meter, measure_during, power_settings
from llmcu.power.base import MeterError, Samples
from llmcu.power.csvmeter import CsvMapping, parse_mapping, read_csv
from llmcu.power.energy import analyse, integrate, write_power
from llmcu.power.estimate import ANCHORS, EstimateMeter, RunCurrentModel
from llmcu.power.lpm01a import Lpm01aMeter, StreamParser, decode_ascii_sample, decode_binary_sample
from llmcu.power.runrecord import load_run
from powerutil import make_run_dir

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


def test_alignment_needs_markers_or_marks(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path, tokens=10)
    with pytest.raises(MeterError, match="start_marker_time"):
        analyse(load_run(run_dir), step_samples())


def test_generation_outside_the_samples_is_an_error(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path, tokens=10, markers=(2000.0, 2001.0))  # 1000 s after the meter stopped
    with pytest.raises(MeterError, match="outside the samples"):
        analyse(load_run(run_dir), step_samples())


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


def test_measure_during_starts_first_and_always_stops() -> None:
    events: list[str] = []

    class Recorder:
        name, estimated = "recorder", False

        def start(self) -> None:
            events.append("start")

        def stop(self) -> Samples:
            events.append("stop")
            return Samples("recorder", np.zeros(2), np.zeros(2))

        def close(self) -> None:
            events.append("close")

    result, samples = measure_during(lambda: events.append("run") or "output", Recorder())
    assert (result, len(samples)) == ("output", 2)
    assert events == ["start", "run", "stop", "close"]
    events.clear()

    def failing() -> None:
        events.append("run")
        raise RuntimeError("board did not answer")

    with pytest.raises(RuntimeError, match="did not answer"):
        measure_during(failing, Recorder())
    assert events == ["start", "run", "stop", "close"]


def test_power_options() -> None:
    table = build_options(["host", "stm32h743"], ["260k"])
    assert power_settings(validate({}, table)) == PowerSettings("none", "", 3.3, "board")
    values = validate(
        {"power": "ppk2", "power_port": "/dev/ttyACM3", "power_voltage": "1.8", "power_supply": "meter"}, table
    )
    assert power_settings(values) == PowerSettings("ppk2", "/dev/ttyACM3", 1.8, "meter")
    with pytest.raises(OptionError, match="none, ppk2, lpm01a, estimate"):
        validate({"power": "multimeter"}, table)
    with pytest.raises(OptionError, match=r"0\.8\.\.5\.0"):
        validate({"power_voltage": "12"}, table)


def test_power_choice_by_runner() -> None:
    with pytest.raises(OptionError, match="power=estimate"):
        check_choice(PowerSettings("ppk2"), runner="qemu")
    with pytest.raises(OptionError, match="target=host"):
        check_choice(PowerSettings("estimate"), runner="host")
    check_choice(PowerSettings("estimate"), runner="qemu")
    check_choice(PowerSettings("none"), runner="host")
    assert make_meter(PowerSettings("none"), runner="board") is None
    assert isinstance(make_meter(PowerSettings("estimate"), runner="qemu"), EstimateMeter)
    with pytest.raises(MeterError, match="power_port"):
        make_meter(PowerSettings("lpm01a"), runner="board")


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


def test_estimate_scales_with_the_clock_and_refuses_the_host(tmp_path: Path) -> None:
    assert RunCurrentModel(vos=1, cpu_hz=200e6).current_a == pytest.approx(ANCHORS[1][1] / 2)
    assert RunCurrentModel(run_current_a=0.2).current_a == 0.2
    with pytest.raises(MeterError, match="outside VOS1"):
        RunCurrentModel(vos=1, cpu_hz=480e6)
    run_dir = make_run_dir(tmp_path, tokens=5, cost=1000, unit="ns", target="host")
    with pytest.raises(MeterError, match="counts ns"):
        analyse(load_run(run_dir), EstimateMeter().stop())


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


def test_csv_errors_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("when,amps\n0,1\n")
    with pytest.raises(MeterError, match="no time column"):
        read_csv(path)
    with pytest.raises(MeterError, match="no column 'I'"):
        read_csv(path, CsvMapping(time="when", current="I"))
    with pytest.raises(MeterError, match="unknown current unit"):
        read_csv(path, CsvMapping(time="when", current="amps", current_unit="kA"))
    path.write_text("time,current\n0,1\n1,x\n")
    with pytest.raises(MeterError, match="row 3"):
        read_csv(path)


# ---- LPM01A: a fake shield on a TCP socket (pyserial socket://) ----


class FakeShield(threading.Thread):
    """Speaks the PowerShield command protocol: acks, refusals with an error detail, a streamed acquisition."""

    def __init__(self, stream: str, refuse: dict[str, str] | None = None) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.refuse = refuse or {}
        self.commands: list[str] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]

    def run(self) -> None:
        connection, _ = self.server.accept()
        with connection:
            buffer = b""
            while data := connection.recv(4096):
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    self.answer(connection, line.decode().strip())
        self.server.close()

    def answer(self, connection: socket.socket, command: str) -> None:
        self.commands.append(command)
        name = command.split()[0]
        if command in self.refuse:
            reply = f"PowerShield > error {command}\r\nPowerShield > Error detail: {self.refuse[command]}\r\n"
        elif name == "version":
            reply = "PowerShield > ack version 1.0.7\r\n"
        elif name == "start":
            reply = "PowerShield > ack start\r\n" + self.stream
        elif name == "stop":
            reply = "PowerShield > ack stop\r\nPowerShield > Acquisition completed\r\n"
        else:
            reply = f"PowerShield > ack {command}\r\n"
        connection.sendall(reply.encode())


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


def test_lpm01a_refusal_carries_the_error_detail() -> None:
    shield = FakeShield("", refuse={"freq 5k": "frequency not compatible with acquisition mode"})
    shield.start()
    meter = Lpm01aMeter(f"socket://127.0.0.1:{shield.port}", freq_hz=5000)
    with pytest.raises(MeterError, match="refused 'freq 5k': frequency not compatible"):
        meter.start()
    meter.close()
    shield.join(timeout=5)


def test_lpm01a_silence_is_an_error() -> None:
    server = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    meter = Lpm01aMeter(f"socket://127.0.0.1:{server.getsockname()[1]}", command_timeout_s=0.3)
    with pytest.raises(MeterError, match="no answer from the LPM01A"):
        meter.start()
    meter._serial.close()
    server.close()


def test_lpm01a_settings_are_checked() -> None:
    with pytest.raises(MeterError, match=r"1\.8-3\.3 V"):
        Lpm01aMeter("loop://", voltage_v=5.0)
    with pytest.raises(MeterError, match="bin_hexa"):
        Lpm01aMeter("loop://", freq_hz=20_000)
    with pytest.raises(MeterError, match="not one of"):
        Lpm01aMeter("loop://", freq_hz=3_000)


def test_lpm01a_sample_decoding() -> None:
    assert decode_ascii_sample("6409-07") == pytest.approx(640.9e-6)
    assert decode_ascii_sample("1234+00") == 1234.0
    assert decode_binary_sample(0x52, 0xA0) == pytest.approx(640.9e-6, rel=1e-4)  # UM2269's example


def test_lpm01a_ascii_metadata_and_overcurrent() -> None:
    parser = StreamParser(binary=False)
    for chunk in (b"1000-0", b"4\r\n2000-04\r\nevent 1 ris\r\n", b"PowerShield > Error: overcurrent\r\n", b"end\r\n"):
        parser.feed(chunk)
    assert list(parser.values) == pytest.approx([0.1, 0.2])
    assert parser.events == [(2, "ris")] and parser.ended
    assert parser.errors == ["Error: overcurrent"]


def test_lpm01a_binary_stream_byte_by_byte() -> None:
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


def test_ppk2_source_mode_stream_decoding(fake_ppk2: type[FakePpk2], tmp_path: Path) -> None:
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
    assert any("dropped 3 PPK2 samples" in w for w in samples.warnings)
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


def test_ppk2_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmcu.power.ppk2 import Ppk2Meter

    monkeypatch.setitem(sys.modules, "ppk2_api", None)
    with pytest.raises(MeterError, match="pip install 'ppk2-api"):
        Ppk2Meter("/dev/ttyACM0").start()
    with pytest.raises(MeterError, match="divide"):
        Ppk2Meter("/dev/ttyACM0", sample_rate_hz=3000)


def test_ppk2_silent_port_is_not_a_ppk2(fake_ppk2: type[FakePpk2], monkeypatch: pytest.MonkeyPatch) -> None:
    from llmcu.power.ppk2 import Ppk2Meter

    monkeypatch.setattr(FakePpk2, "write", lambda self, data: len(data))  # never answers
    with pytest.raises(MeterError, match="did not send PPK2 calibration metadata"):
        Ppk2Meter("/dev/ttyUSB0").start()


def test_measured_run_end_to_end(tmp_path: Path) -> None:
    """The run path's wiring: the meter starts, the run is captured into a RunLog (which notes when the start
    and end lines arrive), the meter stops, and power.json lands in the log folder."""
    from llmcu.protocol import parse
    from llmcu.runlog import RunInfo, RunLog
    from powerutil import protocol_stream

    shield = FakeShield(shield_stream())  # 1 s of samples at 1 kHz: 100 mA, then 25 mA
    shield.start()
    meter = make_meter(PowerSettings("lpm01a", f"socket://127.0.0.1:{shield.port}", 3.3), runner="board")
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
