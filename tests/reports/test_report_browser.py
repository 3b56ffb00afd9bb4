"""The run report as a person sees it: report.html opened in headless Chromium (Debian's, tools/setup.sh installs
it), every section there, every plot decoded and drawn, and a screenshot of the page."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from llmcu.power.base import Samples
from llmcu.power.energy import write_power
from llmcu.reports.report import write_report
from support.power import make_run_dir

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not found (tools/setup.sh installs it)")
# As the machine's notes say: without these, Chromium's background connections fail at every start.
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
]  # fmt: skip
SECTIONS = ("Summary", "Build", "Prompt and text", "Memory", "Cost per token", "Power", "Where it came from")
# Once the page has loaded: each image's state, for --dump-dom to show.
CHECK_IMAGES = (
    "<script>addEventListener('load', () => document.body.setAttribute('data-images', "
    "[...document.images].map(i => i.complete && i.naturalWidth > 300 ? 'drawn' : 'broken').join(',')))</script>"
)


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    command = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _report(tmp_path: Path) -> Path:
    build = tmp_path / "build"
    build.mkdir()
    regions = [{"name": "flash", "origin": 0x08000000, "size": 2097152, "used": 352000, "percent": 16.8},
               {"name": "dtcm", "origin": 0x20000000, "size": 131072, "used": 98304, "percent": 75.0}]  # fmt: skip
    (build / "memory_report.json").write_text(json.dumps({"regions": regions, "code_bytes": 40000}))
    quality = {"prompt": "Once upon a time", "positions": 124, "top1": 0.97, "mean_kl": 4.8e-4, "max_kl": 2.9e-3}
    (build / "quant_report.json").write_text(json.dumps({"quality": quality}))
    run_dir = make_run_dir(tmp_path / "logs", tokens=400, cost=4_000_000, slope=2_000, build=build,
                           markers=(1000.5, 1004.0), settings={"stack": 8192, "fit": "gptq"})  # fmt: skip
    t = np.arange(0, 5.0, 1e-3)
    current = np.where((t >= 0.5) & (t <= 4.0), 0.1 + 0.01 * np.sin(t * 40), 0.02)
    write_power(run_dir, Samples("ppk2", t, current, supply_v=3.3, host_t0=1000.0))
    return write_report(run_dir).html


def test_the_report_in_a_browser_shows_every_section_and_draws_its_plots(tmp_path: Path) -> None:
    page = _report(tmp_path)
    checked = tmp_path / "checked.html"
    checked.write_text(page.read_text().replace("</body>", CHECK_IMAGES + "</body>"))
    dom = _chromium(["--dump-dom", checked.as_uri()], tmp_path / "profile").stdout
    assert 'data-images="drawn,drawn"' in dom, re.findall(r"data-images=\"[^\"]*\"", dom) or dom[-500:]
    headings = re.findall(r"<h2>([^<]*)</h2>", dom)
    assert tuple(headings) == SECTIONS, headings
    assert "Once upon a time, there was a tiny model." in dom and "Stack: 2,344 bytes at its peak" in dom
    assert "top-1 agreement 97.0 %" in dom and "free (bytes)" in dom

    screenshot = tmp_path / "report.png"
    result = _chromium(["--window-size=1100,4200", f"--screenshot={screenshot}", page.as_uri()], tmp_path / "p2")
    assert screenshot.is_file(), result.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(screenshot)
    assert pixels.shape[:2] == (4200, 1100)
    blue = np.all(np.abs(pixels[..., :3] - np.array([0x1F, 0x77, 0xB4]) / 255) < 0.03, axis=-1)
    green = np.all(np.abs(pixels[..., :3] - np.array([0x2C, 0xA0, 0x2C]) / 255) < 0.03, axis=-1)
    assert blue.sum() > 500 and green.sum() > 500  # the cost plot's median line and the measured current, drawn
