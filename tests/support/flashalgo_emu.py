"""An STM32H743 with a W25Q128JV on its QUADSPI, in unicorn, for running the QSPI flash algorithm.

The CPU is unicorn's Cortex-M7 (Thumb, M profile) with DTCM as RAM. The QUADSPI is a Python model of
RM0433's indirect and memory-mapped modes (what starts a command, BUSY, TCF, FTF, FLEVEL, ABORT, which
registers may be written while busy), and behind it a model of the NOR flash's command set: erase sets
bytes to 0xFF, page program only clears bits and wraps within its page, every erase or program needs the
write enable latch, the flash ignores commands while BUSY and shows BUSY for a few status reads after each
erase, program or status write. RCC, GPIO and the core's DWT/SCB are plain registers (a GPIO or QUADSPI
access with its clock off is a violation). Everything the C does that RM0433 or the datasheet forbids is
noted in ``violations`` rather than raised, so a test sees all of them.

``Machine.load_algo`` places an FLM the way pyOCD does (its own ``get_pyocd_flash_algo`` dict) and
``Machine.call`` calls an entry point the way pyOCD does: arguments in r0-r3, r9 = static base and SP =
the stack top on the first call only, LR = the breakpoint at the start of the loaded block.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from unicorn import UC_ARCH_ARM, UC_MODE_MCLASS, UC_MODE_THUMB, Uc, UcError
from unicorn import arm_const as arm

DTCM = (0x20000000, 0x20000)
QUADSPI = 0x52005000
QSPI_WINDOW = 0x90000000
RCC = 0x58024400
RCC_AHB3ENR = RCC + 0xD4
RCC_AHB4ENR = RCC + 0xE0
GPIO = 0x58020000
DWT_CTRL, DWT_CYCCNT, DEMCR = 0xE0001000, 0xE0001004, 0xE000EDFC
MMIO_WINDOWS = ((0x52000000, 0x10000), (0x58000000, 0x30000), (0x5C001000, 0x1000), (0xE0000000, 0x100000))
QSPI_REGISTERS = ("CR", "DCR", "SR", "FCR", "DLR", "CCR", "AR", "ABR", "DR", "PSMKR", "PSMAR", "PIR", "LPTR")

# Instruction -> (instruction lines, address lines, data lines): W25Q128JV datasheet, "Instructions".
NOR_COMMANDS = {
    0x01: (1, 0, 1),  # write status register 1
    0x02: (1, 1, 1),  # page program
    0x04: (1, 0, 0),  # write disable
    0x05: (1, 0, 1),  # read status register 1
    0x06: (1, 0, 0),  # write enable
    0x20: (1, 1, 0),  # sector erase, 4 KB
    0x31: (1, 0, 1),  # write status register 2
    0x32: (1, 1, 3),  # quad page program
    0x35: (1, 0, 1),  # read status register 2
    0x52: (1, 1, 0),  # block erase, 32 KB
    0x60: (1, 0, 0),  # chip erase
    0x66: (1, 0, 0),  # enable reset
    0x99: (1, 0, 0),  # reset device
    0x9F: (1, 0, 1),  # JEDEC ID
    0xC7: (1, 0, 0),  # chip erase
    0xD8: (1, 1, 0),  # block erase, 64 KB
    # with a 4-byte address (MT25Q, W25Q256): page program, 4 KB, 32 KB and 64 KB erase
    0x12: (1, 1, 1),
    0x21: (1, 1, 0),
    0x5C: (1, 1, 0),
    0xDC: (1, 1, 0),
}
ERASE_SIZES = {0x20: 4 << 10, 0x52: 32 << 10, 0xD8: 64 << 10, 0x21: 4 << 10, 0x5C: 32 << 10, 0xDC: 64 << 10}
FOUR_BYTE = {0x12, 0x21, 0x5C, 0xDC}
WEL, BUSY, QE = 0x02, 0x01, 0x02
LINES = {0: 0, 1: 1, 2: 2, 3: 4}  # QUADSPI_CCR xMODE field -> lines


class BusFault(Exception):
    """A bus error: what the debugger's memory access or the CPU would get."""


