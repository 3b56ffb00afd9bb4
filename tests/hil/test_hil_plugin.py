"""The HIL plugin (llmcu.hil.plugin) and its choice of device (llmcu.hil.selection), with made-up probe lists.

The plugin's own behaviour is checked in inner pytest sessions (pytester, in this process): the line that
says where the tests ran, the JUnit XML properties, and the usage errors. Nothing is built or run there:
the inner tests replace ``hil_firmware`` and, for a board, ``open_board``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import ClassVar

import pytest

from llmcu.hil import plugin
from llmcu.hil.device import DeviceInfo
from llmcu.hil.hwmap import HardwareMap, LabgridSpec, parse_hardware_map
from llmcu.hil.selection import HilSelectionError, ProbeScan, select

UID = "066DFF485550755187121723"
NUCLEO = {"platform": "stm32h743", "board": "nucleo-h743zi", "id": UID, "serial": "/dev/ttyACM0"}


def hwmap(*entries: dict) -> HardwareMap:
    return parse_hardware_map(list(entries), "boards.yaml")


def probes(*uids: str):
    return lambda: ProbeScan(frozenset(uids))


def no_probes_expected() -> ProbeScan:
    raise AssertionError("the probes were listed although no local board needed it")


def no_places_expected(spec: LabgridSpec) -> str:
    raise AssertionError(f"labgrid was asked about {spec.place}")


def choose(mode: str, hardware_map: HardwareMap | None, scan=no_probes_expected, places=no_places_expected):
    return select(mode, "stm32h743", "qemu-m7", hardware_map, scan, places)


# ---- the choice ----


def test_auto_without_a_map_runs_the_twin() -> None:
    selection = choose("auto", None)
    assert selection.mode == "qemu" and selection.entry is None
    assert selection.line() == "HIL: stm32h743 on QEMU twin qemu-m7 (no hardware map given; pass --hardware-map PATH)"


def test_auto_with_a_map_without_the_target() -> None:
    selection = choose("auto", hwmap({"platform": "qemu-m7", "id": "1"}))
    assert selection.line() == "HIL: stm32h743 on QEMU twin qemu-m7 (no board in hardware map; it has qemu-m7 only)"


def test_auto_takes_the_board_whose_probe_is_connected() -> None:
    selection = choose("auto", hwmap(NUCLEO), probes("0000", UID.lower()))  # UIDs compare without case
    assert selection.mode == "board" and selection.entry is not None and selection.entry.id == UID
    assert selection.line() == f"HIL: stm32h743 on board nucleo-h743zi (probe {UID}, /dev/ttyACM0)"
    assert selection.properties() == {"hil": "board", "hil_target": "stm32h743", "hil_device": "nucleo-h743zi",
                                      "hil_reason": f"probe {UID}, /dev/ttyACM0", "hil_probe": UID}  # fmt: skip


def test_auto_falls_back_and_says_why() -> None:
    selection = choose("auto", hwmap(NUCLEO), probes("0000"))
    assert selection.mode == "qemu"
    assert selection.reason == f"probe {UID} of nucleo-h743zi is not connected"
    selection = choose("auto", hwmap(NUCLEO), lambda: ProbeScan(error="pyOCD is not installed (pip install pyocd)"))
    assert selection.reason == "no probe could be listed: pyOCD is not installed (pip install pyocd)"
    assert selection.properties()["hil"] == "qemu" and selection.properties()["hil_device"] == "qemu-m7"


def test_entries_marked_disconnected_are_passed_over() -> None:
    resting = {**NUCLEO, "connected": False}
    other = {"platform": "stm32h743", "board": "h743-sdram-qspi", "id": "0670", "serial": "/dev/ttyUSB0"}
    selection = choose("auto", hwmap(resting, other), probes(UID, "0670"))
    assert selection.entry is not None and selection.entry.board == "h743-sdram-qspi"
    selection = choose("auto", hwmap(resting))  # the probes are not even listed
    assert selection.mode == "qemu" and selection.reason == "nucleo-h743zi is marked connected: false"


def test_labgrid_places() -> None:
    farm = {"platform": "stm32h743", "labgrid": {"place": "rack-1", "coordinator": "lab:20408"}}
    selection = choose("auto", hwmap(farm), places=lambda spec: "")
    assert selection.mode == "board" and selection.line().endswith("(labgrid place rack-1 at lab:20408)")
    assert selection.properties()["hil_labgrid_place"] == "rack-1"
    selection = choose("auto", hwmap(farm), places=lambda spec: f"labgrid place {spec.place} is acquired by h/u")
    assert selection.mode == "qemu" and selection.reason == "labgrid place rack-1 is acquired by h/u"


def test_board_mode_insists_and_lists_every_reason() -> None:
    second = {"platform": "stm32h743", "id": "0670", "serial": "/dev/ttyUSB0"}
    with pytest.raises(HilSelectionError, match=r"--hil board: no usable stm32h743 board: probe .* of nucleo-h743zi "
                       r"is not connected; probe 0670 of stm32h743 is not connected"):  # fmt: skip
        choose("board", hwmap(NUCLEO, second), probes())
    with pytest.raises(HilSelectionError, match="no hardware map given"):
        choose("board", None)
    assert choose("board", hwmap(NUCLEO), probes(UID)).mode == "board"


def test_qemu_mode_and_targets_without_a_twin() -> None:
    assert choose("qemu", hwmap(NUCLEO)).line() == "HIL: stm32h743 on QEMU twin qemu-m7 (--hil qemu)"
    with pytest.raises(HilSelectionError, match="has no QEMU twin"):
        select("qemu", "rzv2l", "", None, no_probes_expected, no_places_expected)
    with pytest.raises(HilSelectionError, match=r"--hil auto: no usable rzv2l board \(no hardware map.*no QEMU twin"):
        select("auto", "rzv2l", "", None, no_probes_expected, no_places_expected)


# ---- the plugin, in inner pytest sessions ----


@pytest.fixture(autouse=True)
def _no_plugin_autoload(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inner sessions load only the HIL plugin: installed plugins (hypothesis, ...) cost seconds per session."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


INNER_TESTS = """
import pytest
from llmcu.hil.firmware import FirmwareBuild
from llmcu.core.paths import TARGETS_DIR
from llmcu.platform.targets import load_target


