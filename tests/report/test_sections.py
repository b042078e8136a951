"""The report is a list of sections: a new one is one function, placed where it belongs."""
from __future__ import annotations

from study.report import RUN_SECTIONS, Part, RunData, run_report
from study.report.sections import STAGE_PROFILE_PARTS, profiles
from tests.report.helpers import make_run, read_rows, write_rows


def verdict(run: RunData) -> Part:
    part = Part()
    part.heading("Verdict")
    part.para(f"{len(run.ok)} of {len(run.stages)} stages ran.")
    part.show_line("verdict shown")
    return part


def test_a_new_section_lands_where_it_is_listed(tmp_path):
    run = make_run(tmp_path, "fx")
    header, *rest = RUN_SECTIONS
    doc = run_report(run, sections=[header, verdict, *rest])
    md = doc.markdown()
    assert "## Verdict\n\n3 of 5 stages ran." in md
    assert md.index("Every figure below comes from results.jsonl") < md.index("## Verdict") < md.index("## Ladder")
    assert ("line", "verdict shown") in doc.parts[1].shown
    assert "<h2>Verdict</h2>" in doc.html()


def test_sections_can_be_chosen(tmp_path):
    run = make_run(tmp_path, "fx")
    md = run_report(run, sections=[verdict]).markdown()
    assert md.startswith("# study fx\n") and "## Verdict" in md and "## Ladder" not in md
    assert not (run / "throughput.png").exists()  # the ladder section draws it; it did not run


def test_a_new_per_stage_profile_block_shows_under_each_profiled_stage(tmp_path, monkeypatch):
    run_dir = make_run(tmp_path, "fx")
    rows = read_rows(run_dir)
    for row in rows:
        if row["kind"] == "stage" and row["name"] in ("00-base", "01-workers_2"):
            row["profiles"] = {"pyspy_warning": "sampled 3 times"}
    write_rows(run_dir, rows)

    def stage_note(run, r):
        part = Part()
        part.para(f"note for {r.name}")
        return part

    monkeypatch.setattr("study.report.sections.STAGE_PROFILE_PARTS", [*STAGE_PROFILE_PARTS, stage_note])
    md = run_report(run_dir, sections=[profiles]).markdown()
    base, workers = md.index("### 00-base"), md.index("### 01-workers_2")
    assert base < md.index("⚠ pyspy_warning: sampled 3 times") < md.index("note for 00-base") < workers
    assert workers < md.index("note for 01-workers_2")
