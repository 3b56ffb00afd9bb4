"""A chip's operating limits as data (``targets/<target>/limits.toml``): every limit with the document it comes
from, so that a board file that exceeds one is an error naming the limit and its source (llmcu.platform.stm32h7)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.errors import OptionError
from .tomltable import REQUIRED, load_table


@dataclass(frozen=True)
class Limit:
    """One limit and the document it comes from."""

    value: int
    source: str


@dataclass(frozen=True)
class ChipLimits:
    revisions: dict[str, tuple[int, int, Limit]]  # name -> (REV_ID, voltage scale, CPU limit)
    cpu: dict[int, Limit]  # per voltage scale
    hclk: dict[int, Limit]
    apb: dict[int, Limit]
    pll_ref: tuple[int, int]
    pll_wide_ref_min: int
    vco_wide: tuple[int, int]
    vco_medium: tuple[int, int]
    pll_source: str
    fmc_sdclk: Limit
    quadspi_clk: Limit
    usart_kernel: Limit
    flash_wait_states: dict[int, tuple[tuple[int, int, int], ...]]
    flash_source: str


def load_limits(target_folder: Path) -> ChipLimits:
    """``limits.toml`` beside a target's target.toml: the MCU's datasheet and reference-manual limits."""
    path = Path(target_folder) / "limits.toml"
    table = load_table(path, "the chip's limits that every board file is checked against")
    revisions = {}
    revision_tables = table.table("revision")
    for name in sorted(revision_tables.data):
        entry = revision_tables.table(name)
        cpu = Limit(entry.integer("cpu_max_hz", lo=1), entry.text("source"))
        revisions[name] = (entry.integer("rev_id", lo=0, hi=0xFFFF), entry.integer("vos", lo=0, hi=3), cpu)
        entry.done()
    revision_tables.done()
    if set(revisions) != {"V", "Y"}:
        raise OptionError(f"{path}: [revision] must describe V and Y, got {', '.join(sorted(revisions))}")
    cpu, hclk, apb = {}, {}, {}
    scales = table.table("vos")
    for key in sorted(scales.data):
        entry = scales.table(key)
        source = entry.text("source")
        cpu[int(key)] = Limit(entry.integer("cpu_max_hz", lo=1), source)
        hclk[int(key)] = Limit(entry.integer("hclk_max_hz", lo=1), source)
        apb[int(key)] = Limit(entry.integer("apb_max_hz", lo=1), source)
        entry.done()
    scales.done()
    pll = table.table("pll")
    pll_ref = (pll.integer("ref_min_hz", lo=1), pll.integer("ref_max_hz", lo=1))
    wide_ref_min = pll.integer("wide_ref_min_hz", lo=1)
    vco_wide, vco_medium = tuple(pll.raw("vco_wide", REQUIRED)), tuple(pll.raw("vco_medium", REQUIRED))
    pll_source = pll.text("source")
    pll.done()

    def single(name: str, key: str) -> Limit:
        entry = table.table(name)
        limit = Limit(entry.integer(key, lo=1), entry.text("source"))
        entry.done()
        return limit

    fmc, quadspi = single("fmc", "sdclk_max_hz"), single("quadspi", "clk_max_hz")
    usart = single("usart", "kernel_max_hz")
    flash = table.table("flash")
    rows = flash.raw("wait_states", REQUIRED)
    if not isinstance(rows, dict):
        raise OptionError(f"{flash.where}: `wait_states` must be a table of voltage scales")
    wait_states = {int(k): tuple(tuple(int(x) for x in row) for row in v) for k, v in rows.items()}
    flash_source = flash.text("source")
    flash.done()
    table.done()
    return ChipLimits(revisions, cpu, hclk, apb, pll_ref, wide_ref_min, vco_wide, vco_medium, pll_source,  # type: ignore[arg-type]
                      fmc, quadspi, usart, wait_states, flash_source)  # fmt: skip


def exceeds(what: str, value: int, limit: Limit, where: str, hint: str = "") -> OptionError:
    """The error for one limit exceeded: what, by how much, the limit and its source."""
    text = f"{where}: {what} is {value:,} Hz, above the STM32H743's {limit.value:,} Hz ({limit.source})"
    return OptionError(text + (f"; {hint}" if hint else ""))