@dataclass
class NorFlash:
    """A SPI NOR flash as the QUADSPI sees it: by default the W25Q128JV; ``micron_mt25q`` gives the MT25QL512ABB
    (64 MB, 4-byte addresses, no Quad Enable bit)."""

    size: int = 16 << 20
    jedec_id: tuple[int, int, int] = (0xEF, 0x40, 0x18)
    address_bytes: int = 3  # 4: the chip takes 32-bit addresses (its 4-byte instructions)
    has_qe: bool = True  # False: quad reads work without a Quad Enable bit
    read_command: tuple[int, int] = (0xEB, 4)  # the memory-mapped quad read and its QUADSPI_CCR DCYC
    busy_reads: int = 3  # status reads that still show BUSY after an erase, program or status write
    stuck_busy: bool = False  # BUSY never clears (a dead chip)
    status1: int = 0
    status2: int = 0
    write_protect_pin_low: bool = False  # /WP low with SRP set: the status registers cannot be written
    memory: bytearray = field(default_factory=bytearray)
    busy: int = 0
    violations: list[str] = field(default_factory=list)
    log: list[tuple[int, int | None, int]] = field(default_factory=list)  # (instruction, address, data bytes)
    erased: list[tuple[int, int]] = field(default_factory=list)  # (address, size) of every erase

    def __post_init__(self) -> None:
        if not self.memory:
            self.memory = bytearray(b"\xff" * self.size)

    @classmethod
    def micron_mt25q(cls, **options: object) -> NorFlash:
        return cls(size=64 << 20, jedec_id=(0x20, 0xBA, 0x20), address_bytes=4, has_qe=False,
                   read_command=(0xEC, 8), **options)  # fmt: skip

    def _status1(self) -> int:
        busy = BUSY if self.busy or self.stuck_busy else 0
        return (self.status1 & ~BUSY) | busy

    def execute(self, instruction: int, lines: tuple[int, int, int], address: int | None, data: bytes,
                read_count: int) -> bytes:  # fmt: skip
        """One command with its address and the data the QUADSPI sent; returns the ``read_count`` bytes
        the flash answers."""
        self.log.append((instruction, address, len(data)))
        if lines[0] == 4 and instruction in (0xFF, 0x66, 0x99):
            # The bring-up's mode-bit reset (IO0-IO3 high for ten clocks) and its QPI reset: to a chip in SPI mode,
            # an aborted command it ignores.
            return b""
        expected = NOR_COMMANDS.get(instruction)
        if expected is None:
            self.violations.append(f"instruction {instruction:#04x} is not one the flash knows")
            return b"\xff" * read_count
        if lines != expected:
            self.violations.append(f"instruction {instruction:#04x} sent with lines {lines}, expected {expected}")
        if instruction == 0x05:
            value = self._status1()
            if self.busy:
                self.busy -= 1
            return bytes([value]) * read_count
        if instruction == 0x35:
            return bytes([self.status2]) * read_count
        if instruction == 0x9F:
            return bytes((self.jedec_id + (self.jedec_id[-1],) * read_count)[:read_count])
        if self.busy or self.stuck_busy:
            self.violations.append(f"instruction {instruction:#04x} while the flash is busy (ignored)")
            return b""
        if instruction == 0x06:
            self.status1 |= WEL
            return b""
        if instruction in (0x66, 0x99):
            self.status1 &= ~WEL
            return b""
        if instruction == 0x04:
            self.status1 &= ~WEL
            return b""
        if not self.status1 & WEL:
            self.violations.append(f"instruction {instruction:#04x} without write enable (ignored)")
            return b""
        self.status1 &= ~WEL
        self.busy = self.busy_reads
        if instruction in (0x01, 0x31):
            if self.write_protect_pin_low and self.status1 & 0x80:
                return b""
            if not data:
                self.violations.append(f"status register write {instruction:#04x} without data")
            elif instruction == 0x01:
                self.status1 = (self.status1 & 0x03) | (data[0] & 0xFC)
            else:
                self.status2 = data[0]
            return b""
        protected = self.status1 & 0x7C
        if address is not None and address >= self.size:
            self.violations.append(f"instruction {instruction:#04x} at {address:#x}, beyond the chip's {self.size:#x}")
            return b""
        if instruction in ERASE_SIZES:
            assert address is not None
            size = ERASE_SIZES[instruction]
            start = address & ~(size - 1)
            if not protected:
                self.memory[start : start + size] = b"\xff" * size
                self.erased.append((start, size))
            return b""
        if instruction in (0xC7, 0x60):
            if not protected:
                self.memory[:] = b"\xff" * self.size
                self.erased.append((0, self.size))
            return b""
        assert instruction in (0x02, 0x32, 0x12) and address is not None
        if len(data) > 256:
            self.violations.append(f"page program of {len(data)} bytes: only the last 256 are kept")
        page = address & ~0xFF
        if not protected:
            for index, byte in enumerate(data[-256:]):
                where = page | ((address + index) & 0xFF)  # wraps within the page
                self.memory[where] &= byte
        return b""


