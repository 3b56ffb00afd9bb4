"""Boards are data: ``targets/<target>/boards/<board>.toml`` describes one board of an STM32H7 target.

A board file says how the chip is clocked, which UART is the console and which external memories exist
(SDRAM on the FMC, NOR flash on the QUADSPI) with the parameters of their chips. This module checks it,
derives every register value the C board layer needs (PLL and bus dividers, flash wait states, USART
baud divisor, FMC SDRAM timing and refresh registers, QUADSPI prescaler and sizes), which
llmcu.builder.boardconfig renders into ``board_config.h``, so that adapting a board needs no C. Register
encodings and limits are from ST's reference manual RM0433 (STM32H742/743/750/753); section names are cited where
they are used.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

from ..core.errors import OptionError
from ..core.fileio import read_toml
from .chiplimits import ChipLimits, exceeds, load_limits
from .parts import SUPPLIES, Part, load_part
from .targets import MemoryRegion
from .tomltable import REQUIRED, TomlTable

# ---- Chip facts (RM0433 and the STM32H743 datasheet) ----

PORTS = "ABCDEFGHIJK"  # GPIOA..GPIOK; the port index is the GPIO block number and the RCC_AHB4ENR bit
MEMORIES = ("sdram", "qspi")

# RCC_D1CFGR D1CPRE/HPRE encodings (divide by 1 is 0xxx) and the APB prescaler encodings (RM0433 RCC
# register descriptions).
AHB_PRESCALER_BITS = {1: 0b0000, 2: 0b1000, 4: 0b1001, 8: 0b1010, 16: 0b1011, 64: 0b1100, 128: 0b1101}
AHB_PRESCALER_BITS |= {256: 0b1110, 512: 0b1111}
APB_PRESCALER_BITS = {1: 0b000, 2: 0b100, 4: 0b101, 8: 0b110, 16: 0b111}

# RCC_PLLCFGR PLLxRGE: the reference's range, (upper bound exclusive, code) (RM0433 RCC register descriptions).
PLL_REF_RANGES = ((2_000_000, 0), (4_000_000, 1), (8_000_000, 2), (16_000_000, 3))
# RCC_D1CCIPR FMCSEL: the FMC kernel clock's source (RM0433 RCC_D1CCIPR).
FMC_CLOCKS = {"hclk": 0, "pll2_r": 2}

# Console candidates: instance -> the APB bus whose clock is its kernel clock (RCC_D2CCIP2R USART16SEL /
# USART234578SEL left at 000 = rcc_pclk2 / rcc_pclk1). LPUART1 is not supported.
UARTS = {
    "USART1": (1, 2),
    "USART2": (2, 1),
    "USART3": (3, 1),
    "UART4": (4, 1),
    "UART5": (5, 1),
    "USART6": (6, 2),
    "UART7": (7, 1),
    "UART8": (8, 1),
}

# FMC SDRAM (RM0433 section "FMC"): bank base addresses (BMAP = 00), and the control register encodings.
SDRAM_BANK_BASE = {1: 0xC0000000, 2: 0xD0000000}
SDRAM_BANK_WINDOW = 256 << 20  # each bank's address window (RM0433 "FMC bank address mapping")
SDRAM_TIMINGS = ("mrd", "xsr", "ras", "rc", "wr", "rp", "rcd")  # FMC_SDTR fields TMRD..TRCD, 1-16 cycles
SDRAM_EFFICIENCY = 0.7  # sustained reads / peak: row activations, precharges and refreshes take the rest
FMC_REFRESH_MARGIN = 20  # FMC_SDRTR: COUNT = refresh interval in SDCLK cycles - 20 (a safe margin)

# QUADSPI: the FSIZE workaround of the STM32H743 errata sheet (ES0392, "Memory-mapped read of last memory
# byte fails"): declare the flash twice as large, so the last bytes are not the end of the device window.
QSPI_FSIZE_ERRATA_MARGIN = 1


# ---- Board data ----


@dataclass(frozen=True)
class Pin:
    signal: str
    port: int  # 0 = GPIOA
    number: int
    af: int

    @property
    def name(self) -> str:
        return f"P{PORTS[self.port]}{self.number}"


@dataclass(frozen=True)
class Clocks:
    hse_hz: int
    hse_bypass: bool
    vos: int
    pll1_m: int
    pll1_n: int
    pll1_p: int
    pll1_q: int
    pll1_r: int
    pll1_rge: int
    pll1_vcosel: int
    ref_hz: int
    vco_hz: int
    sys_hz: int
    cpu_hz: int
    hclk_hz: int
    pclk1_hz: int  # APB1 (D2)
    pclk2_hz: int  # APB2 (D2)
    pclk3_hz: int  # APB3 (D1)
    pclk4_hz: int  # APB4 (D3)
    dividers: dict[str, int]
    prescaler_bits: dict[str, int]
    flash_latency: int
    flash_wrhighfreq: int
    revision: str = "V"  # the silicon revision this plan is for (limits.toml [revision])


@dataclass(frozen=True)
class Pll2:
    """PLL2 (RM0433 "PLLs"), for a kernel clock that does not change with the CPU's plan: the FMC's."""

    m: int
    n: int
    p: int
    q: int
    r: int
    rge: int
    vcosel: int
    ref_hz: int
    vco_hz: int
    r_hz: int


@dataclass(frozen=True)
class Console:
    uart: str
    instance: int
    apb: int
    kernel_hz: int
    baud: int
    brr: int
    tx: Pin
    rx: Pin
    usb_ids: tuple[str, ...]
    brr_y: int = 0  # USART_BRR under revision Y's plan (its APB clock)
    brr_hsi: int = 0  # USART_BRR on the reset clock (HSI 64 MHz, every prescaler 1): a failed boot's report


@dataclass(frozen=True)
class Sdram:
    """The board's SDRAM on the FMC and the FMC register values that run it."""

    chip: str
    bank: int
    base: int
    size: int
    data_bits: int
    internal_banks: int
    row_bits: int
    column_bits: int
    cas_latency: int
    sdclk_divider: int
    sdclk_hz: int
    read_burst: bool
    read_pipe_delay: int
    cycles: dict[str, int]  # SDRAM_TIMINGS in SDCLK cycles, as programmed
    sdcr1: int
    sdcr2: int
    sdtr1: int
    sdtr2: int
    mode_register: int
    auto_refresh_commands: int
    refresh_count: int
    startup_cycles: int  # CPU cycles of the power-up delay
    command_cycles: int  # CPU cycles to let one init command finish
    pins: tuple[Pin, ...]
    kernel_clock: str  # the FMC kernel clock's source (FMC_CLOCKS)
    kernel_hz: int


