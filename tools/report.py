#!/usr/bin/env python3
"""Report on one run: report.md and report.html (self-contained) in its log folder.

    tools/report.py logs/<run>/                      speed, memory, cost per token, power if recorded
    tools/report.py logs/<run>/ --estimate           add an estimated power (STM32H743 datasheet model)
    tools/report.py logs/<run>/ --power-csv bench.csv [--csv-map 'time=Time:ms,current=I:mA'] [--csv-start T]
                                                     import a bench meter's CSV, align it, then report

--estimate and --power-csv write power.json and power.csv into the log folder first (llmcu.power.energy);
an existing power.json is kept unless --force. --csv-start is the host time (Unix seconds or ISO 8601) of the
CSV's first row when its times are relative.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from llmcu.core.errors import LlmcuError
from llmcu.power import energy
from llmcu.power.csvmeter import parse_mapping, read_csv
from llmcu.power.estimate import EstimateMeter
from llmcu.reports.report import write_report

ROOT = Path(__file__).resolve().parent.parent


def _host_time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text).timestamp()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a run's log folder (logs/<time>-<target>-<model>-<quant>/)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--estimate", action="store_true", help="estimate the power (no meter)")
    source.add_argument("--power-csv", type=Path, help="a bench meter's CSV to align with the run")
    parser.add_argument("--csv-map", default="", help="CSV columns: time=COL[:UNIT],current=COL[:UNIT],...")
    parser.add_argument("--csv-start", default="", help="host time of the CSV's first row (relative times)")
    parser.add_argument("--supply-v", type=float, default=None, help="board supply voltage (default: meter's, 3.3)")
    parser.add_argument("--force", action="store_true", help="replace an existing power.json")
    args = parser.parse_args(argv)
    try:
        if args.estimate or args.power_csv:
            if (args.run_dir / "power.json").is_file() and not args.force:
                print(f"report: {args.run_dir / 'power.json'} exists; keeping it (--force replaces it)")
            else:
                if args.estimate:
                    meter = EstimateMeter()
                    meter.start()
                    samples = meter.stop()
                else:
                    mapping = parse_mapping(args.csv_map) if args.csv_map else None
                    start = _host_time(args.csv_start) if args.csv_start else None
                    samples = read_csv(args.power_csv, mapping, start_time=start)
                result = energy.write_power(args.run_dir, samples, supply_v=args.supply_v, targets_dir=ROOT / "targets")
                print(f"report: power: {energy.format_power(result)}")
        files = write_report(args.run_dir)
    except (LlmcuError, OSError, ValueError) as error:
        print(f"report: error: {error}", file=sys.stderr)
        return 1
    print(f"report: wrote {files.markdown} and {files.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
