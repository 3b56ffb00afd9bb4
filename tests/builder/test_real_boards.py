"""The STM32H7 boards people own, and what a review of real silicon found would go wrong on them.

Board files: each real board's facts as its sources give them, its memory map (SDRAM bank 1 or 2, the part's
flash, the QSPI window as large as the flash behind it), and one clear error per kind of bad input. The C, under
the unicorn register model (support.mmio_emu) with each board's own part and NOR chip(s): the ES0392 AXI SRAM fix
on revision Y, the part check at boot, the supply, the QSPI bring-up that trusts nothing (reset, JEDEC ID, Quad
Enable wherever the chip keeps it, dual-flash), and a boot from what a bootloader left running.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmcu.builder.memplan import twin_regions
from llmcu.core.errors import OptionError
from llmcu.core.paths import TARGETS_DIR
from llmcu.platform.stm32h7 import board_regions, load_board
from llmcu.platform.targets import load_target
from support.board_layer import TARGET, board_variant, compile_boards, soc_for

REAL_BOARDS = ("nucleo-h743zi", "nucleo-h743zi2", "weact-mini-h743", "daisy-seed", "stm32h750b-dk", "stm32h743i-eval")
MB = 1 << 20


# ---- board files: facts and memory maps ----


def test_each_real_board_has_its_parts_facts() -> None:
    facts = {}
    for name in REAL_BOARDS:
        board = load_board(TARGET, name)
        sdram = board.sdram and (board.sdram.bank, board.sdram.base, board.sdram.size // MB, board.sdram.data_bits)
        qspi = board.qspi and (board.qspi.size // MB, board.qspi.dual_flash, board.qspi.quad_enable.register)
        facts[name] = (board.part.family, board.flash_size >> 10, board.supply, sdram, qspi)
    assert facts == {
        "nucleo-h743zi": ("STM32H743xI", 2048, "ldo", None, None),
        "nucleo-h743zi2": ("STM32H743xI", 2048, "ldo", None, None),
        "weact-mini-h743": ("STM32H743xI", 2048, "ldo", None, (8, False, "status2")),
        "daisy-seed": ("STM32H750xB", 128, "ldo", (1, 0xC0000000, 64, 32), (8, False, "status1")),
        "stm32h750b-dk": ("STM32H750xB", 128, "ldo", (2, 0xD0000000, 8, 16), (128, True, "none")),
        "stm32h743i-eval": ("STM32H743xI", 2048, "ldo", (2, 0xD0000000, 32, 32), (128, True, "none")),
    }
    dk = load_board(TARGET, "stm32h750b-dk").qspi
    assert dk.address_bits == 32 and dk.read_instruction == 0xEC and dk.chip_size == 64 * MB
    assert (dk.page_size, dk.sector_size) == (512, 8 << 10)  # as the window sees two chips side by side
    assert dk.fsize == 27  # 128 MB = 2^(26 + 1), plus one for the errata workaround


def test_each_board_file_names_its_sources() -> None:
    """The closing note's board facts come from documents each board file names in its header."""
    for name in REAL_BOARDS:
        header = (TARGET / "boards" / f"{name}.toml").read_text().split("\nname = ")[0]
        assert "Sources:" in header or "UM1974" in header, name


def test_memory_map_comes_from_the_board() -> None:
    target = load_target("stm32h743", TARGETS_DIR)
    regions = {b: {r.name: (r.origin, r.size) for r in board_regions(target.memory, load_board(TARGET, b))}
               for b in ("daisy-seed", "stm32h750b-dk", "nucleo-h743zi2")}  # fmt: skip
    assert regions["daisy-seed"]["flash"] == (0x08000000, 128 << 10)
    assert regions["daisy-seed"]["sdram"] == (0xC0000000, 64 * MB) and regions["daisy-seed"]["qspi"][1] == 8 * MB
    assert regions["stm32h750b-dk"]["sdram"] == (0xD0000000, 8 * MB)
    assert regions["stm32h750b-dk"]["qspi"] == (0x90000000, 128 * MB)
    assert "sdram" not in regions["nucleo-h743zi2"] and "qspi" not in regions["nucleo-h743zi2"]
    assert regions["nucleo-h743zi2"]["flash"] == (0x08000000, 2 * MB)


