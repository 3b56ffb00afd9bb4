"""Test doubles for flashing an STM32H743 through pyOCD with no probe attached.

Only the probe layer is replaced: ``FakeFactory`` lists probes and opens ``FakeSession``s whose target
answers the way pyOCD's ``stm32h743xx`` target does for the calls llmcu and pyOCD's own flash code make
(``read32``, ``read_memory_block8``, ``write_core_registers_raw``, ``resume``, ...). Above it everything is
pyOCD's: ``MemoryLoader``, ``FlashBuilder``, ``MemoryMap``/``FlashRegion``, its options, and for the QSPI
flash its ``Flash`` class running llmcu's flash algorithm, which here executes in unicorn against the
QUADSPI and NOR flash models of ``flashalgo_emu``. Internal flash is programmed by ``ChipFlash`` (a pyOCD
``Flash`` subclass standing in for pyOCD's built-in STM32H743 algorithm, which needs the real flash
controller). A ``FakeChip`` keeps its flash across sessions, as a board does across reconnects.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pyocd.core import exceptions
from pyocd.core.memory_map import FlashRegion, MemoryMap, RamRegion
from pyocd.core.options_manager import OptionsManager
from pyocd.core.target import Target
from pyocd.flash.flash import Flash
from unicorn import arm_const as arm

from llmcu.core.paths import TARGETS_DIR
from llmcu.device.probes import ProbeInfo
from llmcu.platform.targets import load_target
from support.flashalgo_emu import DTCM, QSPI_WINDOW, BusFault, Machine

STM32H743 = load_target("stm32h743", TARGETS_DIR)
CHIP = STM32H743.chip  # the registers flashing reads to identify the part (targets/stm32h743/target.toml [chip])
assert CHIP is not None

INTERNAL_FLASH = 0x08000000
BANK_SIZE, SECTOR, PAGE = 0x100000, 0x20000, 0x400  # as pyOCD's stm32h743xx target describes them
REGISTERS = {
    0: arm.UC_ARM_REG_R0,
    1: arm.UC_ARM_REG_R1,
    2: arm.UC_ARM_REG_R2,
    3: arm.UC_ARM_REG_R3,
    9: arm.UC_ARM_REG_R9,
}
REGISTER_NAMES = {"r0": 0, "r1": 1, "r2": 2, "r3": 3, "r9": 9}


@dataclass
class FakeChip:
    """The board: chip identity, option bytes, internal flash, and a Machine for DTCM and the QSPI flash."""

    dev_id: int = 0x450
    revision: int = 0x2003
    flash_kb: int = 2048
    rdp: int = 0xAA
    machine: Machine = field(default_factory=Machine)
    internal: bytearray = field(default_factory=lambda: bytearray(b"\xff" * (2 << 20)))
    stuck_zero: dict[int, int] = field(default_factory=dict)  # address -> bits that read 0 after programming
    write_protected: set[int] = field(default_factory=set)  # internal sectors whose erase fails (WRPSN)
    idc_faults: bool = False  # DBGMCU_IDC does not exist: not an STM32H7
    erased: list[int] = field(default_factory=list)  # internal sector addresses, in order
    programmed: list[int] = field(default_factory=list)  # internal page addresses, in order
    resets: int = 0

    def read(self, address: int, size: int) -> bytes:
        if INTERNAL_FLASH <= address < INTERNAL_FLASH + len(self.internal):
            offset = address - INTERNAL_FLASH
            return bytes(self.internal[offset : offset + size])
        if DTCM[0] <= address < DTCM[0] + DTCM[1]:
            return bytes(self.machine.uc.mem_read(address, size))
        if QSPI_WINDOW <= address < QSPI_WINDOW + 0x10000000:
            try:
                return self.machine.read_window(address, size)
            except BusFault as fault:
                raise exceptions.TransferFaultError(str(fault), fault_address=address, length=size) from None
        raise exceptions.TransferFaultError("no memory", fault_address=address, length=size)


class ChipFlash(Flash):
    """Internal flash programmed straight into ``FakeChip.internal`` (erase: 0xFF; program: clears bits)."""

    def __init__(self, target: FakeTarget, chip: FakeChip) -> None:
        super().__init__(target, None)
        self.chip = chip

    @property
    def is_erase_all_supported(self) -> bool:
        return False

    def init(self, operation: Flash.Operation, address: int | None = None, clock: int = 0, reset: bool = False) -> None:
        self.target.transfer()
        self._active_operation = operation

    def uninit(self) -> None:
        self._active_operation = None

    def cleanup(self) -> None:
        self.uninit()

    def erase_sector(self, address: int) -> None:
        self.target.transfer()
        assert address % SECTOR == 0, address
        if address in self.chip.write_protected:
            raise exceptions.FlashEraseFailure("flash erase sector failure", address=address, result_code=1)
        offset = address - INTERNAL_FLASH
        self.chip.internal[offset : offset + SECTOR] = b"\xff" * SECTOR
        self.chip.erased.append(address)

    def program_page(self, address: int, data: Any) -> None:
        self.target.transfer()
        assert address % PAGE == 0 and len(data) == PAGE, (address, len(data))
        offset = address - INTERNAL_FLASH
        for index, byte in enumerate(data):
            self.chip.internal[offset + index] &= byte & ~self.chip.stuck_zero.get(address + index, 0)
        self.chip.programmed.append(address)


class FakeTarget:
    """What pyOCD's stm32h743xx target offers to llmcu and to pyOCD's flash code."""

    def __init__(
        self, session: FakeSession, chip: FakeChip, fail_after: int | None, fail_with: type[Exception]
    ) -> None:
        self.session = session
        self.chip = chip
        self.fail_after = fail_after
        self.fail_with = fail_with
        self.transfers = 0
        self.gone = False
        self.selected_core = SimpleNamespace(node_name="cm7")
        self.debug_sequence_delegate = None
        self.registers: dict[str, int] = {}
        self.memory_map = MemoryMap(
            FlashRegion(
                start=INTERNAL_FLASH, length=BANK_SIZE, sector_size=SECTOR, page_size=PAGE, is_boot_memory=True
            ),
            FlashRegion(start=INTERNAL_FLASH + BANK_SIZE, length=BANK_SIZE, sector_size=SECTOR, page_size=PAGE),
            RamRegion(start=DTCM[0], length=DTCM[1]),
        )
        for region in self.memory_map:
            if region.is_flash:
                region.flash = ChipFlash(self, chip)
                region.flash.region = region

    def transfer(self) -> None:
        """One exchange with the probe; fails for good once the probe has been 'unplugged'."""
        self.transfers += 1
        if self.fail_after is not None and self.transfers > self.fail_after:
            self.gone = True
        if self.gone:
            raise self.fail_with("the probe stopped answering")

    # ---- memory ----

    def read32(self, address: int) -> int:
        self.transfer()
        if address == CHIP.idcode_address:
            if self.chip.idc_faults:
                raise exceptions.TransferFaultError("bus error", fault_address=address, length=4)
            return self.chip.revision << 16 | 0x6000 | self.chip.dev_id
        if address == CHIP.rdp_address:
            return 0x1A0000F0 | self.chip.rdp << 8
        return int.from_bytes(self.chip.read(address, 4), "little")

    def read16(self, address: int) -> int:
        self.transfer()
        if address == CHIP.flash_size_address:
            return self.chip.flash_kb
        return int.from_bytes(self.chip.read(address, 2), "little")

    def read_memory_block8(self, address: int, size: int) -> list[int]:
        self.transfer()
        return list(self.chip.read(address, size))

    def write_memory_block8(self, address: int, data: Any) -> None:
        self.transfer()
        self.chip.machine.write_ram(address, bytes(data))

    def write_memory_block32(self, address: int, words: Any) -> None:
        self.transfer()
        self.chip.machine.write_ram(address, b"".join(int(word).to_bytes(4, "little") for word in words))

    def write32(self, address: int, value: int) -> None:
        self.write_memory_block32(address, [value])

    # ---- the core, for running a flash algorithm ----

    def halt(self) -> None:
        self.transfer()

    def reset_and_halt(self, reset_type: Any = None) -> None:
        self.transfer()

    def reset(self, reset_type: Any = None) -> None:
        self.transfer()
        self.chip.resets += 1

    def get_state(self) -> Target.State:
        self.transfer()
        return Target.State.HALTED

    def write_core_registers_raw(self, names: list[str], values: list[int]) -> None:
        self.transfer()
        self.registers.update(zip(names, values, strict=True))

    def read_core_register(self, name: str) -> int:
        self.transfer()
        uc = self.chip.machine.uc
        if name in REGISTER_NAMES:
            return uc.reg_read(REGISTERS[REGISTER_NAMES[name]])
        return {"ipsr": 0, "sp": uc.reg_read(arm.UC_ARM_REG_SP), "pc": uc.reg_read(arm.UC_ARM_REG_PC)}[name]

    def resume(self) -> None:
        """Run the registers pyOCD set (pc, r0-r3, r9, sp, lr) to the breakpoint LR points at."""
        self.transfer()
        uc = self.chip.machine.uc
        for name, value in self.registers.items():
            if name in REGISTER_NAMES:
                uc.reg_write(REGISTERS[REGISTER_NAMES[name]], value)
            elif name == "sp":
                uc.reg_write(arm.UC_ARM_REG_SP, value)
            elif name == "lr":
                uc.reg_write(arm.UC_ARM_REG_LR, value)
        pc, stop = self.registers["pc"], self.registers["lr"] & ~1
        self.registers = {}
        self.chip.machine.run(pc, stop)


class FakeSession:
    """The parts of a pyOCD Session that llmcu and pyOCD's flash code use."""

    def __init__(
        self,
        probe: ProbeInfo,
        chip: FakeChip,
        options: dict,
        fail_after: int | None,
        fail_with: type[Exception] = exceptions.ProbeDisconnected,
    ) -> None:
        self.probe = SimpleNamespace(unique_id=probe.uid, description=probe.description)
        self.options = OptionsManager()
        self.options.add_front(dict(options))
        self.context_state = SimpleNamespace()
        self.target = FakeTarget(self, chip, fail_after, fail_with)
        self.board = SimpleNamespace(target=self.target)
        self.closed = False

    def notify(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        if self.target.gone:
            raise self.target.fail_with("the probe stopped answering")
        self.closed = True


class FakeFactory:
    """Probes, and a session on ``chip`` for whichever is opened."""

    def __init__(
        self,
        probes: list[ProbeInfo],
        chip: FakeChip | None = None,
        *,
        fail_after: int | None = None,
        fail_with: type[Exception] = exceptions.ProbeDisconnected,
        open_error: BaseException | None = None,
    ) -> None:
        self._probes = probes
        self.chip = chip or FakeChip()
        self.fail_after = fail_after
        self.fail_with = fail_with
        self.open_error = open_error
        self.sessions: list[FakeSession] = []
        self.opened: list[tuple[ProbeInfo, dict]] = []

    def probes(self) -> list[ProbeInfo]:
        return list(self._probes)

    def open(self, probe: ProbeInfo, options: dict) -> FakeSession:
        self.opened.append((probe, dict(options)))
        if self.open_error is not None:
            raise self.open_error
        session = FakeSession(probe, self.chip, options, self.fail_after, self.fail_with)
        self.sessions.append(session)
        return session


def write_elf(path: Path, segments: list[tuple[int, bytes]]) -> Path:
    """A minimal ARM ELF executable whose PT_LOAD segments load ``segments`` (address, bytes)."""
    header_size, phentsize = 52, 32
    offset = header_size + phentsize * len(segments)
    headers, blobs = b"", b""
    for address, data in segments:
        headers += struct.pack("<IIIIIIII", 1, offset + len(blobs), address, address, len(data), len(data), 5, 4)
        blobs += data
    ident = b"\x7fELF\x01\x01\x01" + b"\0" * 9
    elf_header = ident + struct.pack(
        "<HHIIIIIHHHHHH", 2, 40, 1, segments[0][0], header_size, 0, 0x05000000, header_size, phentsize,
        len(segments), 40, 0, 0,
    )  # fmt: skip
    path.write_bytes(elf_header + headers + blobs)
    return path
