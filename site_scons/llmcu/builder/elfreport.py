"""What a linked firmware puts in each memory region, read from the ELF with pyelftools.

A section counts where it runs (its VMA) and, when it is copied at boot (LMA differs, as ``.data`` or
weights loaded into SDRAM), also where its bytes are stored. NOLOAD sections (stack, .bss, KV cache) count
only where they run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile

from ..core.config import ModelConfig
from ..core.errors import LlmcuError
from ..core.fileio import write_bytes_atomic, write_text_atomic
from ..platform.targets import MemoryRegion


@dataclass
class RegionUsage:
    name: str
    origin: int
    size: int
    used: int = 0
    sections: dict[str, int] = field(default_factory=dict)

    @property
    def percent(self) -> float:
        return 100.0 * self.used / self.size if self.size else 0.0


@dataclass
class FirmwareReport:
    regions: list[RegionUsage]
    code_bytes: int  # .isr_vector + .text (+ exidx): the runtime, board layer and libc, without weights
    weight_bytes: int  # the llmcu_* weight and tokenizer sections
    ram_bytes: int  # everything that occupies RAM at run time
    macs_per_token: dict[str, int]
    # The stack from the linker script's symbols: bytes, guard_bytes (the MPU guard below it), limit, top.
    # Its peak use is measured at run time: peak_stack in the run's summary record and log.
    stack: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "regions": [
                {"name": r.name, "origin": r.origin, "size": r.size, "used": r.used,
                 "percent": round(r.percent, 2), "sections": r.sections}
                for r in self.regions
            ],
            "code_bytes": self.code_bytes,
            "weight_bytes": self.weight_bytes,
            "ram_bytes": self.ram_bytes,
            "macs_per_token": self.macs_per_token,
            "stack": self.stack,
        }  # fmt: skip

    def table(self) -> list[str]:
        lines = ["| region | used | size | % |", "|---|---:|---:|---:|"]
        for r in self.regions:
            if r.used:
                lines.append(f"| {r.name} | {r.used:,} | {r.size:,} | {r.percent:.1f} |")
        return lines


def macs_per_token(config: ModelConfig, positions: tuple[int, ...] = (1, 128, 255)) -> dict[str, int]:
    """Multiply-accumulates of one forward pass: the matmuls, and attention at a few positions."""
    per_layer = 2 * config.dim * config.dim + 2 * config.dim * config.kv_dim + 3 * config.dim * config.hidden_dim
    matmul = config.n_layers * per_layer + config.vocab_size * config.dim
    result = {"matmul": matmul}
    for pos in positions:
        if pos < config.seq_len:
            attention = config.n_layers * config.n_heads * config.head_size * (pos + 1) * 2
            result[f"total_at_pos_{pos}"] = matmul + attention
    return result


def _region_of(address: int, regions: list[RegionUsage]) -> RegionUsage | None:
    return next((r for r in regions if r.origin <= address < r.origin + r.size), None)


def analyse(elf_path: Path, regions: list[MemoryRegion], config: ModelConfig) -> FirmwareReport:
    usage = [RegionUsage(r.name, r.origin, r.size) for r in regions]
    code = weights = ram = 0
    ram_names = {r.name for r in regions if r.kind == "ram"}
    with open(elf_path, "rb") as stream:
        elf = ELFFile(stream)
        segments = [seg for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD"]
        for section in elf.iter_sections():
            size = section["sh_size"]
            if not size or not section["sh_flags"] & SH_FLAGS.SHF_ALLOC:
                continue
            name, vma = section.name, section["sh_addr"]
            run_region = _region_of(vma, usage)
            if run_region is None:
                raise LlmcuError(f"{elf_path}: section {name} at {vma:#x} lies in no memory region")
            places = [run_region]
            if section["sh_type"] != "SHT_NOBITS":
                segment = next((seg for seg in segments if seg.section_in_segment(section)), None)
                if segment is not None and segment["p_paddr"] != segment["p_vaddr"]:
                    load = _region_of(segment["p_paddr"] + vma - segment["p_vaddr"], usage)
                    if load is not None and load is not run_region:
                        places.append(load)
            for region in places:
                region.used += size
                region.sections[name] = region.sections.get(name, 0) + size
            if name in (".isr_vector", ".text", ".ARM.exidx", ".itcm_text"):  # .itcm_text: hot code run from ITCM
                code += size
            elif name.startswith(".llmcu_") and name not in (".llmcu_kv", ".llmcu_state", ".llmcu_tables"):
                weights += size
            if run_region.name in ram_names:
                ram += size
        stack = _stack(elf)
    return FirmwareReport(usage, code, weights, ram, macs_per_token(config), stack)


def _stack(elf: ELFFile) -> dict[str, int]:
    """The stack's size and its guard from __stack_guard, __stack_limit and __stack_top (cortex_m.ld.j2)."""
    symtab = elf.get_section_by_name(".symtab")
    if symtab is None:
        return {}
    wanted = {"__stack_guard": "guard", "__stack_limit": "limit", "__stack_top": "top"}
    found = {wanted[sym.name]: sym["st_value"] for sym in symtab.iter_symbols() if sym.name in wanted}
    if "limit" not in found or "top" not in found:
        return {}
    stack = {"bytes": found["top"] - found["limit"], "limit": found["limit"], "top": found["top"]}
    stack["guard_bytes"] = found["limit"] - found["guard"] if "guard" in found else 0
    return stack


