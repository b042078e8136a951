"""Does DDP scale here? 2 processes x 1 thread against 1 process x 1 thread (CPU, gloo).

    python benchmarks/scaling.py --data-root data [--model resnet18] [--rounds 3] [--steps 30]

Each round is one study, `--threads 1 --stack ddp=2 --profile torch`: its baseline stage (1 x 1) and
its DDP stage (2 x 1) run back to back on the same data, so their ratio is measured side by side;
the table shows the median and range over rounds (target >= 1.8). Where the time goes in the DDP
stage comes from the study's own records: the phase split per step beside the baseline's (a longer
backward is the all-reduce that backward could not hide), exposed communication in the torch trace,
and the imbalance between the two ranks (slowest / fastest). Beside it, the data-only ceiling: how
many samples/s the loader alone delivers with 0, 1 and 2 workers, which bounds any training stage.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PHASES = ("t_data", "t_h2d", "t_forward", "t_backward", "t_optimizer")


def data_ceiling(args: argparse.Namespace) -> list[tuple[int, float]]:
    """Samples/s of the training loader alone (no model) per worker count, with the study's loader."""
    from optimizations.workers import measure_loader
    from study.config import RunConfig
    from study.data import open_datasets

    cfg = RunConfig(model=args.model, data_root=args.data_root, subset=args.subset, batch_size=args.batch_size)
    train = open_datasets(cfg).train
    return [(n, measure_loader(cfg, train, n, batches=24)["samples_per_s"]) for n in (0, 1, 2)]


def one_round(args: argparse.Namespace, work: Path, rnd: int) -> tuple[dict, dict]:
    run = f"scaling-r{rnd}"
    cmd = [sys.executable, "-m", "study", "--model", args.model, "--data-root", args.data_root, "--subset",
           str(args.subset), "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", "3",
           "--threads", "1", "--stack", "ddp=2", "--profile", "torch", "--val-steps", "1", "--no-pictures", "--run-name", run,
           "--reports-root", str(work / "reports"), "--profiles-root", str(work / "profiles")]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    if proc.returncode != 0:
        raise SystemExit(f"python -m study failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    rows = [json.loads(ln) for ln in (work / "reports" / run / "results.jsonl").read_text().splitlines()]
    base, ddp = [r for r in rows if r["kind"] == "stage"][:2]
    for r in (base, ddp):
        if r["status"] != "ok":
            raise SystemExit(f"stage {r['name']} {r['status']}: {r['error'] or r['reason']}")
    return base, ddp


def exposed_comm_ms(row: dict) -> float | None:
    path = row.get("profiles", {}).get("trace_summary")
    if not path or not Path(path).is_file():
        return None
    return json.loads(Path(path).read_text()).get("categories_ms", {}).get("communication")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--subset", type=int, default=4096)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="study-scaling-"))

    ceiling = data_ceiling(args)
    ratios, bases, ddps = [], [], []
    for rnd in range(args.rounds):
        base, ddp = one_round(args, work, rnd)
        bases.append(base)
        ddps.append(ddp)
        ratios.append(ddp["throughput"] / base["throughput"])
        print(f"round {rnd + 1}/{args.rounds}: 1x1 {base['throughput']:.1f}, 2x1 {ddp['throughput']:.1f} samples/s, "
              f"ratio {ratios[-1]:.2f}", flush=True)

    print(f"\n| {args.model}, batch {args.batch_size}/process | samples/s (median) |\n|---|---|")
    print(f"| 1 process x 1 thread | {statistics.median(r['throughput'] for r in bases):.1f} |")
    print(f"| 2 processes x 1 thread (DDP, gloo) | {statistics.median(r['throughput'] for r in ddps):.1f} |")
    print(f"| **ratio 2x1 / 1x1** | **{statistics.median(ratios):.2f}** (range {min(ratios):.2f}–{max(ratios):.2f}; "
          f"target >= 1.8) |")
    for n, sps in ceiling:
        print(f"| data only, {n} workers | {sps:.1f} |")

    print("\nwhere a step's time goes (ms per step, median over rounds):\n")
    print("| stage | data | h2d | forward | backward | optimizer | step p50 | exposed comm (trace) | rank imbalance |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, rows in (("1x1", bases), ("2x1 DDP", ddps)):
        cells = [f"{statistics.median(r[p] for r in rows) * 1000:.1f}" for p in PHASES]
        comm = [c for c in (exposed_comm_ms(r) for r in rows) if c is not None]
        imbalance = [max(s) / min(s) for s in (r.get("notes", {}).get("rank_seconds") for r in rows) if s and min(s) > 0]
        print(f"| {label} | " + " | ".join(cells) + f" | {statistics.median(r['step_time_p50'] for r in rows) * 1000:.1f}"
              f" | {f'{statistics.median(comm):.1f}' if comm else '–'}"
              f" | {f'{statistics.median(imbalance):.3f}' if imbalance else '–'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
