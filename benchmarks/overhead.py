"""Does the study slow what it measures? Its baseline stage against a bare hand-written loop.

    python benchmarks/overhead.py --data-root data [--models resnet18,resnet50] [--threads 1,0] [--rounds 5]

The bare loop below is what a careful user writes with plain PyTorch (as in pytorch/examples): a
DataLoader, `model(x)`, `loss.backward()`, `optimizer.step()`, `optimizer.zero_grad()`, timed per step
with perf_counter. It uses the same model builder, dataset and transforms, optimizer settings, batch
size, thread count, seed, steps and warm-up as the study's baseline stage, which runs the way a user
starts it: `python -m study` (parent process, progress display, child process, phase timer).

Both are samples/s from the median step time, warm-up excluded. Rounds alternate the two (A, B, B,
A, ...) so drifting machine load hits both alike; the ratio study/bare is taken per round, and the
table shows its median and range. Target: >= 0.99.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def bare_loop(args: argparse.Namespace) -> list[float]:
    """The hand-written loop; returns the measured step times in seconds."""
    import torch
    from torch.utils.data import DataLoader

    from study.config import RunConfig
    from study.data import open_datasets
    from study.models import build_model

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = RunConfig(model=args.model, data_root=args.data_root, subset=args.subset, batch_size=args.batch_size)
    bundle = open_datasets(cfg)  # the same files and transforms the study reads
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, bundle.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    criterion = torch.nn.CrossEntropyLoss()
    loader = DataLoader(bundle.train, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(cfg.seed))
    model.train()
    times: list[float] = []
    batches = iter(loader)
    for step in range(args.steps):
        t0 = time.perf_counter()
        x, y = next(batches)
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        elapsed = time.perf_counter() - t0
        if step >= args.warmup:
            times.append(elapsed)
    return times


def run_bare(args: argparse.Namespace, model: str, threads: int, work: Path) -> float:
    out = work / "bare.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--bare", "--model", model, "--threads", str(threads),
           "--data-root", args.data_root, "--subset", str(args.subset), "--batch-size", str(args.batch_size),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--out", str(out)]
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
    return statistics.median(json.loads(out.read_text()))


def run_study(args: argparse.Namespace, model: str, threads: int, work: Path, rnd: int) -> float:
    run = f"{model}-t{threads}-r{rnd}"
    cmd = [sys.executable, "-m", "study", "--model", model, "--data-root", args.data_root, "--subset",
           str(args.subset), "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup",
           str(args.warmup), "--threads", str(threads), "--val-steps", "1", "--run-name", run,
           "--reports-root", str(work / "reports"), "--profiles-root", str(work / "profiles")]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"python -m study failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    rows = [json.loads(ln) for ln in (work / "reports" / run / "results.jsonl").read_text().splitlines()]
    stage = next(r for r in rows if r["kind"] == "stage")
    if stage["status"] != "ok":
        raise SystemExit(f"the study's baseline stage failed: {stage['error']}")
    return stage["step_time_p50"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--models", default="resnet18,resnet50")
    ap.add_argument("--threads", default="1,0", help="thread counts to compare; 0 = torch's default (all cores)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--subset", type=int, default=2048)
    ap.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare:
        args.threads = int(args.threads)
        Path(args.out).write_text(json.dumps(bare_loop(args)))
        return 0

    work = Path(tempfile.mkdtemp(prefix="study-overhead-"))
    lines = ["| model | threads | bare samples/s | study samples/s | ratio study/bare (median) | range over rounds |",
             "|---|---|---|---|---|---|"]
    for model in [m for m in args.models.split(",") if m]:
        for threads in [int(t) for t in args.threads.split(",") if t]:
            bare, study, ratios = [], [], []
            for rnd in range(args.rounds):
                # alternate which goes first, so a trend in machine load favours neither
                order = ("bare", "study") if rnd % 2 == 0 else ("study", "bare")
                got = {}
                for which in order:
                    got[which] = (run_bare(args, model, threads, work) if which == "bare"
                                  else run_study(args, model, threads, work, rnd))
                bare.append(args.batch_size / got["bare"])
                study.append(args.batch_size / got["study"])
                ratios.append(study[-1] / bare[-1])
                print(f"{model} threads={threads or 'all'} round {rnd + 1}/{args.rounds}: bare {bare[-1]:.1f}, "
                      f"study {study[-1]:.1f} samples/s, ratio {ratios[-1]:.3f}", flush=True)
            lines.append(f"| {model} | {threads or 'all'} | {statistics.median(bare):.1f} | "
                         f"{statistics.median(study):.1f} | {statistics.median(ratios):.3f} | "
                         f"{min(ratios):.3f}–{max(ratios):.3f} |")
    print("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
