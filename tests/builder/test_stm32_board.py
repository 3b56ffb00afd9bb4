"""The STM32H743 board layer without a board.

Two halves. ``llmcu.platform.stm32h7``: board files are checked with messages that name the file and the key, and
the register values derived from them (clocks, flash wait states, baud divisor, FMC SDRAM timings and
refresh, QUADSPI) are right; the expected numbers here are worked out from the datasheet values in the
test, not taken from the module. The C: each board's board layer is compiled with its generated
``board_config.h`` and run under unicorn against the register models of ``mmio_emu``, and the tests
assert what it writes and in which order (RM0433's sequences: supply, VOS1 then VOS0, PLL configured
while off, flash latency before the switch; the JEDEC SDRAM sequence; QE before memory-mapped mode;
caches invalidated before they are enabled; the console's baud divisor; the 64-bit cycle counter).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from llmcu.builder.boardconfig import render_board_config, write_board_config
from llmcu.core.errors import OptionError
from llmcu.platform.stm32h7 import Board, list_boards, load_board
from support.board_layer import CC, CPU_FLAGS, LINKER_SCRIPT, TARGET, WARNINGS, board_variant, compile_boards, soc_for
from support.build import ROOT

BOARDS = tuple(list_boards(TARGET))  # the real boards and the template


def board_file(name: str) -> dict:
    return tomllib.loads((TARGET / "boards" / f"{name}.toml").read_text())


# ---- llmcu.platform.stm32h7: derived values ----


def test_boards_are_listed() -> None:
    real = ["daisy-seed", "nucleo-h743zi", "nucleo-h743zi2", "stm32h743i-eval", "stm32h750b-dk", "weact-mini-h743"]
    assert list_boards(TARGET) == sorted([*real, "h743-sdram-qspi"])


def test_nucleo_clock_tree_and_console() -> None:
    board = load_board(TARGET, "nucleo-h743zi")
    clocks = board.clocks
    assert (clocks.ref_hz, clocks.vco_hz, clocks.sys_hz) == (8_000_000, 960_000_000, 480_000_000)
    assert (clocks.cpu_hz, clocks.hclk_hz) == (480_000_000, 240_000_000)
    assert {clocks.pclk1_hz, clocks.pclk2_hz, clocks.pclk3_hz, clocks.pclk4_hz} == {120_000_000}
    assert (clocks.pll1_rge, clocks.pll1_vcosel) == (3, 0)  # 8 MHz: 8-16 MHz range; wide VCO
    assert (clocks.flash_latency, clocks.flash_wrhighfreq) == (4, 2)  # 240 MHz AXI at VOS0
    assert clocks.prescaler_bits == {"d1cpre": 0, "hpre": 8, "d1ppre": 4, "d2ppre1": 4, "d2ppre2": 4, "d3ppre": 4}
    console = board.console
    assert (console.uart, console.instance, console.apb, console.kernel_hz) == ("USART3", 3, 1, 120_000_000)
    assert console.brr == round(120_000_000 / 115_200) == 1042
    assert (console.tx.port, console.tx.number, console.tx.af, console.tx.name) == (3, 8, 7, "PD8")
    assert (console.rx.port, console.rx.number, console.rx.af) == (3, 9, 7)
    assert "0483:374b" in console.usb_ids
    assert board.sdram is None and board.qspi is None and board.memories == ()


def test_custom_board_clock_tree() -> None:
    board = load_board(TARGET, "h743-sdram-qspi")
    clocks = board.clocks
    assert (clocks.ref_hz, clocks.pll1_rge, clocks.vco_hz, clocks.cpu_hz) == (5_000_000, 2, 960_000_000, 480_000_000)
    # PLL2 gives the FMC 200 MHz whatever the CPU runs: 25 MHz / 5 x 80 / 2.
    assert board.pll2 is not None and (board.pll2.ref_hz, board.pll2.vco_hz, board.pll2.r_hz) == (
        5_000_000, 400_000_000, 200_000_000)  # fmt: skip


def test_both_revisions_get_a_plan_within_their_limits() -> None:
    """Revision V runs the board file's 480 MHz at VOS0; revision Y (400 MHz at most, VOS1) gets PLL1 N lowered
    and everything that depends on the clocks recomputed: flash wait states, the console's BRR, QSPI's prescaler."""
    for name, hse_ref in (("nucleo-h743zi", 8_000_000), ("h743-sdram-qspi", 5_000_000)):
        board = load_board(TARGET, name)
        v, y = board.clocks, board.clocks_y
        assert y is not None and (v.revision, y.revision) == ("V", "Y")
        assert (v.vos, v.cpu_hz, v.hclk_hz) == (0, 480_000_000, 240_000_000)
        assert (y.vos, y.cpu_hz, y.hclk_hz, y.pll1_n) == (1, 400_000_000, 200_000_000, 400_000_000 * 2 // hse_ref)
        assert {y.pclk1_hz, y.pclk2_hz, y.pclk3_hz, y.pclk4_hz} == {100_000_000}
        assert (y.flash_latency, y.flash_wrhighfreq) == (2, 2)  # 200 MHz AXI at VOS1 (RM0433's table)
        assert board.console.brr_y == round(100_000_000 / 115_200) and board.console.brr_hsi == round(64e6 / 115_200)
    qspi = load_board(TARGET, "h743-sdram-qspi").qspi
    assert qspi is not None and (qspi.prescaler_y, qspi.clock_hz_y) == (1, 100_000_000)


def expected_sdram_cycles(sdclk_hz: int) -> dict[str, int]:
    """IS42S16400J-7 datasheet values to SDCLK cycles, rounding up, with RM0433's TWR rule applied."""
    ns = {"xsr": 70, "ras": 42, "rc": 63, "rp": 15, "rcd": 15}
    cycles = {name: math.ceil(value * sdclk_hz / 1e9 - 1e-9) for name, value in ns.items()}
    cycles["mrd"] = 2
    cycles["wr"] = max(2, cycles["ras"] - cycles["rcd"], cycles["rc"] - cycles["rcd"] - cycles["rp"])
    return cycles


