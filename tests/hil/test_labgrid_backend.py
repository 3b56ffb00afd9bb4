"""The labgrid backend (llmcu.hil.labgrid_backend).

Most tests replace labgrid's client layer at its boundary (``LabgridClient``) with a fake coordinator, so they
run without labgrid. The last ones start a real labgrid coordinator and exporter on 127.0.0.1 (labgrid is
optional: they are skipped when it is not installed) and drive a place whose console is the QEMU twin's
serial socket, from acquiring the place to releasing it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llmcu.builder.settings import RunParams
from llmcu.hil import labgrid_backend
from llmcu.hil.board import open_board
from llmcu.hil.firmware import FirmwareBuild
from llmcu.hil.hwmap import LabgridSpec, parse_hardware_map
from llmcu.hil.labgrid_backend import (
    LabgridError,
    LabgridPlace,
    PlaceResources,
    PlaceView,
    ResourceView,
    connect,
    place_state,
)
from support.qemu_board import QemuBoard, free_port

SERIAL = ResourceView("NetworkSerialPort", "NetworkSerialPort", {"host": "lab-host", "port": 4001, "speed": 115200,
                      "protocol": "rfc2217", "extra": {"proxy": "lab-host", "proxy_required": False}})  # fmt: skip
DEBUGGER = ResourceView("NetworkUSBDebugger", "NetworkUSBDebugger", {"host": "lab-host", "busnum": 1, "devnum": 4,
                        "path": "1-1.2", "vendor_id": 0x0483, "model_id": 0x374B})  # fmt: skip


@dataclass
class FakeCoordinator:
    """The coordinator as the backend sees it; ``log`` records every call."""

    places: dict[str, PlaceView] = field(default_factory=dict)
    resources: dict[str, list[ResourceView]] = field(default_factory=dict)
    log: list[tuple] = field(default_factory=list)
    fail_connect: str = ""

    def connect(self, address: str) -> FakeClient:
        self.log.append(("connect", address))
        if self.fail_connect:
            raise LabgridError(self.fail_connect)
        return FakeClient(self, address)


@dataclass
class FakeClient:
    coordinator: FakeCoordinator
    address: str

    def places(self) -> dict[str, PlaceView]:
        return dict(self.coordinator.places)

    def acquire(self, place: str) -> None:
        self.coordinator.log.append(("acquire", place))
        self.coordinator.places[place] = PlaceView(place, "me/tester", self.coordinator.places[place].tags)

    def release(self, place: str) -> None:
        self.coordinator.log.append(("release", place))
        self.coordinator.places[place] = PlaceView(place, "", self.coordinator.places[place].tags)

    def resources(self, place: str) -> list[ResourceView]:
        return self.coordinator.resources.get(place, [])

    def forward(self, proxy: str, host: str, port: int) -> tuple[str, int]:
        self.coordinator.log.append(("forward", proxy, host, port))
        return "localhost", 40000 + port

    def close(self) -> None:
        self.coordinator.log.append(("close",))


def farm(*resources: ResourceView, tags: dict[str, str] | None = None, acquired: str = "") -> FakeCoordinator:
    coordinator = FakeCoordinator()
    tags = {"pyocd_probe": "remote:lab-host:5555"} if tags is None else tags
    coordinator.places["nucleo-1"] = PlaceView("nucleo-1", acquired, tags)
    coordinator.resources["nucleo-1"] = list(resources)
    return coordinator


SPEC = LabgridSpec(place="nucleo-1", coordinator="lab:20408")


def test_acquire_describe_release() -> None:
    coordinator = farm(SERIAL, DEBUGGER)
    with LabgridPlace(SPEC, coordinator.connect) as resources:
        tags = {"pyocd_probe": "remote:lab-host:5555"}
        assert resources == PlaceResources(
            "nucleo-1", "lab:20408", "rfc2217://lab-host:4001", 115200, "remote:lab-host:5555", "lab-host", tags
        )
        assert coordinator.places["nucleo-1"].acquired == "me/tester"
    assert coordinator.log == [("connect", "lab:20408"), ("acquire", "nucleo-1"), ("release", "nucleo-1"), ("close",)]
    assert coordinator.places["nucleo-1"].acquired == ""


def test_raw_ports_proxies_and_where_the_probe_comes_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LG_PROXY", raising=False)
    raw = ResourceView("NetworkSerialPort", "console", {"host": "10.0.0.7", "port": 5000, "speed": 921600,
                       "protocol": "raw", "extra": {"proxy": "gateway", "proxy_required": True}})  # fmt: skip
    coordinator = farm(raw, tags={"probe_uid": "066A"})
    with LabgridPlace(SPEC, coordinator.connect) as resources:
        assert resources.serial_url == "socket://localhost:45000" and resources.baud == 921600  # through SSH
        assert resources.probe == "066A" and resources.probe_host == ""
    assert ("forward", "gateway", "10.0.0.7", 5000) in coordinator.log
    spec = LabgridSpec(place="nucleo-1", coordinator="lab:20408", probe="remote:rack:6000")
    with LabgridPlace(spec, farm(SERIAL, tags={"probe_uid": "066A"}).connect) as resources:
        assert resources.probe == "remote:rack:6000"  # the hardware map wins over the tags
    monkeypatch.setenv("LG_PROXY", "jump")
    coordinator = farm(SERIAL)
    with LabgridPlace(SPEC, coordinator.connect) as resources:
        assert resources.serial_url == "rfc2217://localhost:44001"
    assert ("forward", "jump", "lab-host", 4001) in coordinator.log


def test_choosing_among_serial_ports() -> None:
    second = ResourceView("NetworkSerialPort", "debug-uart", {**SERIAL.params, "port": 4002})
    with pytest.raises(LabgridError, match=r"several serial ports \(NetworkSerialPort, debug-uart\): name the console"):
        LabgridPlace(SPEC, farm(SERIAL, second).connect).acquire()
    console = ResourceView("NetworkSerialPort", "console", {**SERIAL.params, "port": 4003})
    with LabgridPlace(SPEC, farm(SERIAL, console).connect) as resources:
        assert resources.serial_url.endswith(":4003")
    spec = LabgridSpec(place="nucleo-1", coordinator="lab:20408", serial="debug-uart")
    with LabgridPlace(spec, farm(SERIAL, second).connect) as resources:
        assert resources.serial_url.endswith(":4002")
    spec = LabgridSpec(place="nucleo-1", coordinator="lab:20408", serial="uart9")
    with pytest.raises(LabgridError, match=r"no NetworkSerialPort named 'uart9' \(it has: NetworkSerialPort, debug"):
        LabgridPlace(spec, farm(SERIAL, second).connect).acquire()


@pytest.mark.parametrize(
    ("coordinator", "message"),
    [
        (farm(DEBUGGER), r"has no serial port \(NetworkSerialPort\) for the console; it has: NetworkUSBDebugger"),
        (farm(ResourceView("NetworkSerialPort", "s", {"host": "h", "port": None})), r"not exported yet"),
        (farm(ResourceView("NetworkSerialPort", "s", {"host": "h", "port": 1, "protocol": "telnet"})),
         r"uses protocol 'telnet'"),
        (farm(SERIAL, ResourceView("NetworkUSBDebugger", "probe", {}, avail=False)),
         r"resources not available \(exporter down or device unplugged\): probe"),
    ],
)  # fmt: skip
def test_unusable_places_are_released_again(coordinator: FakeCoordinator, message: str) -> None:
    with pytest.raises(LabgridError, match=message):
        LabgridPlace(SPEC, coordinator.connect).acquire()
    assert coordinator.log[-2:] == [("release", "nucleo-1"), ("close",)]
    assert coordinator.places["nucleo-1"].acquired == ""


def test_places_that_cannot_be_had() -> None:
    coordinator = farm(SERIAL, acquired="other-host/alice")
    with pytest.raises(LabgridError, match="labgrid place nucleo-1 is acquired by other-host/alice"):
        LabgridPlace(SPEC, coordinator.connect).acquire()
    assert ("acquire", "nucleo-1") not in coordinator.log and coordinator.log[-1] == ("close",)
    with pytest.raises(LabgridError, match=r"place rack-9 does not exist at lab:20408 \(places: nucleo-1\)"):
        LabgridPlace(LabgridSpec("rack-9", "lab:20408"), farm(SERIAL).connect).acquire()


def test_place_state_for_the_automatic_choice() -> None:
    assert place_state(SPEC, farm(SERIAL).connect) == ""
    assert place_state(SPEC, farm(SERIAL, acquired="h/u").connect) == "labgrid place nucleo-1 is acquired by h/u"
    assert place_state(LabgridSpec("x", "lab:20408"), farm(SERIAL).connect) == (
        "labgrid place x does not exist at lab:20408"
    )
    down = FakeCoordinator(fail_connect="cannot reach the labgrid coordinator at lab:20408: no answer")
    assert place_state(SPEC, down.connect) == "cannot reach the labgrid coordinator at lab:20408: no answer"


def test_without_labgrid_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in sys.modules if name == "labgrid" or name.startswith("labgrid.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "labgrid", None)  # import labgrid -> ImportError
    with pytest.raises(LabgridError, match=r"labgrid is not installed: pip install labgrid"):
        connect("127.0.0.1:20408")
    assert place_state(SPEC).startswith("the hardware map names a labgrid place, but labgrid is not installed")
    assert not labgrid_backend.labgrid_available()


def test_a_board_from_a_place_without_a_probe_is_an_error(hil_firmware: FirmwareBuild) -> None:
    coordinator = farm(SERIAL, DEBUGGER, tags={})
    entry = parse_hardware_map([{"platform": "stm32h743", "labgrid": {"place": "nucleo-1",
                                 "coordinator": "lab:20408"}}]).entries[0]  # fmt: skip
    with pytest.raises(Exception, match=r"names no probe: tag it .*pyocd_probe=remote:lab-host:5555"):
        open_board(entry, hil_firmware, labgrid_connect=coordinator.connect)
    assert coordinator.places["nucleo-1"].acquired == ""  # released again


# ---- a real coordinator and exporter on loopback ----

LABGRID_BIN = Path(sys.executable).parent


def labgrid_tool(name: str) -> str:
    found = LABGRID_BIN / name
    return str(found) if found.is_file() else (shutil.which(name) or name)


@dataclass
class Lab:
    address: str
    env: dict[str, str]
    console_port: int = 0  # the exporter's NetworkSerialPort points here

    def client(self, *args: str) -> str:
        result = subprocess.run([labgrid_tool("labgrid-client"), "-x", self.address, *args], check=True,
                                env=self.env, capture_output=True, text=True, timeout=30)  # fmt: skip
        return result.stdout

    def holder(self, place: str) -> str:
        """Who holds ``place``, asked by labgrid-client: labgrid allows one client session per process, so a
        second one cannot be opened here while the backend holds its own."""
        for line in self.client("-p", place, "show").splitlines():
            key, _, value = line.strip().partition(": ")
            if key == "acquired":
                return "" if value == "None" else value
        raise AssertionError(f"no `acquired` line for {place}")


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A coordinator and an exporter on 127.0.0.1 with one place, nucleo-1: its console a NetworkSerialPort
    (raw) that is the QEMU board's serial socket, its probe a tag."""
    pytest.importorskip("labgrid", reason="labgrid is optional (pip install labgrid)")
    tmp_path = tmp_path_factory.mktemp("lab")
    address = f"127.0.0.1:{free_port()}"
    console_port = free_port()  # where the farm test's QEMU board will listen
    env = {**os.environ, "LG_HOSTNAME": "llmcu-test", "LG_USERNAME": "tester"}
    (tmp_path / "exporter.yaml").write_text(
        "nucleo:\n  NetworkSerialPort:\n    host: 127.0.0.1\n"
        f"    port: {console_port}\n    speed: 115200\n    protocol: raw\n"
    )
    logs = [open(tmp_path / name, "w") for name in ("coordinator.log", "exporter.log")]  # noqa: SIM115
    processes = [subprocess.Popen([labgrid_tool("labgrid-coordinator"), "-l", address], cwd=tmp_path,
                                  stdout=logs[0], stderr=subprocess.STDOUT, env=env)]  # fmt: skip
    try:
        wait_for(lambda: "Coordinator ready" in (tmp_path / "coordinator.log").read_text(), 20, "coordinator ready")
        processes.append(subprocess.Popen([labgrid_tool("labgrid-exporter"), "-c", address, "-n", "exp1",
                                           "--hostname", "127.0.0.1", "exporter.yaml"], cwd=tmp_path,
                                          stdout=logs[1], stderr=subprocess.STDOUT, env=env))  # fmt: skip
        wait_for(lambda: "Exporter ready" in (tmp_path / "exporter.log").read_text(), 20, "exporter ready")
        lab = Lab(address, env, console_port)
        lab.client("-p", "nucleo-1", "create")
        lab.client("-p", "nucleo-1", "add-match", "exp1/nucleo/*")
        lab.client("-p", "nucleo-1", "set-tags", "pyocd_probe=remote:127.0.0.1:5555")
        yield lab
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in logs:
            log.close()


