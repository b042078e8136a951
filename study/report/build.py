"""Entry point of the report: summary.md + summary.html + PNGs per run, and run-vs-run comparisons."""
from __future__ import annotations

from pathlib import Path

from study.report.compare import compare_report
from study.report.sections import run_report
from study.report.tables import make_console


def build_report(run_dirs: list[Path], print_tables: bool = True) -> list[Path]:
    """summary.md, summary.html and PNGs for each run; with two or more runs, the first compared with
    each other one under reports/compare-<A>-vs-<B>/. Returns the summary.md paths written."""
    console = make_console(stderr=True) if print_tables else None
    written: list[Path] = []
    for d in run_dirs:
        doc = run_report(Path(d))
        md, page = doc.write(Path(d))
        written.append(md)
        if console is not None:
            doc.print_shown(console)
            console.print(f"summary: {md}  {page}")
    for other in run_dirs[1:]:
        doc, out_dir = compare_report(Path(run_dirs[0]), Path(other))
        md, page = doc.write(out_dir)
        written.append(md)
        if console is not None:
            doc.print_shown(console)
            console.print(f"comparison: {md}  {page}")
    return written