def sdtr(cycles: dict[str, int]) -> int:
    order = ("mrd", "xsr", "ras", "rc", "wr", "rp", "rcd")  # FMC_SDTR fields, 4 bits each from bit 0
    return sum((cycles[name] - 1) << (4 * i) for i, name in enumerate(order))


def test_sdram_registers_from_datasheet_timings() -> None:
    sdram = load_board(TARGET, "h743-sdram-qspi").sdram
    assert sdram is not None
    assert sdram.sdclk_hz == 100_000_000  # PLL2 R 200 MHz / 2: the STM32H743's FMC limit (DS12110)
    assert (sdram.kernel_clock, sdram.kernel_hz) == ("pll2_r", 200_000_000)
    cycles = expected_sdram_cycles(100_000_000)
    assert cycles == {"xsr": 7, "ras": 5, "rc": 7, "rp": 2, "rcd": 2, "mrd": 2, "wr": 3}  # tWR 2 -> 3 by the rule
    assert sdram.cycles == cycles
    assert sdram.sdtr1 == sdtr(cycles) == 0x01126461
    # NC 8 bits (0), NR 12 bits (1), MWID 16 bits (1), NB 4 banks, CAS 3, SDCLK HCLK/2 (0b10), RBURST.
    assert sdram.sdcr1 == 0 | 1 << 2 | 1 << 4 | 1 << 6 | 3 << 7 | 2 << 10 | 1 << 12
    assert (sdram.sdcr2, sdram.sdtr2) == (0, 0)
    # 64 ms / 4096 rows = 15.625 us = 1562 SDCLK cycles at 100 MHz, less the FMC's 20-cycle margin.
    assert sdram.refresh_count == 1562 - 20
    assert sdram.mode_register == 3 << 4 | 1 << 9  # burst 1, sequential, CL3, single write burst
    assert sdram.startup_cycles == 48_000  # 100 us at 480 MHz
    assert len(sdram.pins) == 38 and {pin.af for pin in sdram.pins} == {12}