@pytest.mark.farm
def test_a_real_coordinator(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real client layer: the place's state, acquire, resources, release."""
    monkeypatch.setenv("LG_HOSTNAME", "llmcu-test")
    monkeypatch.setenv("LG_USERNAME", "tester")
    spec = LabgridSpec("nucleo-1", lab.address)
    assert place_state(spec) == ""
    assert (
        place_state(LabgridSpec("nucleo-2", lab.address)) == f"labgrid place nucleo-2 does not exist at {lab.address}"
    )
    with LabgridPlace(spec) as resources:
        assert resources.serial_url.startswith("socket://127.0.0.1:") and resources.baud == 115200
        assert resources.probe == "remote:127.0.0.1:5555"
        assert lab.holder("nucleo-1") == "llmcu-test/tester"
    assert place_state(spec) == "" and lab.holder("nucleo-1") == ""
    alice = Lab(lab.address, {**lab.env, "LG_USERNAME": "alice"})
    alice.client("-p", "nucleo-1", "acquire")
    assert place_state(spec) == "labgrid place nucleo-1 is acquired by llmcu-test/alice"
    with pytest.raises(LabgridError, match="is acquired by llmcu-test/alice"):
        LabgridPlace(spec).acquire()
    alice.client("-p", "nucleo-1", "release")
    assert "cannot reach the labgrid coordinator" in place_state(LabgridSpec("x", f"127.0.0.1:{free_port()}"))


@pytest.mark.farm
@pytest.mark.skipif(shutil.which("qemu-system-arm") is None, reason="qemu-system-arm missing")
def test_a_board_in_the_farm(lab: Lab, hil_firmware: FirmwareBuild, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hardware map entry -> acquired place -> console URL from the exporter -> flash, reset, run -> released."""
    pytest.importorskip("serial")
    monkeypatch.setenv("LG_HOSTNAME", "llmcu-test")
    monkeypatch.setenv("LG_USERNAME", "tester")
    entry = parse_hardware_map([{"platform": "stm32h743", "labgrid": {"place": "nucleo-1",
                                 "coordinator": lab.address}}]).entries[0]  # fmt: skip
    assert hil_firmware.twin_elf is not None
    qemu_board = QemuBoard(hil_firmware.twin_elf, lab.console_port)
    device = open_board(entry, hil_firmware, programmer=qemu_board)
    try:
        assert qemu_board.flashed[0].probe == "remote:127.0.0.1:5555"
        assert device.info.properties["labgrid_place"] == f"nucleo-1@{lab.address}"
        out = device.run(RunParams("Once upon a time", 8, 0.0, 0.9, 1))
        assert out.ok and len(out.tokens) == 8
        assert lab.holder("nucleo-1") == "llmcu-test/tester"  # held while the device is open
    finally:
        device.close()
        qemu_board.stop()
    assert place_state(entry.labgrid) == ""  # released with the device