@dataclass(frozen=True)
class QuadEnable:
    """Where a NOR chip keeps its Quad Enable bit (without it IO2/IO3 are /WP and /HOLD): ``none`` (the quad
    instructions always work, Micron MT25Q), or a bit of status register 1 (ISSI IS25LP) or 2 (Winbond W25Q), with
    the instructions that read and write that register."""

    register: str  # "none", "status1" or "status2"
    bit: int = 0
    read: int = 0
    write: int = 0


@dataclass(frozen=True)
class Qspi:
    """The board's QSPI NOR flash and the QUADSPI register values that read it memory-mapped."""

    chip: str
    size: int  # bytes the window maps: one chip's size, twice it in dual-flash mode
    page_size: int  # as the window sees it (doubled in dual-flash mode)
    sector_size: int  # as the window sees it (doubled in dual-flash mode)
    kernel_hz: int
    clock_hz: int
    prescaler: int
    fsize: int
    csht: int
    clock_mode: int
    sample_shift: bool
    commands: dict[str, int]
    read_instruction: int
    address_bits: int
    adsize: int
    mode_byte: int
    absize: int
    dummy_clocks: int
    status_write_timeout_cycles: int
    pins: tuple[Pin, ...]
    prescaler_y: int  # revision Y's plan
    clock_hz_y: int
    csht_y: int
    jedec_id: tuple[int, int, int] = (0, 0, 0)  # manufacturer, memory type, capacity (9Fh), each chip
    quad_enable: QuadEnable = QuadEnable("none")
    dual_flash: bool = False  # two chips on BK1 and BK2, read together (QUADSPI_CR DFM)

    @property
    def chips(self) -> int:
        return 2 if self.dual_flash else 1

    @property
    def chip_size(self) -> int:
        return self.size // self.chips


@dataclass(frozen=True)
class Board:
    """A board file, checked, with every register value the board layer needs."""

    name: str
    description: str
    path: Path
    target: str
    memories: tuple[str, ...]
    clocks: Clocks  # revision V's plan (the board file's own)
    console: Console
    sdram: Sdram | None
    qspi: Qspi | None
    clocks_y: Clocks | None = None  # revision Y's plan, derived (limits.toml [revision.Y])
    pll2: Pll2 | None = None
    limits: ChipLimits | None = None
    part: Part | None = None
    supply: str = "ldo"
    template: bool = False  # a starting point for a custom board (list_boards(templates=False) leaves it out)

    @property
    def flash_size(self) -> int:
        """Bytes of internal flash: the part's."""
        return self.part.flash_size if self.part else 2 << 20

    def read_bandwidth(self) -> dict[str, float]:
        """Sustained read bandwidth (bytes/s) of the regions weights are read from, from this board's own clocks and
        buses: internal flash a 64-bit AXI word per (wait states + 1) HCLK cycles; QSPI 4 bits per clock (SDR) per
        chip, so dual-flash reads twice as wide; SDRAM its bus width per SDCLK at ~70% efficiency (row opens,
        refresh)."""
        clocks = self.clocks
        bandwidth = {"flash": clocks.hclk_hz * 8 / (clocks.flash_latency + 1)}
        if self.qspi is not None:
            bandwidth["qspi"] = self.qspi.clock_hz * 4 * self.qspi.chips / 8
        if self.sdram is not None:
            bandwidth["sdram"] = self.sdram.sdclk_hz * self.sdram.data_bits / 8 * SDRAM_EFFICIENCY
        return bandwidth

    @property
    def pins(self) -> tuple[Pin, ...]:
        pins = [self.console.tx, self.console.rx]
        for memory in (self.sdram, self.qspi):
            if memory is not None:
                pins.extend(memory.pins)
        return tuple(pins)


def parse_pin(text: object, where: str, signal: str, af: int) -> Pin:
    """``"PD8"`` -> port 3, pin 8."""
    if isinstance(text, str) and len(text) >= 3 and text[0] == "P" and text[1] in PORTS and text[2:].isdigit():
        number = int(text[2:])
        if number <= 15:
            return Pin(signal, PORTS.index(text[1]), number, af)
    raise OptionError(f"{where}: `{signal}` = {text!r} is not a pin (PA0 .. PK15)")


def _pin_entry(value: object, where: str, signal: str) -> Pin:
    """A pin with its alternate function: ``{ pin = "PD8", af = 7 }``."""
    table = TomlTable(value, f"{where} `{signal}`")  # e.g. "board.toml [console] `tx`: missing `af`"
    af = table.integer("af", lo=0, hi=15)
    pin = parse_pin(table.text("pin"), where, signal, af)
    table.done()
    return pin


# ---- Clocks ----


def _pll_range(ref_hz: int) -> int:
    """RCC_PLLCFGR PLL1RGE: 00 1-2 MHz, 01 2-4 MHz, 10 4-8 MHz, 11 8-16 MHz (lower bound inclusive)."""
    return next(rge for upper, rge in PLL_REF_RANGES if ref_hz < upper or rge == 3)


