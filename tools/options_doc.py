#!/usr/bin/env python3
"""Write docs/options.md from the option table (llmcu.builder.options.markdown_table); a test keeps it equal.

tools/options_doc.py            write it
tools/options_doc.py --check    exit 1 when the file differs from the table
"""

from __future__ import annotations

import argparse
import sys

from llmcu.builder.options import markdown_table
from llmcu.builder.settings import options_table
from llmcu.core.fileio import write_text_atomic
from llmcu.core.paths import ROOT

DOCUMENT = ROOT / "docs" / "options.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only say whether docs/options.md is current")
    args = parser.parse_args(argv)
    text = markdown_table(options_table())
    if args.check:
        current = DOCUMENT.read_text() if DOCUMENT.is_file() else ""
        if current != text:
            print(f"{DOCUMENT} is out of date: run tools/options_doc.py", file=sys.stderr)
            return 1
        return 0
    DOCUMENT.parent.mkdir(exist_ok=True)
    write_text_atomic(DOCUMENT, text)
    print(f"wrote {DOCUMENT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
