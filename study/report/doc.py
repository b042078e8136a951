"""The report document: parts (one per section) made of blocks, rendered to Markdown and to HTML.

A section builds a Part; the document is the parts in order. A Part also carries what the console
shows of that section (a short table or a line), so build_report prints the same story as summary.md
without knowing which section said what.
"""
from __future__ import annotations

import base64
import html as html_lib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.core.records import write_atomic
from study.report import tables
from study.report.tables import Rows

STYLE = ("<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
         "table{border-collapse:collapse;font-size:13px;margin:.5em 0 1.2em}"
         "td,th{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}"
         "th{background:#f3f3f3}pre{background:#f6f6f6;padding:.6em;overflow:auto;font-size:12px}"
         "img{max-width:100%;border:1px solid #eee;margin:.3em 0}</style>")


def rel(target: Path, start: Path) -> str:
    """A link from a summary in `start` to `target`, valid wherever the reports folder is moved."""
    return os.path.relpath(target.resolve(), start.resolve()).replace(os.sep, "/")


def image_src(name: str, folder: Path | None) -> str:
    """A PNG beside the summary as a data: URI, or its relative name when it is not there to inline."""
    png = folder / name if folder is not None else None
    if png is None or not png.is_file():
        return name
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


@dataclass
class Part:
    blocks: list[tuple[str, Any]] = field(default_factory=list)
    # ("table", (title, rows)) or ("line", text), in the order the console prints them
    shown: list[tuple[str, Any]] = field(default_factory=list)
    # lines the console prints after every part's `shown`: the answer closes the output
    closing: list[str] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", (level, text)))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, rows: Rows | None) -> None:
        if not tables.is_empty(rows):
            self.blocks.append(("table", rows))

    def image(self, path: Path | None, alt: str) -> None:
        """`path` is a PNG beside summary.md, or None when its plot had nothing to draw."""
        if path is not None:
            self.blocks.append(("img", (path.name, alt)))

    def pre(self, text: str) -> None:
        self.blocks.append(("pre", text))

    def links(self, items: list[tuple[str, str]]) -> None:
        if items:
            self.blocks.append(("links", items))

    def extend(self, other: "Part") -> None:
        self.blocks += other.blocks
        self.shown += other.shown
        self.closing += other.closing

    def show_table(self, title: str, rows: Rows | None) -> None:
        if not tables.is_empty(rows):
            self.shown.append(("table", (title, rows)))

    def show_line(self, text: str) -> None:
        self.shown.append(("line", text))

    def show_closing(self, text: str) -> None:
        self.closing.append(text)


@dataclass
class Doc:
    title: str
    parts: list[Part] = field(default_factory=list)

    def blocks(self):
        for part in self.parts:
            yield from part.blocks

    def markdown(self) -> str:
        out = [f"# {self.title}\n"]
        for kind, v in self.blocks():
            if kind == "h":
                out.append(f"{'#' * v[0]} {v[1]}\n")
            elif kind == "p":
                out.append(v + "\n")
            elif kind == "table":
                out.append(tables.markdown(v))
            elif kind == "img":
                out.append(f"![{v[1]}]({v[0]})\n")
            elif kind == "pre":
                out.append("```\n" + v.rstrip() + "\n```\n")
            elif kind == "links":
                out.append("\n".join(f"- [{label}]({href})" for label, href in v) + "\n")
        return "\n".join(out)

    def html(self, folder: Path | None = None) -> str:
        """The page; with `folder` (where the PNGs are) every picture is inlined, so summary.html is one
        file a person can open or mail on its own."""
        e = html_lib.escape
        out = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{e(self.title)}</title>",
               STYLE + "</head><body>", f"<h1>{e(self.title)}</h1>"]
        for kind, v in self.blocks():
            if kind == "h":
                out.append(f"<h{v[0]}>{e(v[1])}</h{v[0]}>")
            elif kind == "p":
                out.append(f"<p>{e(v)}</p>")
            elif kind == "table":
                out.append(tables.html(v))
            elif kind == "img":
                out.append(f"<p><img src='{e(image_src(v[0], folder))}' alt='{e(v[1])}' title='{e(v[0])}'></p>")
            elif kind == "pre":
                out.append(f"<pre>{e(v)}</pre>")
            elif kind == "links":
                out.append("<ul>" + "".join(f"<li><a href='{e(h)}'>{e(label)}</a></li>" for label, h in v) + "</ul>")
        out.append("</body></html>")
        return "\n".join(out)

    def write(self, folder: Path) -> tuple[Path, Path]:
        md, page = folder / "summary.md", folder / "summary.html"
        write_atomic(md, self.markdown())
        write_atomic(page, self.html(folder))
        return md, page

    def print_shown(self, console: Any) -> None:
        for part in self.parts:
            for kind, v in part.shown:
                if kind == "table":
                    tables.print_table(console, v[1], v[0])
                else:
                    console.print(v)
        for part in self.parts:
            for text in part.closing:
                console.print(text, markup=False, highlight=False)
