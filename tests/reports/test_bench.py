"""The benchmark harness's bookkeeping: regressions, table, estimates (the figures come from tools/bench.py)."""

from __future__ import annotations

import json
from pathlib import Path

from llmcu.reports.bench import (
    BenchRow,
    _estimate,
    compare,
    honours_fast_numerics,
    load_rows,
    markdown,
    plot,
    write_results,
)


def twin_row(instructions: float) -> BenchRow:
    row = BenchRow("qemu-m7", "260k", "q8", "opt", instructions_per_token=instructions)
    row.instructions_at = {"1": 400_000, "128": 500_000, "255": 600_000}
    row.costs = [400_000, 500_000, 600_000]
    return row


def test_regressions_are_flagged_beyond_the_tolerance() -> None:
    baseline = [twin_row(500_000).as_dict(), {**BenchRow("host", "260k", "q8", "opt").as_dict(),
                                              "tok_per_s": {"min": 9000, "median": 10000, "max": 11000}}]  # fmt: skip
    host = BenchRow("host", "260k", "q8", "opt", tok_per_s={"min": 7000, "median": 8000, "max": 8500})
    assert compare([twin_row(505_000)], baseline) == []  # +1%: within the tolerance
    findings = compare([twin_row(520_000), host], baseline)
    assert findings == [
        "qemu-m7 260k q8 opt exact: +4.0% instructions/token",
        "host 260k q8 opt exact: -20.0% host tok/s (median)",
    ]
    # a fast row is its own key: compared with the fast row of the baseline, never with the exact one
    fast = twin_row(300_000)
    fast.numerics = "fast"
    assert compare([fast], baseline) == []
    assert compare([twin_row(600_000)], [*baseline, {**fast.as_dict(), "instructions_per_token": 100}]) == [
        "qemu-m7 260k q8 opt exact: +20.0% instructions/token"
    ]


def test_estimate_takes_the_slower_of_compute_and_memory() -> None:
    report = {"regions": [{"name": "flash", "sections": {".llmcu_flash": 300_000, ".text": 16_000}},
                          {"name": "qspi", "sections": {".llmcu_qspi": 10_000_000}}]}  # fmt: skip
    estimate = _estimate(twin_row(480_000), report)
    assert estimate["compute_tok_per_s"] == 1000.0  # 480 MHz / 480 K instructions at CPI 1
    assert estimate["memory_bound_tok_per_s"] < 10  # 10 MB streamed from QSPI at ~66 MB/s per token
    assert estimate["tok_per_s"] == estimate["memory_bound_tok_per_s"]
    assert estimate["bound"] == "memory (qspi bandwidth)" and estimate["model"].endswith("(assumed)")
    assert estimate["revision_y_tok_per_s"] == estimate["tok_per_s"]  # memory-bound: the slower clock does not show


def test_estimate_takes_a_selftests_measured_bandwidths(monkeypatch) -> None:
    """tools/bench.py --selftest-log: the board's measured MB/s replace the assumed ones."""
    from llmcu.reports import bench

    report = {"regions": [{"name": "qspi", "sections": {".llmcu_qspi": 10_000_000}}]}
    monkeypatch.setattr(bench, "MEASURED_BANDWIDTH", {"qspi": 100e6})
    estimate = _estimate(twin_row(4_800_000), report)
    assert estimate["memory_bound_tok_per_s"] == 10.0 and "measured by a self-test: qspi" in estimate["model"]
    assert estimate["compute_tok_per_s"] == 100.0  # 480 MHz / 4.8 M instructions
    assert estimate["bound"] == "memory (qspi bandwidth)" and estimate["tok_per_s"] == 10.0
    assert estimate["revision_y_tok_per_s"] == 10.0  # 400 MHz / 4.8 M = 83, but the QSPI allows only 10
    monkeypatch.setattr(bench, "MEASURED_BANDWIDTH", {"qspi": 1e9})
    fast = _estimate(twin_row(4_800_000), report)
    assert fast["bound"] == "compute" and (fast["tok_per_s"], fast["revision_y_tok_per_s"]) == (100.0, 83.3)


def test_table_json_and_plot(tmp_path: Path) -> None:
    rows = [twin_row(500_000), BenchRow("host", "260k", "q8", "opt", tok_per_s={"min": 1, "median": 2, "max": 3})]
    lines = markdown(rows)
    assert "| qemu-m7 | 260k | q8 | opt | exact | 500,000 | 400,000 / 500,000 / 600,000 |" in lines[2]
    # runq.c's 3.95 M over 500 K; the goal is 450 K; (600 K - 400 K) / 254 positions is the growth
    assert lines[2].endswith("| 7.90x | <= 450 K: missed; growth 787/pos <= 1,000: met |")
    write_results(rows, tmp_path)
    assert plot(rows, tmp_path / "instructions.png")
    assert (tmp_path / "results.json").read_text().count('"instructions_per_token"') == 2
    assert "costs" not in (tmp_path / "results.json").read_text()
    drawn = (tmp_path / "instructions.png").read_bytes()
    assert drawn.startswith(b"\x89PNG")
    # rows read back from results.json have no curves: a merged run that measured none keeps the drawn plot
    assert not plot(load_rows(tmp_path / "results.json"), tmp_path / "instructions.png")
    assert (tmp_path / "instructions.png").read_bytes() == drawn


def test_fast_rows_only_for_kernel_sets_that_have_the_route() -> None:
    assert honours_fast_numerics("qemu-m7") and honours_fast_numerics("rzv2l")
    assert not honours_fast_numerics("host")  # the x86 set is exact only: a fast row would repeat the exact one


def test_rows_without_numerics_load_as_exact(tmp_path: Path) -> None:
    record = twin_row(500_000).as_dict()
    del record["numerics"]  # results written before the numerics column
    (tmp_path / "results.json").write_text(json.dumps([record]))
    (row,) = load_rows(tmp_path / "results.json")
    assert row.numerics == "exact" and row.key() == ("qemu-m7", "260k", "q8", "opt", "exact", "")
