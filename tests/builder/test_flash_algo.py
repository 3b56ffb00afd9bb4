"""The QSPI flash algorithm (targets/stm32h743/flashalgo/): it builds per board into an FLM that pyOCD's own
parser accepts, holds no absolute address, and erases, programs and reads back correctly when run in unicorn
against models of the QUADSPI and the W25Q128JV (tests/flashalgo_emu.py), called as pyOCD calls it."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from llmcu.builder import boardconfig, flashalgo
from llmcu.core.paths import TARGETS_DIR
from llmcu.platform import stm32h7

pytestmark = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="arm-none-eabi-gcc not installed")

BASE = 0x90000000
BOARD = "h743-sdram-qspi"


@pytest.fixture(scope="module")
def board() -> stm32h7.Board:
    return stm32h7.load_board(TARGETS_DIR / "stm32h743", BOARD)


@pytest.fixture(scope="module")
def flm(board: stm32h7.Board, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return flashalgo.build_flash_algo(board, tmp_path_factory.mktemp("flashalgo"))


def test_flm_describes_the_boards_flash(flm: Path, board: stm32h7.Board) -> None:
    info = flashalgo.check_flm(flm)
    assert info.name == f"W25Q128JV 16 MB QSPI ({BOARD})"
    assert (info.version, info.device_type, info.start, info.size) == (0x0101, 5, BASE, 16 << 20)
    assert (info.page_size, info.erased_value, info.sectors) == (256, 0xFF, ((0, 4096),))
    assert set(info.entry_points) == {"Init", "UnInit", "EraseSector", "ProgramPage", "EraseChip"}
    assert info.code_bytes < 4096  # copied to RAM before every session
    assert "#define FLASHALGO_ERASE_CMD 0x20u" in (flm.parent / "flashalgo_config.h").read_text()
    assert (flm.parent / "board_config.h").read_text() == boardconfig.render_board_config(board)


def test_flm_loads_with_pyocds_own_parser(flm: Path) -> None:
    pytest.importorskip("pyocd")
    from pyocd.core.memory_map import RamRegion
    from pyocd.target.pack.flash_algo import PackFlashAlgo

    algo = PackFlashAlgo(str(flm))
    info = algo.flash_info
    assert (info.version, info.type, info.start, info.size, info.page_size) == (0x0101, 5, BASE, 16 << 20, 256)
    assert info.name == f"W25Q128JV 16 MB QSPI ({BOARD})".encode()
    assert (info.value_empty, info.prog_timeout_ms, info.erase_timeout_ms) == (0xFF, 10, 3000)
    assert algo.sector_sizes == [(0, 4096)]
    [(span, sector)] = list(algo.iter_sector_size_ranges())
    assert (span.start, span.end, sector) == (BASE, BASE + (16 << 20) - 1, 4096)
    assert {"Init", "UnInit", "EraseSector", "ProgramPage", "EraseChip"} <= set(algo.symbols)
    assert algo.ro_start == 0 and algo.rw_start >= algo.ro_size
    blob = algo.get_pyocd_flash_algo(algo.page_size, RamRegion(start=0x20010000, length=0x10000))
    end = blob["load_address"] + 4 * len(blob["instructions"])
    for entry in ("pc_init", "pc_unInit", "pc_erase_sector", "pc_program_page", "pc_eraseAll"):
        assert blob["load_address"] < blob[entry] < end and blob[entry] & 1, entry
    assert blob["static_base"] == blob["load_address"] + 4 + algo.rw_start
    assert len(blob["page_buffers"]) == 2  # room for double buffering


def test_flm_rebuilds_from_its_sources(board: stm32h7.Board) -> None:
    names = {path.name for path in flashalgo.source_files(board)}
    assert {"qspi_flm.c", "flash_os.h", "flm.ld", "qspi.c", "gpio.c", "stm32h7.h", f"{BOARD}.toml"} <= names


def test_boards_without_qspi_flash_are_refused() -> None:
    nucleo = stm32h7.load_board(TARGETS_DIR / "stm32h743", "nucleo-h743zi")
    with pytest.raises(flashalgo.FlashAlgoError, match="board nucleo-h743zi has no QSPI flash"):
        flashalgo.check_board(nucleo)


def test_non_position_independent_code_is_rejected(flm: Path, board: stm32h7.Board, tmp_path: Path) -> None:
    extra = tmp_path / "extra.c"
    extra.write_text(
        "int counter = 1;\nint bump(void) { return ++counter; }\n"  # a non-static variable: reached via the GOT
    )
    folder, algo = board.path.parent.parent, flashalgo.algo_dir(board)
    includes = [flm.parent, algo, folder, folder.parent / "cortex-m"]
    sources = [algo / "qspi_flm.c", extra, *(folder / name for name in ("qspi.c", "gpio.c", "timing.c", "plan.c"))]
    bad = tmp_path / "bad.flm"
    flashalgo.link_flm(sources, includes, algo / "flm.ld", bad, cc="arm-none-eabi-gcc")
    with pytest.raises(flashalgo.FlashAlgoError, match=r"not position independent: .*GOT"):
        flashalgo.check_flm(bad)
    with pytest.raises(flashalgo.FlashAlgoError, match="not a readable FLM"):
        flashalgo.check_flm(extra)


# ---- running it ----


@pytest.fixture(scope="module")
def algo(flm: Path) -> dict:
    """The FLM placed in DTCM by pyOCD's own allocator, as pyOCD would load it."""
    pytest.importorskip("unicorn")
    pyocd = pytest.importorskip("pyocd.target.pack.flash_algo")
    from pyocd.core.memory_map import RamRegion

    pack = pyocd.PackFlashAlgo(str(flm))
    return pack.get_pyocd_flash_algo(pack.page_size, RamRegion(start=0x20010000, length=0x10000))


