"""Tables, plots and summaries built from reports/<run>/results.jsonl and the run's profile files.

`write_ladder` writes the ladder table (stages.csv/stages.md, rich on the console); `build_report`
writes reports/<run>/summary.md + summary.html + PNGs and, given two runs,
reports/compare-<A>-vs-<B>/. Nothing is measured here: every figure comes from results.jsonl or a
profile file whose path a row records.

    reading   RunData: one run's files          (study.core.fmt: numbers as text)
    ladder    the ladder rows                   tables    one table writer: rich/Markdown/HTML/CSV
    frames    rows of the other tables          doc       Part/Doc: Markdown and HTML
    sections  one function per section         compare   two runs side by side
    plots     matplotlib PNGs                   build     build_report
"""
from study.report.build import build_report
from study.report.compare import compare_report
from study.report.doc import Doc, Part
from study.report.ladder import display_frame, ladder_frame, speedup_of, write_ladder
from study.report.reading import RunData, stage_rows
from study.report.sections import RUN_SECTIONS, run_report
from study.report.tables import make_console

__all__ = ["Doc", "Part", "RUN_SECTIONS", "RunData", "build_report", "compare_report", "display_frame",
           "ladder_frame", "make_console", "run_report", "speedup_of", "stage_rows", "write_ladder"]
