"""Does the study slow what it measures? Its baseline stage against a bare hand-written loop.

    python benchmarks/overhead.py --data-root data [--models resnet18,resnet50] [--threads 1,0] [--rounds 5]
    python benchmarks/overhead.py --data-root data --models resnet18 --threads 1 --table   # four loops, phases

The bare loop below is what a careful user writes with plain PyTorch (as in pytorch/examples): a
DataLoader, `model(x)`, `loss.backward()`, `optimizer.step()`, `optimizer.zero_grad()`, timed per step
with perf_counter. It uses the same model builder, dataset and transforms, optimizer settings, batch
size, thread count, seed, steps and warm-up as the study's baseline stage, which runs the way a user
starts it: `python -m study` (parent process, progress display, child process, phase timer).

Both are samples/s from the median step time, warm-up excluded. Rounds alternate the two (A, B, B,
A, ...) so drifting machine load hits both alike; the ratio study/bare is taken per round, and the
table shows its median and range. Target: >= 0.99.

`--table` adds two more loops to each round, for the phase table (mean data / forward / backward /
optimizer milliseconds per measured step, median over rounds, and the median step time):
the bare loop with `zero_grad(set_to_none=False)` (the handicap an older baseline carried), and the
study's stage worker started directly (`python -m study.stage --stage stage.json`, no parent), so
the parent's own cost shows as the gap between the last two rows.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def bare_loop(args: argparse.Namespace) -> dict[str, list[float]]:
    """The hand-written loop; returns the measured step times and phase times, in seconds."""
    import torch
    from torch.utils.data import DataLoader

    from study.core.config import RunConfig
    from study.data import open_datasets
    from study.models.builtins import build_model

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
    set_to_none = not args.keep_grads
    out: dict[str, list[float]] = {k: [] for k in ("step", "data", "forward", "backward", "optimizer")}
    batches = iter(loader)
    for step in range(args.steps):
        t0 = time.perf_counter()  # on the CPU every op is synchronous: perf_counter splits are exact
        x, y = next(batches)
        t1 = time.perf_counter()
        loss = criterion(model(x), y)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=set_to_none)
        t4 = time.perf_counter()
        if step >= args.warmup:
            for k, v in zip(out, (t4 - t0, t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                out[k].append(v)
    return out


Measure = dict  # {"step": median step seconds, "data"/"forward"/"backward"/"optimizer": mean seconds}
PHASE_FIELDS = {"data": "t_data", "forward": "t_forward", "backward": "t_backward", "optimizer": "t_optimizer"}


def run_bare(args: argparse.Namespace, model: str, threads: int, work: Path, keep_grads: bool = False) -> Measure:
    out = work / "bare.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--bare", "--model", model, "--threads", str(threads),
           "--data-root", args.data_root, "--subset", str(args.subset), "--batch-size", str(args.batch_size),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--out", str(out)]
    subprocess.run(cmd + (["--keep-grads"] if keep_grads else []), check=True, stdin=subprocess.DEVNULL)
    got = json.loads(out.read_text())
    return {"step": statistics.median(got["step"])} | {p: statistics.fmean(got[p]) for p in PHASE_FIELDS}


def from_row(row: dict) -> Measure:
    return {"step": row["step_time_p50"]} | {p: row[f] for p, f in PHASE_FIELDS.items()}


def run_checked(*args: str) -> None:
    """`python ARGS` with this checkout importable; its stderr's tail when it fails."""
    from study.core.machine_load import RETRIES_ENV
    from study.core.stage_spec import child_env

    # The bare loop gets one run per round; so does the study: a busy run measured again would keep the
    # quieter of two for one side only.
    proc = subprocess.run([sys.executable, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env={**child_env(), RETRIES_ENV: "0"})
    if proc.returncode != 0:
        raise SystemExit(f"python {' '.join(args[:2])} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")


def run_worker(run_dir: Path, work: Path) -> Measure:
    """The baseline stage's worker started directly on the stage file the study wrote: no parent."""
    stage_file = run_dir / "stages" / "00-base" / "stage.json"
    out = work / "worker.json"
    run_checked("-m", "study.stage", "--stage", str(stage_file), "--pass", "timing", "--out", str(out))
    return from_row(json.loads(out.read_text()))


def run_study(args: argparse.Namespace, model: str, threads: int, work: Path, rnd: int) -> Measure:
    run = f"{model}-t{threads}-r{rnd}"
    run_checked("-m", "study", "--model", model, "--data-root", args.data_root, "--subset", str(args.subset),
                "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup),
                "--threads", str(threads), "--val-steps", "1", "--no-pictures", "--run-name", run,
                "--reports-root", str(work / "reports"), "--profiles-root", str(work / "profiles"))
    rows = [json.loads(ln) for ln in (work / "reports" / run / "results.jsonl").read_text().splitlines()]
    stage = next(r for r in rows if r["kind"] == "stage")
    if stage["status"] != "ok":
        raise SystemExit(f"the study's baseline stage failed: {stage['error']}")
    return from_row(stage)


LOOPS = {
    "bare": "hand-written loop, `optimizer.zero_grad()`",
    "bare_keep": "the same loop, `zero_grad(set_to_none=False)`",
    "worker": "study baseline stage, worker started directly",
    "study": "study baseline stage, `python -m study`",
}


def ms(v: float) -> str:
    return f"{v * 1000:.1f}"


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
    ap.add_argument("--table", action="store_true",
                    help="also time the loop with set_to_none=False and the worker started directly; print phases")
    ap.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--keep-grads", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare:
        args.threads = int(args.threads)
        Path(args.out).write_text(json.dumps(bare_loop(args)))
        return 0

    work = Path(tempfile.mkdtemp(prefix="study-overhead-"))
    loops = list(LOOPS) if args.table else ["bare", "study"]
    lines = ["| model | threads | bare samples/s | study samples/s | ratio study/bare (median) | range over rounds |",
             "|---|---|---|---|---|---|"]
    phase_lines = ["| model | threads | loop | data | forward | backward | optimizer | step (median) | samples/s |",
                   "|---|---|---|---|---|---|---|---|---|"]
    for model in [m for m in args.models.split(",") if m]:
        for threads in [int(t) for t in args.threads.split(",") if t]:
            got: dict[str, list[Measure]] = {k: [] for k in loops}
            ratios = []
            if "worker" in loops:  # an untimed study writes the stage file the worker is started on
                run_study(args, model, threads, work, -1)
                prime = work / "reports" / f"{model}-t{threads}-r-1"
            for rnd in range(args.rounds):
                # alternate the order, so a trend in machine load favours none of them
                order = loops if rnd % 2 == 0 else loops[::-1]
                this: dict[str, Measure] = {}
                for which in order:
                    if which == "bare":
                        this[which] = run_bare(args, model, threads, work)
                    elif which == "bare_keep":
                        this[which] = run_bare(args, model, threads, work, keep_grads=True)
                    elif which == "study":
                        this[which] = run_study(args, model, threads, work, rnd)
                    else:
                        this[which] = run_worker(prime, work)
                for k in loops:
                    got[k].append(this[k])
                ratios.append(this["bare"]["step"] / this["study"]["step"])
                print(f"{model} threads={threads or 'all'} round {rnd + 1}/{args.rounds}: "
                      + ", ".join(f"{k} {args.batch_size / this[k]['step']:.1f}" for k in loops)
                      + f" samples/s, ratio study/bare {ratios[-1]:.3f}", flush=True)
            sps = {k: statistics.median(args.batch_size / m["step"] for m in got[k]) for k in loops}
            lines.append(f"| {model} | {threads or 'all'} | {sps['bare']:.1f} | {sps['study']:.1f} | "
                         f"{statistics.median(ratios):.3f} | {min(ratios):.3f}–{max(ratios):.3f} |")
            for k in loops:
                med = {p: statistics.median(m[p] for m in got[k]) for p in ("step", *PHASE_FIELDS)}
                phase_lines.append(f"| {model} | {threads or 'all'} | {LOOPS[k]} | "
                                   + " | ".join(ms(med[p]) for p in PHASE_FIELDS)
                                   + f" | {ms(med['step'])} | {sps[k]:.1f} |")
    print("\n" + "\n".join(lines))
    if args.table:
        print("\nmilliseconds per step (phases: mean over measured steps; step: median), median over rounds\n")
        print("\n".join(phase_lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