def test_sdram_registers_follow_the_clock(tmp_path: Path) -> None:
    edits = [("sdclk_divider = 2", "sdclk_divider = 3"), ("cas_latency = 3", "cas_latency = 2")]
    target = board_variant(tmp_path, "h743-sdram-qspi", edits)
    sdram = load_board(target, "h743-sdram-qspi").sdram
    assert sdram is not None and sdram.sdclk_hz == 200_000_000 // 3
    cycles = expected_sdram_cycles(200_000_000 // 3)
    assert sdram.cycles == cycles and sdram.sdtr1 == sdtr(cycles)
    assert sdram.sdcr1 >> 10 & 3 == 3 and sdram.sdcr1 >> 7 & 3 == 2
    assert sdram.refresh_count == 1041 - 20
    assert sdram.mode_register == 2 << 4 | 1 << 9


def test_qspi_values() -> None:
    qspi = load_board(TARGET, "h743-sdram-qspi").qspi
    assert qspi is not None
    assert (qspi.kernel_hz, qspi.prescaler, qspi.clock_hz) == (240_000_000, 1, 120_000_000)  # <= 133 MHz
    assert qspi.fsize == 24  # 16 MB = 2^(23 + 1), plus one for the errata workaround
    assert qspi.csht == math.ceil(50 * 0.12) - 1  # 50 ns of NCS high at 120 MHz
    assert (qspi.read_instruction, qspi.adsize, qspi.dummy_clocks, qspi.mode_byte) == (0xEB, 2, 4, 0xFF)
    assert (qspi.quad_enable.register, qspi.quad_enable.bit, qspi.quad_enable.write) == ("status2", 1, 0x31)
    assert qspi.jedec_id == (0xEF, 0x40, 0x18) and qspi.chips == 1
    assert [pin.name for pin in qspi.pins] == ["PB2", "PB6", "PD11", "PD12", "PE2", "PD13"]


def test_rendered_header() -> None:
    custom = render_board_config(load_board(TARGET, "h743-sdram-qspi"))
    for line in (
        "#define BOARD_HAS_SDRAM 1",
        "#define BOARD_HAS_QSPI 1",
        "#define BOARD_FMC_SDTR1 0x01126461u",
        "#define BOARD_SDRAM_REFRESH_COUNT 1542u",
        "#define BOARD_FMC_KERNEL_SEL 2u /* RCC_D1CCIPR FMCSEL: pll2_r, 200000000 Hz */",
        "#define BOARD_PLL2_N 80u /* VCO 400000000 Hz */",
        "#define BOARD_SDRAM_MODE_REGISTER 0x0230u",
        "#define BOARD_QSPI_FSIZE 24u",
        "#define BOARD_UART_INSTANCE 1",
        "#define BOARD_UART_TX_PIN(X) X(0, 9, 7)",
        "#define BOARD_PLAN_V { 0x2003u, 'V', 0u, 192u, 4u, 2u, 480000000u, 240000000u, 1042u, 1u, 5u }",
        "#define BOARD_PLAN_Y { 0x1003u, 'Y', 1u, 160u, 2u, 2u, 400000000u, 200000000u, 868u, 1u, 4u }",
        "    X(7, 3, 12) /* SDNE0 PH3 */",
    ):
        assert line in custom, line
    nucleo = render_board_config(load_board(TARGET, "nucleo-h743zi"))
    assert "#define BOARD_HAS_SDRAM 0" in nucleo and "BOARD_SDRAM_BASE" not in nucleo
    assert "#define BOARD_UART_RX_PIN(X) X(3, 9, 7)" in nucleo


def test_write_board_config(tmp_path: Path) -> None:
    board = load_board(TARGET, "nucleo-h743zi")
    write_board_config(board, tmp_path / "gen" / "board_config.h")
    assert (tmp_path / "gen" / "board_config.h").read_text() == render_board_config(board)


# ---- llmcu.platform.stm32h7: validation ----


def test_unknown_board_lists_the_known_ones() -> None:
    known = r"unknown board 'nucleo-f446re'.*known boards: daisy-seed, h743-sdram-qspi, nucleo-h743zi, nucleo-h743zi2"
    with pytest.raises(OptionError, match=known):
        load_board(TARGET, "nucleo-f446re")


NUCLEO_ERRORS = [
    ("baud = 115200", "baudrate = 115200", r"\[console\]: missing `baud`"),
    ("baud = 115200", "baud = 115200\nspeed = 3", r"\[console\]: unknown key\(s\) speed"),
    ("p = 2", "p = 3", r"\[clock\]: `p` = 3: PLL1 DIVP must be even"),
    ("n = 120", "n = 200", r"PLL1 VCO 1,600,000,000 Hz .* must be 192,000,000-960,000,000 Hz \(RM0433"),
    (
        "hpre = 2 ",
        "hpre = 1 ",
        r"HCLK \(CPU / hpre\) is 480,000,000 Hz, above the STM32H743's 240,000,000 Hz \(DS12110",
    ),
    (
        "d2ppre1 = 2 ",
        "d2ppre1 = 1 ",
        r"HCLK / d2ppre1 is 240,000,000 Hz, above the STM32H743's 120,000,000 Hz \(DS12110",
    ),
    ("p = 2", "p = 4", r"the clock tree gives a 240000000 Hz CPU; stm32h743 says 480000000"),
    ('pin = "PD8"', 'pin = "PZ8"', r"`tx` = 'PZ8' is not a pin"),
    ('pin = "PD9"', 'pin = "PD8"', r"PD8 is used for both tx and rx"),
    ('uart = "USART3"', 'uart = "LPUART1"', r"uart 'LPUART1' is not one of"),
    (", af = 7 }", " }", r"`tx`: missing `af`"),
    ("vos = 0", "vos = 2", r"vos 2 is not supported"),
    ('name = "nucleo-h743zi"', 'name = "nucleo"', r"does not match the file name"),
    ("memories = []", 'memories = ["nand"]', r"'nand' is not one of sdram, qspi"),
    ("memories = []", 'memories = ["sdram"]', r"\[sdram\]: must be a table|missing `sdram`"),
    ("[clock]", "[clock", r"not valid TOML"),
]


@pytest.mark.parametrize(("old", "new", "message"), NUCLEO_ERRORS)
def test_nucleo_board_errors(tmp_path: Path, old: str, new: str, message: str) -> None:
    target = board_variant(tmp_path, "nucleo-h743zi", [(old, new)])
    with pytest.raises(OptionError, match=message) as error:
        load_board(target, "nucleo-h743zi")
    assert "nucleo-h743zi.toml" in str(error.value) or "unknown board" in str(error.value)


CUSTOM_ERRORS = [
    ('size = "8M"', 'size = "16M"', r"\[sdram\]: size 16777216 bytes does not match the geometry"),
    # the STM32H743's FMC limit planted: PLL2 R = 1 gives the FMC 400 MHz, SDCLK 200 MHz
    (
        "r = 2\n\n[clock.dividers]",
        "r = 1\n\n[clock.dividers]",
        r"SDCLK \(pll2_r / sdclk_divider 2\) is 200,000,000 Hz, above the STM32H743's 100,000,000 Hz \(DS12110",
    ),
    ('kernel_clock = "pll2_r"', 'kernel_clock = "hclk"', r"SDCLK would differ between revision V .* from PLL2"),
    ("[clock.pll2]", "[clock.pll3]", r"unknown key\(s\) pll3"),
    ('SDNWE = "PH5"\n', "", r"\[sdram.pins\]: missing pin\(s\) for SDNWE"),
    ("t_rp_ns = 15", "t_rp_ns = 15\nt_rp_clk = 2", r"\[sdram.timing\]: give exactly one of `t_rp_ns` and `t_rp_clk`"),
    ("t_rc_ns = 63", "t_rc_ns = 200", r"t_rc is 20 SDCLK cycles at 100000000 Hz; FMC_SDTR holds 1-16"),
    ("refresh_rows = 4096", "refresh_rows = 262144", r"refresh count 4 is outside 41..8191"),
    ("sdclk_divider = 2", "sdclk_divider = 4", r"sdclk_divider 4 must be 2 or 3"),
    ("bank = 1 ", "bank = 2 ", r"\[sdram.pins\]: missing pin\(s\) for SDCKE1, SDNE1"),
    ('A11 = "PG1"', 'A11 = "PD11"', r"PD11 is used for both A11 and IO0"),
    ('memories = ["sdram", "qspi"]', 'memories = ["sdram"]', r"\[qspi\] is given but 'qspi' is not in `memories`"),
    ('size = "16M"', 'size = "12M"', r"\[qspi\]: size 12582912 must be a power of two"),
    ("clock_mode = 0", "clock_mode = 1", r"clock_mode 1 must be 0 or 3"),
    ("dummy_clocks = 4", "dummy_clocks = 40", r"`dummy_clocks` = 40 is outside 0..31"),
    ("IO3 = { pin", "IO4 = { pin", r"\[qspi.pins\]: missing pin\(s\) for IO3"),
    ("max_clock_hz = 133_000_000", "max_clock_hz = 100_000", r"`max_clock_hz` = 100000 is outside"),
]


@pytest.mark.parametrize(("old", "new", "message"), CUSTOM_ERRORS)
def test_custom_board_errors(tmp_path: Path, old: str, new: str, message: str) -> None:
    target = board_variant(tmp_path, "h743-sdram-qspi", [(old, new)])
    with pytest.raises(OptionError, match=message) as error:
        load_board(target, "h743-sdram-qspi")
    assert "h743-sdram-qspi.toml" in str(error.value)


# ---- the C board layer under unicorn ----


@pytest.fixture(scope="module")
def firmware(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Board]]:
    """Each board's board layer, compiled warning-free and linked for the emulator."""
    return compile_boards(BOARDS, tmp_path_factory)


def chip(firmware: dict, name: str, **options):  # -> mmio_emu.Stm32h743
    return soc_for(*firmware[name], **options)