def machine_with(algo: dict, **flash_options: object):
    from support.flashalgo_emu import Machine, NorFlash

    cyccnt_step = flash_options.pop("cyccnt_step", 1000)
    machine = Machine(NorFlash(**flash_options), cyccnt_step=cyccnt_step)
    machine.load_algo(algo)
    return machine


def program(machine, algo: dict, address: int, data: bytes, page: int = 256) -> None:
    """What pyOCD's FlashBuilder does: Init(ERASE), EraseSector per sector, UnInit; Init(PROGRAM), one
    ProgramPage per page from a RAM buffer, UnInit."""
    assert machine.call("pc_init", BASE, 0, 1) == 0
    for sector in range(address & ~0xFFF, address + len(data), 0x1000):
        assert machine.call("pc_erase_sector", sector) == 0
    assert machine.call("pc_unInit", 1) == 0
    assert machine.call("pc_init", BASE, 0, 2) == 0
    buffer = algo["page_buffers"][0]
    offset = 0
    while offset < len(data):
        count = min(page - (address + offset) % page, len(data) - offset)
        machine.write_ram(buffer, data[offset : offset + count])
        assert machine.call("pc_program_page", address + offset, count, buffer) == 0
        offset += count
    assert machine.call("pc_unInit", 2) == 0


def test_erase_program_and_read_back(algo: dict) -> None:
    machine = machine_with(algo)
    nor = machine.flash
    nor.memory[0x0000:0x1000] = b"\x00" * 0x1000  # old contents in the first sector and around
    nor.memory[0x5000:0x6000] = b"\xa5" * 0x1000
    image = random.Random(7).randbytes(10_000)
    start = BASE + 0x1F80  # not sector or page aligned
    program(machine, algo, start, image)
    assert machine.read_window(start, len(image)) == image  # after UnInit the flash is memory-mapped
    assert [address for address, _ in nor.erased] == [0x1000, 0x2000, 0x3000, 0x4000]  # up to 0x468f
    assert bytes(nor.memory[0x1000:0x1F80]) == b"\xff" * 0xF80  # erased, not written
    assert bytes(nor.memory[:0x1000]) == b"\x00" * 0x1000 and bytes(nor.memory[0x5000:0x6000]) == b"\xa5" * 0x1000
    assert not machine.violations and not nor.violations
    assert nor.status2 & 0x02  # the board layer's qspi_init() set Quad Enable for memory-mapped reads
    page_programs = [entry for entry in nor.log if entry[0] == 0x02]
    assert all(count <= 256 and (address % 256) + count <= 256 for _, address, count in page_programs)


