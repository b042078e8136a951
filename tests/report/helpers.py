"""A run folder as a finished study leaves it, built from the fixed fixture rows."""
from __future__ import annotations

import json
from pathlib import Path

FIXTURE = Path(__file__).parents[1] / "fixtures" / "results.jsonl"


def make_run(root: Path, name: str, scale: float = 1.0) -> Path:
    """reports/<name>/ holding the fixture rows (throughputs × scale) and seed records for curves."""
    d = root / "reports" / name
    d.mkdir(parents=True)
    lines = []
    for line in FIXTURE.read_text().splitlines():
        row = json.loads(line)
        row["run"] = name
        for k in ("throughput", "throughput_ci_low", "throughput_ci_high"):
            if k in row:
                row[k] *= scale
        lines.append(json.dumps(row))
    (d / "results.jsonl").write_text("\n".join(lines) + "\n")
    for stage, losses in (("00-base", [2.3, 2.2, 2.1]), ("01-workers_2", [2.3, 2.1, 2.0])):
        sd = d / "stages" / stage
        sd.mkdir(parents=True)
        rows = ["type,epoch,start,loading,duration,value1,value2", "10,0,1.0,0.1,0.1,2000,"]
        rows += [f"2,0,{i}.0,0.001,0.03,{v},32" for i, v in enumerate(losses)]
        rows += ["0,0,1.0,0.01,0.1,2.2,"]
        (sd / "records-r0.csv").write_text("\n".join(rows) + "\n")
    return d


def read_rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]


def write_rows(run: Path, rows: list[dict]) -> None:
    (run / "results.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