def assert_clean(soc) -> None:
    assert soc.violations == []
    assert soc.unknown == []


@pytest.mark.parametrize("name", BOARDS)
def test_clock_bring_up(firmware: dict, name: str) -> None:
    soc = chip(firmware, name)
    soc.call("board_early_init")
    assert_clean(soc)
    raw = board_file(name)["clock"]
    pll = raw["pll1"]

    # Supply: LDO, written once, before any voltage scaling.
    assert [a.value & 7 for a in soc.writes("PWR_CR3")] == [0b010]
    vos1 = soc.first_write("PWR_D3CR", lambda v: v >> 14 & 3 == 3)
    assert soc.first_write("PWR_CR3") < vos1
    # VOS0 = VOS1, then SYSCFG ODEN (with the SYSCFG clock on), each followed by a VOSRDY wait.
    oden = soc.first_write("SYSCFG_PWRCR", lambda v: v & 1)
    assert soc.first_write("RCC_APB4ENR", lambda v: v >> 1 & 1) < oden
    assert vos1 < oden
    vosrdy_reads = [a.seq for a in soc.log if a.kind == "r" and a.name == "PWR_D3CR" and a.value >> 13 & 1]
    assert any(vos1 < seq < oden for seq in vosrdy_reads) and any(seq > oden for seq in vosrdy_reads)

    # HSE: bypass only for the ST-LINK's clock, and set before HSEON.
    hseon = soc.first_write("RCC_CR", lambda v: v >> 16 & 1)
    if raw["hse_bypass"]:
        assert soc.first_write("RCC_CR", lambda v: v >> 18 & 1) < hseon
    else:
        assert all(not a.value >> 18 & 1 for a in soc.writes("RCC_CR"))

    # PLL1 configured while off, then enabled.
    pll_on = soc.first_write("RCC_CR", lambda v: v >> 24 & 1)
    for register in ("RCC_PLLCKSELR", "RCC_PLLCFGR", "RCC_PLL1DIVR"):
        assert all(a.seq < pll_on for a in soc.writes(register)), register
    assert soc.reg("RCC_PLLCKSELR") & 0x3F3 == pll["m"] << 4 | 2  # DIVM1, PLLSRC = HSE
    ref_mhz = raw["hse_hz"] / pll["m"] / 1e6
    rge = 0 if ref_mhz < 2 else 1 if ref_mhz < 4 else 2 if ref_mhz < 8 else 3
    assert soc.reg("RCC_PLLCFGR") & 0xF == rge << 2  # integer mode, wide VCO, input range
    assert soc.reg("RCC_PLLCFGR") >> 16 & 7 == 7  # DIVP1EN, DIVQ1EN, DIVR1EN
    expected_divr = (pll["n"] - 1) | (pll["p"] - 1) << 9 | (pll["q"] - 1) << 16 | (pll["r"] - 1) << 24
    assert soc.reg("RCC_PLL1DIVR") == expected_divr

    # Flash latency raised before the switch; at the switch the chip is at VOS0 with the dividers set.
    switch = soc.first_write("RCC_CFGR", lambda v: v & 7 == 3)
    assert soc.first_write("FLASH_ACR", lambda v: v & 0xF == 4 and v >> 4 & 3 == 2) < switch
    assert soc.switch_state == {
        "vos": 0,
        "latency": 4,
        "wrhighfreq": 2,
        "d1cfgr": 0b0000 << 8 | 0b1000 | 0b100 << 4,  # CPU /1, HCLK /2, APB3 /2
        "d2cfgr": 0b100 << 4 | 0b100 << 8,  # APB1 /2, APB2 /2
        "d3cfgr": 0b100 << 4,  # APB4 /2
    }
    assert soc.reg("RCC_CFGR") >> 3 & 7 == 3  # SWS = PLL1


def rasr(size_log2: int, ap: int, tex: int, c: int, b: int, xn: int, srd: int = 0) -> int:
    """MPU_RASR from its fields (ARMv7-M ARM B3.5.9)."""
    return xn << 28 | ap << 24 | tex << 19 | c << 17 | b << 16 | srd << 8 | (size_log2 - 1) << 1 | 1


@pytest.mark.parametrize("name", BOARDS)
def test_mpu_and_caches(firmware: dict, name: str) -> None:
    soc = chip(firmware, name)
    soc.call("board_early_init")
    assert_clean(soc)
    # Region 0: 0x60000000-0xDFFFFFFF (subregions 3-6 of 4 GB) no access, execute-never, strongly ordered.
    assert soc.mpu_regions[0] == (0x00000000, rasr(32, ap=0, tex=0, c=0, b=0, xn=1, srd=0x87))
    assert soc.mpu_regions[1] == (0x40000000, rasr(29, ap=3, tex=0, c=0, b=1, xn=1))  # shared device
    board = firmware[name][1]
    # Each external memory at the board's address and size (SDRAM bank 1 or 2), and accessible only after it has
    # been brought up.
    if board.sdram is not None:
        log2 = board.sdram.size.bit_length() - 1
        assert soc.mpu_regions[2] == (board.sdram.base, rasr(log2, ap=3, tex=1, c=1, b=1, xn=0))  # write-back
        sdram_region = next(a.seq for a in soc.log if a.name == "MPU_RASR" and a.value == soc.mpu_regions[2][1])
        assert sdram_region > soc.first_write("FMC_SDRTR")
    if board.qspi is not None:
        log2 = board.qspi.size.bit_length() - 1
        assert soc.mpu_regions[3] == (0x90000000, rasr(log2, ap=6, tex=0, c=1, b=0, xn=0))  # read-only WT
        qspi_region = next(a.seq for a in soc.log if a.name == "MPU_RASR" and a.value == soc.mpu_regions[3][1])
        assert qspi_region > soc.memory_mapped_state["seq"]
    opened = {2} if board.sdram else set()
    opened |= {3} if board.qspi else set()
    assert all(soc.mpu_regions[n][1] == 0 for n in range(2, 16) if n not in opened)
    assert soc.reg("MPU_CTRL") == 0b101  # ENABLE, PRIVDEFENA

    # I-cache invalidated, then enabled; D-cache invalidated by set/way (128 sets x 4 ways), then enabled.
    ic_on = soc.first_write("SCB_CCR", lambda v: v >> 17 & 1)
    dc_on = soc.first_write("SCB_CCR", lambda v: v >> 16 & 1)
    assert soc.first_write("SCB_ICIALLU") < ic_on
    sweeps = soc.writes("SCB_DCISW")
    assert sorted(a.value for a in sweeps) == sorted(way << 30 | s << 5 for s in range(128) for way in range(4))
    assert soc.first_write("SCB_CSSELR") < sweeps[0].seq and sweeps[-1].seq < dc_on


