"""Integrity under kills: a writer SIGKILLed at random points never leaves a torn line in
results.jsonl or a CSV, and a checkpoint is always either the previous whole one or the new whole one."""
from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from study.core.records import SEED_COLUMNS, StageResult, read_results
from study.core.recorder import append_jsonl
from tests.util import REPO

# Rows of a few KB with random padding, so writes cross page boundaries at random offsets; the CSV is
# rewritten whole (write_atomic) with a random number of rows, as merge_records does after every stage.
WRITER = """
import random, sys
from pathlib import Path
from study.core.records import StageResult, seed_rows_to_csv, write_atomic
from study.core.recorder import append_jsonl
out = Path(sys.argv[1])
i = 0
while True:
    append_jsonl(out / "results.jsonl", StageResult(run="k", stage=i % 7, name=f"{i:02d}-x",
                                                     notes={"pad": "x" * random.randint(100, 9000)}))
    rows = [(2, 0, f"{i}.0", "0.1", "0.2", "1.5", 8)] * random.randint(1, 3000)
    write_atomic(out / "records.csv", seed_rows_to_csv(rows, ("stage", "repeat")))
    if i == 0:  # one row written whatever the machine's speed, then the kill may come at any point
        print("ready", flush=True)
    i += 1
"""


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def kill_at_random(code: str, out: Path, rng: random.Random, longest: float) -> None:
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True, env=env())
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(rng.uniform(0.0, longest))
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_killed_writers_leave_only_whole_lines(tmp_path: Path) -> None:
    """A kill inside a write() the kernel copies page by page can leave a last line without its newline:
    every reader skips it and the next append cuts it. Every line before it is whole, always."""
    rng = random.Random(11)
    rows = 0
    path = tmp_path / "results.jsonl"
    for _ in range(12):
        kill_at_random(WRITER, tmp_path, rng, 0.15)
        text = path.read_text()
        lines = text.splitlines()
        whole = lines if text.endswith("\n") else lines[:-1]  # a torn tail has no newline
        assert all(json.loads(line)["run"] == "k" for line in whole)
        assert [r.name for r in read_results(path)] == [json.loads(line)["name"] for line in whole]
        assert len(whole) >= rows  # nothing finished is ever lost
        rows = len(whole)
        if (tmp_path / "records.csv").exists():
            with open(tmp_path / "records.csv", newline="") as fh:
                table = list(csv.reader(fh))
            assert tuple(table[0]) == SEED_COLUMNS + ("stage", "repeat") and all(len(r) == 7 for r in table[1:])
    assert rows >= 12  # every writer finished a row before its kill, and none was lost
    append_jsonl(path, StageResult(run="k", stage=0, name="last"))  # the next writer cuts any torn tail
    assert [json.loads(line)["name"] for line in path.read_text().splitlines()][-1] == "last"


def test_a_torn_tail_is_cut_before_the_next_row(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    append_jsonl(path, StageResult(run="r", stage=0, name="00-base"))
    with open(path, "a") as fh:
        fh.write('{"run": "r", "stage": 1, "na')  # what a kill inside a large write() can leave
    append_jsonl(path, StageResult(run="r", stage=1, name="01-x"))
    lines = path.read_text().splitlines()
    assert [json.loads(line)["name"] for line in lines] == ["00-base", "01-x"]
    assert [r.name for r in read_results(path)] == ["00-base", "01-x"]


CHECKPOINTER = """
import sys, types
from pathlib import Path
import torch
from study.train.checkpoints import save_checkpoint
model = torch.nn.Linear(1024, 2048)  # 8 MB: each save takes long enough to be killed inside
opt = torch.optim.SGD(model.parameters(), lr=0.1)
state = types.SimpleNamespace(base_model=model, optimizer=opt, scaler=torch.amp.GradScaler("cpu", enabled=False),
                              step=0, epoch=0, steps_in_epoch=0, meta={"model": "linear"})
save_checkpoint(Path(sys.argv[1]) / "c.pt", state)
print("ready", flush=True)
while True:
    state.step += 1
    save_checkpoint(Path(sys.argv[1]) / "c.pt", state)
"""


def test_a_checkpoint_killed_mid_save_is_the_last_whole_one(tmp_path: Path) -> None:
    import torch

    kill_at_random(CHECKPOINTER, tmp_path, random.Random(5), 0.5)
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert state["model"]["weight"].shape == (2048, 1024) and state["meta"] == {"model": "linear"}