def test_program_page_larger_than_a_page_is_split(algo: dict) -> None:
    machine = machine_with(algo)
    assert machine.call("pc_init", BASE, 0, 2) == 0
    data = random.Random(8).randbytes(600)
    buffer = 0x20001000  # outside the algorithm's block: any RAM the debugger chose
    machine.write_ram(buffer, data)
    assert machine.call("pc_program_page", BASE + 0x80, len(data), buffer) == 0
    assert machine.call("pc_unInit", 2) == 0
    assert machine.read_window(BASE + 0x80, len(data)) == data
    assert [count for instruction, _, count in machine.flash.log if instruction == 0x02] == [128, 256, 216]


def test_init_takes_over_a_quadspi_left_memory_mapped(algo: dict) -> None:
    """The firmware (or a previous UnInit) leaves the QUADSPI memory-mapped and busy; Init must abort it."""
    machine = machine_with(algo, status2=0x02)
    program(machine, algo, BASE, b"\x11" * 300)
    assert machine.read_window(BASE, 16) == b"\x11" * 16 and machine.qspi.mapped_busy
    program(machine, algo, BASE + 0x1000, b"\x22" * 300)
    assert machine.read_window(BASE + 0x1000, 300) == b"\x22" * 300
    assert not machine.violations and not machine.flash.violations


def test_erase_chip(algo: dict) -> None:
    machine = machine_with(algo)
    program(machine, algo, BASE + 0x123456, b"\x00" * 1000)
    assert machine.call("pc_init", BASE, 0, 1) == 0
    assert machine.call("pc_eraseAll") == 0
    assert machine.call("pc_unInit", 1) == 0
    assert machine.flash.memory == b"\xff" * (16 << 20) and machine.flash.erased[-1] == (0, 16 << 20)


def test_block_protection_is_cleared_before_erasing(algo: dict) -> None:
    machine = machine_with(algo, status1=0x1C)  # BP0-BP2: the whole chip protected
    program(machine, algo, BASE, b"\x33" * 100)
    assert machine.flash.status1 & 0x7C == 0 and machine.read_window(BASE, 100) == b"\x33" * 100


@pytest.mark.parametrize(
    ("flash_options", "code"),
    [
        ({"jedec_id": (0xFF, 0xFF, 0xFF)}, 2),  # nothing on the pins
        ({"jedec_id": (0x00, 0x00, 0x00)}, 2),
        ({"jedec_id": (0xEF, 0x40, 0x17)}, 9),  # a W25Q64 on a board file saying W25Q128JV: another chip
        ({"status1": 0x9C, "status2": 0x02, "write_protect_pin_low": True}, 7),  # SRP + /WP low: protection stays
        ({"status1": 0x9C, "write_protect_pin_low": True}, 1),  # ... and Quad Enable cannot be set: the bring-up fails
    ],
)
def test_init_failures_have_result_codes(algo: dict, flash_options: dict, code: int) -> None:
    machine = machine_with(algo, **flash_options)
    assert machine.call("pc_init", BASE, 0, 1) == code
    assert machine.call("pc_erase_sector", BASE) == 6  # no successful Init: refused


def test_addresses_outside_the_flash_are_refused(algo: dict) -> None:
    machine = machine_with(algo)
    assert machine.call("pc_erase_sector", BASE) == 6  # before Init
    assert machine.call("pc_init", BASE, 0, 2) == 0
    buffer = algo["page_buffers"][0]
    assert machine.call("pc_erase_sector", BASE + (16 << 20)) == 4
    assert machine.call("pc_program_page", BASE + (16 << 20) - 256, 512, buffer) == 4
    assert machine.call("pc_program_page", 0x08000000, 256, buffer) == 4
    assert not [entry for entry in machine.flash.log if entry[0] in (0x02, 0x20)]


def test_a_flash_that_stays_busy_times_out(algo: dict) -> None:
    machine = machine_with(algo, status2=0x02, busy_reads=10**9, cyccnt_step=400_000_000)
    assert machine.call("pc_init", BASE, 0, 1) == 0
    assert machine.call("pc_erase_sector", BASE) == 1