@pytest.mark.parametrize("name", BOARDS)
def test_early_init_leaves_static_data_alone(firmware: dict, name: str) -> None:
    """board_early_init runs before .data/.bss exist: it may write its stack (DTCM), nothing in RAM."""
    from support.mmio_emu import AXI_SRAM

    soc = chip(firmware, name)
    stop = soc.watch_ram_writes(AXI_SRAM[0], AXI_SRAM[0] + AXI_SRAM[1])
    soc.call("board_early_init")
    stop()
    assert soc.ram_writes == []


def test_sdram_jedec_sequence(firmware: dict) -> None:
    soc = chip(firmware, "h743-sdram-qspi")
    soc.call("board_early_init")
    assert_clean(soc)
    sdram = board_file("h743-sdram-qspi")["sdram"]
    commands = soc.sdram_commands
    # Clock configuration enable, precharge all, auto-refresh x N, load mode register; bank 1 only.
    assert [c["mode"] for c in commands] == [1, 2, 3, 4]
    assert all(c["ctb1"] == 1 and c["ctb2"] == 0 for c in commands)
    assert commands[2]["nrfs"] == sdram["auto_refresh_commands"] == 8
    assert commands[3]["mrd"] == sdram["cas_latency"] << 4 | 1 << 9  # burst 1, CL3, single-location writes
    # At least 100 us with the clock running before the first real command, by the DWT cycle counter.
    assert commands[1]["cyccnt"] - commands[0]["cyccnt"] >= 100e-6 * 480e6
    # Configuration before the FMC is enabled and before the commands; refresh rate last.
    cycles = expected_sdram_cycles(100_000_000)
    assert soc.reg("FMC_SDTR1") == sdtr(cycles)
    # The FMC's kernel clock is PLL2 R (FMCSEL = 10), selected before the FMC's bus clock goes on, PLL2 locked.
    assert soc.reg("RCC_D1CCIPR") & 3 == 2
    assert soc.first_write("RCC_D1CCIPR", lambda v: v & 3 == 2) < soc.first_write("RCC_AHB3ENR", lambda v: v >> 12 & 1)
    assert soc.first_write("RCC_CR", lambda v: v >> 26 & 1) < soc.first_write("RCC_D1CCIPR", lambda v: v & 3 == 2)
    assert soc.reg("FMC_SDCR1") == 1 << 2 | 1 << 4 | 1 << 6 | 3 << 7 | 2 << 10 | 1 << 12
    fmc_on = soc.first_write("FMC_BCR1", lambda v: v >> 31)
    assert soc.first_write("FMC_SDCR1") < fmc_on and soc.first_write("FMC_SDTR1") < fmc_on < commands[0]["seq"]
    assert not soc.reg("FMC_BCR1") & 1  # the unused NOR/PSRAM bank 1 is disabled
    refresh = 64e-3 / 4096 * 100e6 - 20
    assert soc.reg("FMC_SDRTR") == int(refresh) << 1 and soc.first_write("FMC_SDRTR") > commands[3]["seq"]
    # Every FMC pin of the board file: alternate function 12, very high speed.
    for signal, pin in sdram["pins"].items():
        if signal == "af":
            continue
        assert_pin(soc, pin, af=12, speed=3)


def assert_pin(soc, pin: str, af: int, speed: int) -> None:
    port, number = pin[1], int(pin[2:])
    assert soc.reg(f"GPIO{port}_MODER") >> 2 * number & 3 == 2, pin
    afr = soc.reg(f"GPIO{port}_AFRL" if number < 8 else f"GPIO{port}_AFRH")
    assert afr >> 4 * (number % 8) & 0xF == af, pin
    assert soc.reg(f"GPIO{port}_OSPEEDR") >> 2 * number & 3 == speed, pin


@pytest.mark.parametrize("quad_enabled", [False, True], ids=["qe-clear", "qe-already-set"])
def test_qspi_quad_enable_then_memory_mapped(firmware: dict, quad_enabled: bool) -> None:
    soc = chip(firmware, "h743-sdram-qspi")
    soc.flash.status2 = 0x02 if quad_enabled else 0x00
    soc.call("board_early_init")
    assert_clean(soc)
    log = soc.flash.log
    # Out of continuous-read mode, reset as QPI and as SPI, the JEDEC ID, then status register 2.
    bring_up = [("mode_bits_high", 0xFF, None), ("command4", 0x66, None), ("command4", 0x99, None)]
    bring_up += [("command", 0x66, None), ("command", 0x99, None), ("read", 0x9F, None), ("read", 0x35, None)]
    assert log[:7] == bring_up and soc.flash.resets == 1
    if quad_enabled:
        assert log[7:] == []  # a set QE is not rewritten
    else:
        assert log[7:9] == [("command", 0x06, None), ("write", 0x31, 0x02)]  # write enable, then QE
        polls = log[9:-1]
        assert polls and all(entry == ("read", 0x05, None) for entry in polls) and soc.flash.busy_polls == 0
        assert log[-1] == ("read", 0x35, None)  # read back
    state = soc.memory_mapped_state
    assert state is not None and state["qe"] == 1  # QE was set before memory-mapped mode
    # Fast read quad I/O: instruction 1 line, 24-bit address 4 lines, mode byte 4 lines, 4 dummy, data 4 lines.
    expected_ccr = 3 << 26 | 3 << 24 | 4 << 18 | 0 << 16 | 3 << 14 | 2 << 12 | 3 << 10 | 1 << 8 | 0xEB
    assert state["ccr"] == expected_ccr and state["abr"] == 0xFF
    assert soc.reg("QUADSPI_DCR") == 24 << 16 | 5 << 8  # FSIZE, CSHT, CKMODE 0
    assert soc.reg("QUADSPI_CR") == 1 << 24 | 1 << 4 | 1  # prescaler 1 (120 MHz), SSHIFT, EN
    for pin, af in (("PB2", 9), ("PB6", 10), ("PD11", 9), ("PD12", 9), ("PE2", 9), ("PD13", 9)):
        assert_pin(soc, pin, af=af, speed=3)


