"""The bring-up self-test (selftest=1) finds the faults a real board has, each with its own failure line.

The self-test's own C (targets/cortex-m/selftest.c) runs with the STM32H743 board layer under the unicorn register
model, after the board layer brought up the FMC; behind the FMC is an SDRAM model (support.sdram_model) that takes the
CPU's addresses apart the way the FMC registers the board layer wrote say, and carries a planted fault at its pins:
a stuck data bit, an open address line, two shorted address lines, or no refresh. On QEMU's perfect RAM every check
passes whatever it does; here each fault must fail its own check, and the fault-free chip must pass them all.
"""

from __future__ import annotations

import pytest

from llmcu.device.protocol import parse
from llmcu.platform.stm32h7 import load_board
from support.board_layer import TARGET, compile_selftest, require_tools, soc_for
from support.sdram_model import SdramChip

REGION = 64 << 10  # the self-test walks the first 64 KB of the SDRAM (every address line below it is exercised)


@pytest.fixture(scope="module")
def selftest(tmp_path_factory: pytest.TempPathFactory) -> dict:
    require_tools()
    built = {}
    for name in ("stm32h743i-eval", "stm32h750b-dk"):  # 32-bit SDRAM on bank 2; 16-bit SDRAM on bank 2
        board = load_board(TARGET, name)
        built[name] = (compile_selftest(board, tmp_path_factory.mktemp(name), REGION), board)
    return built


def run(selftest: dict, name: str, **faults) -> dict[str, dict[str, str]]:
    """The self-test's records by test name, and its end line under "end"."""
    elf, board = selftest[name]
    chip = SdramChip(board.sdram.base, cpu_hz=board.clocks.cpu_hz, sdclk_hz=board.sdram.sdclk_hz, **faults)
    soc = soc_for(elf, board, sdram=chip, cyccnt_step=1 << 20)  # the refresh wait is 1 s of DWT cycles
    soc.call("board_early_init")
    soc.call("board_init")
    assert soc.violations == [] and soc.unknown == []
    assert chip.initialised and chip.geometry is not None  # the FMC and the chip were brought up by the C
    soc.call("selftest_run", max_instructions=200_000_000)
    out = parse(bytes(soc.tx))
    records = {record["test"]: record for record in out.selftest}
    records["end"] = {"status": out.status, "reason": out.reason or ""}
    return records


@pytest.mark.parametrize("name", ["stm32h743i-eval", "stm32h750b-dk"])
def test_a_good_chip_passes_every_check(selftest: dict, name: str) -> None:
    records = run(selftest, name)
    assert [records[t]["result"] for t in ("data_bus", "address_bus", "pattern")] == ["ok", "ok", "ok"]
    assert records["pattern"]["errors"] == "0" and records["end"]["status"] == "ok"


@pytest.mark.fault(area="firmware", kind="fault", what="self-test: SDRAM data line D13 stuck low (a short to ground)",
                   sees=r"test=data_bus result=fail pattern=0x00002000")  # fmt: skip
def test_stuck_data_bit(selftest: dict, sees) -> None:
    records = run(selftest, "stm32h743i-eval", stuck_data_bit=(13, 0))
    sees(_line(records["data_bus"]))
    assert records["end"] == {"status": "error", "reason": "selftest_failed"}


@pytest.mark.fault(area="firmware", kind="fault", what="self-test: SDRAM address line A3 open",
                   sees=r"test=data_bus result=ok .*test=address_bus result=fail offset=0x")  # fmt: skip
def test_open_address_line(selftest: dict, sees) -> None:
    records = run(selftest, "stm32h743i-eval", open_address_line=3)
    sees(_line(records["data_bus"]) + " " + _line(records["address_bus"]))
    # A3 carries column bit 3: with 4-byte words, CPU offset 0x20 aliases offset 0
    assert records["address_bus"]["offset"] == "0x00000020"


@pytest.mark.fault(area="firmware", kind="fault", what="self-test: SDRAM address lines A5 and A6 shorted",
                   sees=r"test=address_bus result=fail offset=0x")  # fmt: skip
def test_shorted_address_lines(selftest: dict, sees) -> None:
    records = run(selftest, "stm32h750b-dk", shorted_address_lines=(5, 6))
    sees(_line(records["address_bus"]))
    assert records["data_bus"]["result"] == "ok"
    # A5 carries column bit 5: on the 16-bit bus that is CPU offset 0x40, the first to alias (with 0x80 low: 0)
    assert records["address_bus"]["offset"] == "0x00000040"


@pytest.mark.fault(area="firmware", kind="fault", what="self-test: SDRAM refresh that never reaches the chip",
                   sees=r"test=pattern result=fail bytes=65536 errors=[1-9]")  # fmt: skip
def test_lost_refresh(selftest: dict, sees) -> None:
    records = run(selftest, "stm32h743i-eval", refresh_lost=True)
    sees(_line(records["pattern"]))
    assert records["data_bus"]["result"] == records["address_bus"]["result"] == "ok"  # only time finds it
    assert int(records["pattern"]["errors"]) == REGION // 4  # every word discharged after the wait


def test_refresh_programmed_too_slow_is_lost_refresh(selftest: dict) -> None:
    """The model refreshes only as often as FMC_SDRTR says; the board layer's value keeps every row within 64 ms,
    and a chip with 8192 rows on the same count would not be."""
    good = run(selftest, "stm32h743i-eval")
    assert good["pattern"]["result"] == "ok"
    records = run(selftest, "stm32h743i-eval", refresh_ms=64.0 / 3)  # a chip that needs three times the rate
    assert records["pattern"]["result"] == "fail"


def _line(record: dict[str, str]) -> str:
    return " ".join(f"{key}={value}" for key, value in record.items())