def test_scons_builds_the_flm_for_a_board_with_qspi_flash(
    board: stm32h7.Board, stories260k: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmcu.builder.settings import configure
    from support.build import scons

    monkeypatch.setenv("LLMCU_MODELS", str(stories260k.parent))
    args = ["target=stm32h743", f"board={BOARD}", "model=260k", f"build_dir={tmp_path}"]
    settings = configure(dict(arg.split("=", 1) for arg in args), download=False)
    build = flashalgo.for_settings(settings)
    assert build is not None
    path, sources = build
    assert path == settings.images[0].out_dir / "flashalgo" / "qspi.flm"
    assert sources == flashalgo.source_files(board)
    scons([*args, str(path)], stories260k.parent)  # only the FLM: no firmware is compiled for it
    assert flashalgo.check_flm(path).name == f"W25Q128JV 16 MB QSPI ({BOARD})"
    assert not (settings.images[0].out_dir / "firmware.elf").exists()
    nucleo = configure({"target": "stm32h743", "model": "260k", "build_dir": str(tmp_path)}, download=False)
    assert flashalgo.for_settings(nucleo) is None  # no QSPI flash, no algorithm


# ---- two 64 MB chips side by side, 4-byte addresses (STM32H750B-DK: 2x MT25QL512ABB) ----


@pytest.fixture(scope="module")
def dual_board() -> stm32h7.Board:
    return stm32h7.load_board(TARGETS_DIR / "stm32h743", "stm32h750b-dk")


def test_dual_flash_algo_describes_the_window(dual_board: stm32h7.Board, tmp_path: Path) -> None:
    flm = flashalgo.build_flash_algo(dual_board, tmp_path)
    info = flashalgo.check_flm(flm)
    assert info.name == "MT25QL512ABB x 2 128 MB QSPI (stm32h750b-dk)"
    assert (info.start, info.size, info.page_size, info.sectors) == (BASE, 128 << 20, 512, ((0, 8192),))
    config = (flm.parent / "flashalgo_config.h").read_text()
    assert "#define FLASHALGO_ERASE_CMD 0x21u" in config  # 4 KB erase with a 4-byte address, per chip


def test_dual_flash_4_byte_program_and_read_back(dual_board: stm32h7.Board, tmp_path: Path) -> None:
    """Erase and program through the DK's FLM into two MT25Q models: both chips reset and identified, each gets
    every other byte at half the window's address, in 4-byte-address commands; beyond 16 MB of each chip too."""
    pytest.importorskip("unicorn")
    pyocd = pytest.importorskip("pyocd.target.pack.flash_algo")
    from pyocd.core.memory_map import RamRegion

    from support.flashalgo_emu import Machine, NorFlash

    flm = flashalgo.build_flash_algo(dual_board, tmp_path)
    pack = pyocd.PackFlashAlgo(str(flm))
    blob = pack.get_pyocd_flash_algo(pack.page_size, RamRegion(start=0x20010000, length=0x10000))
    chips = (NorFlash.micron_mt25q(), NorFlash.micron_mt25q())
    machine = Machine(chips)
    machine.load_algo(blob)
    data = bytes(random.Random(7).randrange(256) for _ in range(1500))
    for address in (BASE + 0x100, BASE + (100 << 20) + 0x2000):  # the second is 50 MB into each chip
        assert machine.call("pc_init", BASE, 0, 1) == 0
        for sector in range(address & ~0x1FFF, address + len(data), 0x2000):
            assert machine.call("pc_erase_sector", sector) == 0
        assert machine.call("pc_unInit", 1) == 0
        assert machine.call("pc_init", BASE, 0, 2) == 0
        offset = 0
        while offset < len(data):
            count = min(512 - (address + offset) % 512, len(data) - offset)
            machine.write_ram(blob["page_buffers"][0], data[offset : offset + count])
            assert machine.call("pc_program_page", address + offset, count, blob["page_buffers"][0]) == 0
            offset += count
        assert machine.call("pc_unInit", 2) == 0
        assert machine.read_window(address, len(data)) == data
        half = (address - BASE) // 2
        assert bytes(chips[0].memory[half : half + 750]) == data[0::2]
        assert bytes(chips[1].memory[half : half + 750]) == data[1::2]
    assert not machine.violations and not chips[0].violations and not chips[1].violations
    for chip in chips:
        instructions = {entry[0] for entry in chip.log}
        assert {0x66, 0x99, 0x9F, 0x21, 0x12} <= instructions and not {0x02, 0x20, 0x35, 0x31} & instructions
