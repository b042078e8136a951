"""One table writer: the same rows give the same cells in Markdown, HTML, CSV and on the console."""
from __future__ import annotations

import csv
import io
import re
from html.parser import HTMLParser

import pandas as pd
from rich.console import Console

from study.report import tables

ROWS = [
    {"stage": "0 00-base", "samples/s": "1000.0", "vs base": "1.00×", "status": "ok"},
    {"stage": "1 01-a|b", "samples/s": "–", "vs base": "2.00× [1.81–2.21] (noise)", "status": "failed: <x> & 'y'"},
]


def md_cells(text: str) -> list[list[str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("|") and not ln.startswith("|---")]
    return [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in lines]


class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def html_cells(text: str) -> list[list[str]]:
    parser = _Cells()
    parser.feed(text)
    return parser.rows


def csv_cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def expected(rows) -> list[list[str]]:
    cols = list(rows[0])
    return [cols] + [[r[c] for c in cols] for r in rows]


def test_markdown_html_and_csv_hold_the_same_cells():
    want = expected(ROWS)
    assert md_cells(tables.markdown(ROWS)) == want
    assert html_cells(tables.html(ROWS)) == want
    assert csv_cells(tables.csv(ROWS)) == want


def test_a_dataframe_and_a_list_of_dicts_render_alike():
    df = pd.DataFrame(ROWS)
    assert tables.markdown(df) == tables.markdown(ROWS)
    assert tables.html(df) == tables.html(ROWS)
    assert tables.csv(df) == tables.csv(ROWS)


def test_console_table_shows_every_cell():
    out = io.StringIO()
    Console(file=out, width=400, color_system=None).print(tables.rich_table(ROWS, "t"))
    text = out.getvalue()
    for row in expected(ROWS):
        for cell in row:
            assert cell in text, cell


def test_missing_values_are_a_dash_for_readers_and_empty_in_csv():
    rows = [{"stage": "a", "x": None, "y": 1 / 3}, {"stage": "b", "x": float("nan"), "y": 2.0}]
    assert md_cells(tables.markdown(rows))[1:] == [["a", "–", str(1 / 3)], ["b", "–", "2.0"]]
    assert html_cells(tables.html(rows))[1:] == md_cells(tables.markdown(rows))[1:]
    parsed = csv_cells(tables.csv(rows))
    assert [r[1] for r in parsed[1:]] == ["", ""]
    assert float(parsed[1][2]) == 1 / 3  # CSV is for programs: full precision


def test_empty_tables_print_nothing():
    out = io.StringIO()
    console = Console(file=out, width=100)
    tables.print_table(console, [], "nothing")
    tables.print_table(console, pd.DataFrame(), "nothing")
    tables.print_table(console, None, "nothing")
    assert out.getvalue() == ""
    tables.print_table(console, ROWS[:1], "one row")
    assert "one row" in out.getvalue()
