"""The hardware map (llmcu.hil.hwmap): the example file reads, and every mistake names file, entry and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmcu.hil.hwmap import HardwareMapError, LabgridSpec, load_hardware_map, parse_hardware_map
from support.build import ROOT

EXAMPLE = ROOT / "tests" / "hil" / "hardware-map.example.yaml"
TARGETS = ROOT / "targets"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "map.yaml"
    path.write_text(text)
    return path


def test_the_example_file_reads() -> None:
    hardware_map = load_hardware_map(EXAMPLE, TARGETS)
    nucleo, custom, farm = hardware_map.entries
    assert nucleo.platform == "stm32h743" and nucleo.board == "nucleo-h743zi"
    assert nucleo.id == "066DFF485550755187121723" and nucleo.serial == "/dev/ttyACM0" and nucleo.baud == 115200
    assert nucleo.power_meter is not None and nucleo.power_meter.type == "lpm01a"
    assert nucleo.connected and nucleo.runner == "pyocd" and nucleo.labgrid is None
    assert custom.board == "h743-sdram-qspi" and not custom.connected
    assert farm.labgrid == LabgridSpec("nucleo-farm-1", "lab-coordinator.example:20408", "console")
    assert farm.id == "" and farm.baud == 0  # both come from the place (and the board file)
    assert [entry.index for entry in hardware_map.entries] == [1, 2, 3]
    assert hardware_map.for_platform("stm32h743") == list(hardware_map.entries)
    assert hardware_map.for_platform("qemu-m7") == []


def test_defaults_and_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    hardware_map = parse_hardware_map([{"target": "stm32h743", "id": "ABC"}, {"platform": "stm32h743",
                                       "labgrid": "rack-3"}])  # fmt: skip
    plain, farm = hardware_map.entries
    assert plain.platform == "stm32h743" and plain.board == "" and plain.serial == "" and plain.baud == 0
    assert plain.name == "stm32h743" and plain.connected
    assert farm.labgrid == LabgridSpec("rack-3")  # a string is the place
    monkeypatch.delenv("LG_COORDINATOR", raising=False)
    assert farm.labgrid.address == "127.0.0.1:20408"
    monkeypatch.setenv("LG_COORDINATOR", "lab:20408")
    assert farm.labgrid.address == "lab:20408"
    assert parse_hardware_map(None).entries == ()  # an empty file: no boards


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("platform: stm32h743\n", r"must be a YAML list of boards"),
        ("- stm32h743\n", r"entry 1: must be a mapping"),
        ("- id: 'X'\n", r"entry 1: missing `platform`"),
        ("- {platform: stm32h7, id: 'X'}\n", r"entry 1 \(stm32h7\): unknown platform 'stm32h7'; .*stm32h743"),
        ("- {platform: stm32h743, board: nucleo, id: 'X'}\n", r"unknown board 'nucleo' for stm32h743; .*nucleo-h743zi"),
        ("- {platform: stm32h743, id: 066123}\n", r"`id` must be a string, got the number .*quote it"),
        ("- {platform: stm32h743}\n", r"needs `id` .*pyocd list.* or `labgrid`"),
        ("- {platform: stm32h743, id: 'X', baud: fast}\n", r"`baud` must be a positive whole number"),
        ("- {platform: stm32h743, id: 'X', baud: 0}\n", r"`baud` must be a positive whole number"),
        ("- {platform: stm32h743, id: 'X', connected: yes please}\n", r"`connected` must be true or false"),
        ("- {platform: stm32h743, id: 'X', runner: openocd}\n", r"runner 'openocd' is not supported.*pyocd"),
        ("- {platform: stm32h743, id: 'X', probe: 'Y'}\n", r"entry 1 \(stm32h743\): unknown key probe; known keys"),
        ("- {platform: stm32h743, labgrid: {coordinator: 'a:1'}}\n", r"labgrid needs `place`"),
        ("- {platform: stm32h743, labgrid: {place: p, host: h}}\n", r"labgrid: unknown key host"),
        ("- {platform: stm32h743, id: 'X', power_meter: ppk2}\n", r"`power_meter` must be a mapping"),
        ("- {platform: stm32h743, id: 'X', power_meter: {port: /dev/x}}\n", r"power_meter needs `type`"),
        ("- {platform: stm32h743, id: 'X', serial: ''}\n", r"`serial` is empty"),
        ("- {platform: stm32h743, id: 'AB'}\n- {platform: stm32h743, id: 'ab'}\n",
         r"entry 2 \(stm32h743\): probe id ab is already used by entry 1"),
        ("- {platform: stm32h743, id: 'X'\n", r"not valid YAML"),
    ],
)  # fmt: skip
def test_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(HardwareMapError, match=message) as caught:
        load_hardware_map(path, TARGETS)
    assert str(path) in str(caught.value)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(HardwareMapError, match=r"hardware map .*nowhere.yaml does not exist"):
        load_hardware_map(tmp_path / "nowhere.yaml")


def test_without_a_targets_folder_names_are_not_checked() -> None:
    hardware_map = parse_hardware_map([{"platform": "my-board", "board": "rev-b", "id": "1"}], "inline")
    assert hardware_map.entries[0].board == "rev-b"