def _pll(name: str, hse_hz: int, m: int, n: int, limits: ChipLimits, where: str) -> tuple[int, int, int, int]:
    """A PLL's reference, VCO, PLLxRGE and PLLxVCOSEL, checked against the chip's ranges."""
    if hse_hz % m:
        raise OptionError(f"{where}: {hse_hz} Hz / m={m} is not a whole number of Hz")
    ref_hz = hse_hz // m
    lo, hi = limits.pll_ref
    if not lo <= ref_hz <= hi:
        raise OptionError(f"{where}: {name} reference {ref_hz:,} Hz (HSE / m) must be {lo:,}-{hi:,} Hz "
                          f"({limits.pll_source})")  # fmt: skip
    vcosel = 0 if ref_hz >= limits.pll_wide_ref_min else 1
    vco_lo, vco_hi = limits.vco_wide if vcosel == 0 else limits.vco_medium
    vco_hz = ref_hz * n
    if not vco_lo <= vco_hz <= vco_hi:
        raise OptionError(f"{where}: {name} VCO {vco_hz:,} Hz (reference x n) must be {vco_lo:,}-{vco_hi:,} Hz "
                          f"({limits.pll_source})")  # fmt: skip
    return ref_hz, vco_hz, _pll_range(ref_hz), vcosel


