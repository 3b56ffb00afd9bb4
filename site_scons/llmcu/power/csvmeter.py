"""Current from any bench meter that can log to CSV (a SMU, a DMM with logging, a scope's export).

The file needs a time column and a current column, optionally a voltage column. Columns are found by name
("time", "current"/"I", "voltage"/"V") or given explicitly, by header name or by 0-based index, together
with their units when the header does not say (``Current (mA)``, ``I[uA]`` and ``t_ms`` do)::

    read_csv("bench.csv")                                        # headers say it all
    read_csv("bench.csv", CsvMapping(time=0, current=2, current_unit="mA"))
    read_csv("bench.csv", parse_mapping("time=Timestamp:iso,current=CH1 Current:uA"))

Times are relative (s, ms, us, ns) or absolute: ``iso`` (ISO 8601 date-times) or ``epoch`` (Unix seconds).
Absolute times put the samples on the host's clock directly (``host_t0``), assuming the logging PC's clock is
the one that ran llmcu (or is NTP-synchronised with it); relative ones need ``start_time`` (the host time of
the first row), or ``CsvMeter``, which notes when it was started. Lines starting with ``#`` are comments; a
``;``-separated file may use decimal commas.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .base import MeterBase, MeterError, Samples, host_t0_from

TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}  # keys lower case, "u" for micro
ABSOLUTE_TIME_UNITS = ("iso", "epoch")
CURRENT_UNITS = {"a": 1.0, "ma": 1e-3, "ua": 1e-6, "na": 1e-9}
VOLTAGE_UNITS = {"v": 1.0, "mv": 1e-3}
UNIT_IN_HEADER = re.compile(r"(?:[\(\[]\s*([^\s\)\]]+)\s*[\)\]]|[_ ]([^\s_\(\)\[\]]+))\s*$")

Column = str | int


@dataclass(frozen=True)
class CsvMapping:
    """Which columns hold what, and in which units (None: from the header, else s / A / V)."""

    time: Column | None = None
    current: Column | None = None
    voltage: Column | None = None
    time_unit: str | None = None
    current_unit: str | None = None
    voltage_unit: str | None = None
    delimiter: str | None = None


def parse_mapping(text: str) -> CsvMapping:
    """``time=COL[:UNIT],current=COL[:UNIT][,voltage=COL[:UNIT]][,delimiter=;]``; COL is a header name or a
    0-based column number."""
    fields: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("time", "current", "voltage", "delimiter"):
            raise MeterError(f"bad CSV column mapping {item!r}: use time=COL[:UNIT],current=COL[:UNIT],...")
        if key == "delimiter":
            fields["delimiter"] = {"tab": "\t", "comma": ",", "semicolon": ";"}.get(value, value)
            continue
        column, _, unit = value.rpartition(":") if ":" in value else (value, "", "")
        column = column.strip()
        fields[key] = int(column) if column.isdigit() else column
        if unit:
            fields[f"{key}_unit"] = unit.strip()
    return CsvMapping(**fields)  # type: ignore[arg-type]


def _unit_key(unit: str) -> str:
    return unit.strip().replace("µ", "u").replace("μ", "u").lower()


def _unit_from_header(header: str) -> str | None:
    """The unit a header names at its end (``Current (mA)``, ``I[uA]``, ``t_ms``), if it is one we know."""
    match = UNIT_IN_HEADER.search(header.strip())
    if match is None:
        return None
    unit = match.group(1) or match.group(2)
    known = {*TIME_UNITS, *CURRENT_UNITS, *VOLTAGE_UNITS}
    return unit if _unit_key(unit) in known else None


def _find(headers: list[str], wanted: Column | None, names: tuple[str, ...], what: str, required: bool) -> int | None:
    if isinstance(wanted, int):
        if not 0 <= wanted < len(headers):
            raise MeterError(f"CSV has {len(headers)} columns; there is no column {wanted} for {what}")
        return wanted
    if isinstance(wanted, str) and wanted:
        lowered = [h.strip().lower() for h in headers]
        if wanted.strip().lower() in lowered:
            return lowered.index(wanted.strip().lower())
        raise MeterError(f"CSV has no column {wanted!r} for {what}; its columns: {', '.join(headers)}")
    for index, header in enumerate(headers):
        word = re.split(r"[\s(\[_]", header.strip().lower(), maxsplit=1)[0]
        if word in names:
            return index
    if required:
        raise MeterError(
            f"CSV: no {what} column found among {', '.join(headers)}; name it with a column mapping "
            f"({what}=COLUMN[:UNIT])"
        )
    return None


def _scale(unit: str | None, table: dict[str, float], default: str, what: str) -> float:
    scale = table.get(_unit_key(unit or default))
    if scale is None:
        raise MeterError(f"unknown {what} unit {unit!r}; use one of {', '.join(table)}")
    return scale


def _number(text: str, decimal_comma: bool) -> float:
    text = text.strip()
    if decimal_comma:
        text = text.replace(",", ".")
    return float(text)


def _absolute_time(text: str, unit: str) -> float:
    if unit == "epoch":
        return float(text)
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.astimezone()  # a naive time is the logging PC's local time
    return moment.astimezone(UTC).timestamp()


def read_csv(path: str | Path, mapping: CsvMapping | None = None, *, start_time: float | None = None) -> Samples:
    """Import a bench meter's CSV; ``start_time`` is the host time of the first row when times are relative."""
    mapping = mapping or CsvMapping()
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as error:
        raise MeterError(f"cannot read the meter CSV {source}: {error}") from None
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if len(lines) < 2:
        raise MeterError(f"{source}: no header and data rows")
    delimiter = mapping.delimiter
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(lines[0], delimiters=",;\t").delimiter
        except csv.Error:
            delimiter = ","
    rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter))
    headers, data = rows[0], [row for row in rows[1:] if any(cell.strip() for cell in row)]
    time_col = _find(headers, mapping.time, ("time", "t", "timestamp", "seconds"), "time", True)
    current_col = _find(headers, mapping.current, ("current", "i", "idd", "amps"), "current", True)
    voltage_col = _find(headers, mapping.voltage, ("voltage", "v", "vdd", "volts"), "voltage", False)
    assert time_col is not None and current_col is not None
    time_unit = _unit_key(mapping.time_unit or _unit_from_header(headers[time_col]) or "s")
    current_scale = _scale(
        mapping.current_unit or _unit_from_header(headers[current_col]), CURRENT_UNITS, "A", "current"
    )
    voltage_scale = 1.0
    if voltage_col is not None:
        voltage_scale = _scale(
            mapping.voltage_unit or _unit_from_header(headers[voltage_col]), VOLTAGE_UNITS, "V", "voltage"
        )
    decimal_comma = delimiter == ";"
    times, currents, voltages = [], [], []
    for number, row in enumerate(data, start=2):
        try:
            if time_unit in ABSOLUTE_TIME_UNITS:
                times.append(_absolute_time(row[time_col], time_unit))
            else:
                times.append(_number(row[time_col], decimal_comma))
            currents.append(_number(row[current_col], decimal_comma) * current_scale)
            if voltage_col is not None:
                voltages.append(_number(row[voltage_col], decimal_comma) * voltage_scale)
        except (ValueError, IndexError) as error:
            raise MeterError(f"{source}: data row {number} ({delimiter.join(row)!r}): {error}") from None
    t = np.asarray(times, dtype=np.float64)
    host_t0: float | None = start_time
    if time_unit in ABSOLUTE_TIME_UNITS:
        host_t0 = float(t[0])
        t = t - t[0]
    else:
        t = (t - t[0]) * _scale(time_unit, TIME_UNITS, "s", "time")
    order = np.argsort(t, kind="stable")
    return Samples(
        source="csv",
        t_s=t[order],
        current_a=np.asarray(currents)[order],
        voltage_v=np.asarray(voltages)[order] if voltage_col is not None else None,
        host_t0=host_t0,
        info={"file": str(source), "columns": {"time": headers[time_col], "current": headers[current_col],
              "voltage": headers[voltage_col] if voltage_col is not None else None}, "time_unit": time_unit},
    )  # fmt: skip


class CsvMeter(MeterBase):
    """A bench meter that logs to a CSV file by itself: ``start()`` notes the host time (start the meter's
    logging at the same moment, or log absolute times), ``stop()`` reads the file."""

    name = "csv"

    def __init__(self, path: str | Path, mapping: CsvMapping | None = None, *, start_uncertainty_s: float = 0.5):
        self.path = Path(path)
        self.mapping = mapping
        self.start_uncertainty_s = start_uncertainty_s
        self._started: float | None = None

    def start(self) -> None:
        with self.bracket() as times:
            pass
        self._started = host_t0_from(times)[0]

    def stop(self) -> Samples:
        samples = read_csv(self.path, self.mapping, start_time=self._started)
        if samples.info.get("time_unit") not in ABSOLUTE_TIME_UNITS:
            samples.host_t0_uncertainty_s = self.start_uncertainty_s
            samples.warnings.append(
                f"CSV times are relative: its first row is taken to be when llmcu started the meter "
                f"(±{self.start_uncertainty_s} s); log absolute times for a better alignment"
            )
        return samples
