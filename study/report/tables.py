"""The one table writer: the same rows rendered for the console (rich), Markdown, HTML and CSV.

Rows are a DataFrame or a list of dicts (one dict per row, keys are the columns). Markdown, HTML and
the console show the same text per cell (`fmt.cell`); CSV keeps the raw values, because it is read
by programs (stages.csv keeps full-precision throughputs and empty cells for missing figures).
"""
from __future__ import annotations

import sys
from typing import Any, Mapping, Sequence, Union

import pandas as pd

from study.core import fmt

Rows = Union[pd.DataFrame, Sequence[Mapping[str, Any]]]


def frame(rows: Rows | None) -> pd.DataFrame:
    if rows is None:
        return pd.DataFrame()
    return rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))


def is_empty(rows: Rows | None) -> bool:
    return rows is None or not len(rows)


def text_frame(rows: Rows) -> pd.DataFrame:
    """Every cell as the text a reader sees."""
    df = frame(rows)
    return pd.DataFrame({c: [fmt.cell(v) for v in df[c]] for c in df.columns}, columns=list(df.columns))


def markdown(rows: Rows) -> str:
    df = text_frame(rows)
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for values in df.itertuples(index=False):
        lines.append("| " + " | ".join(_md_escape(v) for v in values) + " |")
    return "\n".join(lines) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def html(rows: Rows) -> str:
    return text_frame(rows).to_html(index=False, escape=True, border=0)


def csv(rows: Rows) -> str:
    return frame(rows).to_csv(index=False)


def rich_table(rows: Rows, title: str):
    from rich.table import Table
    from rich.text import Text

    df = text_frame(rows)
    table = Table(title=title)
    for c in df.columns:
        table.add_column(str(c), overflow="fold")
    for values in df.itertuples(index=False):
        # Plain text, never markup: a failed stage's error holds brackets ("[Errno 104]", "[/path/pair.cc:561]").
        table.add_row(*(Text(str(v)) for v in values))
    return table


def print_table(console: Any, rows: Rows | None, title: str) -> None:
    """Nothing is printed for an empty table (a run without traces has no category table)."""
    if not is_empty(rows):
        console.print(rich_table(rows, title))


def make_console(stderr: bool = False):
    """Rich console; when output is not a terminal (CI, a log file) tables get 160 columns, not 80."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 160)
