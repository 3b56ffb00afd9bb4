"""The bring-up self-test (build option ``selftest=1``, ``targets/cortex-m/selftest.c``): the region table the
firmware walks, and what the host makes of its records: pass/fail per test, the QSPI image's CRC against the one
the build flashed, every region's read speed in MB/s (cycles on a board; on the QEMU twin only bytes per
instruction, which is no speed), and a Markdown report. A self-test log also gives the benchmark's on-chip
estimate measured bandwidths instead of assumed ones (tools/bench.py --selftest-log).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.elffile import ELFFile

from .protocol import RunOutput

QSPI_SECTION = ".llmcu_qspi"


@dataclass(frozen=True)
class RegionSpeed:
    region: str
    read_bytes: int
    read_cost: int
    mb_per_s: float | None  # None on a counter that is not time (the twin counts instructions)
    tests: dict[str, str]  # test -> "ok" / "fail ..." (SDRAM) or the CRC verdict (QSPI)


@dataclass(frozen=True)
class SelftestReport:
    target: str
    unit: str
    clock_hz: int
    regions: list[RegionSpeed]

    @property
    def passed(self) -> bool:
        return all(not verdict.startswith("fail") for r in self.regions for verdict in r.tests.values())

    def bandwidths(self) -> dict[str, float]:
        """Region -> bytes per second (regions measured in time only)."""
        return {r.region: r.mb_per_s * 1e6 for r in self.regions if r.mb_per_s}

    def as_dict(self) -> dict[str, object]:
        return {"target": self.target, "unit": self.unit, "clock_hz": self.clock_hz, "passed": self.passed,
                "regions": [r.__dict__ for r in self.regions]}  # fmt: skip


def qspi_image_crc(elf: Path) -> tuple[int, int] | None:
    """(bytes, CRC-32) of what the build put in the external flash, from the ELF; None when it put nothing."""
    with elf.open("rb") as stream:
        section = ELFFile(stream).get_section_by_name(QSPI_SECTION)
        if section is None or not section.data_size:
            return None
        data = section.data()
    return len(data), zlib.crc32(data)


def analyse(output: RunOutput, elf: Path | None = None) -> SelftestReport:
    """The records of a self-test run, with MB/s and the CRC checked against ``elf``'s QSPI image."""
    unit = output.header.get("unit", "")
    clock_hz = int(output.header.get("clock_hz", "0") or 0)
    expected = qspi_image_crc(elf) if elf is not None else None
    by_region: dict[str, dict[str, object]] = {}
    for record in output.selftest:
        entry = by_region.setdefault(record.get("region", "?"), {"tests": {}})
        test = record.get("test", "?")
        if test == "read":
            entry["bytes"], entry["cost"] = int(record.get("bytes", 0)), int(record.get("cost", 0))
        elif test == "crc":
            got = (int(record.get("bytes", 0)), int(record.get("crc32", "0"), 16))
            if expected is None:
                verdict = f"crc32 {got[1]:#010x} of {got[0]:,} bytes (no image to compare with)"
            elif got == expected:
                verdict = f"ok: crc32 {got[1]:#010x} of {got[0]:,} bytes, as flashed"
            else:
                verdict = f"fail: crc32 {got[1]:#010x} of {got[0]:,} bytes, the image has {expected[1]:#010x}"
            entry["tests"]["crc"] = verdict  # type: ignore[index]
        else:
            detail = " ".join(f"{k}={v}" for k, v in record.items() if k not in ("region", "test", "result"))
            entry["tests"][test] = f"{record.get('result', '?')}" + (f" ({detail})" if detail else "")  # type: ignore[index]
    regions = []
    for name, entry in by_region.items():
        size, cost = int(entry.get("bytes", 0)), int(entry.get("cost", 0))  # type: ignore[call-overload]
        rate = size * clock_hz / cost / 1e6 if unit == "cycles" and clock_hz and cost else None
        regions.append(RegionSpeed(name, size, cost, round(rate, 1) if rate else None, dict(entry["tests"])))  # type: ignore[call-overload]
    return SelftestReport(output.header.get("target", "?"), unit, clock_hz, regions)


def markdown(report: SelftestReport) -> str:
    lines = [
        f"# Self-test: {report.target}: {'passed' if report.passed else 'FAILED'}",
        "",
        f"Counter: {report.unit}" + (f" at {report.clock_hz:,} Hz." if report.clock_hz else " (not time: no MB/s)."),
        "",
        "| region | read (bytes / counter) | MB/s | tests |",
        "|---|---:|---:|---|",
    ]
    for r in report.regions:
        speed = f"{r.mb_per_s:,.1f}" if r.mb_per_s else "-"
        tests = "; ".join(f"{name}: {verdict}" for name, verdict in r.tests.items()) or "-"
        lines.append(f"| {r.region} | {r.read_bytes:,} / {r.read_cost:,} | {speed} | {tests} |")
    return "\n".join(lines) + "\n"


def write_report(report: SelftestReport, folder: Path) -> Path:
    """``selftest.md`` and ``selftest.json`` in ``folder`` (the build's output directory, the run's log)."""
    from ..core.fileio import write_text_atomic

    write_text_atomic(folder / "selftest.json", json.dumps(report.as_dict(), indent=2) + "\n")
    write_text_atomic(folder / "selftest.md", markdown(report))
    return folder / "selftest.md"


def bandwidths_from_log(path: Path) -> dict[str, float]:
    """Region -> measured bytes per second from a self-test's ``selftest.json`` (or the log folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "selftest.json"
    data = json.loads(path.read_text())
    return {r["region"]: r["mb_per_s"] * 1e6 for r in data["regions"] if r.get("mb_per_s")}
