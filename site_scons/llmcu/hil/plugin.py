"""pytest plugin: hardware-in-the-loop tests that run on a board when one is attached, else on the QEMU twin.

Options::

    --target NAME          the firmware target under test (default stm32h743)
    --hil auto|board|qemu  auto (default): a connected board of the hardware map, else the QEMU twin
    --hardware-map PATH    YAML list of boards (llmcu.hil.hwmap): probe id, serial port, baud, labgrid place
    --hil-model, --hil-quant, --hil-build-dir   what firmware to build (260k, q8, a temporary directory)

Fixtures: ``device`` (session scope) is a ready ``llmcu.hil.device.Device``: flashed, reset and with its
console open on a board; the twin's ELF on QEMU. ``hil_selection`` says which and why, ``hil_firmware`` is
the build (model, quant, ELF files), and ``hil_build_env`` (override it) adds environment variables to the
build, e.g. LLMCU_MODELS.

The choice is printed after collection and in the terminal summary (``HIL: stm32h743 on QEMU twin qemu-m7
(no board in hardware map)``), and written into JUnit XML (``--junitxml``) as test-suite properties ``hil``,
``hil_target``, ``hil_device``, ``hil_reason`` and as a ``hil`` property of each test that uses the device.

Register it with ``pytest_plugins = ["llmcu.hil.plugin"]`` in a conftest.py, or ``-p llmcu.hil.plugin``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ..core.errors import LlmcuError
from ..core.paths import TARGETS_DIR
from ..platform.targets import load_target
from ..power import CHOICES as POWER_CHOICES
from .device import Device
from .hwmap import BoardEntry, HardwareMap, HardwareMapError, LabgridSpec, load_hardware_map
from .labgrid_backend import place_state
from .power import HilPower, settings_for
from .selection import MODES, HilSelectionError, ProbeScan, Selection, scan_probes, select

if TYPE_CHECKING:
    from .device import BoardDevice
    from .firmware import FirmwareBuild

FIXTURE = "device"


@dataclass
class HilState:
    target: str
    twin: str
    mode: str
    hardware_map: HardwareMap | None
    model: str
    quant: str
    build_dir: Path | None
    selection: Selection | None = None

    def choose(self) -> Selection:
        """The selection, made once (it may look for probes or ask a labgrid coordinator)."""
        if self.selection is None:
            # Module-level names, looked up at call time, so tests can replace them.
            self.selection = select(self.mode, self.target, self.twin, self.hardware_map, _probes, _place_state)
        return self.selection


HIL_STATE = pytest.StashKey[HilState]()


def _probes() -> ProbeScan:  # indirections that tests monkeypatch
    return scan_probes()


def _place_state(spec: LabgridSpec) -> str:
    return place_state(spec)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "hardware-in-the-loop tests (llmcu)")
    group.addoption(
        "--target",
        default="stm32h743",
        metavar="NAME",
        help="firmware target under test (a folder of targets/; default: stm32h743)",
    )
    group.addoption(
        "--hil",
        default="auto",
        choices=MODES,
        help="auto: a connected board of the hardware map, else the target's QEMU twin (default); "
        "board: a board or fail; qemu: the QEMU twin",
    )
    group.addoption(
        "--hardware-map",
        default=None,
        metavar="PATH",
        help="YAML list of attached boards: platform, board, id (probe UID), serial, baud, power_meter, "
        "labgrid (see tests/hil/hardware-map.example.yaml)",
    )
    group.addoption("--hil-model", default="260k", metavar="MODEL", help="model of the HIL firmware (default 260k)")
    group.addoption("--hil-quant", default="q8", metavar="QUANT", help="quantization of the HIL firmware (default q8)")
    group.addoption("--hil-build-dir", default=None, metavar="PATH",
                    help="where the HIL firmware is built (default: a temporary directory of the session)")  # fmt: skip
    # The power settings of `scons run` (power=, power_port=, ...), for the hil_power fixture (llmcu.hil.power).
    group.addoption("--hil-power", default="none", choices=POWER_CHOICES,
                    help="meter for hil_power.measure(): ppk2, lpm01a, estimate (default: the hardware map "
                    "entry's power_meter, else none)")  # fmt: skip
    group.addoption("--hil-power-port", default="", metavar="PORT", help="the meter's serial port or pyserial URL")
    group.addoption("--hil-power-voltage", default=3.3, type=float, metavar="V", help="supply voltage (default 3.3)")
    group.addoption("--hil-power-supply", default="board", choices=("board", "meter"),
                    help="PPK2: board = in series with the board's supply, meter = the PPK2 powers it")  # fmt: skip
    group.addoption("--hil-log-dir", default=None, metavar="PATH",
                    help="where hil_power.measure() logs its runs (default: a temporary directory)")  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    target_name = config.getoption("--target")
    try:
        target = load_target(target_name, TARGETS_DIR)
    except LlmcuError as error:
        raise pytest.UsageError(f"--target {target_name}: {error}") from None
    twin = target.qemu_target
    path = config.getoption("--hardware-map")
    hardware_map = None
    if path:
        try:
            hardware_map = load_hardware_map(Path(path), TARGETS_DIR)
        except HardwareMapError as error:
            raise pytest.UsageError(f"--hardware-map: {error}") from None
    build_dir = config.getoption("--hil-build-dir")
    config.stash[HIL_STATE] = HilState(
        target.name, twin, config.getoption("--hil"), hardware_map, config.getoption("--hil-model"),
        config.getoption("--hil-quant"), Path(build_dir).resolve() if build_dir else None,
    )  # fmt: skip


def pytest_report_header(config: pytest.Config) -> str:
    state = config.stash[HIL_STATE]
    where = state.hardware_map.path if state.hardware_map is not None else "none"
    return f"hil: --target {state.target} --hil {state.mode}, hardware map: {where}"


def _uses_device(item: pytest.Item) -> bool:
    return FIXTURE in getattr(item, "fixturenames", ())


def pytest_collection_finish(session: pytest.Session) -> None:
    """Choose the device as soon as it is known that a test needs it, and say so."""
    users = [item for item in session.items if _uses_device(item)]
    if not users:
        return
    state = session.config.stash[HIL_STATE]
    try:
        selection = state.choose()
    except HilSelectionError as error:
        raise pytest.UsageError(str(error)) from None
    for item in users:
        item.user_properties.append(("hil", selection.mode))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(selection.line())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    state = terminalreporter.config.stash.get(HIL_STATE, None)
    if state is not None and state.selection is not None:
        terminalreporter.write_sep("-", "hardware in the loop")
        terminalreporter.write_line(state.selection.line())


@pytest.fixture(scope="session", autouse=True)
def _hil_junit_properties(request: pytest.FixtureRequest) -> None:
    """The choice as JUnit XML test-suite properties (valid in the default xunit2 format)."""
    state = request.config.stash[HIL_STATE]
    if state.selection is None:
        return
    try:
        record = request.getfixturevalue("record_testsuite_property")
    except pytest.FixtureLookupError:  # junitxml disabled (-p no:junitxml)
        return
    for name, value in state.selection.properties().items():
        record(name, value)


@pytest.fixture(scope="session")
def hil_selection(request: pytest.FixtureRequest) -> Selection:
    try:
        return request.config.stash[HIL_STATE].choose()
    except HilSelectionError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def hil_build_env() -> dict[str, str]:
    """Environment variables for the firmware build; a conftest overrides this (e.g. LLMCU_MODELS)."""
    return {}


@pytest.fixture(scope="session")
def hil_firmware(request: pytest.FixtureRequest, hil_selection: Selection, hil_build_env: dict[str, str],
                 tmp_path_factory: pytest.TempPathFactory) -> FirmwareBuild:  # fmt: skip
    """The firmware (and its twin) for the target under test, built once per session."""
    from ..core.errors import ModelNotFoundError
    from .firmware import FirmwareBuildError, build_firmware

    state = request.config.stash[HIL_STATE]
    target = load_target(state.target, TARGETS_DIR)
    if shutil.which(target.cc) is None:
        pytest.skip(f"{target.cc} is not installed (tools/setup.sh installs it)")
    board = hil_selection.entry.board if hil_selection.entry is not None else ""
    build_dir = state.build_dir or tmp_path_factory.mktemp("hil-firmware")
    try:
        return build_firmware(state.target, model=state.model, quant=state.quant, build_dir=build_dir, board=board,
                              env=hil_build_env)  # fmt: skip
    except ModelNotFoundError as error:
        pytest.skip(f"the HIL model is not available: {error}")
    except FirmwareBuildError as error:
        pytest.fail(str(error), pytrace=False)


def open_board(entry: BoardEntry, build: FirmwareBuild) -> BoardDevice:  # an indirection tests monkeypatch
    from .board import open_board as open_real_board

    return open_real_board(entry, build)


@pytest.fixture(scope="session")
def hil_power(
    request: pytest.FixtureRequest, hil_selection: Selection, tmp_path_factory: pytest.TempPathFactory
) -> HilPower:
    """Runs on the device under a meter, with `scons run`'s power settings (llmcu.hil.power)."""
    config = request.config
    entry = hil_selection.entry
    try:
        settings = settings_for(
            config.getoption("--hil-power"), config.getoption("--hil-power-port"),
            config.getoption("--hil-power-voltage"), config.getoption("--hil-power-supply"),
            entry.power_meter if entry is not None else None,
        )  # fmt: skip
    except LlmcuError as error:
        pytest.fail(f"--hil-power: {error}", pytrace=False)
    log_dir = config.getoption("--hil-log-dir")
    state = config.stash[HIL_STATE]
    return HilPower(settings, Path(log_dir).resolve() if log_dir else tmp_path_factory.mktemp("hil-logs"),
                    model=state.model, quant=state.quant, board=entry.board if entry is not None else "")  # fmt: skip


@pytest.fixture(scope="session")
def device(hil_selection: Selection, hil_firmware: FirmwareBuild) -> Iterator[Device]:
    """The device under test, ready for commands: a flashed board, or the QEMU twin."""
    if hil_selection.mode == "qemu":
        from ..device.qemu import QEMU
        from .device import QemuDevice

        if shutil.which(QEMU) is None:
            pytest.skip(f"{QEMU} is not installed (tools/setup.sh installs it)")
        if hil_firmware.twin_elf is None:
            pytest.fail(f"{hil_selection.target} has no QEMU twin build", pytrace=False)
        machine = load_target(hil_selection.twin, TARGETS_DIR).run.machine
        instance: Device = QemuDevice(hil_firmware.twin_elf, hil_selection.target, hil_selection.twin,
                                      machine=machine)  # fmt: skip
    else:
        assert hil_selection.entry is not None
        try:
            instance = open_board(hil_selection.entry, hil_firmware)
        except LlmcuError as error:
            pytest.fail(f"{hil_selection.line()}: could not bring the board up: {error}", pytrace=False)
    try:
        yield instance
    finally:
        instance.close()