@pytest.fixture(scope="session")
def hil_firmware(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fw")
    return FirmwareBuild(load_target("stm32h743", TARGETS_DIR), "nucleo-h743zi", "260k", "q8",
                         folder / "firmware.elf", "qemu-m7", folder / "twin.elf", "f16")


def test_uses_the_device(device):
    print("DEVICE", device.info.mode, device.info.runs_on)


def test_does_not(hil_selection):
    assert hil_selection.mode in ("board", "qemu")
"""


class FakeBoard:
    made: ClassVar[list[FakeBoard]] = []

    def __init__(self, entry, build) -> None:
        self.info = DeviceInfo("board", build.target.name, entry.board, "cycles", "fake")
        self.closed = False
        FakeBoard.made.append(self)

    def close(self) -> None:
        self.closed = True


def junit(path: Path) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """(test-suite properties, {test name: its properties}) of a JUnit XML file."""
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    suite_properties = {p.get("name"): p.get("value") for p in suite.findall("properties/property")}
    cases = {case.get("name"): {p.get("name"): p.get("value") for p in case.findall("properties/property")}
             for case in suite.findall("testcase")}  # fmt: skip
    return suite_properties, cases


def test_the_twin_is_announced_and_recorded(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=INNER_TESTS)
    result = pytester.runpytest_inprocess("-p", "llmcu.hil.plugin", "-s", "--junitxml=out.xml")
    result.assert_outcomes(passed=2)
    line = "HIL: stm32h743 on QEMU twin qemu-m7 (no hardware map given; pass --hardware-map PATH)"
    assert result.outlines.count(line) == 2  # after collection and in the summary
    result.stdout.fnmatch_lines(["hil: --target stm32h743 --hil auto, hardware map: none", "*DEVICE qemu qemu-m7",
                                 "*- hardware in the loop -*", line])  # fmt: skip
    suite, cases = junit(pytester.path / "out.xml")
    assert suite["hil"] == "qemu" and suite["hil_target"] == "stm32h743" and suite["hil_device"] == "qemu-m7"
    assert suite["hil_reason"] == "no hardware map given; pass --hardware-map PATH"
    assert cases["test_uses_the_device"] == {"hil": "qemu"} and cases["test_does_not"] == {}


def test_a_connected_board_is_used(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_inner=INNER_TESTS)
    (pytester.path / "boards.yaml").write_text(
        f"- {{platform: stm32h743, board: nucleo-h743zi, id: '{UID}', serial: /dev/ttyACM0}}\n"
    )
    monkeypatch.setattr(plugin, "_probes", lambda: ProbeScan(frozenset({UID})))
    monkeypatch.setattr(plugin, "open_board", FakeBoard)
    FakeBoard.made.clear()
    result = pytester.runpytest_inprocess("-p", "llmcu.hil.plugin", "-s", "--hardware-map", "boards.yaml",
                                          "--junitxml=out.xml")  # fmt: skip
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([f"HIL: stm32h743 on board nucleo-h743zi (probe {UID}, /dev/ttyACM0)",
                                 "*DEVICE board nucleo-h743zi"])  # fmt: skip
    assert len(FakeBoard.made) == 1 and FakeBoard.made[0].closed  # one board per session, closed at its end
    suite, cases = junit(pytester.path / "out.xml")
    assert suite["hil"] == "board" and suite["hil_probe"] == UID and cases["test_uses_the_device"] == {"hil": "board"}

    # The same map with the probe unplugged: the twin, and why.
    monkeypatch.setattr(plugin, "_probes", lambda: ProbeScan(frozenset()))
    result = pytester.runpytest_inprocess("-p", "llmcu.hil.plugin", "-s", "--hardware-map", "boards.yaml")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([f"HIL: stm32h743 on QEMU twin qemu-m7 (probe {UID} of nucleo-h743zi is not "
                                 "connected)", "*DEVICE qemu qemu-m7"])  # fmt: skip


def test_usage_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=INNER_TESTS)
    result = pytester.runpytest_inprocess("-p", "llmcu.hil.plugin", "--hil", "board")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--hil board: no usable stm32h743 board: no hardware map given*"])

    (pytester.path / "bad.yaml").write_text("- {platform: stm32h743, id: 12345}\n")
    result = pytester.runpytest_inprocess("-p", "llmcu.hil.plugin", "--hardware-map", "bad.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--hardware-map: bad.yaml: entry 1 (stm32h743): `id` must be a string*quote it*"])

    result = pytester.runpytest_inprocess("-p", "llmcu.hil.plugin", "--target", "stm32h7")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--target stm32h7:*"])

    result = pytester.runpytest_inprocess("-p", "llmcu.hil.plugin", "--hil", "sometimes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--hil: invalid choice: 'sometimes'*"])


def test_sessions_without_hil_tests_choose_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_one():\n    pass\n")
    result = pytester.runpytest_inprocess("-p", "llmcu.hil.plugin", "--hil", "board")  # would fail if it chose
    result.assert_outcomes(passed=1)
    assert not any(line.startswith("HIL:") for line in result.outlines)