def read_string(soc, address: int) -> str:
    data = soc.uc.mem_read(address, 32)
    return bytes(data.split(b"\0")[0]).decode()


@pytest.mark.parametrize("name", BOARDS)
def test_console_uart(firmware: dict, name: str) -> None:
    from support.mmio_emu import AXI_SRAM

    soc = chip(firmware, name)
    soc.call("board_early_init")
    soc.call("board_init")
    assert_clean(soc)
    console = board_file(name)["console"]
    uart = console["uart"]
    assert soc.reg(f"{uart}_BRR") == round(120e6 / console["baud"]) == 1042  # APB clock 120 MHz
    assert soc.reg(f"{uart}_CR1") == 0b1101  # TE, RE, UE
    assert soc.first_write(f"{uart}_BRR") < soc.first_write(f"{uart}_CR1", lambda v: v & 1)
    assert_pin(soc, console["tx"]["pin"], af=console["tx"]["af"], speed=1)
    assert_pin(soc, console["rx"]["pin"], af=console["rx"]["af"], speed=1)

    message = b"\x02llmcu 1\n"
    soc.uc.mem_write(AXI_SRAM[0] + 0x1000, message)
    soc.call("board_write", AXI_SRAM[0] + 0x1000, len(message))
    assert bytes(soc.tx) == message

    soc.rx.extend(b"Z")
    assert soc.call("board_read_byte", 0) & 0xFFFFFFFF == ord("Z")
    before = soc.cyccnt
    assert soc.call("board_read_byte", 2) & 0xFFFFFFFF == 0xFFFFFFFF  # -1 after the timeout
    assert soc.cyccnt - before >= 2 * 480_000  # 2 ms of CPU cycles went by
    assert_clean(soc)


def test_cycle_counter_extends_past_32_bits(firmware: dict) -> None:
    soc = chip(firmware, "nucleo-h743zi")
    soc.call("board_early_init")
    soc.call("board_init")
    assert soc.reg("DEMCR") >> 24 & 1 and soc.reg("DWT_CTRL") & 1 and soc.reg("DWT_LAR") == 0xC5ACCE55
    assert soc.reg("SYST_RVR") == 0xFFFFFF and soc.reg("SYST_CSR") == 0b111  # every 2^24 CPU cycles
    soc.cyccnt = 0xFFFFFF00
    first = soc.call("board_counter")
    assert first >> 32 == 0 and first & 0xFFFFFFFF >= 0xFFFFFF00
    soc.cyccnt = 0x100  # CYCCNT wrapped; SysTick notices before anyone else asks
    soc.call("SysTick_Handler")
    second = soc.call("board_counter")
    assert second >> 32 == 1 and second > first
    soc.cyccnt = 0x200
    assert soc.call("board_counter") >> 32 == 1  # no second wrap counted
    assert soc.call("board_counter_hz") == 480_000_000
    assert read_string(soc, soc.call("board_counter_unit") & 0xFFFFFFFF) == "cycles"
    assert_clean(soc)


def test_fatal_drains_the_console_then_resets(firmware: dict) -> None:
    soc = chip(firmware, "nucleo-h743zi")
    soc.call("board_early_init")
    soc.call("board_init")
    soc.call("board_fatal", 3)
    assert soc.reset_requested
    reset = soc.first_write("SCB_AIRCR")
    assert soc.writes("SCB_AIRCR")[0].value == 0x05FA0004  # VECTKEY, SYSRESETREQ, PRIGROUP kept (0)
    tc_reads = [a.seq for a in soc.log if a.kind == "r" and a.name == "USART3_ISR" and a.value >> 6 & 1]
    assert tc_reads and tc_reads[-1] < reset
    assert_clean(soc)


def test_fatal_before_the_console_exists_still_resets(firmware: dict) -> None:
    """A fault during board_early_init: the report is dropped (no UART yet), the reset still happens."""
    from support.mmio_emu import AXI_SRAM

    soc = chip(firmware, "h743-sdram-qspi")
    soc.call("board_early_init")
    soc.uc.mem_write(AXI_SRAM[0], b"fault")
    soc.call("board_write", AXI_SRAM[0], 5)
    soc.call("board_fatal", 1)
    assert soc.reset_requested and bytes(soc.tx) == b""
    assert_clean(soc)  # the unclocked USART was never touched


# ---- watchdog (IWDG1), reset cause (RCC_RSR) and the stack guard beside the board's MPU regions ----

GUARD_BASE, GUARD_BYTES = 0x20000000, 256  # where cortex_m.ld.j2 puts them on the STM32H743: DTCM's start