def test_twin_shares_its_window_and_keeps_the_parts_flash() -> None:
    """The twin follows the board as far as its 16 MB window allows: the smaller memory whole, the rest shared; and
    never more internal flash than the part has."""
    target, twin = load_target("stm32h743", TARGETS_DIR), load_target("qemu-m7", TARGETS_DIR)
    daisy = twin_regions(twin, board_regions(target.memory, load_board(TARGET, "daisy-seed")))
    sizes = {r.name: r.size for r in daisy}
    assert (sizes["qspi"], sizes["sdram"], sizes["flash"]) == (8 * MB, 8 * MB, 128 << 10)
    eval_board = twin_regions(twin, board_regions(target.memory, load_board(TARGET, "stm32h743i-eval")))
    assert {r.name: r.size for r in eval_board if r.external} == {"qspi": 8 * MB, "sdram": 8 * MB}


# ---- board files: bad input, one error each naming the key and what is allowed ----


@pytest.mark.parametrize(
    ("board", "old", "new", "message"),
    [
        pytest.param(
            "nucleo-h743zi2",
            'part = "STM32H743ZI"',
            'part = "STM32F746ZG"',
            r"`part`: part 'STM32F746ZG' is not one of this target's parts: STM32H743xI, STM32H743xG",
            marks=pytest.mark.fault(
                area="options",
                kind="input",
                what="board file: a part the target does not know",
                sees=r"is not one of this target's parts: STM32H743xI",
            ),
            id="unknown-part",
        ),
        pytest.param(
            "nucleo-h743zi2",
            'part = "STM32H743ZI"',
            'part = "STM32H747XI"',
            r"part 'STM32H747XI' is refused: dual-core \(Cortex-M7 \+ M4\) with an SMPS.*locks the chip",
            marks=pytest.mark.fault(
                area="options",
                kind="input",
                what="board file: an SMPS part (STM32H747, the H747I-DISCO's)",
                sees=r"is refused: dual-core .* with an SMPS",
            ),
            id="h747",
        ),
        pytest.param(
            "nucleo-h743zi2",
            'part = "STM32H743ZI"',
            'part = "STM32H7B3LI"',
            r"part 'STM32H7B3LI' is refused: another die \(RM0455\): 280 MHz, OCTOSPI",
            marks=pytest.mark.fault(
                area="options",
                kind="input",
                what="board file: a part of another die (STM32H7B3: OCTOSPI, 280 MHz)",
                sees=r"is refused: another die \(RM0455\)",
            ),
            id="h7b3",
        ),
        pytest.param(
            "nucleo-h743zi2",
            'supply = "ldo"',
            'supply = "smps"',
            r"supply = 'smps': the STM32H743xI has no SMPS; it is supplied by ldo",
            marks=pytest.mark.fault(
                area="options",
                kind="input",
                what="board file: an SMPS supply on a part without one",
                sees=r"has no SMPS; it is supplied by ldo",
            ),
            id="smps-supply",
        ),
        pytest.param(
            "nucleo-h743zi2",
            'supply = "ldo"',
            'supply = "battery"',
            r"supply = 'battery' must be one of ldo, smps",
            marks=pytest.mark.fault(
                area="options", kind="input", what="board file: an unknown supply", sees=r"must be one of ldo, smps"
            ),
            id="unknown-supply",
        ),
        pytest.param(
            "daisy-seed",
            "bank = 1",
            "bank = 3",
            r"\[sdram\]: bank 3 must be 1 \(SDNE0/SDCKE0\) or 2",
            marks=pytest.mark.fault(
                area="options",
                kind="input",
                what="board file: an SDRAM bank other than 1 or 2",
                sees=r"bank 3 must be 1 \(SDNE0/SDCKE0\) or 2",
            ),
            id="sdram-bank",
        ),
        pytest.param(
            "weact-mini-h743",
            'size = "8M"',
            'size = "12M"',
            r"\[qspi\]: size 12582912 must be a power of two",
            marks=pytest.mark.fault(
                area="options",
                kind="input",
                what="board file: a QSPI size that is not a power of two",
                sees=r"must be a power of two",
            ),
            id="qspi-size",
        ),
        pytest.param(
            "stm32h743i-eval",
            'size = "64M"                 # per die; the window maps 128 MB',
            'size = "256M"',
            r"size 268,435,456 bytes x 2 chips exceeds the QUADSPI window of 256 MB",
            marks=pytest.mark.fault(
                area="options",
                kind="input",
                what="board file: QSPI flash larger than its 256 MB window",
                sees=r"exceeds the QUADSPI window of 256 MB",
            ),
            id="qspi-window",
        ),
        pytest.param(
            "stm32h750b-dk",
            'register = "none" ',
            'register = "none"\nbit = 1 ',
            r'register = "none" \(the chip has no Quad Enable bit\) takes no bit',
            marks=pytest.mark.fault(
                area="options",
                kind="input",
                what="board file: a Quad Enable bit on a chip without one",
                sees=r"has no Quad Enable bit\) takes no bit",
            ),
            id="qe-on-none",
        ),
        pytest.param(
            "daisy-seed",
            'register = "status1"',
            'register = "status3"',
            r"`register` = 'status3' must be one of none",
            marks=pytest.mark.fault(
                area="options",
                kind="input",
                what="board file: Quad Enable in a register that does not exist",
                sees=r"`register` = 'status3' must be one of none",
            ),
            id="qe-register",
        ),
        pytest.param(
            "stm32h750b-dk",
            'BK2_IO0 = { pin = "PH2", af = 9 }\n',
            "",
            r"missing pin\(s\) for BK2_IO0 \(dual_flash = true: the second chip's data lines on QUADSPI bank 2\)",
            marks=pytest.mark.fault(
                area="options",
                kind="input",
                what="board file: dual-flash with one chip's pins",
                sees=r"dual_flash = true: the second chip's data lines",
            ),
            id="dual-one-chip",
        ),
        pytest.param(
            "stm32h750b-dk",
            "dual_flash = true",
            "dual_flash = false",
            r"BK2_IO0, BK2_IO1, BK2_IO2, BK2_IO3 given without dual_flash = true",
            marks=pytest.mark.fault(
                area="options",
                kind="input",
                what="board file: second-chip QSPI pins without dual_flash",
                sees=r"given without dual_flash = true",
            ),
            id="bank2-without-dual",
        ),
        pytest.param(
            "stm32h750b-dk",
            "address_bits = 32",
            "address_bits = 24",
            r"a 64 MB chip needs 32-bit addresses: address_bits = 32",
            marks=pytest.mark.fault(
                area="options",
                kind="input",
                what="board file: 24-bit addresses for a chip over 16 MB",
                sees=r"needs 32-bit addresses",
            ),
            id="needs-4-byte",
        ),
        pytest.param(
            "weact-mini-h743",
            'IO2 = { pin = "PE2", af = 9 }',
            'IO2 = { pin = "PF7", af = 9 }',
            r"IO2 on PF7: the STM32H743VI's package \(LQFP100/TFBGA100\) has no PF7",
            marks=pytest.mark.fault(
                area="options",
                kind="input",
                what="board file: a pin the part's package does not have",
                sees=r"package \(LQFP100/TFBGA100\) has no PF7",
            ),
            id="package-pin",
        ),
        pytest.param(
            "weact-mini-h743",
            "jedec_id = [0xEF, 0x40, 0x17]",
            "jedec_id = [0xEF, 0x40]",
            r"`jedec_id` must be the 3 bytes the chip answers to 9Fh",
            marks=pytest.mark.fault(
                area="options",
                kind="input",
                what="board file: a JEDEC ID that is not 3 bytes",
                sees=r"`jedec_id` must be the 3 bytes",
            ),
            id="jedec-id",
        ),
    ],
)
def test_bad_board_files(tmp_path: Path, board: str, old: str, new: str, message: str, sees) -> None:
    target = board_variant(tmp_path, board, [(old, new)])
    with pytest.raises(OptionError, match=message) as error:
        load_board(target, board)
    assert f"{board}.toml" in str(error.value)
    sees(str(error.value))