def write_report(report: FirmwareReport, json_path: Path, markdown_path: Path, title: str) -> None:
    write_text_atomic(json_path, json.dumps(report.as_dict(), indent=2) + "\n")
    lines = [f"# Memory report: {title}", "", *report.table(), ""]
    lines.append(f"Code (runtime, board layer, libc; no weights): {report.code_bytes:,} bytes.  ")
    lines.append(f"Weights and tokenizer: {report.weight_bytes:,} bytes.  RAM in use: {report.ram_bytes:,} bytes.  ")
    macs = ", ".join(f"{key} {value:,}" for key, value in report.macs_per_token.items())
    lines.append(f"Multiply-accumulates per token: {macs}.")
    if report.stack:
        st = report.stack
        guard = f" above a {st['guard_bytes']:,}-byte MPU guard" if st.get("guard_bytes") else ""
        lines[-1] += "  "
        lines.append(
            f"Stack: {st['bytes']:,} bytes at {st['limit']:#010x}-{st['top']:#010x}{guard}; a run's peak use is "
            "`peak_stack` in its summary line and run log."
        )
    write_text_atomic(markdown_path, "\n".join(lines) + "\n")


def write_region_images(elf_path: Path, regions: list[MemoryRegion], out_dir: Path) -> list[Path]:
    """One raw binary per non-volatile region holding loadable bytes (``firmware.bin`` for the boot flash,
    ``firmware-<region>.bin`` for others such as QSPI), for programmers that take raw images. An Intel HEX
    of the whole ELF would span the gap between regions; these do not."""
    written = []
    with open(elf_path, "rb") as stream:
        elf = ELFFile(stream)
        loads = [seg for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD" and seg["p_filesz"]]
        boot = next((r for r in regions if r.kind == "flash"), None)
        for region in regions:
            if region.kind == "ram":
                continue
            inside = [seg for seg in loads if region.contains(seg["p_paddr"])]
            if not inside:
                continue
            end = max(seg["p_paddr"] + seg["p_filesz"] for seg in inside)
            image = bytearray(b"\xff" * (end - region.origin))  # erased flash reads 0xFF
            for seg in inside:
                start = seg["p_paddr"] - region.origin
                image[start : start + seg["p_filesz"]] = seg.data()
            name = "firmware.bin" if region is boot else f"firmware-{region.name}.bin"
            write_bytes_atomic(out_dir / name, bytes(image))
            written.append(out_dir / name)
    return written
