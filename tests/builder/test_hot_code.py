"""Hot code in ITCM and hot data in DTCM (issue 6): the memory planner's placement, the generated linker
script, and a twin image that runs from it.

Under QEMU the instruction counts do not change (it models no wait states), so what is tested is that the
placement is right: the kernels, the forward pass and expf link at ITCM addresses, are copied there at boot
(the image runs and reproduces llama2.c's output), count as code in the memory report, and the run state and
the stack are in DTCM.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from llmcu.builder import memplan
from llmcu.builder.settings import RunParams
from llmcu.device.qemu import run_firmware
from llmcu.platform.targets import load_target
from support.build import ROOT, scons

from .test_memplan import H743, STORIES260K, TARGET, weights

needs_qemu = pytest.mark.skipif(
    shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
    reason="qemu-system-arm or arm-none-eabi-gcc missing (tools/setup.sh installs them)",
)

# Functions that must run from ITCM in an fp32 build of stories260K with the Cortex-M7 kernels.
HOT_FUNCTIONS = ("llmcu_forward", "matmul_f32", "rope_rotate", "rmsnorm", "swiglu", "expf")


def test_planner_puts_hot_code_in_itcm_and_activations_in_dtcm() -> None:
    plan = memplan.plan_memory(TARGET, H743, STORIES260K, weights(300_000), seq_len=512, kv_type="f16")
    assert plan.hot_code_region == "itcm"
    assert plan.planned["itcm"] == memplan.HOT_CODE_RESERVE
    assert plan.state_region == "dtcm" and plan.data_region == "dtcm"
    assert any("hot code" in line and "itcm" in line for line in memplan.describe(plan))


def test_no_itcm_no_hot_code_section() -> None:
    regions = tuple(region for region in H743 if region.name != "itcm")
    plan = memplan.plan_memory(TARGET, regions, STORIES260K, weights(300_000), seq_len=512, kv_type="f16")
    assert plan.hot_code_region is None


def _symbols(elf_path: Path) -> dict[str, int]:
    with open(elf_path, "rb") as stream:
        symtab = ELFFile(stream).get_section_by_name(".symtab")
        return {symbol.name: symbol["st_value"] for symbol in symtab.iter_symbols() if symbol.name}


def optimisation_by_file(elf_path: Path) -> dict[str, str]:
    """The last -O option each of llmcu's C files was compiled with, from DWARF's DW_AT_producer (GCC records
    its command-line options there); libc's files are left out."""
    found = {}
    with open(elf_path, "rb") as stream:
        for unit in ELFFile(stream).get_dwarf_info().iter_CUs():
            attributes = unit.get_top_DIE().attributes
            name = attributes["DW_AT_name"].value.decode()
            if name.endswith(".c") and not name.startswith(".."):
                levels = [word for word in attributes["DW_AT_producer"].value.decode().split() if word.startswith("-O")]
                found[name] = levels[-1]
    return found


@needs_qemu
@pytest.mark.parametrize("target", ["qemu-m7", "stm32h743"])
def test_hot_code_links_into_itcm_and_the_twin_runs_it(
    target: str, tmp_path: Path, stories260k: Path, golden_cases: list[dict]
) -> None:
    """fp32 (the golden output must come out unchanged); on the STM32H743 ITCM is 128 MB below flash, beyond
    a BL's reach, so the linker's long-branch veneers must connect them."""
    scons([f"target={target}", "model=260k", "quant=fp32", f"build_dir={tmp_path}"], stories260k.parent)
    out = tmp_path / target / "260k-fp32"
    elf = out / "firmware.elf"
    itcm = next(region for region in load_target(target, ROOT / "targets").memory if region.name == "itcm")
    symbols = _symbols(elf)
    for name in HOT_FUNCTIONS:
        assert itcm.origin <= symbols[name] < itcm.origin + itcm.size, (name, hex(symbols[name]))
    assert not itcm.origin <= symbols["main"] < itcm.origin + itcm.size  # the rest stays in flash
    script = (out / "gen" / "firmware.ld").read_text()
    assert "LONG(LOADADDR(.itcm_text)) LONG(ADDR(.itcm_text)) LONG(SIZEOF(.itcm_text))" in script
    report = json.loads((out / "memory_report.json").read_text())
    itcm_used = next(region["used"] for region in report["regions"] if region["name"] == "itcm")
    hot = symbols["__llmcu_hot_code_end"] - symbols["__llmcu_hot_code_start"]
    assert 1000 < hot <= itcm_used <= memplan.HOT_CODE_RESERVE
    assert report["code_bytes"] > hot  # counted as code, not as weights or RAM data
    assert optimisation_by_file(elf) == {
        name: "-O2" if memplan.is_hot_object(f"obj/{name.rsplit('.', 1)[0]}.o") else "-Os"
        for name in optimisation_by_file(elf)
    }, "hot code -O2 (the target's cflags), the rest -Os (its cold_cflags)"
    if target == "qemu-m7":
        case = next(case for case in golden_cases if case["temperature"] == 0)
        run = run_firmware(elf, RunParams(case["prompt"], case["steps"], 0.0, case["topp"], case["seed"]))
        assert run.ok and run.text.decode() == case["stdout"]
