"""A tiny document model for reports: headings, paragraphs, tables, images and preformatted text, rendered to
Markdown and to one self-contained HTML page (the images inlined as data URIs)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ReportTable:
    header: list[str]
    rows: list[list[str]]
    align_right: tuple[int, ...] = ()


@dataclass
class Image:
    file: str  # beside report.md
    alt: str


@dataclass
class Document:
    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, table: ReportTable) -> None:
        self.blocks.append(("table", table))

    def image(self, image: Image) -> None:
        self.blocks.append(("img", image))

    def pre(self, text: str) -> None:
        """Text shown as it is (a prompt, the generated story)."""
        self.blocks.append(("pre", text))

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, value in self.blocks:
            if kind == "h2":
                out += [f"## {value}", ""]
            elif kind == "p":
                out += [value, ""]
            elif kind == "table":
                out.append("| " + " | ".join(value.header) + " |")
                out.append(
                    "|" + "|".join("---:" if i in value.align_right else "---" for i in range(len(value.header))) + "|"
                )
                out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in value.rows]
                out.append("")
            elif kind == "img":
                out += [f"![{value.alt}]({value.file})", ""]
            elif kind == "pre":
                fence = "````" if "```" in value else "```"
                out += [f"{fence}text", value.rstrip("\n"), fence, ""]
        return "\n".join(out)

    def html(self, folder: Path) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for kind, value in self.blocks:
            if kind == "h2":
                body.append(f"<h2>{html.escape(value)}</h2>")
            elif kind == "p":
                body.append(f"<p>{html.escape(value)}</p>")
            elif kind == "table":
                head = "".join(f"<th>{html.escape(cell)}</th>" for cell in value.header)
                rows = []
                for row in value.rows:
                    cells = "".join(
                        f'<td class="num">{html.escape(c)}</td>'
                        if i in value.align_right
                        else f"<td>{html.escape(c)}</td>"
                        for i, c in enumerate(row)
                    )
                    rows.append(f"<tr>{cells}</tr>")
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
            elif kind == "img":
                data = base64.b64encode((folder / value.file).read_bytes()).decode("ascii")
                body.append(f'<p><img alt="{html.escape(value.alt)}" src="data:image/png;base64,{data}"></p>')
            elif kind == "pre":
                body.append(f"<pre>{html.escape(value)}</pre>")
        style = (
            "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
            "table{border-collapse:collapse;margin:0.5rem 0}th,td{border:1px solid #ccc;padding:0.25rem 0.6rem}"
            "th{background:#f3f3f3;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}"
            "img{max-width:100%}pre{white-space:pre-wrap;background:#f7f7f7;padding:0.6rem;border:1px solid #ddd}"
        )
        return (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>'
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
        )
