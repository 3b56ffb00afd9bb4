"""Hardware-in-the-loop tests: the same tests on a board (flashed through its probe, read over its UART, or
borrowed from a labgrid farm) and on the target's QEMU twin. See plugin.py for the pytest side."""

from .device import BoardDevice, Device, DeviceError, DeviceInfo, QemuDevice
from .hwmap import BoardEntry, HardwareMap, HardwareMapError, LabgridSpec, load_hardware_map, parse_hardware_map
from .selection import HilSelectionError, ProbeScan, Selection, select

__all__ = [
    "BoardDevice",
    "BoardEntry",
    "Device",
    "DeviceError",
    "DeviceInfo",
    "HardwareMap",
    "HardwareMapError",
    "HilSelectionError",
    "LabgridSpec",
    "ProbeScan",
    "QemuDevice",
    "Selection",
    "load_hardware_map",
    "parse_hardware_map",
    "select",
]
