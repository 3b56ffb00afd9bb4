"""A small STM32H743 for the unicorn emulator: enough of its registers to run the board layer's C.

The CPU is unicorn's Cortex-M7 (Thumb, M profile); flash, DTCM and AXI SRAM are plain memory; the
peripherals the board layer touches (RCC, PWR, SYSCFG, FLASH, GPIO, USART, FMC, QUADSPI) and the core's
SCB, MPU, SysTick and DWT are Python models behind MMIO callbacks. The models act as RM0433 says where
the C waits on them (HSERDY follows HSEON, PLL1RDY follows PLL1ON, VOSRDY after a voltage change, SWS
follows SW, QUADSPI BUSY/TCF, a W25Q-style NOR flash behind the QUADSPI) and note a *violation* when the
C does something RM0433 forbids (configuring PLL1 while it runs, switching to a PLL that is not ready,
touching a peripheral whose clock is off, ...). Every access is recorded in order, with the register's
name, so tests can assert what was written and when. Accesses to registers the model does not know are
violations too: they catch a wrong address in the C.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.elffile import ELFFile
from unicorn import UC_ARCH_ARM, UC_HOOK_MEM_WRITE, UC_MODE_MCLASS, UC_MODE_THUMB, Uc
from unicorn import arm_const as arm

from support.sdram_model import SdramChip

FLASH = (0x08000000, 0x200000)
DTCM = (0x20000000, 0x20000)
AXI_SRAM = (0x24000000, 0x80000)
STACK_TOP = DTCM[0] + DTCM[1]
RETURN_ADDRESS = FLASH[0] + FLASH[1] - 0x100  # a BKPT the called function returns to
MMIO_WINDOWS = ((0x40000000, 0x20000), (0x52000000, 0x10000), (0x58000000, 0x30000), (0x5C001000, 0x1000))
MMIO_WINDOWS += ((0xE0000000, 0x100000), (0x51008000, 0x1000))
SYSTEM_MEMORY = (0x1FF00000, 0x20000)  # ST's system memory: the flash-size word at 0x1FF1E880
FLASH_SIZE_WORD = 0x1FF1E880
AXI_TARG7_FN_MOD = 0x51008108  # ES0392 2.2.10: READ_ISS_OVERRIDE for the AXI SRAM on revision Y
SDRAM_WINDOW = 1 << 20  # how much of the SDRAM bank the model maps

RCC, PWR, SYSCFG, FLASH_IF, FMC, QSPI = 0x58024400, 0x58024800, 0x58000400, 0x52002000, 0x52004000, 0x52005000
IWDG1 = 0x58004800
DBGMCU = 0x5C001000
USARTS = {1: 0x40011000, 2: 0x40004400, 3: 0x40004800, 4: 0x40004C00, 5: 0x40005000, 6: 0x40011400}
USARTS |= {7: 0x40007800, 8: 0x40007C00}
USART_CLOCK = {1: ("RCC_APB2ENR", 4), 6: ("RCC_APB2ENR", 5), 2: ("RCC_APB1LENR", 17), 3: ("RCC_APB1LENR", 18)}
USART_CLOCK |= {4: ("RCC_APB1LENR", 19), 5: ("RCC_APB1LENR", 20), 7: ("RCC_APB1LENR", 30), 8: ("RCC_APB1LENR", 31)}

# Cortex-M7 with 16 KB 4-way D-cache, 32-byte lines: 128 sets (CCSIDR: WT/WB/RA/WA, NumSets-1, Assoc-1,
# LineSize = log2(words per line) - 2).
CCSIDR_M7_16K = 0xF0000000 | (127 << 13) | (3 << 3) | 1


def _registers() -> dict[int, tuple[str, int]]:
    """Address -> (name, reset value) for every register the model knows."""
    regs: dict[int, tuple[str, int]] = {}

    def block(base: int, prefix: str, layout: dict[int, tuple[str, int]]) -> None:
        for offset, (name, reset) in layout.items():
            regs[base + offset] = (f"{prefix}{name}", reset)

    block(
        RCC,
        "RCC_",
        {
            0x000: ("CR", 0x00000025),
            0x010: ("CFGR", 0),
            0x018: ("D1CFGR", 0),
            0x01C: ("D2CFGR", 0),
            0x020: ("D3CFGR", 0),
            0x028: ("PLLCKSELR", 0x02020200),
            0x02C: ("PLLCFGR", 0x01FF0000),
            0x030: ("PLL1DIVR", 0x01010280),
            0x034: ("PLL1FRACR", 0),
            0x038: ("PLL2DIVR", 0x01010280),
            0x03C: ("PLL2FRACR", 0),
            0x04C: ("D1CCIPR", 0),
            0x054: ("D2CCIP2R", 0),
            0x0D0: ("RSR", 0),
            0x0D4: ("AHB3ENR", 0),
            0x0DC: ("AHB2ENR", 0),
            0x0E0: ("AHB4ENR", 0),
            0x0E8: ("APB1LENR", 0),
            0x0F0: ("APB2ENR", 0),
            0x0F4: ("APB4ENR", 0),
        },
    )
    # IWDG1: KR is write-only; PR and RLR take keys first (0x5555) and SR shows their update in progress.
    block(
        IWDG1,
        "IWDG1_",
        {0x00: ("KR", 0), 0x04: ("PR", 0), 0x08: ("RLR", 0xFFF), 0x0C: ("SR", 0), 0x10: ("WINR", 0xFFF)},
    )
    # IDCODE: REV_ID 0x2003 (revision V), DEV_ID 0x450; Stm32h743(revision="Y") makes it 0x1003.
    block(DBGMCU, "DBGMCU_", {0x000: ("IDCODE", 0x20036450), 0x054: ("APB4FZ1", 0)})
    block(PWR, "PWR_", {0x04: ("CSR1", 0x00004000), 0x0C: ("CR3", 0x00000006), 0x18: ("D3CR", 0x00004000)})
    block(SYSCFG, "SYSCFG_", {0x2C: ("PWRCR", 0)})
    regs[AXI_TARG7_FN_MOD] = ("AXI_TARG7_FN_MOD", 0)
    block(FLASH_IF, "FLASH_", {0x00: ("ACR", 0x37)})
    block(
        FMC,
        "FMC_",
        {
            0x000: ("BCR1", 0x000030DB),
            0x140: ("SDCR1", 0x2D0),
            0x144: ("SDCR2", 0x2D0),
            0x148: ("SDTR1", 0x0FFFFFFF),
            0x14C: ("SDTR2", 0x0FFFFFFF),
            0x150: ("SDCMR", 0),
            0x154: ("SDRTR", 0),
            0x158: ("SDSR", 0),
        },
    )
    qspi_regs = ("CR", "DCR", "SR", "FCR", "DLR", "CCR", "AR", "ABR", "DR", "PSMKR", "PSMAR", "PIR", "LPTR")
    block(QSPI, "QUADSPI_", {4 * i: (name, 0) for i, name in enumerate(qspi_regs)})
    for port, letter in enumerate("ABCDEFGHIJK"):
        moder = {0: 0xABFFFFFF, 1: 0xFFFFFEBF}.get(port, 0xFFFFFFFF)
        ospeedr = {0: 0x0C000000, 1: 0x000000C0}.get(port, 0)
        pupdr = {0: 0x64000000, 1: 0x00000100}.get(port, 0)
        layout = {0x00: ("MODER", moder), 0x04: ("OTYPER", 0), 0x08: ("OSPEEDR", ospeedr), 0x0C: ("PUPDR", pupdr)}
        layout |= {0x10: ("IDR", 0), 0x14: ("ODR", 0), 0x18: ("BSRR", 0), 0x20: ("AFRL", 0), 0x24: ("AFRH", 0)}
        block(0x58020000 + 0x400 * port, f"GPIO{letter}_", layout)
    usart_regs = ("CR1", "CR2", "CR3", "BRR", "GTPR", "RTOR", "RQR", "ISR", "ICR", "RDR", "TDR", "PRESC")
    for number, base in USARTS.items():
        kind = "USART" if number in (1, 2, 3, 6) else "UART"
        resets = {"ISR": 0x000000C0}
        block(base, f"{kind}{number}_", {4 * i: (n, resets.get(n, 0)) for i, n in enumerate(usart_regs)})
    block(
        0xE000E000,
        "",
        {
            0x010: ("SYST_CSR", 0),
            0x014: ("SYST_RVR", 0),
            0x018: ("SYST_CVR", 0),
            0xD00: ("SCB_CPUID", 0x411FC270),
            0xD0C: ("SCB_AIRCR", 0xFA050000),
            0xD14: ("SCB_CCR", 0x00040200),
            0xD80: ("SCB_CCSIDR", CCSIDR_M7_16K),
            0xD84: ("SCB_CSSELR", 0),
            0xD90: ("MPU_TYPE", 16 << 8),
            0xD94: ("MPU_CTRL", 0),
            0xD98: ("MPU_RNR", 0),
            0xD9C: ("MPU_RBAR", 0),
            0xDA0: ("MPU_RASR", 0),
            0xDFC: ("DEMCR", 0),
            0xF50: ("SCB_ICIALLU", 0),
            0xF60: ("SCB_DCISW", 0),
        },
    )
    block(0xE0001000, "DWT_", {0x000: ("CTRL", 0x40000000), 0x004: ("CYCCNT", 0), 0xFB0: ("LAR", 0)})
    return regs


REGISTERS = _registers()
ADDRESSES = {name: address for address, (name, _) in REGISTERS.items()}


@dataclass
class Access:
    seq: int
    kind: str  # "r" or "w"
    name: str
    value: int


# The NOR chips the board files name, as the model answers for them: JEDEC ID, and where Quad Enable lives
# (status register number, bit, read and write instruction; None: the chip has no QE bit).
CHIPS = {
    "W25Q128JV": ((0xEF, 0x40, 0x18), (2, 1, 0x35, 0x31)),
    "W25Q64JV": ((0xEF, 0x40, 0x17), (2, 1, 0x35, 0x31)),
    "IS25LP064A": ((0x9D, 0x60, 0x17), (1, 6, 0x05, 0x01)),
    "MT25QL512ABB": ((0x20, 0xBA, 0x20), None),
    "MT25TL01G": ((0x20, 0xBA, 0x20), None),
}


@dataclass
class NorFlash:
    """A SPI NOR flash on the QUADSPI, as its datasheet describes it: JEDEC ID (9Fh), status register 1 (BUSY, WEL,
    and QE on ISSI chips) and 2 (QE on Winbond chips), Enable Reset + Reset (66h, 99h), and the continuous-read
    ("XIP") mode a bootloader may leave it in, which only ten clocks of IO0-IO3 high end: until then every
    instruction is taken as address bits and ignored, and reads return garbage."""

    jedec_id: tuple[int, int, int] = (0xEF, 0x40, 0x18)
    qe: tuple[int, int, int, int] | None = (2, 1, 0x35, 0x31)  # register, bit, read, write; None: no QE bit
    status1: int = 0
    status2: int = 0
    busy_polls: int = 0  # status 1 reads that still show BUSY after a status write
    stuck_busy: bool = False  # BUSY never clears (a broken part)
    fitted: bool = True  # False: nothing answers (every bit reads 1: the lines float high)
    continuous_read: bool = False
    reset_enabled: bool = False
    resets: int = 0
    log: list[tuple[str, int, int | None]] = field(default_factory=list)  # (what, instruction, data)

    @classmethod
    def of(cls, chip: str) -> NorFlash:
        jedec_id, qe = CHIPS[chip]
        return cls(jedec_id=jedec_id, qe=qe)

    @property
    def quad_enabled(self) -> bool:
        if self.qe is None:
            return True
        register, bit, _, _ = self.qe
        return bool((self.status1 if register == 1 else self.status2) >> bit & 1)

    def command(self, instruction: int, lines: int = 1) -> None:
        self.log.append(("command", instruction, None) if lines == 1 else ("command4", instruction, None))
        if self.continuous_read or lines != 1:
            return  # XIP: address bits; a 4-line instruction to a chip in SPI mode: two bits, then NCS rises
        if instruction == 0x66:
            self.reset_enabled = True
            return
        if instruction == 0x99 and self.reset_enabled:
            self.resets += 1
            self.status1 &= ~0x03  # WEL and BUSY cleared; the non-volatile bits (QE) stay
        elif instruction == 0x06:
            self.status1 |= 0x02  # WEL
        self.reset_enabled = False

    def mode_bits_high(self) -> None:
        """Ten clocks with IO0-IO3 high: the mode bits read 0xFF, which ends continuous-read mode."""
        self.log.append(("mode_bits_high", 0xFF, None))
        self.continuous_read = False

    def read(self, instruction: int, count: int) -> list[int]:
        self.log.append(("read", instruction, None))
        if not self.fitted:
            return [0xFF] * count
        if self.continuous_read:
            return [0xA5] * count  # whatever the chip streams from the address the instruction became
        if instruction == 0x9F:
            return [self.jedec_id[i] if i < 3 else 0 for i in range(count)]
        self.reset_enabled = False
        if instruction == 0x05:
            busy = 1 if self.busy_polls or self.stuck_busy else 0
            self.busy_polls = max(0, self.busy_polls - 1)
            return [(self.status1 & ~1) | busy] * count
        if self.qe is not None and self.qe[0] == 2 and instruction == self.qe[2]:
            return [self.status2] * count
        return [0xFF] * count

    def write(self, instruction: int, data: int) -> None:
        self.log.append(("write", instruction, data))
        self.reset_enabled = False
        if self.continuous_read or not self.fitted or not self.status1 & 0x02:  # a status write needs WEL
            return
        if instruction == 0x01:
            self.status1 = (self.status1 & 0x03) | (data & ~0x03)
        elif self.qe is not None and self.qe[0] == 2 and instruction == self.qe[3]:
            self.status2 = data
        else:
            return
        self.status1 &= ~0x02
        self.busy_polls = 3


class Stm32h743:
    """The emulated chip. ``call(symbol, *args)`` runs one C function to its return."""

    def __init__(
        self, elf: Path, *, cyccnt_step: int = 64, revision: str = "V", never: tuple[str, ...] = (),
        dev_id: int = 0x450, flash_kb: int = 2048, nor: tuple[NorFlash, ...] = (), sdram: SdramChip | None = None,
    ) -> None:  # fmt: skip
        """``revision``: the silicon revision DBGMCU_IDCODE reports (V, Y, or another REV_ID as 4 hex digits);
        ``dev_id`` and ``flash_kb``: the part's DEV_ID and flash-size word; ``nor``: the QSPI chip(s), chip 1 on
        bank 1 first (a W25Q128JV by default); ``sdram``: an SDRAM chip (support.sdram_model) behind the FMC, mapped
        at its bank's address (1 MB of it), with whatever faults it was given;
        ``never``: ready flags that never come (HSERDY, PLL1RDY, PLL2RDY, VOSRDY, VOS0RDY, ACTVOSRDY, SWS,
        FLASH_ACR, QSPI_TCF, QSPI_IDLE, FLASH_NOT_BUSY: the NOR flash's BUSY; QSPI_BUSY_UNTIL_ABORT: the QUADSPI
        left busy by a bootloader until an abort), to
        test that the board layer reports what hangs instead of hanging."""
        self.uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB | UC_MODE_MCLASS)
        self.uc.ctl_set_cpu_model(arm.UC_CPU_ARM_CORTEX_M7)
        for base, size in (FLASH, DTCM, AXI_SRAM, SYSTEM_MEMORY):
            self.uc.mem_map(base, size)
        self.uc.mem_write(FLASH_SIZE_WORD, flash_kb.to_bytes(2, "little"))
        for base, size in MMIO_WINDOWS:
            self.uc.mmio_map(base, size, self._mmio_read, base, self._mmio_write, base)
        self.sdram = sdram
        if sdram is not None:
            self.uc.mmio_map(sdram.base, SDRAM_WINDOW, self._sdram_read, None, self._sdram_write, None)
        self.symbols = self._load(elf)
        self.uc.mem_write(RETURN_ADDRESS, b"\x00\xbe")  # BKPT #0
        self.values = {address: reset for address, (_, reset) in REGISTERS.items()}
        rev_id = {"V": 0x2003, "Y": 0x1003}.get(revision) or int(revision, 16)
        self.values[DBGMCU] = rev_id << 16 | 0x6000 | dev_id
        self.never = set(never)
        self.log: list[Access] = []
        self.violations: list[str] = []
        self.unknown: list[str] = []
        self.cyccnt_step = cyccnt_step
        self.pending: dict[str, int] = {}  # flag -> reads left before it becomes true
        self.mpu_regions: dict[int, tuple[int, int]] = {}
        self.tx = bytearray()
        self.rx = bytearray()
        self.nor = list(nor) or [NorFlash()]
        for chip in self.nor:
            chip.stuck_busy = chip.stuck_busy or "FLASH_NOT_BUSY" in self.never
        self.qspi_fifo: list[int] = []
        self.qspi_write: tuple[int, int, list[int]] | None = None  # an indirect write: instruction, bytes, got
        self.aborts = 0  # QUADSPI_CR ABORT writes
        self.sdram_commands: list[dict[str, int]] = []
        self.switch_state: dict[str, int] | None = None  # chip state when SYSCLK switched to PLL1
        self.memory_mapped_state: dict[str, int] | None = None
        self.reset_requested = False
        self.ram_writes: list[int] = []
        self.iwdg_started = False
        self.iwdg_unlocked = False  # 0x5555 written, not yet locked again by 0xAAAA
        self.iwdg_reloads = 0

    # ---- program loading and calling ----

    def _load(self, elf: Path) -> dict[str, int]:
        with elf.open("rb") as handle:
            image = ELFFile(handle)
            for segment in image.iter_segments():
                if segment["p_type"] == "PT_LOAD" and segment["p_filesz"]:
                    self.uc.mem_write(segment["p_paddr"], segment.data())
            symtab = image.get_section_by_name(".symtab")
            return {s.name: s["st_value"] & ~1 for s in symtab.iter_symbols() if s["st_info"]["type"] == "STT_FUNC"}

    def call(self, symbol: str, *args: int, max_instructions: int = 3_000_000) -> int:
        for register, value in zip((arm.UC_ARM_REG_R0, arm.UC_ARM_REG_R1, arm.UC_ARM_REG_R2), args, strict=False):
            self.uc.reg_write(register, value & 0xFFFFFFFF)
        self.uc.reg_write(arm.UC_ARM_REG_SP, STACK_TOP)
        self.uc.reg_write(arm.UC_ARM_REG_LR, RETURN_ADDRESS | 1)
        self.uc.emu_start(self.symbols[symbol] | 1, RETURN_ADDRESS, count=max_instructions)
        pc = self.uc.reg_read(arm.UC_ARM_REG_PC)
        if pc != RETURN_ADDRESS and not self.reset_requested:
            recent = ", ".join(f"{a.kind}:{a.name}={a.value:#x}" for a in self.log[-8:])
            raise AssertionError(f"{symbol} did not return (stuck at pc={pc:#x}); last accesses: {recent}")
        low = self.uc.reg_read(arm.UC_ARM_REG_R0)
        return low | (self.uc.reg_read(arm.UC_ARM_REG_R1) << 32)

    def run_until_halt(self, symbol: str, max_instructions: int = 20_000_000) -> None:
        """Runs a C function that must not return (a failed boot halts in boot_fail's WFI loop): stops when the
        core sits in boot_fail, and fails if the function returned or ran elsewhere."""
        self.uc.reg_write(arm.UC_ARM_REG_SP, STACK_TOP)
        self.uc.reg_write(arm.UC_ARM_REG_LR, RETURN_ADDRESS | 1)
        halt = self.symbols["boot_halt"]  # boot_fail.c: the one place a failed boot waits, console on HSI
        self.uc.emu_start(self.symbols[symbol] | 1, RETURN_ADDRESS, count=max_instructions)
        pc = self.uc.reg_read(arm.UC_ARM_REG_PC)
        if pc == RETURN_ADDRESS:
            raise AssertionError(f"{symbol} returned; it was expected to halt in boot_fail")
        if not halt <= pc < halt + 0x200:
            raise AssertionError(f"{symbol} stopped at pc={pc:#x}, not in boot_halt's loop ({halt:#x})")

    def watch_ram_writes(self, start: int, end: int) -> Callable[[], None]:
        """Record CPU writes into [start, end); returns a function that stops recording."""

        def hook(uc: Uc, access: int, address: int, size: int, value: int, data: object) -> None:
            self.ram_writes.append(address)

        handle = self.uc.hook_add(UC_HOOK_MEM_WRITE, hook, begin=start, end=end - 1)
        return lambda: self.uc.hook_del(handle)

    # ---- queries for tests ----

    @property
    def flash(self) -> NorFlash:
        """The (first) QSPI NOR chip."""
        return self.nor[0]

    def reg(self, name: str) -> int:
        return self.values[ADDRESSES[name]]

    def writes(self, name: str) -> list[Access]:
        return [a for a in self.log if a.kind == "w" and a.name == name]

    def first_write(self, name: str, predicate: Callable[[int], bool] = lambda v: True) -> int:
        """Sequence number of the first write to ``name`` whose value satisfies ``predicate``."""
        for access in self.writes(name):
            if predicate(access.value):
                return access.seq
        raise AssertionError(f"no matching write to {name}")

    @property
    def cyccnt(self) -> int:
        return self.reg("DWT_CYCCNT")

    @cyccnt.setter
    def cyccnt(self, value: int) -> None:
        self.values[ADDRESSES["DWT_CYCCNT"]] = value & 0xFFFFFFFF

    def vos_level(self) -> int:
        vos = (self.reg("PWR_D3CR") >> 14) & 3
        scale = {3: 1, 2: 2, 1: 3, 0: 3}[vos]
        return 0 if scale == 1 and self.reg("SYSCFG_PWRCR") & 1 else scale

    # ---- MMIO ----

    def _mmio_read(self, uc: Uc, offset: int, size: int, base: int) -> int:
        address = base + offset
        if size == 1 and (address & ~3) == QSPI + 0x20:
            value = self.qspi_fifo.pop(0) if self.qspi_fifo else 0
            self._record("r", "QUADSPI_DR", value)
            return value
        if address not in REGISTERS:
            self.unknown.append(f"read {address:#010x}")
            return 0
        name = REGISTERS[address][0]
        self._check_clock(name, "read")
        value = self._read(name, address)
        self._record("r", name, value)
        return value

    def _mmio_write(self, uc: Uc, offset: int, size: int, value: int, base: int) -> None:
        address = base + offset
        if size == 1 and (address & ~3) == QSPI + 0x20:
            self._record("w", "QUADSPI_DR", value)
            self._qspi_data(value)
            return
        if address not in REGISTERS or size != 4:
            self.unknown.append(f"write {address:#010x} ({size} bytes) = {value:#x}")
            return
        name = REGISTERS[address][0]
        self._check_clock(name, "write")
        self._record("w", name, value)
        self._write(name, address, value)

    def _sdram_read(self, uc: Uc, offset: int, size: int, data: object) -> int:
        assert self.sdram is not None
        return self.sdram.read(offset, size, self.reg("DWT_CYCCNT"))

    def _sdram_write(self, uc: Uc, offset: int, size: int, value: int, data: object) -> None:
        assert self.sdram is not None
        self.sdram.write(offset, size, value, self.reg("DWT_CYCCNT"))

    def _record(self, kind: str, name: str, value: int) -> None:
        self.log.append(Access(len(self.log), kind, name, value))

    def _flag(self, name: str, reads: int) -> None:
        self.pending[name] = reads

    def _ready(self, name: str) -> bool:
        """A flag that turns true after a few reads, so the C has to wait for it (or never, if it is in never)."""
        if name in self.never:
            return False
        left = self.pending.get(name)
        if left is None:
            return False
        if left > 0:
            self.pending[name] = left - 1
            return False
        return True

    def _settled(self, name: str) -> bool:
        """A busy flag that clears after a few reads (never set: settled)."""
        return name not in self.pending or self._ready(name)

    def _check_clock(self, name: str, what: str) -> None:
        """RM0433: a peripheral's registers are reachable only with its bus clock enabled."""
        clock = None
        if name.startswith("GPIO"):
            clock = ("RCC_AHB4ENR", "ABCDEFGHIJK".index(name[4]))
        elif name.startswith("FMC_"):
            clock = ("RCC_AHB3ENR", 12)
        elif name.startswith("QUADSPI_"):
            clock = ("RCC_AHB3ENR", 14)
        elif name.startswith("SYSCFG_"):
            clock = ("RCC_APB4ENR", 1)
        elif name.startswith(("USART", "UART")):
            clock = USART_CLOCK[int(name.split("_")[0].lstrip("USART"))]
        if clock and not self.reg(clock[0]) >> clock[1] & 1:
            self.violations.append(f"{what} of {name} with its clock off ({clock[0]} bit {clock[1]})")

    def _read(self, name: str, address: int) -> int:
        value = self.values[address]
        if name == "PWR_CSR1":
            return value | (1 << 13 if self._ready("ACTVOSRDY") else 0)
        if name == "PWR_D3CR":
            return (value & ~(1 << 13)) | (1 << 13 if self._ready("VOSRDY") else 0)
        if name == "RCC_CR":
            value &= ~((1 << 17) | (1 << 25) | (1 << 27))
            value |= (1 << 17) if value & (1 << 16) and self._ready("HSERDY") else 0
            value |= (1 << 25) if value & (1 << 24) and self._ready("PLL1RDY") else 0
            value |= (1 << 27) if value & (1 << 26) and self._ready("PLL2RDY") else 0
            self.values[address] = value
            return value
        if name == "DWT_CYCCNT":
            if self.reg("DEMCR") >> 24 & 1 and self.reg("DWT_CTRL") & 1:
                self.values[address] = (value + self.cyccnt_step) & 0xFFFFFFFF
            return value
        if name.endswith("_ISR") and name.startswith(("USART", "UART")):
            cr1 = self.values[address - 0x1C]
            rxne = bool(self.rx) and cr1 & 0b101 == 0b101
            return value | (1 << 5 if rxne else 0)
        if name.endswith("_RDR") and name.startswith(("USART", "UART")):
            return self.rx.pop(0) if self.rx else 0
        if name == "IWDG1_SR":  # PVU, RVU: set for a few reads after PR or RLR was written
            return sum(1 << bit for bit, flag in ((0, "IWDG_PVU"), (1, "IWDG_RVU")) if not self._settled(flag))
        if name == "QUADSPI_SR":
            tcf = 1 << 1 if self._qspi_done() else 0
            busy = 1 << 5 if self.qspi_fifo or self.qspi_write or (self.pending.get("QSPI_TCF", 0) > 0) else 0
            busy |= 1 << 5 if "QSPI_IDLE" in self.never or "QSPI_BUSY_UNTIL_ABORT" in self.never else 0
            return tcf | busy | (len(self.qspi_fifo) << 8)
        return value

    def _write(self, name: str, address: int, value: int) -> None:
        old = self.values[address]
        if name == "FLASH_ACR" and "FLASH_ACR" in self.never:  # a latency that never takes
            return
        if name == "PWR_CR3":
            if self.writes("PWR_CR3")[:-1]:
                self.violations.append("PWR_CR3 supply configuration written twice (it is write-once)")
            self._flag("ACTVOSRDY", 2)
        elif name == "PWR_D3CR":
            if not self.writes("PWR_CR3"):
                self.violations.append("voltage scaling changed before the supply configuration")
            self._flag("VOSRDY", 3)
        elif name == "SYSCFG_PWRCR":
            if value & 1 and (self.reg("PWR_D3CR") >> 14) & 3 != 3:
                self.violations.append("ODEN set while not in VOS1")
            self._flag("VOSRDY", 3)
            if "VOS0RDY" in self.never:  # the overdrive never settles
                self.never.add("VOSRDY")
        elif name == "RCC_CR":
            if (value ^ old) & (1 << 18) and old & (1 << 16):
                self.violations.append("HSEBYP changed while the HSE is on")
            if value & (1 << 16) and not old & (1 << 16):
                self._flag("HSERDY", 2)
            if value & (1 << 24) and not old & (1 << 24):
                if not old & (1 << 17) and self.reg("RCC_PLLCKSELR") & 3 == 2:
                    self.violations.append("PLL1 enabled before its HSE source was ready")
                self._flag("PLL1RDY", 2)
            if value & (1 << 26) and not old & (1 << 26):
                self._flag("PLL2RDY", 2)
        elif name in ("RCC_PLLCKSELR", "RCC_PLLCFGR", "RCC_PLL1DIVR", "RCC_PLL1FRACR"):
            if self.reg("RCC_CR") & (1 << 24):
                self.violations.append(f"{name} written while PLL1 is on")
        elif name in ("RCC_PLL2DIVR", "RCC_PLL2FRACR"):
            if self.reg("RCC_CR") & (1 << 26):
                self.violations.append(f"{name} written while PLL2 is on")
        elif name == "RCC_CFGR":
            sw = value & 7
            if sw == 3:
                if not self.reg("RCC_CR") & (1 << 25):
                    self.violations.append("SYSCLK switched to PLL1 before PLL1RDY")
                self.switch_state = {
                    "vos": self.vos_level(),
                    "latency": self.reg("FLASH_ACR") & 0xF,
                    "wrhighfreq": self.reg("FLASH_ACR") >> 4 & 3,
                    "d1cfgr": self.reg("RCC_D1CFGR"),
                    "d2cfgr": self.reg("RCC_D2CFGR"),
                    "d3cfgr": self.reg("RCC_D3CFGR"),
                }
            # SWS follows SW, unless the switch never happens (never SWS): then it stays what it was
            sws = old & (7 << 3) if "SWS" in self.never else sw << 3
            value = (value & ~(7 << 3)) | sws
        elif name == "DWT_CTRL":
            if self.reg("DWT_LAR") != 0xC5ACCE55:
                self.violations.append("DWT_CTRL written while the DWT is locked (DWT_LAR)")
                return
        elif name == "DWT_LAR":
            value = value if value == 0xC5ACCE55 else 0
        elif name == "MPU_RNR":
            value &= 0xFF
        elif name == "MPU_RBAR":
            self.mpu_regions[self.reg("MPU_RNR")] = (value, self.mpu_regions.get(self.reg("MPU_RNR"), (0, 0))[1])
        elif name == "MPU_RASR":
            self.mpu_regions[self.reg("MPU_RNR")] = (self.mpu_regions.get(self.reg("MPU_RNR"), (0, 0))[0], value)
        elif name == "IWDG1_KR":
            if value == 0xCCCC:
                self.iwdg_started = True
            elif value == 0x5555:
                self.iwdg_unlocked = True
            elif value == 0xAAAA:
                if not (self._settled("IWDG_PVU") and self._settled("IWDG_RVU")):
                    self.violations.append("IWDG1 reloaded before its PR/RLR update finished (IWDG1_SR)")
                self.iwdg_unlocked = False
                self.iwdg_reloads += 1
            return  # write-only: reads as 0
        elif name in ("IWDG1_PR", "IWDG1_RLR"):
            if not self.iwdg_unlocked:
                self.violations.append(f"{name} written while write-protected (no 0x5555 key): the IWDG ignores it")
                return
            self._flag("IWDG_PVU" if name == "IWDG1_PR" else "IWDG_RVU", 2)
        elif name == "RCC_RSR":
            value = old & 0x0000FFFF if value & 1 << 16 else old  # RMVF clears every flag; they are read-only
        elif name == "SCB_AIRCR":
            if value >> 16 == 0x05FA and value & (1 << 2):
                self.reset_requested = True
                self.uc.emu_stop()
            value = (value & 0x700) | 0xFA050000
        elif name.endswith("_BRR") and self.values[address - 0x0C] & 1:
            self.violations.append(f"{name} written while the USART is enabled")
        elif name.endswith("_TDR"):
            cr1 = self.values[address - 0x28]
            if cr1 & 0b1001 != 0b1001:
                self.violations.append(f"{name} written with the transmitter off")
            self.tx.append(value & 0xFF)
        elif name.endswith("_ICR"):
            return
        elif name == "FMC_SDCMR":
            if not self.reg("FMC_BCR1") >> 31:
                self.violations.append("SDRAM command issued with the FMC disabled (FMC_BCR1 FMCEN)")
            if self.sdram is not None and value >> (4 if self.sdram.base == 0xC0000000 else 3) & 1:
                self.sdram.command(value & 7)
            self.sdram_commands.append(
                {
                    "mode": value & 7,
                    "ctb1": value >> 4 & 1,
                    "ctb2": value >> 3 & 1,
                    "nrfs": (value >> 5 & 0xF) + 1,
                    "mrd": value >> 9 & 0x3FFF,
                    "cyccnt": self.cyccnt,
                    "seq": len(self.log) - 1,
                }
            )
        elif name in ("FMC_SDCR1", "FMC_SDCR2", "FMC_SDRTR") and self.sdram is not None:
            bank_register = "FMC_SDCR1" if self.sdram.base == 0xC0000000 else "FMC_SDCR2"
            if name == bank_register:
                self.sdram.configure(value)
            elif name == "FMC_SDRTR":
                self.sdram.refresh_count = value >> 1 & 0x1FFF
        elif name.startswith("QUADSPI_"):
            value = self._qspi_register(name, value)
            if value is None:
                return
        self.values[address] = value

    # ---- QUADSPI with a NOR flash behind it ----

    def _qspi_done(self) -> bool:
        return "QSPI_TCF" not in self.never and self.pending.get("QSPI_TCF") == 0

    def _qspi_chips(self) -> list[NorFlash]:
        """The chips a command reaches: both in dual-flash mode (QUADSPI_CR DFM), else the one on bank 1."""
        return self.nor if self.reg("QUADSPI_CR") >> 6 & 1 else self.nor[:1]

    def _qspi_register(self, name: str, value: int) -> int | None:
        if name in ("QUADSPI_CCR", "QUADSPI_DCR") and (self.qspi_fifo or self.qspi_write):
            self.violations.append(f"{name} written while QUADSPI is busy")
        if name == "QUADSPI_FCR":
            if value & 2:
                self.pending.pop("QSPI_TCF", None)
            return None
        if name == "QUADSPI_CR":
            if value & 2:  # ABORT: the running command ends, the FIFO empties, ABORT clears itself
                self.qspi_fifo.clear()
                self.qspi_write = None
                self.pending.pop("QSPI_TCF", None)
                self.aborts += 1
                self.never.discard("QSPI_BUSY_UNTIL_ABORT")
            if (value ^ self.reg("QUADSPI_CR")) & (1 << 6) and self.reg("QUADSPI_CR") & 1 and value & 1:
                self.violations.append("QUADSPI_CR DFM changed while the QUADSPI is enabled")
            return value & ~2
        if name == "QUADSPI_AR":
            ccr = self.reg("QUADSPI_CCR")
            if ccr >> 26 & 3 == 0 and ccr >> 10 & 3 and not ccr >> 24 & 3:  # address, no data: starts now
                if ccr & 0xFF == 0xFF and ccr >> 8 & 3 == 3 and ccr >> 10 & 3 == 3 and value == 0xFFFFFFFF:
                    for chip in self._qspi_chips():
                        chip.mode_bits_high()
                else:
                    self.violations.append(f"QUADSPI_AR {value:#x} after CCR {ccr:#x}: a command this model lacks")
                self.pending["QSPI_TCF"] = 0
            return value
        if name != "QUADSPI_CCR":
            return value
        if not self.reg("QUADSPI_CR") & 1:
            self.violations.append("QUADSPI command with the peripheral disabled")
        instruction, fmode = value & 0xFF, value >> 26 & 3
        imode, admode, dmode = value >> 8 & 3, value >> 10 & 3, value >> 24 & 3
        chips = self._qspi_chips()
        if fmode == 3:
            self.memory_mapped_state = {
                "qe": int(all(chip.quad_enabled for chip in chips)),
                "ccr": value,
                "abr": self.reg("QUADSPI_ABR"),
                "seq": len(self.log) - 1,
                "dual": len(chips) == 2,
                "in_xip": any(chip.continuous_read for chip in chips),
            }
        elif fmode == 1 and admode == 0:  # indirect read without address: starts now
            count = self.reg("QUADSPI_DLR") + 1
            per_chip = [chip.read(instruction, -(-count // len(chips))) for chip in chips]
            self.qspi_fifo.extend(per_chip[i % len(chips)][i // len(chips)] for i in range(count))
            self.pending["QSPI_TCF"] = 0
        elif fmode == 0 and admode == 0 and dmode == 0:  # instruction only: starts now
            for chip in chips:
                chip.command(instruction, 4 if imode == 3 else 1)
            self.pending["QSPI_TCF"] = 0
        elif fmode == 0 and admode == 0:  # starts when the data arrives
            self.qspi_write = (instruction, self.reg("QUADSPI_DLR") + 1, [])
        elif fmode == 0 and admode != 0 and dmode == 0:  # starts when AR is written
            pass
        else:
            self.violations.append(f"QUADSPI_CCR {value:#x}: a mode this model does not emulate")
        return value

    def _qspi_data(self, byte: int) -> None:
        if self.qspi_write is None:
            self.violations.append("QUADSPI_DR written without an indirect write command")
            return
        instruction, count, got = self.qspi_write
        got.append(byte)
        if len(got) < count:
            return
        chips = self._qspi_chips()
        for i, value in enumerate(got):
            chips[i % len(chips)].write(instruction, value)
        self.qspi_write = None
        self.pending["QSPI_TCF"] = 0
