"""A run's log folder (llmcu.device.runlog) as power analysis and reports read it.

The summary fields used (summary.json):

    target, board, model, quant, runner, status, reason    what ran and how it ended
    tokens, unit, clock_hz, cost_per_token, tok_per_s       token count, cost unit and speed
    peak_stack, start_time, end_time, settings.build        stack, times, and the build folder
    settings.built_for                                      the board target when the QEMU twin ran
    start_marker_time, end_marker_time                      host time.time() at which the protocol's start
                                                            line (\\x02llmcu ...) and end line (\\x03llmcu end)
                                                            arrived: what aligns a meter with the run

and tokens.jsonl (pos, token, next, piece, cost, unit, ms), or raw.bin when the token files are missing.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import LlmcuError


class RunDirError(LlmcuError):
    """A folder that is not a run log, or one missing what is needed."""


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


@dataclass
class RunRecord:
    path: Path
    summary: dict[str, Any]
    tokens: list[dict[str, Any]] = field(default_factory=list)

    @property
    def settings(self) -> dict[str, Any]:
        settings = self.summary.get("settings")
        return settings if isinstance(settings, dict) else {}

    @property
    def header(self) -> dict[str, Any]:
        header = self.summary.get("header")
        return header if isinstance(header, dict) else {}

    @property
    def unit(self) -> str:
        return str(self.summary.get("unit") or self.header.get("unit") or "")

    @property
    def clock_hz(self) -> float | None:
        return _float(self.summary.get("clock_hz")) or _float(self.header.get("clock_hz"))

    @property
    def n_tokens(self) -> int:
        count = self.summary.get("tokens")
        return int(count) if isinstance(count, (int, float)) else len(self.tokens)

    @property
    def positions(self) -> np.ndarray:
        return np.array([row.get("pos", i) for i, row in enumerate(self.tokens)], dtype=np.int64)

    @property
    def costs(self) -> np.ndarray:
        return np.array([float(row.get("cost") or 0) for row in self.tokens], dtype=np.float64)

    @property
    def ms(self) -> np.ndarray | None:
        values = [_float(row.get("ms")) for row in self.tokens]
        if not values or any(v is None for v in values):
            return None
        return np.array(values, dtype=np.float64)

    @property
    def start_marker_time(self) -> float | None:
        return _float(self.summary.get("start_marker_time"))

    @property
    def end_marker_time(self) -> float | None:
        return _float(self.summary.get("end_marker_time"))

    @property
    def build_dir(self) -> Path | None:
        build = self.settings.get("build") or self.summary.get("build_dir")
        return Path(str(build)) if build else None

    @property
    def title(self) -> str:
        s = self.summary
        where = s.get("target", "?") + (f" ({s['board']})" if s.get("board") else "")
        return f"{s.get('model', '?')} {s.get('quant', '?')} on {where}"

    def memory_report_path(self) -> Path | None:
        """The memory_report.json of the image that ran (the twin's when the QEMU twin ran)."""
        build = self.build_dir
        if build is None:
            return None
        candidates = [build / "twin" / "memory_report.json"] if self.settings.get("built_for") else []
        candidates.append(build / "memory_report.json")
        return next((path for path in candidates if path.is_file()), None)


def load_run(path: str | Path) -> RunRecord:
    """Read a run log folder: summary.json plus the token rows (tokens.jsonl, else parsed from raw.bin)."""
    folder = Path(path)
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise RunDirError(f"{folder} is not a run log: it has no summary.json (llmcu.device.runlog writes one per run)")
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise RunDirError(f"{summary_path}: {error}") from None
    tokens: list[dict[str, Any]] = []
    jsonl = folder / "tokens.jsonl"
    raw = folder / "raw.bin"
    if jsonl.is_file():
        tokens = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    elif raw.is_file():
        from ..core.errors import ProtocolError
        from ..device.protocol import ProtocolParser
        from ..device.runlog import token_rows

        parser = ProtocolParser()
        with contextlib.suppress(ProtocolError):  # keep what parsed before the bytes stopped making sense
            parser.feed(raw.read_bytes())
        tokens = token_rows(parser.output, None)
    return RunRecord(folder, summary, tokens)