class QuadSpi:
    """The QUADSPI peripheral (RM0433) in front of a ``NorFlash``."""

    def __init__(self, machine: Machine, flashes: list[NorFlash]) -> None:
        self.machine = machine
        self.flashes = flashes  # two in dual-flash mode: bank 1's, then bank 2's
        self.flash = flashes[0]
        self.regs = dict.fromkeys(QSPI_REGISTERS, 0)
        self.tcf = False
        self.tef = False
        self.rx = bytearray()  # FIFO towards the CPU
        self.pending: dict | None = None  # a started indirect command waiting for its address or data
        self.mapped_busy = False  # a memory-mapped read left NCS low (TCEN = 0): BUSY until an abort
        self.mapped_reads = 0

    @property
    def violations(self) -> list[str]:
        return self.machine.violations

    @property
    def busy(self) -> bool:
        return self.pending is not None or bool(self.rx) or self.mapped_busy

    def _ccr(self) -> dict[str, int]:
        ccr = self.regs["CCR"]
        return {
            "instruction": ccr & 0xFF,
            "imode": ccr >> 8 & 3,
            "admode": ccr >> 10 & 3,
            "adsize": ccr >> 12 & 3,
            "abmode": ccr >> 14 & 3,
            "absize": ccr >> 16 & 3,
            "dcyc": ccr >> 18 & 0x1F,
            "dmode": ccr >> 24 & 3,
            "fmode": ccr >> 26 & 3,
        }

    def read(self, name: str, size: int) -> int:
        if name == "SR":
            fmode = self.regs["CCR"] >> 26 & 3
            ftf = bool(self.rx) if fmode == 1 else self.pending is not None and self.pending["phase"] == "data"
            return int(self.tef) | int(self.tcf) << 1 | int(ftf) << 2 | int(self.busy) << 5 | min(len(self.rx), 32) << 8
        if name == "DR":
            count = {1: 1, 2: 2, 4: 4}[size]
            if len(self.rx) < count:
                self.violations.append("QUADSPI_DR read with too few bytes in the FIFO")
                self.rx.extend(b"\0" * count)
            value = int.from_bytes(self.rx[:count], "little")
            del self.rx[:count]
            return value
        if name == "CR":
            return self.regs["CR"] & ~2  # ABORT reads 0 once the abort is done (at once here)
        return self.regs[name]

    def write(self, name: str, value: int, size: int) -> None:
        if name == "CR":
            if value & 2:  # ABORT
                self.pending = None
                self.rx.clear()
                self.mapped_busy = False
                value &= ~2
            elif self.busy and (value ^ self.regs["CR"]) & ~1:
                self.violations.append("QUADSPI_CR configuration written while BUSY")
            self.regs["CR"] = value
            return
        if name == "FCR":
            self.tef = self.tef and not value & 1
            self.tcf = self.tcf and not value & 2
            return
        if name == "DR":
            self._data(value.to_bytes(size, "little"))
            return
        if name in ("CCR", "DLR", "ABR", "DCR") and self.busy:
            self.violations.append(f"QUADSPI_{name} written while BUSY (ignored, as RM0433 says)")
            return
        if name == "AR":
            if self.pending is None or self.pending["phase"] != "address":
                self.violations.append("QUADSPI_AR written with no command waiting for an address")
                self.regs["AR"] = value
                return
            self.regs["AR"] = value
            self.pending["address"] = value
            self._continue()
            return
        self.regs[name] = value
        if name == "CCR":
            self._start()

    def _start(self) -> None:
        """CCR was written: start the command now, or wait for its address or data (RM0433)."""
        ccr = self._ccr()
        if ccr["fmode"] == 3:
            return  # memory-mapped: nothing happens until a read of the window
        if ccr["fmode"] == 2:
            self.violations.append("automatic status polling mode is not modelled")
            return
        if not self.regs["CR"] & 1:
            self.violations.append("QUADSPI command configured with the peripheral disabled (CR.EN = 0)")
        self.tcf = False
        self.pending = {"ccr": ccr, "address": None, "data": bytearray(), "phase": ""}
        self._continue()

    def _continue(self) -> None:
        assert self.pending is not None
        ccr = self.pending["ccr"]
        if ccr["admode"] and self.pending["address"] is None:
            self.pending["phase"] = "address"
            return
        if ccr["fmode"] == 0 and ccr["dmode"] and len(self.pending["data"]) < self.regs["DLR"] + 1:
            self.pending["phase"] = "data"
            return
        self._execute()

    def _data(self, data: bytes) -> None:
        if self.pending is None or self.pending["phase"] != "data":
            self.violations.append("QUADSPI_DR written with no indirect write waiting for data")
            return
        self.pending["data"].extend(data)
        expected = self.regs["DLR"] + 1
        if len(self.pending["data"]) > expected:
            self.violations.append(f"{len(self.pending['data'])} bytes written to QUADSPI_DR for DLR + 1 = {expected}")
        if len(self.pending["data"]) >= expected:
            self._execute()

    @property
    def dual(self) -> bool:
        return bool(self.regs["CR"] >> 6 & 1)

    def _execute(self) -> None:
        assert self.pending is not None
        ccr, address, data = self.pending["ccr"], self.pending["address"], bytes(self.pending["data"])
        self.pending = None
        instruction = ccr["instruction"]
        wanted = 3 if instruction in FOUR_BYTE else 2
        if ccr["admode"] and ccr["adsize"] != wanted and not (instruction == 0xFF and ccr["imode"] == 3):
            self.violations.append(f"instruction {instruction:#04x} with ADSIZE {ccr['adsize']}, not {wanted}")
        mode_bits_reset = instruction == 0xFF and ccr["imode"] == 3
        four_byte_chip = self.flash.address_bytes == 4
        if ccr["admode"] and not mode_bits_reset and (instruction in FOUR_BYTE) != four_byte_chip:
            self.violations.append(f"instruction {instruction:#04x}: the chip takes {self.flash.address_bytes}-byte "
                                   "addresses")  # fmt: skip
        lines = (LINES[ccr["imode"]], LINES[ccr["admode"]], LINES[ccr["dmode"]])
        if not self.machine.clock_on(RCC_AHB3ENR, 14):
            self.violations.append("QUADSPI command with its clock off")
        if self.dual != (len(self.flashes) == 2):
            self.violations.append(f"QUADSPI_CR DFM = {int(self.dual)} with {len(self.flashes)} chip(s) fitted")
        count = self.regs["DLR"] + 1 if ccr["fmode"] == 1 else 0
        if self.dual and len(self.flashes) == 2:
            # RM0433 "Dual-flash mode": both chips get the command and the address divided by two; data bytes
            # alternate, bank 1's first.
            if address is not None and address % 2 and not mode_bits_reset:
                self.violations.append(f"odd address {address:#x} in dual-flash mode")
            chip_address = None if address is None else address // 2
            if len(data) % 2 or count % 2:
                self.violations.append(f"an odd number of bytes ({len(data) or count}) in dual-flash mode")
            answers = [chip.execute(instruction, lines, chip_address, data[i::2], count // 2)
                       for i, chip in enumerate(self.flashes)]  # fmt: skip
            self.rx.extend(bytes(b for pair in zip(*answers, strict=False) for b in pair))
        else:
            self.rx.extend(self.flash.execute(instruction, lines, address, data, count))
        self.tcf = True

    def memory_read(self, offset: int, size: int) -> bytes:
        """A read of the memory-mapped window (by the debugger or the CPU)."""
        ccr = self._ccr()
        if not self.regs["CR"] & 1 or ccr["fmode"] != 3:
            raise BusFault(f"QSPI window read at {QSPI_WINDOW + offset:#x} while not memory-mapped")
        window = 1 << ((self.regs["DCR"] >> 16 & 0x1F) + 1)
        if offset + size > window:
            raise BusFault(f"QSPI window read at {QSPI_WINDOW + offset:#x} beyond FSIZE")
        if self.flash.busy or self.flash.stuck_busy:
            self.violations.append("memory-mapped read while the flash is busy")
        self.mapped_busy = True
        self.mapped_reads += 1
        instruction, dummy = self.flash.read_command
        adsize = 3 if self.flash.address_bytes == 4 else 2
        if ccr["instruction"] != instruction:
            self.violations.append(
                f"memory-mapped mode with instruction {ccr['instruction']:#04x}, not {instruction:#04x}"
            )
        elif (ccr["admode"], ccr["adsize"], ccr["dmode"], ccr["abmode"], ccr["dcyc"]) != (3, adsize, 3, 3, dummy):
            self.violations.append(f"{instruction:#04x} quad read configured wrongly: {ccr}")
        elif self.flash.has_qe and not all(chip.status2 & QE for chip in self.flashes):
            return bytes((0x5A ^ (offset + i)) & 0xFF for i in range(size))  # IO2/IO3 are /WP, /HOLD
        if self.dual and len(self.flashes) == 2:
            return bytes(self._chip_byte(self.flashes[o & 1], o >> 1) for o in range(offset, offset + size))
        return (
            bytes(self._chip_byte(self.flash, o) for o in range(offset, offset + size))
            if (offset + size > self.flash.size)
            else bytes(self.flash.memory[offset : offset + size])
        )

    @staticmethod
    def _chip_byte(chip: NorFlash, offset: int) -> int:
        return chip.memory[offset] if offset < chip.size else 0xFF


class Machine:
    """The emulated chip: DTCM, peripherals, and the loaded flash algorithm."""

    def __init__(self, flash: NorFlash | tuple[NorFlash, ...] | None = None, *, cyccnt_step: int = 1000) -> None:
        self.uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB | UC_MODE_MCLASS)
        self.uc.ctl_set_cpu_model(arm.UC_CPU_ARM_CORTEX_M7)
        self.uc.mem_map(*DTCM)
        for base, size in MMIO_WINDOWS:
            self.uc.mmio_map(base, size, self._mmio_read, base, self._mmio_write, base)
        flashes = list(flash) if isinstance(flash, tuple) else [flash or NorFlash()]
        self.flash = flashes[0]
        self.violations: list[str] = []
        self.registers: dict[int, int] = {}
        self.cyccnt_step = cyccnt_step
        self.qspi = QuadSpi(self, flashes)
        self.algo: dict | None = None
        self.calls = 0

    # ---- registers outside the QUADSPI ----

    def clock_on(self, enable_register: int, bit: int) -> bool:
        return bool(self.registers.get(enable_register, 0) >> bit & 1)

    def _mmio_read(self, uc: Uc, offset: int, size: int, base: int) -> int:
        address = base + offset
        if QUADSPI <= address < QUADSPI + 0x400:
            return self._qspi_access(address, size, None)
        self._check_gpio_clock(address, "read")
        value = self.registers.get(address & ~3, 0)
        if address == DWT_CYCCNT and self.registers.get(DWT_CTRL, 0) & 1:
            self.registers[DWT_CYCCNT] = (value + self.cyccnt_step) & 0xFFFFFFFF
        return value >> (8 * (address & 3)) & ((1 << (8 * size)) - 1)

    def _mmio_write(self, uc: Uc, offset: int, size: int, value: int, base: int) -> None:
        address = base + offset
        if QUADSPI <= address < QUADSPI + 0x400:
            self._qspi_access(address, size, value)
            return
        self._check_gpio_clock(address, "write")
        if size != 4:
            self.violations.append(f"{size}-byte write to register {address:#010x}")
        self.registers[address] = value

    def _check_gpio_clock(self, address: int, what: str) -> None:
        if GPIO <= address < GPIO + 11 * 0x400:
            port = (address - GPIO) // 0x400
            if not self.clock_on(RCC_AHB4ENR, port):
                self.violations.append(f"{what} of GPIO{'ABCDEFGHIJK'[port]} with its clock off")

    def _qspi_access(self, address: int, size: int, value: int | None) -> int:
        index = (address - QUADSPI) // 4
        if index >= len(QSPI_REGISTERS):
            self.violations.append(f"access to unknown QUADSPI register {address:#010x}")
            return 0
        name = QSPI_REGISTERS[index]
        if not self.clock_on(RCC_AHB3ENR, 14):
            self.violations.append(f"QUADSPI_{name} accessed with its clock off")
        if name != "DR" and size != 4:
            self.violations.append(f"{size}-byte access to QUADSPI_{name}")
        if value is None:
            return self.qspi.read(name, size)
        self.qspi.write(name, value, size)
        return 0

    # ---- the flash algorithm ----

    def load_algo(self, algo: dict) -> None:
        """Copy an FLM's block to RAM as pyOCD does (``PackFlashAlgo.get_pyocd_flash_algo``'s dict)."""
        words = b"".join(word.to_bytes(4, "little") for word in algo["instructions"])
        self.uc.mem_write(algo["load_address"], words)
        self.algo = algo
        self.calls = 0

    def call(self, entry: str, *args: int, max_instructions: int = 20_000_000) -> int:
        """Call ``algo[entry]`` (e.g. "pc_init") like pyOCD's Flash._call_function: registers, then run to
        the breakpoint. Returns r0; checks that r9 and SP come back unchanged."""
        assert self.algo is not None, "load_algo first"
        registers = [arm.UC_ARM_REG_R0, arm.UC_ARM_REG_R1, arm.UC_ARM_REG_R2, arm.UC_ARM_REG_R3]
        for register, value in zip(registers, args, strict=False):
            self.uc.reg_write(register, value & 0xFFFFFFFF)
        if entry == "pc_init" or self.calls == 0:
            self.uc.reg_write(arm.UC_ARM_REG_R9, self.algo["static_base"])
            self.uc.reg_write(arm.UC_ARM_REG_SP, self.algo["begin_stack"])
        breakpoint_address = self.algo["load_address"]
        self.uc.reg_write(arm.UC_ARM_REG_LR, breakpoint_address | 1)
        canary_address = self.algo["end_stack"]
        self.uc.mem_write(canary_address, (0xDEADF00D).to_bytes(4, "little"))
        sp_before = self.uc.reg_read(arm.UC_ARM_REG_SP)
        self.calls += 1
        self.run(self.algo[entry], breakpoint_address, max_instructions=max_instructions)
        assert self.uc.reg_read(arm.UC_ARM_REG_R9) == self.algo["static_base"], f"{entry} changed r9"
        assert self.uc.reg_read(arm.UC_ARM_REG_SP) == sp_before, f"{entry} did not restore SP"
        assert bytes(self.uc.mem_read(canary_address, 4)) == (0xDEADF00D).to_bytes(4, "little"), "stack overflow"
        return self.uc.reg_read(arm.UC_ARM_REG_R0)

    def run(self, pc: int, stop: int, *, max_instructions: int = 20_000_000) -> None:
        """Run from ``pc`` until the CPU reaches ``stop`` (the breakpoint LR points at)."""
        try:
            self.uc.emu_start(pc | 1, stop, count=max_instructions)
        except UcError as error:
            where = self.uc.reg_read(arm.UC_ARM_REG_PC)
            raise AssertionError(f"the code at {pc:#x} faulted at pc={where:#x}: {error}") from None
        where = self.uc.reg_read(arm.UC_ARM_REG_PC)
        if where != stop:
            raise AssertionError(f"the code at {pc:#x} did not return within {max_instructions} instructions")

    def write_ram(self, address: int, data: Iterable[int] | bytes) -> None:
        self.uc.mem_write(address, bytes(data))

    def read_window(self, address: int, size: int) -> bytes:
        """The debugger reading the QSPI window (raises BusFault when it is not memory-mapped)."""
        return self.qspi.memory_read(address - QSPI_WINDOW, size)
