"""Which chip is behind the probe, read through the debugger before anything is written: its part (DEV_ID) and
silicon revision, its internal flash size, and its readout protection level, from the registers the target's
[chip] table names (llmcu.platform.targets.ChipIdentity)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..platform.targets import ChipIdentity, format_size
from .flasherrors import LockedChipError, WrongTargetError
from .probes import ProbeInfo, pyocd_exceptions

# Names of ST parts by DEV_ID, to say what a wrong chip is (RM0433, RM0455, RM0468, RM0385, RM0410, RM0090).
KNOWN_DEV_IDS = {
    0x450: "STM32H742/743/750/753",
    0x480: "STM32H7A3/7B3/7B0",
    0x483: "STM32H723/725/730/733/735",
    0x449: "STM32F74x/75x",
    0x451: "STM32F76x/77x",
    0x413: "STM32F405/407/415/417",
}


@dataclass(frozen=True)
class ChipInfo:
    dev_id: int
    revision: int
    flash_bytes: int  # internal flash, from the flash size register
    revision_name: str  # the errata's name for the revision (Y, V, ...), or its ID in hex

    @property
    def name(self) -> str:
        part = KNOWN_DEV_IDS.get(self.dev_id, hex(self.dev_id))
        return f"{part} rev {self.revision_name}, {format_size(self.flash_bytes)} flash"


def identify_chip(target: Any, probe: ProbeInfo, chip: ChipIdentity) -> ChipInfo:
    """Check that the chip behind the probe is one ``chip`` (the target's [chip] table) describes, and that the
    debugger may read and write its flash. ``target``: pyOCD's target of the open session."""
    exceptions = pyocd_exceptions()
    try:
        idc = target.read32(chip.idcode_address)
    except exceptions.TransferFaultError:
        raise WrongTargetError(
            f"the chip behind probe {probe.uid} is not an {chip.name}: reading its ID code at "
            f"{chip.idcode_address:#010x} faulted; connect the probe to the {chip.name} board, or choose its probe "
            "with probe=UID"
        ) from None
    dev_id, revision = idc & 0xFFF, idc >> 16
    if dev_id not in chip.dev_ids:
        name = KNOWN_DEV_IDS.get(dev_id, "unknown to llmcu")
        expected = ", ".join(f"{known:#05x} ({KNOWN_DEV_IDS.get(known, chip.name)})" for known in chip.dev_ids)
        raise WrongTargetError(
            f"the chip behind probe {probe.uid} is not an {chip.name}: DBGMCU_IDC DEV_ID is {dev_id:#05x} ({name}), "
            f"expected {expected}; connect the probe to the {chip.name} board, or choose its probe with probe=UID"
        )
    size_kb = target.read16(chip.flash_size_address)
    flash_bytes = size_kb * 1024 if 0 < size_kb < 0xFFFF else 2 << 20
    rdp = target.read32(chip.rdp_address) >> 8 & 0xFF
    if rdp != chip.rdp_level0:
        level = 2 if rdp == chip.rdp_level2 else 1
        advice = (
            "level 2 is permanent: this chip cannot be reprogrammed through the debug port"
            if level == 2
            else "going back to level 0 erases the whole flash; do it deliberately, e.g. "
            "`STM32_Programmer_CLI -c port=SWD -ob RDP=0xAA`, then flash again"
        )
        raise LockedChipError(
            f"the {chip.name} behind probe {probe.uid} has readout protection level {level} (option bytes RDP = "
            f"{rdp:#04x}): its flash can be neither read nor programmed through the debugger; {advice}"
        )
    return ChipInfo(dev_id, revision, flash_bytes, dict(chip.revisions).get(revision, f"{revision:#06x}"))