@pytest.fixture(scope="module")
def watchdog_firmware(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The nucleo board layer built with watchdog=2s (the defines the build computes) and the shared stack
    guard, its linker symbols placed as the generated linker script places them."""
    if shutil.which(CC) is None:
        pytest.skip(f"{CC} not installed (tools/setup.sh installs it)")
    pytest.importorskip("unicorn", reason="unicorn not installed (pip install -r requirements.txt)")
    from llmcu.platform import watchdog
    from llmcu.platform.targets import load_target

    folder = tmp_path_factory.mktemp("watchdog")
    write_board_config(load_board(TARGET, "nucleo-h743zi"), folder / "board_config.h")
    (folder / "test.ld").write_text(LINKER_SCRIPT)
    defines = [f"-D{name}={value}" for name, value in watchdog.defines(load_target("stm32h743", ROOT / "targets"), 2.0)]
    sources = [
        TARGET / source
        for source in tomllib.loads((TARGET / "target.toml").read_text())["board"]["sources"]
        if not source.startswith("../")
    ]
    sources.append(ROOT / "targets" / "cortex-m" / "stack_guard.c")
    elf = folder / "board.elf"
    command = [CC, *CPU_FLAGS, "-std=c99", "-O2", *WARNINGS, "-ffunction-sections", "-fdata-sections", *defines]
    command += ["-I", str(ROOT / "targets" / "cortex-m"), "-I", str(folder), "-T", str(folder / "test.ld")]
    command += [f"-Wl,--defsym=__stack_guard={GUARD_BASE}", f"-Wl,--defsym=__stack_limit={GUARD_BASE + GUARD_BYTES}"]
    command += ["-nostdlib", *map(str, sources), "-lgcc", "-o", str(elf)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return elf


def test_watchdog_start_sequence(watchdog_firmware: Path) -> None:
    """RM0433's order: start (0xCCCC), unlock (0x5555), PR and RLR, wait until SR shows them taken, reload."""
    from support.mmio_emu import Stm32h743

    soc = Stm32h743(watchdog_firmware)
    soc.call("board_watchdog_start")
    keys = [(a.seq, a.value) for a in soc.writes("IWDG1_KR")]
    assert [value for _, value in keys] == [0xCCCC, 0x5555, 0xAAAA]
    # frozen while a debugger halts the core, set before the watchdog starts
    assert soc.reg("DBGMCU_APB4FZ1") == 1 << 18 and soc.first_write("DBGMCU_APB4FZ1") < keys[0][0]
    # 2 s at 32 kHz: prescaler /16 (PR=2) is the smallest whose reload fits 12 bits; 4,000 ticks -> RLR 3,999.
    assert soc.reg("IWDG1_PR") == 2 and soc.reg("IWDG1_RLR") == 2 * 32000 // 16 - 1
    assert keys[1][0] < soc.first_write("IWDG1_PR") < keys[2][0] and keys[1][0] < soc.first_write("IWDG1_RLR")
    polls = [a for a in soc.log if a.name == "IWDG1_SR"]
    assert polls and polls[-1].value == 0 and polls[-1].seq < keys[2][0]  # reloaded only once SR cleared
    assert soc.iwdg_started and not soc.iwdg_unlocked  # running, and PR/RLR locked again
    soc.call("board_watchdog_kick")
    assert soc.writes("IWDG1_KR")[-1].value == 0xAAAA and soc.iwdg_reloads == 2
    assert soc.call("board_watchdog_fired") & 0xFFFFFFFF == 0  # the IWDG resets; it raises no NMI
    assert_clean(soc)


def test_watchdog_off_touches_nothing(firmware: dict) -> None:
    soc = chip(firmware, "nucleo-h743zi")  # built without watchdog=: LLMCU_WATCHDOG is 0
    soc.call("board_watchdog_start")
    soc.call("board_watchdog_kick")
    assert not soc.iwdg_started and soc.writes("IWDG1_KR") == [] and soc.writes("DBGMCU_APB4FZ1") == []
    assert_clean(soc)


POR = 1 << 23 | 1 << 22 | 1 << 21 | 1 << 20 | 1 << 19 | 1 << 17  # PORRSTF, PINRSTF, BORRSTF, D2, D1, CPU
SYSTEM = 1 << 22 | 1 << 20 | 1 << 19 | 1 << 17  # what every system reset sets: PINRSTF (NRST is driven), D2, D1, CPU


def decode_reset(elf: Path, rsr: int) -> str:
    """board_reset_cause() on a chip whose RCC_RSR holds ``rsr``. The most specific flag wins (a power-on
    also sets BORRSTF and PINRSTF); the flags are cleared once read (RMVF), so the next boot's are its own,
    and the cause is kept for every ready line of this boot."""
    from support.mmio_emu import ADDRESSES, Stm32h743

    soc = Stm32h743(elf)
    soc.values[ADDRESSES["RCC_RSR"]] = rsr
    decoded = read_string(soc, soc.call("board_reset_cause") & 0xFFFFFFFF)
    assert soc.reg("RCC_RSR") == 0 and soc.writes("RCC_RSR")[0].value >> 16 & 1  # RMVF
    assert read_string(soc, soc.call("board_reset_cause") & 0xFFFFFFFF) == decoded
    assert len([a for a in soc.log if a.name == "RCC_RSR" and a.kind == "r"]) == 2  # read once, and RMVF's |=
    assert_clean(soc)
    return decoded


@pytest.mark.parametrize(
    ("rsr", "cause"),
    [
        pytest.param(1 << 28 | SYSTEM, "window_watchdog", id="wwdg"),
        pytest.param(1 << 24 | SYSTEM, "software", id="sysresetreq"),
        pytest.param(1 << 30 | SYSTEM, "low_power", id="lpwr"),
        pytest.param(POR, "power_on", id="por"),
        pytest.param(1 << 21 | SYSTEM, "brownout", id="bor"),
        pytest.param(SYSTEM, "pin", id="nrst"),
        pytest.param(0, "unknown", id="none"),
    ],
)
def test_reset_cause(watchdog_firmware: Path, rsr: int, cause: str) -> None:
    assert decode_reset(watchdog_firmware, rsr) == cause


@pytest.mark.fault(
    area="firmware",
    kind="fault",
    what="STM32H743 booting after IWDG1 reset it (RCC_RSR IWDG1RSTF, with PINRSTF as on the chip)",
    sees=r"reset=watchdog",
)
def test_reset_cause_after_a_watchdog_reset(watchdog_firmware: Path, sees) -> None:
    """What the next ready line says (firmware_main.c appends the cause), and what the capture makes of it."""
    serial = pytest.importorskip("serial")
    from llmcu.builder.settings import RunParams
    from llmcu.device import uart

    cause = decode_reset(watchdog_firmware, 1 << 26 | SYSTEM)
    ready = f"\x05llmcu ready 1 target=stm32h743 model=260k quant=q8 reset={cause}\n".encode()
    port = serial.serial_for_url("loop://", timeout=0.05)  # plays the board: a run cut short by the watchdog
    port.write(ready + b"\x02llmcu 1 target=stm32h743 unit=cycles\nOnce upon" + ready)
    with pytest.raises(uart.BoardResetError) as caught:
        uart.capture_run(port, RunParams("Once", 8, 0.0, 0.9, 1), resend_on_reset=0, ready_timeout=5, timeout=10)
    port.close()
    sees(f"{ready.decode()} -> {caught.value}")
    assert "watchdog reset it" in str(caught.value)
    assert caught.value.capture.reason == "watchdog" and caught.value.capture.attempts[0].text == b"Once upon"


def test_stack_guard_is_the_highest_region_beside_the_boards(watchdog_firmware: Path) -> None:
    """The guard takes region 15 (the highest, which wins where regions overlap) and leaves the board's
    regions and its MPU_CTRL bits as they were."""
    from support.mmio_emu import Stm32h743

    soc = Stm32h743(watchdog_firmware)
    soc.call("board_early_init")
    board_regions = {n: r for n, r in soc.mpu_regions.items() if n != 15}  # mpu_init clears all 16 first
    assert soc.mpu_regions[15] == (0, 0) and soc.call("cortex_m_stack_guard_enable") & 0xFFFFFFFF == 15
    assert soc.mpu_regions[15] == (GUARD_BASE, rasr(8, ap=0, tex=0, c=0, b=0, xn=1))  # 256 B, no access, XN
    assert {n: r for n, r in soc.mpu_regions.items() if n != 15} == board_regions
    assert soc.reg("MPU_CTRL") == 0b101  # ENABLE, PRIVDEFENA; HFNMIENA stays off: no MPU in HardFault/NMI
    assert_clean(soc)


# ---- silicon revisions and bounded waits ----


@pytest.mark.parametrize("name", BOARDS)
def test_revision_y_boots_its_own_plan(firmware: dict, name: str) -> None:
    """On revision Y (REV_ID 0x1003) the board takes revision Y's plan: VOS1 (no overdrive), PLL1 N for 400 MHz,
    the wait states for 200 MHz, the console's BRR for a 100 MHz APB; the counter's rate and the ready line say so.
    An unknown revision gets the same plan."""

    board = firmware[name][1]
    plan = board.clocks_y
    for revision in ("Y", "1234"):
        soc = chip(firmware, name, revision=revision)
        soc.call("board_early_init")
        soc.call("board_init")
        assert_clean(soc)
        assert not [a for a in soc.log if a.kind == "w" and a.name == "SYSCFG_PWRCR" and a.value & 1]  # no VOS0
        assert (soc.reg("RCC_PLL1DIVR") & 0x1FF) + 1 == plan.pll1_n
        assert soc.switch_state is not None and soc.switch_state["latency"] == plan.flash_latency
        uart = f"USART{board.console.instance}_BRR" if board.console.instance in (1, 2, 3, 6) else None
        if uart:
            assert soc.reg(uart) == board.console.brr_y
        assert soc.call("board_counter_hz") == 400_000_000
        description = soc.call("board_clock_description") & 0xFFFFFFFF
        assert soc.uc.mem_read(description, 24).split(b"\0")[0] == b"clock_hz=400000000 rev=Y"


HANGS = [
    ("nucleo-h743zi", "HSERDY", "hse_not_ready"),
    ("nucleo-h743zi", "PLL1RDY", "pll1_not_locked"),
    ("nucleo-h743zi", "ACTVOSRDY", "supply_not_ready"),
    ("nucleo-h743zi", "VOSRDY", "vos1_not_ready"),
    ("nucleo-h743zi", "VOS0RDY", "vos0_not_ready"),
    ("nucleo-h743zi", "FLASH_ACR", "flash_latency_not_set"),
    ("nucleo-h743zi", "SWS", "sysclk_not_switched"),
    ("h743-sdram-qspi", "PLL2RDY", "pll2_not_locked"),
    ("h743-sdram-qspi", "QSPI_TCF", "qspi_no_transfer_complete"),
    ("h743-sdram-qspi", "QSPI_IDLE", "qspi_busy"),
    ("h743-sdram-qspi", "FLASH_NOT_BUSY", "qspi_flash_busy"),
]


@pytest.mark.parametrize(("name", "flag", "reason"), HANGS)
def test_a_part_that_never_answers_is_a_fault_line(firmware: dict, name: str, flag: str, reason: str) -> None:
    """Every ready-wait is bounded: a flag that never comes ends the boot with the console up on the reset clock
    (HSI, every prescaler 1, BRR for 64 MHz) and one protocol fault line naming the step, then a halt."""

    board = firmware[name][1]
    soc = chip(firmware, name, cyccnt_step=4096, never=(flag,))
    soc.run_until_halt("board_early_init")
    line = bytes(soc.tx)
    assert line == f"\x03llmcu end status=fault reason={reason} stage=boot rev=V clock_hz=64000000\n".encode()
    assert soc.reg("RCC_CFGR") & 7 == 0  # back on HSI
    assert (soc.reg("RCC_D1CFGR"), soc.reg("RCC_D2CFGR"), soc.reg("RCC_D3CFGR")) == (0, 0, 0)
    uart = f"USART{board.console.instance}_BRR"
    assert soc.reg(uart) == board.console.brr_hsi == round(64_000_000 / board.console.baud)
    from llmcu.device.protocol import BOOT_FAILURES, describe_fault, parse

    out = parse(line)
    assert out.status == "fault" and out.end["reason"] == reason and out.end["stage"] == "boot"
    message = describe_fault(out.end)
    assert message.startswith(f"the board could not bring itself up: {reason}: ") and BOOT_FAILURES[reason] in message