def _plan(
    hse: tuple[int, bool], vos: int, pll1: dict[str, int], dividers: dict[str, int], limits: ChipLimits,
    where: str, revision: str,
) -> Clocks:  # fmt: skip
    """One clock plan (for one silicon revision), every clock checked against the chip's limits."""
    hse_hz, hse_bypass = hse
    m, n, p, q, r = (pll1[k] for k in "mnpqr")
    if vos not in limits.cpu:
        raise OptionError(f"{where}: vos {vos} is not supported ({', '.join(map(str, sorted(limits.cpu)))})")
    if p % 2:
        raise OptionError(f"{where}: `p` = {p}: PLL1 DIVP must be even (RM0433, RCC_PLL1DIVR)")
    ref_hz, vco_hz, rge, vcosel = _pll("PLL1", hse_hz, m, n, limits, where)
    if vco_hz % p:
        raise OptionError(f"{where}: VCO {vco_hz} Hz / p={p} is not a whole number of Hz")
    sys_hz = vco_hz // p
    bits = {}
    for name, value in dividers.items():
        codes = AHB_PRESCALER_BITS if name in ("d1cpre", "hpre") else APB_PRESCALER_BITS
        if value not in codes:
            raise OptionError(f"{where}: `{name}` = {value} is not one of {', '.join(map(str, codes))}")
        bits[name] = codes[value]
    cpu_hz = sys_hz // dividers["d1cpre"]
    hclk_hz = cpu_hz // dividers["hpre"]
    pclk = {name: hclk_hz // dividers[name] for name in ("d2ppre1", "d2ppre2", "d1ppre", "d3ppre")}
    _rev_id, _rev_vos, rev_cpu = limits.revisions[revision]
    label = f"revision {revision}'s plan"
    if cpu_hz > rev_cpu.value:
        raise exceeds(f"{label}: the CPU clock", cpu_hz, rev_cpu, where)
    if cpu_hz > limits.cpu[vos].value:
        raise exceeds(f"{label}: the CPU clock at VOS{vos}", cpu_hz, limits.cpu[vos], where)
    if hclk_hz > limits.hclk[vos].value:
        raise exceeds(f"{label}: HCLK (CPU / hpre)", hclk_hz, limits.hclk[vos], where, "raise hpre")
    for name, hz in pclk.items():
        if hz > limits.apb[vos].value:
            raise exceeds(f"{label}: the APB clock HCLK / {name}", hz, limits.apb[vos], where, f"raise {name}")
    setting = next(((lat, wr) for upper, lat, wr in limits.flash_wait_states[vos] if hclk_hz <= upper), None)
    if setting is None:
        raise OptionError(f"{where}: no flash wait state setting for HCLK {hclk_hz} Hz at VOS{vos} "
                          f"({limits.flash_source})")  # fmt: skip
    latency, wrhighfreq = setting
    return Clocks(
        hse_hz=hse_hz,
        hse_bypass=hse_bypass,
        vos=vos,
        pll1_m=m,
        pll1_n=n,
        pll1_p=p,
        pll1_q=q,
        pll1_r=r,
        pll1_rge=rge,
        pll1_vcosel=vcosel,
        ref_hz=ref_hz,
        vco_hz=vco_hz,
        sys_hz=sys_hz,
        cpu_hz=cpu_hz,
        hclk_hz=hclk_hz,
        pclk1_hz=pclk["d2ppre1"],
        pclk2_hz=pclk["d2ppre2"],
        pclk3_hz=pclk["d1ppre"],
        pclk4_hz=pclk["d3ppre"],
        dividers=dividers,
        prescaler_bits=bits,
        flash_latency=latency,
        flash_wrhighfreq=wrhighfreq,
        revision=revision,
    )


def _clocks(table: TomlTable, where: str, limits: ChipLimits) -> tuple[Clocks, Clocks, Pll2 | None]:
    """The board's clock tree as revision V's plan, revision Y's derived from it (PLL1 N lowered to the
    revision's CPU limit, VOS1), and PLL2 when the board uses it (a kernel clock independent of the CPU's)."""
    hse_hz = table.integer("hse_hz", lo=4_000_000, hi=50_000_000)  # HSE: 4-48 MHz crystal, up to 50 MHz bypass
    hse_bypass = table.flag("hse_bypass")
    vos = table.integer("vos")
    pll = table.table("pll1")
    pll1 = {"m": pll.integer("m", lo=1, hi=63), "n": pll.integer("n", lo=4, hi=512),
            "p": pll.integer("p", lo=2, hi=128), "q": pll.integer("q", lo=1, hi=128),
            "r": pll.integer("r", lo=1, hi=128)}  # fmt: skip
    pll.done()
    div = table.table("dividers")
    dividers = {name: div.integer(name) for name in ("d1cpre", "hpre", "d1ppre", "d2ppre1", "d2ppre2", "d3ppre")}
    div.done()
    pll2 = None
    if "pll2" in table.data:
        entry = table.table("pll2")
        m2, n2 = entry.integer("m", lo=1, hi=63), entry.integer("n", lo=4, hi=512)
        p2, q2, r2 = (entry.integer(k, lo=1, hi=128) for k in "pqr")
        entry.done()
        ref2, vco2, rge2, vcosel2 = _pll("PLL2", hse_hz, m2, n2, limits, entry.where)
        pll2 = Pll2(m2, n2, p2, q2, r2, rge2, vcosel2, ref2, vco2, vco2 // r2)
    table.done()

    revision_v = _plan((hse_hz, hse_bypass), vos, pll1, dividers, limits, table.where, "V")
    # Revision Y: VOS1, and the highest PLL1 N that keeps the CPU within the revision's limit.
    _rev_id, vos_y, cpu_y = limits.revisions["Y"]
    ref_hz = hse_hz // pll1["m"]
    n_y = min(pll1["n"], cpu_y.value * pll1["p"] * dividers["d1cpre"] // ref_hz)
    while n_y > 4 and (ref_hz * n_y) % pll1["p"]:
        n_y -= 1
    try:
        revision_y = _plan((hse_hz, hse_bypass), vos_y, {**pll1, "n": n_y}, dividers, limits, table.where, "Y")
    except OptionError as error:
        raise OptionError(f"{error}. Revision Y's plan is revision V's with PLL1 n = {n_y} at VOS{vos_y}: choose "
                          "dividers that fit both") from None  # fmt: skip
    return revision_v, revision_y, pll2


# ---- Console ----


HSI_HZ = 64_000_000  # the reset clock: HSI at 64 MHz (HSIDIV 1), RM0433 "RCC"


def _brr(kernel_hz: int, baud: int, where: str) -> int:
    """USART_BRR with oversampling by 16 (RM0433 USART "baud rate generation"): kernel / baud, at least 16; the
    rounding error must stay well inside a receiver's tolerance."""
    brr = (kernel_hz + baud // 2) // baud
    if not 16 <= brr <= 0xFFFF:
        raise OptionError(
            f"{where}: baud {baud} needs USART_BRR = {brr} with a {kernel_hz} Hz clock, outside 16..65535"
        )
    error = abs(kernel_hz / brr - baud) / baud
    if error > 0.01:
        raise OptionError(f"{where}: baud {baud} is {error:.1%} off with a {kernel_hz} Hz kernel clock")
    return brr


def _console(table: TomlTable, clocks: Clocks, clocks_y: Clocks, limits: ChipLimits) -> Console:
    uart = table.text("uart").upper()
    if uart not in UARTS:
        raise OptionError(f"{table.where}: uart {uart!r} is not one of {', '.join(UARTS)}")
    instance, apb = UARTS[uart]
    tx = _pin_entry(table.raw("tx", REQUIRED), table.where, "tx")
    rx = _pin_entry(table.raw("rx", REQUIRED), table.where, "rx")
    baud = table.integer("baud", lo=1200, hi=12_000_000)
    usb_ids = table.strings("usb_ids")
    for usb_id in usb_ids:
        vid, _, pid = usb_id.partition(":")
        if len(vid) != 4 or len(pid) != 4 or not all(c in "0123456789abcdefABCDEF" for c in vid + pid):
            raise OptionError(f"{table.where}: usb_ids entry {usb_id!r} is not VID:PID in hex (0483:374b)")
    table.done()
    kernel_hz = clocks.pclk2_hz if apb == 2 else clocks.pclk1_hz
    kernel_y = clocks_y.pclk2_hz if apb == 2 else clocks_y.pclk1_hz
    if kernel_hz > limits.usart_kernel.value:
        raise exceeds(f"{uart}'s kernel clock", kernel_hz, limits.usart_kernel, table.where)
    brr, brr_y, brr_hsi = (_brr(hz, baud, table.where) for hz in (kernel_hz, kernel_y, HSI_HZ))
    return Console(uart, instance, apb, kernel_hz, baud, brr, tx, rx, tuple(u.lower() for u in usb_ids), brr_y, brr_hsi)


# ---- SDRAM ----


def _cycles(time_ns: Fraction, clock_hz: int) -> int:
    """Nanoseconds to whole clock cycles, rounding up."""
    return math.ceil(time_ns * clock_hz / 1_000_000_000)


def sdram_required_signals(row_bits: int, column_bits: int, data_bits: int, banks: int, bank: int) -> list[str]:
    """The FMC signals an SDRAM of this geometry needs on FMC SDRAM bank 1 (SDNE0/SDCKE0) or 2."""
    signals = [f"A{i}" for i in range(max(row_bits, column_bits))]
    signals += [f"BA{i}" for i in range(banks.bit_length() - 1)]
    signals += [f"D{i}" for i in range(data_bits)]
    signals += [f"NBL{i}" for i in range(data_bits // 8)]
    signals += ["SDCLK", "SDNCAS", "SDNRAS", "SDNWE", f"SDCKE{bank - 1}", f"SDNE{bank - 1}"]
    return signals


def _sdram(table: TomlTable, clocks: Clocks, clocks_y: Clocks, pll2: Pll2 | None, limits: ChipLimits) -> Sdram:
    chip = table.text("chip")
    bank = table.integer("bank")
    if bank not in SDRAM_BANK_BASE:
        raise OptionError(f"{table.where}: bank {bank} must be 1 (SDNE0/SDCKE0) or 2 (SDNE1/SDCKE1)")
    size = table.size("size")
    data_bits = table.integer("data_bits")
    internal_banks = table.integer("internal_banks")
    row_bits = table.integer("row_bits", lo=11, hi=13)
    column_bits = table.integer("column_bits", lo=8, hi=11)
    cas = table.integer("cas_latency", lo=1, hi=3)
    divider = table.integer("sdclk_divider")
    read_burst = table.flag("read_burst")
    read_pipe = table.integer("read_pipe_delay", lo=0, hi=2)
    startup_us = table.integer("startup_delay_us", lo=1, hi=10_000)
    auto_refresh = table.integer("auto_refresh_commands", lo=2, hi=16)
    max_clock = table.raw("max_clock_hz", {})
    kernel_clock = table.text("kernel_clock", "hclk")
    if kernel_clock not in FMC_CLOCKS:
        raise OptionError(f"{table.where}: kernel_clock {kernel_clock!r} must be one of {', '.join(FMC_CLOCKS)}")
    if data_bits not in (8, 16, 32):
        raise OptionError(f"{table.where}: data_bits {data_bits} must be 8, 16 or 32")
    if internal_banks not in (2, 4):
        raise OptionError(f"{table.where}: internal_banks {internal_banks} must be 2 or 4")
    if divider not in (2, 3):
        raise OptionError(f"{table.where}: sdclk_divider {divider} must be 2 or 3 (FMC_SDCR SDCLK)")
    geometry = (data_bits // 8) * internal_banks << (row_bits + column_bits)
    if geometry != size:
        raise OptionError(
            f"{table.where}: size {size} bytes does not match the geometry: {data_bits}-bit x {internal_banks} "
            f"banks x 2^{row_bits} rows x 2^{column_bits} columns = {geometry} bytes"
        )
    # The FMC kernel clock: rcc_hclk3 (RCC_D1CCIPR FMCSEL = 00, the reset value), i.e. HCLK, or PLL2's R output.
    if kernel_clock == "pll2_r":
        if pll2 is None:
            raise OptionError(f'{table.where}: kernel_clock = "pll2_r" needs a [clock.pll2] table')
        kernel_hz = pll2.r_hz
    else:
        kernel_hz = clocks.hclk_hz
        if clocks_y.hclk_hz != clocks.hclk_hz:
            raise OptionError(
                f"{table.where}: with the FMC on HCLK, SDCLK would differ between revision V ({clocks.hclk_hz:,} Hz "
                f"HCLK) and revision Y ({clocks_y.hclk_hz:,} Hz), and so would every SDRAM timing: take the FMC "
                'kernel clock from PLL2 ([clock.pll2] and kernel_clock = "pll2_r")'
            )
    sdclk_hz = kernel_hz // divider
    if sdclk_hz > limits.fmc_sdclk.value:
        raise exceeds(f"SDCLK ({kernel_clock} / sdclk_divider {divider})", sdclk_hz, limits.fmc_sdclk, table.where,
                       "lower the FMC kernel clock ([clock.pll2]) or raise sdclk_divider")  # fmt: skip
    if not isinstance(max_clock, dict):
        raise OptionError(f"{table.where}: `max_clock_hz` must be a table like {{ cas2 = ..., cas3 = ... }}")
    limit = max_clock.get(f"cas{cas}")
    unknown = set(max_clock) - {"cas1", "cas2", "cas3"}
    if unknown:
        raise OptionError(f"{table.where}: unknown key(s) in max_clock_hz: {', '.join(sorted(unknown))}")
    if limit is not None and sdclk_hz > limit:
        raise OptionError(
            f"{table.where}: SDCLK {sdclk_hz} Hz ({kernel_clock} / {divider}) is above the chip's {limit} Hz at CAS "
            f"latency {cas}; raise cas_latency or sdclk_divider"
        )

    timing = table.table("timing")
    cycles: dict[str, int] = {}
    for name in SDRAM_TIMINGS:
        in_ns, in_clk = f"t_{name}_ns" in timing.data, f"t_{name}_clk" in timing.data
        if in_ns == in_clk:
            raise OptionError(f"{timing.where}: give exactly one of `t_{name}_ns` and `t_{name}_clk`")
        if in_ns:
            cycles[name] = max(1, _cycles(timing.number(f"t_{name}_ns"), sdclk_hz))
        else:
            cycles[name] = timing.integer(f"t_{name}_clk", lo=1)
    refresh_ms = timing.number("refresh_ms")
    refresh_rows = timing.integer("refresh_rows", lo=1)
    timing.done()
    # FMC_SDTR TWR note (RM0433): TWR must also cover TRAS - TRCD and TRC - TRCD - TRP, because the FMC
    # uses it to time the precharge after a write.
    cycles["wr"] = max(cycles["wr"], cycles["ras"] - cycles["rcd"], cycles["rc"] - cycles["rcd"] - cycles["rp"])
    for name, value in cycles.items():
        if value > 16:
            raise OptionError(f"{timing.where}: t_{name} is {value} SDCLK cycles at {sdclk_hz} Hz; FMC_SDTR holds 1-16")
    # FMC_SDRTR: refresh every (refresh period / rows) less the 20-cycle margin; COUNT is 13 bits, >= 41.
    interval = math.floor(refresh_ms * sdclk_hz / 1000 / refresh_rows)
    refresh_count = interval - FMC_REFRESH_MARGIN
    if not 41 <= refresh_count <= 0x1FFF:
        raise OptionError(f"{timing.where}: refresh count {refresh_count} is outside 41..8191 (FMC_SDRTR COUNT)")

    pins_table = table.table("pins")
    af = pins_table.integer("af", lo=0, hi=15)
    required = sdram_required_signals(row_bits, column_bits, data_bits, internal_banks, bank)
    missing = [s for s in required if s not in pins_table.data]
    if missing:
        raise OptionError(f"{pins_table.where}: missing pin(s) for {', '.join(missing)}")
    pins = tuple(parse_pin(pins_table.text(s), pins_table.where, s, af) for s in required)
    pins_table.done()
    table.done()

    # FMC_SDCRx (RM0433 "SDRAM control registers"): NC = column bits - 8, NR = row bits - 11, MWID
    # 0/1/2 = 8/16/32 bits, NB = 4 banks, CAS, SDCLK 10/11 = HCLK/2 or /3, RBURST, RPIPE. SDCLK, RBURST and
    # RPIPE exist only in FMC_SDCR1 and serve both banks.
    device = (
        (column_bits - 8)
        | (row_bits - 11) << 2
        | {8: 0, 16: 1, 32: 2}[data_bits] << 4
        | (1 if internal_banks == 4 else 0) << 6
        | cas << 7
    )
    shared = (divider << 10) | (int(read_burst) << 12) | (read_pipe << 13)
    # FMC_SDTRx fields are cycles - 1: TMRD [3:0], TXSR [7:4], TRAS [11:8], TRC [15:12], TWR [19:16],
    # TRP [23:20], TRCD [27:24]; TRC and TRP exist only in FMC_SDTR1 and serve both banks.
    shifts = {"mrd": 0, "xsr": 4, "ras": 8, "rc": 12, "wr": 16, "rp": 20, "rcd": 24}
    per_bank = sum((cycles[n] - 1) << shifts[n] for n in ("mrd", "xsr", "ras", "wr", "rcd"))
    common = sum((cycles[n] - 1) << shifts[n] for n in ("rc", "rp"))
    if bank == 1:
        sdcr1, sdcr2, sdtr1, sdtr2 = device | shared, 0, per_bank | common, 0
    else:
        sdcr1, sdcr2, sdtr1, sdtr2 = shared, device, common, per_bank
    # JEDEC SDRAM mode register: burst length 1 (A2-A0 = 000), sequential, CAS latency in A6-A4, standard
    # operation, write burst mode single location access (A9 = 1).
    mode_register = (cas << 4) | (1 << 9)
    # The longest init command is the auto-refresh burst: NRFS x tRC cycles; allow tRP + tMRD on top and
    # convert to CPU cycles (the DWT cycle counter times the wait).
    command_sdclk = auto_refresh * cycles["rc"] + cycles["rp"] + cycles["mrd"] + 8
    return Sdram(
        chip=chip,
        bank=bank,
        base=SDRAM_BANK_BASE[bank],
        size=size,
        data_bits=data_bits,
        internal_banks=internal_banks,
        row_bits=row_bits,
        column_bits=column_bits,
        cas_latency=cas,
        sdclk_divider=divider,
        sdclk_hz=sdclk_hz,
        read_burst=read_burst,
        read_pipe_delay=read_pipe,
        cycles=cycles,
        sdcr1=sdcr1,
        sdcr2=sdcr2,
        sdtr1=sdtr1,
        sdtr2=sdtr2,
        mode_register=mode_register,
        auto_refresh_commands=auto_refresh,
        refresh_count=refresh_count,
        startup_cycles=math.ceil(startup_us * clocks.cpu_hz / 1_000_000),
        command_cycles=math.ceil(command_sdclk * clocks.cpu_hz / sdclk_hz),
        pins=pins,
        kernel_clock=kernel_clock,
        kernel_hz=kernel_hz,
    )


# ---- QSPI NOR flash ----

QSPI_SIGNALS = ("CLK", "NCS", "IO0", "IO1", "IO2", "IO3")
QSPI_BANK2_SIGNALS = ("BK2_IO0", "BK2_IO1", "BK2_IO2", "BK2_IO3")  # the second chip of a dual-flash board
QSPI_COMMANDS = ("write_enable", "read_status1", "reset_enable", "reset", "read_id")
QE_REGISTERS = ("none", "status1", "status2")
QSPI_WINDOW = 256 << 20  # the QUADSPI memory-mapped window, 0x90000000-0x9FFFFFFF (RM0433 "Memory map")
THREE_BYTE_LIMIT = 16 << 20  # what 24-bit addresses reach


def _qspi_clock(kernel_hz: int, max_hz: int, cs_high: Fraction, where: str) -> tuple[int, int, int]:
    """QUADSPI prescaler, CLK and CSHT for a kernel clock: CLK = kernel / (PRESCALER + 1) <= max_hz."""
    prescaler = max(0, math.ceil(kernel_hz / max_hz) - 1)
    if prescaler > 255:
        raise OptionError(f"{where}: a {max_hz} Hz clock needs a QUADSPI prescaler above 255")
    clock_hz = kernel_hz // (prescaler + 1)
    # QUADSPI_DCR CSHT: NCS stays high at least CSHT + 1 cycles between commands.
    csht = max(1, _cycles(cs_high, clock_hz)) - 1
    if csht > 7:
        raise OptionError(f"{where}: cs_high_ns {cs_high} is {csht + 1} cycles; QUADSPI_DCR CSHT holds 1-8")
    return prescaler, clock_hz, csht


def _quad_enable(table: TomlTable) -> QuadEnable:
    """``[qspi.quad_enable]``: register = "none" | "status1" | "status2", with bit, read and write for the last two."""
    register = table.text("register")
    if register not in QE_REGISTERS:
        raise OptionError(f"{table.where}: `register` = {register!r} must be one of {', '.join(QE_REGISTERS)}")
    if register == "none":
        given = sorted(set(table.data) & {"bit", "read", "write"})
        if given:
            raise OptionError(f"{table.where}: register = \"none\" (the chip has no Quad Enable bit) takes no "
                              f"{', '.join(given)}: drop them, or name the register that holds QE")  # fmt: skip
        table.done()
        return QuadEnable("none")
    quad = QuadEnable(register, table.integer("bit", lo=0, hi=7), table.integer("read", lo=0, hi=0xFF),
                      table.integer("write", lo=0, hi=0xFF))  # fmt: skip
    table.done()
    return quad


def _qspi(table: TomlTable, clocks: Clocks, clocks_y: Clocks, limits: ChipLimits) -> Qspi:
    chip = table.text("chip")
    chip_size = table.size("size")
    dual_flash = table.flag("dual_flash", False)
    chips = 2 if dual_flash else 1
    jedec = table.raw("jedec_id", REQUIRED)
    if not (isinstance(jedec, list) and len(jedec) == 3 and all(isinstance(b, int) and 0 <= b <= 0xFF for b in jedec)):
        raise OptionError(f"{table.where}: `jedec_id` must be the 3 bytes the chip answers to 9Fh, like "
                          f"[0xEF, 0x40, 0x18], got {jedec!r}")  # fmt: skip
    page_size = table.integer("page_size", lo=1)
    sector_size = table.size("sector_size")
    max_clock_hz = table.integer("max_clock_hz", lo=1_000_000)
    cs_high = table.number("cs_high_ns")
    clock_mode = table.integer("clock_mode")
    sample_shift = table.flag("sample_shift")
    timeout_ms = table.integer("status_write_timeout_ms", lo=1, hi=5000)
    if clock_mode not in (0, 3):
        raise OptionError(f"{table.where}: clock_mode {clock_mode} must be 0 or 3 (QUADSPI_DCR CKMODE)")
    if chip_size & (chip_size - 1) or chip_size < 2:
        raise OptionError(f"{table.where}: size {chip_size} must be a power of two (QUADSPI_DCR FSIZE, MPU region)")
    if chip_size * chips > QSPI_WINDOW:
        raise OptionError(f"{table.where}: size {chip_size:,} bytes{' x 2 chips' if dual_flash else ''} exceeds the "
                          f"QUADSPI window of {QSPI_WINDOW >> 20} MB at 0x90000000")  # fmt: skip

    commands_table = table.table("commands")
    commands = {name: commands_table.integer(name, lo=0, hi=0xFF) for name in QSPI_COMMANDS}
    commands["busy_bit"] = commands_table.integer("busy_bit", lo=0, hi=7)
    commands_table.done()
    quad_enable = _quad_enable(table.table("quad_enable"))

    read = table.table("read")
    instruction = read.integer("instruction", lo=0, hi=0xFF)
    address_bits = read.integer("address_bits")
    mode_byte = read.integer("mode_byte", lo=0, hi=0xFF)
    mode_clocks = read.integer("mode_clocks")
    dummy_clocks = read.integer("dummy_clocks", lo=0, hi=31)  # QUADSPI_CCR DCYC is 5 bits
    read.done()
    if address_bits not in (24, 32):
        raise OptionError(f"{read.where}: address_bits {address_bits} must be 24 or 32")
    if chip_size > THREE_BYTE_LIMIT and address_bits != 32:
        raise OptionError(
            f"{read.where}: a {chip_size >> 20} MB chip needs 32-bit addresses: address_bits = 32 and "
            "the chip's 4-byte read instruction (e.g. 0xEC, Fast Read Quad I/O with 4-byte address)"
        )
    if mode_clocks != 2:
        # Alternate bytes on 4 lines: 2 clocks = 8 bits (ABSIZE 00); longer mode fields are not used.
        raise OptionError(f"{read.where}: mode_clocks {mode_clocks}: only 2 (one mode byte on 4 lines)")

    pins_table = table.table("pins")
    signals = QSPI_SIGNALS + (QSPI_BANK2_SIGNALS if dual_flash else ())
    missing = [s for s in signals if s not in pins_table.data]
    if missing:
        why = " (dual_flash = true: the second chip's data lines on QUADSPI bank 2)" if dual_flash else ""
        raise OptionError(f"{pins_table.where}: missing pin(s) for {', '.join(missing)}{why}")
    extra = [s for s in QSPI_BANK2_SIGNALS if s in pins_table.data and not dual_flash]
    if extra:
        raise OptionError(f"{pins_table.where}: {', '.join(extra)} given without dual_flash = true: "
                          "one chip uses bank 1 only")  # fmt: skip
    pins = tuple(_pin_entry(pins_table.raw(s, REQUIRED), pins_table.where, s) for s in signals)
    pins_table.done()
    table.done()

    # The QUADSPI kernel clock is rcc_hclk3 (RCC_D1CCIPR QSPISEL = 00), so each revision's plan has its own
    # prescaler; CLK stays within both the NOR chip's limit and the STM32H743's.
    max_hz = min(max_clock_hz, limits.quadspi_clk.value)
    kernel_hz = clocks.hclk_hz
    prescaler, clock_hz, csht = _qspi_clock(kernel_hz, max_hz, cs_high, table.where)
    prescaler_y, clock_y, csht_y = _qspi_clock(clocks_y.hclk_hz, max_hz, cs_high, table.where)
    # Flash size = 2^(FSIZE + 1) bytes, both chips together in dual-flash mode; see QSPI_FSIZE_ERRATA_MARGIN.
    size = chip_size * chips
    fsize = size.bit_length() - 2 + QSPI_FSIZE_ERRATA_MARGIN
    return Qspi(
        chip=chip,
        size=size,
        page_size=page_size * chips,
        sector_size=sector_size * chips,
        kernel_hz=kernel_hz,
        clock_hz=clock_hz,
        prescaler=prescaler,
        fsize=fsize,
        csht=csht,
        clock_mode=clock_mode,
        sample_shift=sample_shift,
        commands=commands,
        read_instruction=instruction,
        address_bits=address_bits,
        adsize=address_bits // 8 - 1,
        mode_byte=mode_byte,
        absize=0,
        dummy_clocks=dummy_clocks,
        status_write_timeout_cycles=timeout_ms * (clocks.cpu_hz // 1000),
        pins=pins,
        prescaler_y=prescaler_y,
        clock_hz_y=clock_y,
        csht_y=csht_y,
        jedec_id=(jedec[0], jedec[1], jedec[2]),
        quad_enable=quad_enable,
        dual_flash=dual_flash,
    )


# ---- Loading ----


def list_boards(target_folder: Path, *, templates: bool = True) -> list[str]:
    """The boards of a target: the names of ``boards/*.toml`` beside its target.toml (without the templates for a
    custom board, ``template = true``, when ``templates`` is false)."""
    paths = sorted((Path(target_folder) / "boards").glob("*.toml"))
    return [p.stem for p in paths if templates or read_toml(p).get("template") is not True]


def _target_memories(target_folder: Path) -> tuple[str, int, dict[str, dict]]:
    path = target_folder / "target.toml"
    if not path.is_file():
        return target_folder.name, 0, {}
    raw = read_toml(path)
    regions = {r.get("name"): r for r in raw.get("memory", []) if isinstance(r, dict)}
    return raw.get("name", target_folder.name), raw.get("cpu", {}).get("clock_hz", 0), regions


def _supply(top: TomlTable, part: Part) -> str:
    """The board's core supply: only one the part has, and only the LDO until an SMPS part is supported (a supply
    the board is not wired for locks an SMPS part until a BOOT0 recovery; clock.c selects the LDO)."""
    supply = top.text("supply")
    if supply not in SUPPLIES:
        raise OptionError(f"{top.where}: supply = {supply!r} must be one of {', '.join(SUPPLIES)}")
    if supply not in part.supplies:
        raise OptionError(f"{top.where}: supply = {supply!r}: the {part.family} has no {supply.upper()}; it is "
                          f"supplied by {' or '.join(part.supplies)} ({part.source})")  # fmt: skip
    if supply != "ldo":
        raise OptionError(f"{top.where}: supply = {supply!r} is not supported: the board layer (clock.c) "
                          "configures the LDO, never another supply")  # fmt: skip
    return supply


def load_board(target_folder: Path, name: str) -> Board:
    """Read, check and derive ``targets/<target>/boards/<name>.toml``."""
    target_folder = Path(target_folder)
    path = target_folder / "boards" / f"{name}.toml"
    if not path.is_file():
        known = list_boards(target_folder)
        listing = ", ".join(known) if known else "none"
        raise OptionError(f"unknown board {name!r} for target {target_folder.name}; known boards: {listing}")
    raw = read_toml(path)
    where = str(path)
    top = TomlTable(raw, where)
    board_name = top.text("name")
    if board_name != name:
        raise OptionError(f"{where}: name {board_name!r} does not match the file name {name!r}")
    description = top.text("description", "")
    template = top.flag("template", False)  # a starting point for a custom board, not a board one can buy
    part = load_part(target_folder, top.text("part"), f"{where}: `part`")
    supply = _supply(top, part)
    memories = top.strings("memories")
    target, cpu_hz, regions = _target_memories(target_folder)
    for memory in memories:
        if memory not in MEMORIES:
            raise OptionError(f"{where}: memories: {memory!r} is not one of {', '.join(MEMORIES)}")
        region = regions.get(memory)
        if regions and (region is None or not region.get("external")):
            raise OptionError(f"{where}: memories: {memory!r} is not an external memory region of {target}")
    for memory in MEMORIES:
        if memory in raw and memory not in memories:
            raise OptionError(f"{where}: [{memory}] is given but {memory!r} is not in `memories`")

    limits = load_limits(target_folder)
    clocks, clocks_y, pll2 = _clocks(top.table("clock"), where, limits)
    if cpu_hz and clocks.cpu_hz != cpu_hz:
        raise OptionError(f"{where}: the clock tree gives a {clocks.cpu_hz} Hz CPU; {target} says {cpu_hz} Hz")
    console = _console(top.table("console"), clocks, clocks_y, limits)
    sdram = _sdram(top.table("sdram"), clocks, clocks_y, pll2, limits) if "sdram" in memories else None
    qspi = _qspi(top.table("qspi"), clocks, clocks_y, limits) if "qspi" in memories else None
    top.done()
    if sdram is not None and (sdram.size & (sdram.size - 1) or sdram.size > SDRAM_BANK_WINDOW):
        raise OptionError(f"{where}: [sdram] size {sdram.size:,} must be a power of two (one MPU region) of at most "
                          f"{SDRAM_BANK_WINDOW >> 20} MB (FMC SDRAM bank {sdram.bank}'s window at "
                          f"{sdram.base:#010x})")  # fmt: skip

    board = Board(board_name, description, path, target, memories, clocks, console, sdram, qspi, clocks_y, pll2,
                  limits, part, supply, template)  # fmt: skip
    seen: dict[tuple[int, int], str] = {}
    for pin in board.pins:
        other = seen.setdefault((pin.port, pin.number), pin.signal)
        if other != pin.signal:
            raise OptionError(f"{where}: {pin.name} is used for both {other} and {pin.signal}")
        if part.package is not None and not part.package.has_pin(pin.port, pin.number):
            raise OptionError(f"{where}: {pin.signal} on {pin.name}: the {part.name}'s package "
                              f"({part.package.name}) has no {pin.name}")  # fmt: skip
    return board


def board_regions(regions: Iterable[MemoryRegion], board: Board) -> list[MemoryRegion]:
    """The target's memory regions as this board has them: internal flash the part's size, SDRAM at its bank's
    address with its size, the QSPI window as large as the flash behind it; external memories the board does not
    have are left out."""
    out = []
    for region in regions:
        if region.name == "flash":
            out.append(replace(region, size=board.flash_size))
        elif region.name == "sdram":
            if board.sdram is not None:
                out.append(replace(region, origin=board.sdram.base, size=board.sdram.size))
        elif region.name == "qspi":
            if board.qspi is not None:
                out.append(replace(region, size=board.qspi.size))
        elif not region.external or region.name in board.memories:
            out.append(region)
    return out
