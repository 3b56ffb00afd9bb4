"""Run reports on synthetic log folders: the files, the tables, valid PNGs, and "estimated" labels."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from llmcu.power.base import Samples
from llmcu.power.energy import write_power
from llmcu.power.estimate import EstimateMeter
from llmcu.reports.report import write_report
from support.build import ROOT
from support.power import make_run_dir

pytest.importorskip("matplotlib")

MEMORY_REPORT = {
    "regions": [
        {"name": "itcm", "origin": 0, "size": 65536, "used": 0, "percent": 0.0, "sections": {}},
        {"name": "flash", "origin": 0x08000000, "size": 2097152, "used": 352000, "percent": 16.78, "sections": {}},
        {"name": "dtcm", "origin": 0x20000000, "size": 131072, "used": 98304, "percent": 75.0, "sections": {}},
    ],
    "code_bytes": 40000,
    "weight_bytes": 312000,
    "ram_bytes": 98304,
    "macs_per_token": {"matmul": 262144},
}


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    import matplotlib.image

    image = matplotlib.image.imread(path)  # decodes the whole image
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    return image.shape[1], image.shape[0]


def _measured_samples() -> Samples:
    t = np.arange(0, 3.0, 1e-3)
    current = np.where((t >= 0.5) & (t <= 2.5), 0.1 + 0.01 * np.sin(t * 40), 0.02)
    return Samples("ppk2", t, current, supply_v=3.3, host_t0=1000.0)


def test_report_with_memory_and_power(tmp_path: Path) -> None:
    build = tmp_path / "build"
    build.mkdir()
    (build / "memory_report.json").write_text(json.dumps(MEMORY_REPORT))
    run_dir = make_run_dir(
        tmp_path / "logs", tokens=120, cost=4_000_000, slope=20_000, build=build, markers=(1000.5025, 1002.5025)
    )
    write_power(run_dir, _measured_samples())
    files = write_report(run_dir)

    markdown = files.markdown.read_text()
    assert markdown.startswith("# Run report: stories260K q8 on stm32h743 (nucleo-h743zi)")
    assert "| region | origin | used (bytes) | free (bytes) | size (bytes) | % |" in markdown
    assert "| flash | 0x08000000 | 352,000 | 1,745,152 | 2,097,152 | 16.8 |" in markdown
    assert "| itcm |" not in markdown  # unused regions are left out
    assert "| tok/s | 120.0 |" in markdown  # 480 MHz / 4,000,000 cycles
    assert re.search(r"\| energy per token \| \d+\.\d{3} mJ \|", markdown)
    assert "host receive times of the start and end lines" in markdown
    assert "estimated" not in markdown.lower()
    assert "![cost per forward pass over position](cost_per_token.png)" in markdown
    assert "![current over time](current.png)" in markdown

    page = files.html.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("data:image/png;base64,") == 2
    assert 'src="cost_per_token.png"' not in page and "<table>" in page
    assert [path.name for path in files.images] == ["cost_per_token.png", "current.png"]
    for image in files.images:
        width, height = _png_size(image)
        assert width > 600 and height > 250


def test_report_without_build_or_power(tmp_path: Path) -> None:
    run_dir = make_run_dir(tmp_path, tokens=20, cost=1_000_000)
    files = write_report(run_dir)
    markdown = files.markdown.read_text()
    assert "## Memory\n\nSkipped: the log's summary.json does not name the build folder" in markdown
    assert "No power data for this run (power=none)" in markdown
    assert [path.name for path in files.images] == ["cost_per_token.png"]


def test_report_of_an_estimate_says_so(tmp_path: Path) -> None:
    run_dir = make_run_dir(
        tmp_path, tokens=64, cost=2_400_000, unit="instructions", clock_hz=0, target="qemu-m7",
        build=tmp_path / "nowhere", settings={"built_for": "stm32h743"},
    )  # fmt: skip
    write_power(run_dir, EstimateMeter().stop(), targets_dir=ROOT / "targets")
    markdown = write_report(run_dir).markdown.read_text()
    power = markdown.split("## Power", 1)[1]
    assert "These figures are estimated, not measured" in power
    assert "| energy per token (estimated) |" in power
    assert "| average current, generation (estimated) | 140.00 mA |" in power
    assert "| energy per token (estimated) |" in markdown.split("## Memory", 1)[0]  # the summary table too
    assert "its tok/s is not the board's speed" in markdown
    assert "Skipped: no memory_report.json in" in markdown


def _report_tool():
    spec = importlib.util.spec_from_file_location("report_tool", ROOT / "tools" / "report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_tool_imports_a_bench_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = make_run_dir(tmp_path, tokens=100, markers=(1700000001.0, 1700000002.0))
    csv_path = tmp_path / "bench.csv"
    rows = [f"{1700000000 + i / 1000:.3f},{50 if 1000 <= i <= 2000 else 5}" for i in range(3000)]
    csv_path.write_text("unix,I_mA\n" + "\n".join(rows) + "\n")
    tool = _report_tool()
    code = tool.main([str(run_dir), "--power-csv", str(csv_path), "--csv-map", "time=unix:epoch,current=I_mA"])
    assert code == 0, capsys.readouterr().err
    power = json.loads((run_dir / "power.json").read_text())
    assert power["source"] == "csv" and power["generation"]["avg_current_a"] == pytest.approx(0.05, rel=0.01)
    assert power["generation"]["energy_per_token_mj"] == pytest.approx(0.05 * 3.3 * 1.0 / 100 * 1e3, rel=0.01)
    assert (run_dir / "report.html").is_file() and (run_dir / "current.png").is_file()
    assert "3.3 V assumed" in " ".join(power["warnings"])
    assert tool.main([str(run_dir), "--estimate"]) == 0  # keeps the measured power.json
    assert json.loads((run_dir / "power.json").read_text())["source"] == "csv"


def test_report_tool_error_on_a_folder_that_is_not_a_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _report_tool().main([str(tmp_path)]) == 1
    assert "has no summary.json" in capsys.readouterr().err
