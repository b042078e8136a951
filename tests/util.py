"""Helpers shared by tests: run the CLI the way a user does, read what it wrote."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_study(*args: str, cwd: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO)
    full_env["COLUMNS"] = "200"
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "study", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env, stdin=subprocess.DEVNULL)


def run_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI in this process, with what run_study gives its own (the arguments, the working folder,
    COLUMNS, `env`), for tests that are not about the study's own process: its stages still run in
    child processes, and an interpreter start (seconds, torch's import) is saved. Returns what
    run_study returns: the exit code and what the study printed."""
    import contextlib
    import io

    from study.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.update({"COLUMNS": "200", **(env or {})})
    try:
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse's refusals and --help
                code = e.code if isinstance(e.code, int) else 2
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["study", *args], code, out.getvalue(), err.getvalue())


def results(cwd: Path, run: str) -> list[dict]:
    path = cwd / "reports" / run / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stage_rows(cwd: Path, run: str) -> list[dict]:
    return [r for r in results(cwd, run) if r["kind"] == "stage"]


def records(cwd: Path, run: str) -> list[dict]:
    with open(cwd / "reports" / run / "records.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# Tables on the console: rich draws them with box characters, and with ASCII ones where the terminal's
# encoding lacks those. Tests read the cells, never the drawing.
COLUMN_RULES = "│┃║|"


def is_table_line(line: str) -> bool:
    """Whether a console line is part of a drawn table (a row or a rule, in any box style)."""
    s = line.strip()
    return bool(s) and (any("\u2500" <= c <= "\u257f" for c in s) or s[0] in "|+" and s[-1] in "|+")


def tables(text: str) -> list[list[list[str]]]:
    """Every drawn table in `text`: its rows (the header first), each as its stripped cells."""
    out: list[list[list[str]]] = []
    inside = False
    for line in text.splitlines():
        s = line.strip()
        if not is_table_line(s):
            inside = False
            continue
        if not inside:
            out.append([])
            inside = True
        if s[0] in COLUMN_RULES and s[-1] in COLUMN_RULES:
            rules = [r for r in COLUMN_RULES if r != "|"] if s[0] != "|" else ["|"]  # a cell may hold a |
            for rule in rules[1:]:
                s = s.replace(rule, rules[0])
            out[-1].append([c.strip() for c in s[1:-1].split(rules[0])])
    return out


def table_rows(text: str, after: str = "") -> dict[str, list[str]]:
    """The body rows of the drawn tables in `text` by first cell (headers left out); a row folded over
    several lines (its first cell empty on the later ones) is joined. A name seen twice fails. With
    `after`: the first table after the first line holding it (a table's title) only."""
    if after:
        text = "\n".join(text[text.index(after):].splitlines()[1:])
    rows: dict[str, list[str]] = {}
    for table in tables(text)[:1 if after else None]:
        last: list[str] = []
        for cells in table[1:]:
            if cells[0]:
                assert cells[0] not in rows, f"{cells[0]} listed twice"
                last = rows[cells[0]] = cells
            elif last:
                last[:] = [f"{a} {b}".strip() for a, b in zip(last, cells)]
    return rows


def markdown_rows(md: str) -> dict[str, list[str]]:
    """The body rows of the Markdown tables in `md` by first cell (later tables win a name seen twice)."""
    rows = {}
    for line in md.splitlines():
        s = line.strip()
        if s.startswith("|") and s.endswith("|") and not set(s) <= set("|-: "):
            cells = [c.strip() for c in s[1:-1].split("|")]
            rows[cells[0]] = cells
    return rows


def line_after_every_table(text: str, needle: str) -> int:
    """The number of the first line holding `needle`, checked to come after every drawn table's last line."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if needle in line)
    drawn = [i for i, line in enumerate(lines) if is_table_line(line)]
    assert drawn and max(drawn) < at, (needle, at, drawn[-1:])
    return at