# ---- the C, each board's own, under the register model ----


@pytest.fixture(scope="module")
def firmware(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return compile_boards((*REAL_BOARDS, "h743-sdram-qspi"), tmp_path_factory)


def chip(firmware: dict, name: str, **options):  # -> support.mmio_emu.Stm32h743
    return soc_for(*firmware[name], **options)


def fault_line(soc) -> dict[str, str]:
    from llmcu.device.protocol import parse

    out = parse(bytes(soc.tx))
    assert out.status == "fault" and out.end["stage"] == "boot", bytes(soc.tx)
    return out.end


@pytest.mark.parametrize(("revision", "written"), [("Y", True), ("1001", True), ("V", False), ("2001", False)])
def test_revision_y_axi_sram_fix(firmware: dict, revision: str, written: bool) -> None:
    """ES0392 2.2.10: READ_ISS_OVERRIDE in AXI_TARG7_FN_MOD (0x51008108) on revisions before X (REV_ID < 0x2000),
    written before anything else (the copy table fills AXI SRAM right after board_early_init)."""
    soc = chip(firmware, "stm32h743i-eval", revision=revision)
    soc.call("board_early_init")
    assert soc.violations == [] and soc.unknown == []
    writes = soc.writes("AXI_TARG7_FN_MOD")
    if written:
        assert [w.value for w in writes] == [1] and soc.reg("AXI_TARG7_FN_MOD") == 1
        assert next(a for a in soc.log if a.kind == "w").name == "AXI_TARG7_FN_MOD"  # the very first write
    else:
        assert writes == []


@pytest.mark.fault(area="firmware", kind="fault", what="an image built for an STM32H743 on an STM32H750 (128 KB flash)",
                   sees=r"reason=wrong_part expected=0x4500800 found=0x4500080")  # fmt: skip
def test_wrong_part_stops_the_boot(firmware: dict, sees) -> None:
    soc = chip(firmware, "stm32h743i-eval", flash_kb=128, cyccnt_step=4096)
    soc.run_until_halt("board_early_init")
    sees(bytes(soc.tx).decode())
    end = fault_line(soc)
    assert (end["reason"], end["expected"], end["found"]) == ("wrong_part", "0x4500800", "0x4500080")
    assert not soc.writes("PWR_CR3")  # stopped before the supply, the clocks or any memory was touched
    from llmcu.device.protocol import describe_fault

    assert "build for this board's part" in describe_fault(end) and "expected 0x4500800, found 0x4500080" in (
        describe_fault(end)
    )


@pytest.mark.parametrize(
    ("name", "options", "found"),
    [
        ("daisy-seed", {"flash_kb": 2048}, "0x4500800"),  # an STM32H750 image on an STM32H743
        ("daisy-seed", {"dev_id": 0x480}, "0x4800080"),  # ... on an STM32H7B3 (DEV_ID 0x480)
        ("nucleo-h743zi2", {"flash_kb": 1024}, "0x4500400"),  # an STM32H743xI image on an STM32H743xG
    ],
)
def test_part_check_compares_dev_id_and_flash(firmware: dict, name: str, options: dict, found: str) -> None:
    soc = chip(firmware, name, cyccnt_step=4096, **options)
    soc.run_until_halt("board_early_init")
    assert fault_line(soc)["reason"] == "wrong_part" and fault_line(soc)["found"] == found


def test_unprogrammed_flash_size_word_reads_as_2mb(firmware: dict) -> None:
    soc = chip(firmware, "nucleo-h743zi2", flash_kb=0xFFFF)
    soc.call("board_early_init")
    assert soc.violations == [] and bytes(soc.tx) == b""


@pytest.mark.parametrize("name", REAL_BOARDS)
def test_supply_is_the_ldo_and_written_once(firmware: dict, name: str) -> None:
    """PWR_CR3 is write-once after power-on: one write, LDO on, bypass off, SCUEN cleared (which locks it); on an
    STM32H743/H750 bit 2 is SCUEN, on the SMPS parts it would be SDEN: those parts are refused before any C is built
    (test_bad_board_files[h747]), so this image never runs on one."""
    soc = chip(firmware, name)
    soc.call("board_early_init")
    assert soc.violations == []
    (write,) = soc.writes("PWR_CR3")
    assert write.value & 0b111 == 0b010  # BYPASS 0, LDOEN 1, SCUEN 0
    assert write.value & 0x3F == 0b000010  # no SMPS configuration bits (SDEN, SMPSLEVEL, SMPSEXTHP on RM0399 parts)


def test_other_smps_parts_are_refused() -> None:
    for part in ("STM32H745ZI", "STM32H755XI", "STM32H757XI", "STM32H7A3ZI"):
        with pytest.raises(OptionError, match=rf"part '{part}' is refused: .*SMPS"):
            from llmcu.platform.parts import load_part

            load_part(TARGET, part, "board")


@pytest.mark.parametrize(
    ("name", "fitted_ids", "reason", "expected", "found"),
    [
        ("weact-mini-h743", [(0xEF, 0x40, 0x18)], "qspi_wrong_chip", "0xef4017", "0xef4018"),  # a W25Q128 fitted
        ("daisy-seed", [None], "qspi_no_answer", "0x9d6017", "0xffffff"),  # nothing fitted
        ("stm32h750b-dk", [(0x20, 0xBA, 0x20), (0xC2, 0x20, 0x1A)], "qspi_wrong_chip", "0x20ba20", "0xc2201a"),
    ],
    ids=["wrong-chip", "no-chip", "dual-second-chip-wrong"],
)
def test_jedec_id_is_checked(firmware: dict, name: str, fitted_ids: list, reason: str, expected: str,
                             found: str) -> None:  # fmt: skip
    from support.mmio_emu import NorFlash

    board = firmware[name][1]
    nor = []
    for jedec in fitted_ids:
        flash = NorFlash.of(board.qspi.chip)
        if jedec is None:
            flash.fitted = False
        else:
            flash.jedec_id = jedec
        nor.append(flash)
    soc = chip(firmware, name, nor=tuple(nor), cyccnt_step=4096)
    soc.run_until_halt("board_early_init")
    end = fault_line(soc)
    assert (end["reason"], end["expected"], end["found"]) == (reason, expected, found)
    assert soc.memory_mapped_state is None  # never memory-mapped: garbage is not mapped at 0x90000000
    assert all(entry[:2] != ("write", 0x01) for flash in nor for entry in flash.log)  # no status write either


@pytest.mark.fault(area="firmware", kind="fault", what="a QSPI flash that does not answer at boot",
                   sees=r"reason=qspi_no_answer expected=0xef4018 found=0xffffff stage=boot")  # fmt: skip
def test_missing_qspi_chip_is_a_fault_line(firmware: dict, sees) -> None:
    from support.mmio_emu import NorFlash

    soc = chip(firmware, "h743-sdram-qspi", nor=(NorFlash(fitted=False),), cyccnt_step=4096)
    soc.run_until_halt("board_early_init")
    sees(bytes(soc.tx).decode())


def _qe_log(flash) -> list[tuple[str, int, int | None]]:
    """What the bring-up sent after the JEDEC ID (the Quad Enable part)."""
    index = next(i for i, entry in enumerate(flash.log) if entry[:2] == ("read", 0x9F))
    return flash.log[index + 1 :]


def test_quad_enable_in_status_register_1(firmware: dict) -> None:
    """ISSI IS25LP064A (Daisy Seed): QE is bit 6 of the status register, read with 05h and written with 01h."""
    soc = chip(firmware, "daisy-seed")
    soc.call("board_early_init")
    assert soc.violations == [] and soc.unknown == []
    log = _qe_log(soc.flash)
    assert log[:3] == [("read", 0x05, None), ("command", 0x06, None), ("write", 0x01, 0x40)]
    assert all(entry == ("read", 0x05, None) for entry in log[3:])  # BUSY polled, then QE read back
    assert soc.flash.status1 & 0x40 and soc.memory_mapped_state["qe"] == 1
    assert soc.memory_mapped_state["ccr"] & 0xFF == 0xEB


def test_quad_enable_in_status_register_2(firmware: dict) -> None:
    """Winbond W25Q64JV (WeAct): QE is bit 1 of status register 2, read with 35h and written with 31h."""
    soc = chip(firmware, "weact-mini-h743")
    soc.call("board_early_init")
    assert soc.violations == []
    log = _qe_log(soc.flash)
    assert log[:3] == [("read", 0x35, None), ("command", 0x06, None), ("write", 0x31, 0x02)]
    assert log[-1] == ("read", 0x35, None) and soc.flash.status2 == 0x02 and soc.memory_mapped_state["qe"] == 1


def test_no_quad_enable_dual_flash_and_4_byte_addresses(firmware: dict) -> None:
    """Micron MT25Q x 2 (STM32H750B-DK): no QE bit, so no status register is read or written; both chips reset
    and identified; memory-mapped with DFM, the 4-byte quad read ECh, 32-bit addresses and 10 clocks before data."""
    soc = chip(firmware, "stm32h750b-dk")
    soc.call("board_early_init")
    assert soc.violations == [] and soc.unknown == []
    for flash in soc.nor:
        assert flash.resets == 1 and _qe_log(flash) == []
        assert not [entry for entry in flash.log if entry[0] == "write"]
    state = soc.memory_mapped_state
    assert state["dual"] and state["qe"] == 1 and soc.reg("QUADSPI_CR") >> 6 & 1  # DFM
    ccr = state["ccr"]
    assert ccr & 0xFF == 0xEC and ccr >> 12 & 3 == 3 and ccr >> 18 & 0x1F == 8  # ADSIZE 32 bits, 8 dummy
    assert ccr >> 16 & 3 == 0 and ccr >> 14 & 3 == 3  # the mode byte: 2 more clocks on 4 lines
    assert soc.reg("QUADSPI_DCR") >> 16 & 0x1F == 27  # FSIZE: both chips, 128 MB, plus the errata margin


@pytest.mark.fault(area="firmware", kind="fault", what="a QSPI flash whose Quad Enable bit cannot be set",
                   sees=r"reason=qspi_quad_enable_not_set stage=boot")  # fmt: skip
def test_quad_enable_that_does_not_stick_is_a_fault_line(firmware: dict, sees) -> None:
    from support.mmio_emu import NorFlash

    flash = NorFlash.of("W25Q64JV")
    flash.write = lambda instruction, data: flash.log.append(("write", instruction, data))  # status writes ignored
    soc = chip(firmware, "weact-mini-h743", nor=(flash,), cyccnt_step=4096)
    soc.run_until_halt("board_early_init")
    sees(bytes(soc.tx).decode())


# ---- a boot after a bootloader (the Daisy bootloader, ST's ExtMem_Boot): nothing is as after a reset ----


def test_boot_from_what_a_bootloader_left(firmware: dict) -> None:
    """SYSCLK on PLL1 with the HSE and PLL1/PLL2 running, the QUADSPI memory-mapped and busy, the flash in
    continuous-read mode: the board layer stops the PLLs before reconfiguring them (the register model flags any
    write to a running PLL's configuration), aborts the QUADSPI and brings the flash out of continuous read before
    it sends it anything, and boots."""
    soc = chip(firmware, "daisy-seed")
    cr = 1 << 16 | 1 << 24 | 1 << 26  # HSEON, PLL1ON, PLL2ON
    soc.values[soc_address("RCC_CR")] |= cr
    for flag in ("HSERDY", "PLL1RDY", "PLL2RDY"):
        soc.pending[flag] = 0
    soc.values[soc_address("RCC_CFGR")] = 3 | 3 << 3  # SW = SWS = PLL1
    soc.values[soc_address("RCC_D1CFGR")] = 0x48  # HPRE /2, D1PPRE /2
    soc.values[soc_address("QUADSPI_CR")] = 1  # enabled, memory-mapped
    soc.never.add("QSPI_BUSY_UNTIL_ABORT")
    soc.flash.continuous_read = True
    soc.call("board_early_init")
    assert soc.violations == [] and soc.unknown == []
    to_hsi = soc.first_write("RCC_CFGR", lambda v: v & 7 == 0)
    plls_off = soc.first_write("RCC_CR", lambda v: not v & cr)
    assert to_hsi < plls_off < soc.first_write("RCC_PLLCKSELR")  # PLLs reconfigured only once stopped
    assert soc.aborts == 1 and soc.first_write("QUADSPI_CR", lambda v: v & 2) < soc.first_write("QUADSPI_DCR")
    assert soc.flash.log[0] == ("mode_bits_high", 0xFF, None) and not soc.flash.continuous_read
    assert soc.memory_mapped_state["qe"] == 1 and not soc.memory_mapped_state["in_xip"]


def soc_address(name: str) -> int:
    from support.mmio_emu import ADDRESSES

    return ADDRESSES[name]


def test_after_a_reset_the_clock_reset_step_changes_nothing(firmware: dict) -> None:
    soc = chip(firmware, "nucleo-h743zi2")
    soc.call("board_early_init")
    first_pll_on = soc.first_write("RCC_CR", lambda v: v & 1 << 24)
    assert not [w for w in soc.writes("RCC_CR") if w.seq < first_pll_on and not w.value & 1 << 0]  # HSI kept on
    assert soc.first_write("RCC_CFGR") > first_pll_on  # no switch to HSI: it was already the clock


@pytest.mark.fault(area="memory", kind="input", what="an STM32H750's 128 KB of flash overflowed at link time",
                   sees=r"region flash \(131,072 bytes at 0x08000000\) would need 5,000 bytes more; .*weights=qspi "
                   r"\(every weight in QSPI flash, the code alone in internal flash\), optimize=size")  # fmt: skip
def test_h750_flash_overflow_says_by_how_much_and_what_to_do(sees) -> None:
    from llmcu.builder.settings import FirmwareImage
    from llmcu.builder.steps import explain_link_errors

    target = load_target("stm32h743", TARGETS_DIR)
    regions = tuple(board_regions(target.memory, load_board(TARGET, "daisy-seed")))
    image = FirmwareImage("firmware", target, regions, Path("/tmp"), "daisy-seed")
    stderr = (
        "ld: firmware.elf section `.text' will not fit in region `FLASH'\nld: region `FLASH' overflowed by 5000 bytes"
    )
    (message,) = explain_link_errors(stderr, image)
    sees(message)
