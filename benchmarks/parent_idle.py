"""What does the parent cost while a stage is timed? The same timing pass, started and watched by a
parent with torch and the study's readers loaded (as `python -m study` is after its preflight) and by
one that never imports torch, side by side.

    python benchmarks/parent_idle.py --data-root data [--model resnet18] [--steps 40] [--rounds 3]

Per round, each kind of parent (order alternating) starts the stage worker through study.core.child_process (the
study's one way to start a child: its poll of the progress file every 2 s, its death signal) and
reports its own CPU seconds and peak resident memory over the child's whole run, and the child's
samples/s (median step time). This decides whether the parent must stay torch-free: if torch in the
parent costs the timed child nothing measurable, the torch-free planning machinery is not worth its
deferred imports.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def drive(stage: str, mode: str, out: str) -> int:
    """One parent: load what `mode` says, then start and watch one timing pass of `stage`."""
    if mode == "torch":
        from study.core.config import RunConfig
        from study.data import open_datasets
        from study.core.machine import Env
        from study.core.stage_spec import StageSpec

        cfg = StageSpec.load(stage).config
        Env.detect(cfg.device)
        bundle = open_datasets(RunConfig.from_dict(cfg.to_dict()))  # what the preflight opens
        for i in range(min(len(bundle.train), 8)):
            bundle.train[i]
    from study.core.child_process import run_child
    from study.core.stage_spec import StageSpec, worker_command

    spec = StageSpec.load(stage)
    loaded = "torch" in sys.modules
    work = Path(tempfile.mkdtemp(prefix="parent-idle-"))
    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    payload, err = run_child(worker_command(spec, Path(stage), "timing", 0, work / "timing.json"), work / "timing.log",
                             work / "timing.json", on_steps=lambda *progress: None)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_SELF)
    if payload is None:
        print(err, file=sys.stderr)
        return 1
    Path(out).write_text(json.dumps({
        "mode": mode, "torch_loaded": loaded, "wall_s": wall,
        "parent_cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "parent_peak_rss_mb": after.ru_maxrss / 1024, "child_samples_per_s": payload["throughput"]}))
    return 0


def proc_cpu_rss(pid: int) -> tuple[float, float]:
    """(CPU seconds, resident MB) of a process, from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    return (int(stat[11]) + int(stat[12])) / ticks, rss / 1024


def watch_study(args: argparse.Namespace, work: Path) -> dict:
    """The real parent: `python -m study` on the same stage, watched from outside while its timing child runs."""
    from study.core.stage_spec import child_env

    cmd = [sys.executable, "-m", "study", "--model", args.model, "--data-root", str(Path(args.data_root).resolve()),
           "--steps", str(args.steps), "--warmup", "3", "--batch-size", str(args.batch_size), "--subset",
           str(args.batch_size * args.steps), "--val-steps", "1", "--profile", "", "--no-pictures", "--run-name", "idle",
           "--reports-root", str(work / "study-reports"), "--profiles-root", str(work / "study-profiles")]
    proc = subprocess.Popen(cmd, env=child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    first = last = None
    peak = 0.0
    while proc.poll() is None:
        kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split() if proc.poll() is None else []
        try:
            cpu, rss = proc_cpu_rss(proc.pid)
        except (OSError, StopIteration):
            break
        if kids:  # a stage child is running: the parent waits beside it
            first = first or (time.monotonic(), cpu)
            last = (time.monotonic(), cpu)
            peak = max(peak, rss)
        time.sleep(0.5)
    if not first or not last or last[0] <= first[0]:
        return {}
    return {"wall_s": last[0] - first[0], "parent_cpu_s": last[1] - first[1], "parent_peak_rss_mb": peak}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[1:]))
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--drive", nargs=3, metavar=("STAGE", "MODE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.drive:
        return drive(*args.drive)
    from study.core.config import RunConfig
    from study.core.stage_spec import StageSpec, child_env

    work = Path(tempfile.mkdtemp(prefix="parent-idle-"))
    cfg = RunConfig(model=args.model, data_root=str(Path(args.data_root).resolve()), steps=args.steps, warmup=3,
                    batch_size=args.batch_size, subset=args.batch_size * args.steps, val_steps=1, run_name="idle",
                    reports_root=str(work / "reports"), profiles_root=str(work / "profiles"))
    stage = work / "stage.json"
    StageSpec(index=0, name="00-base", stack=(), config=cfg).save(stage)
    got: dict[str, list[dict]] = {"bare": [], "torch": []}
    for rnd in range(args.rounds):
        for mode in (("bare", "torch") if rnd % 2 == 0 else ("torch", "bare")):
            out = work / f"{mode}-{rnd}.json"
            p = subprocess.run([sys.executable, __file__, "--drive", str(stage), mode, str(out)], env=child_env(),
                               stdin=subprocess.DEVNULL, capture_output=True, text=True)
            if p.returncode != 0:
                print(f"{mode} round {rnd} failed: {p.stderr.strip()[-500:]}", file=sys.stderr)
                return 1
            got[mode].append(json.loads(out.read_text()))
            print(f"round {rnd + 1}/{args.rounds} {mode}: {got[mode][-1]}", file=sys.stderr)
    med = {m: {k: statistics.median(r[k] for r in rows) for k in ("wall_s", "parent_cpu_s", "parent_peak_rss_mb",
                                                                   "child_samples_per_s")} for m, rows in got.items()}
    print(f"| parent | torch loaded | parent CPU s during the child | share of the child's wall | parent peak RSS MB "
          f"| child samples/s |\n|---|---|---|---|---|---|")
    for m in ("bare", "torch"):
        r = med[m]
        print(f"| {m} | {got[m][0]['torch_loaded']} | {r['parent_cpu_s']:.3f} | {r['parent_cpu_s'] / r['wall_s'] * 100:.2f} % "
              f"| {r['parent_peak_rss_mb']:.0f} | {r['child_samples_per_s']:.1f} |")
    real = watch_study(args, work)
    if real:
        print(f"| python -m study (the real parent, watched from /proc) | True | {real['parent_cpu_s']:.3f} "
              f"| {real['parent_cpu_s'] / real['wall_s'] * 100:.2f} % | {real['parent_peak_rss_mb']:.0f} | – |")
    ratios = [t["child_samples_per_s"] / b["child_samples_per_s"] for t, b in zip(got["torch"], got["bare"])]
    print(f"\nchild samples/s with a torch parent / with a bare parent: median {statistics.median(ratios):.3f} "
          f"(range {min(ratios):.3f}-{max(ratios):.3f}, {args.rounds} rounds)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
