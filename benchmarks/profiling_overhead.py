"""What each profiling pass costs: step time under the pass vs the same steps with every profiler off.

    python benchmarks/profiling_overhead.py --data-root /tmp/d --models tiny,resnet18 [--stack workers]

For each model it plans the stage the study would run (the last stage of --stack), then runs one
fresh process per mode (plain, cprofile, torch, pyspy, pyspy_nb = py-spy --nonblocking, lines), each
building the same session, training --warmup steps unprofiled, then the pass exactly as the study
runs it. The step times are the loop's own (perf_counter phase timer) over the steps the pass
profiles; torch.profiler's wait/warmup steps are left out. Modes run round-robin --rounds times so
drifting machine load hits all of them alike; the table shows medians and the ratio to plain.
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

MODES = ("plain", "cprofile", "torch", "pyspy", "pyspy_nb", "lines")  # pyspy_nb: py-spy --nonblocking


def child(stage_file: str, mode: str, out: str, warmup: int) -> int:
    """One mode in this process: warm up, then the pass (or plain steps) with its steps recorded."""
    from study.stage.session import build_session
    from study.core.stage_spec import StageSpec

    sess = build_session(StageSpec.load(stage_file))
    sess.run_steps(warmup)
    calls: list[list] = []
    run_steps = sess.run_steps

    def recording(n: int, hooks: list = ()) -> list:
        recs = run_steps(n, hooks)
        calls.append(recs)
        return recs

    sess.run_steps = recording  # type: ignore[method-assign]
    # The passes warm up cfg.warmup steps themselves where they do; the benchmark already did.
    sess.ctx.cfg = sess.cfg.replace(warmup=0)
    t0 = time.perf_counter()
    if mode in ("plain", "pyspy_nb"):  # py-spy samples from outside: the stage trains plainly
        sess.run_steps(sess.cfg.profile_steps)
    else:
        from study.profiling.passes import PASSES

        PASSES[mode](sess)
    wall = time.perf_counter() - t0
    recs = calls[-1]
    if mode == "torch":
        from study.profiling.torch_trace import WAIT, WARMUP

        recs = recs[WAIT + WARMUP:]
    Path(out).write_text(json.dumps({"step_ms": [r.seconds * 1000 for r in recs], "pass_s": wall}))
    return 0


def plan_stage(args: argparse.Namespace, model: str, work: Path) -> Path:
    from optimizations.base import Env, parse_stack
    from study.core.config import RunConfig
    from study.runner.ladder import plan

    cfg = RunConfig(model=model, data_root=args.data_root, batch_size=args.batch_size, subset=args.subset,
                    profile_steps=args.steps, warmup=args.warmup, threads=args.threads,
                    stack=tuple(s for s in args.stack.split(",") if s), run_name=f"overhead-{model}",
                    reports_root=str(work / "reports"), profiles_root=str(work / "profiles"))
    toggles = parse_stack(list(cfg.stack)) if cfg.stack else []
    stage = plan(cfg, toggles, Env.detect(cfg.device))[-1]
    path = work / f"{model}.stage.json"
    stage.spec.save(path)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--models", default="tiny,resnet18")
    ap.add_argument("--stack", default="", help="toggles of the measured stage (its last stage)")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--steps", type=int, default=10, help="profiled steps (torch: 2 of them are wait/warmup)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--subset", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.stage, args.child, args.out, args.warmup)

    from study.profiling.pyspy import wrap_command
    from study.core.stage_spec import child_env

    modes = [m for m in args.modes.split(",") if m]
    work = Path(tempfile.mkdtemp(prefix="overhead-"))
    table = []
    for model in [m for m in args.models.split(",") if m]:
        stage_file = plan_stage(args, model, work)
        got: dict[str, list[dict]] = {m: [] for m in modes}
        for rnd in range(args.rounds):
            for mode in modes:
                out = work / f"{model}-{mode}-{rnd}.json"
                cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--stage", str(stage_file),
                       "--out", str(out), "--warmup", str(args.warmup)]
                if mode.startswith("pyspy"):
                    cmd = wrap_command(cmd, work / "profiles" / f"{model}-{mode}",
                                       nonblocking=mode == "pyspy_nb")
                log = work / f"{model}-{mode}-{rnd}.log"
                with open(log, "w") as fh:
                    proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=child_env(), cwd=str(REPO))
                try:
                    res = json.loads(out.read_text())
                except (OSError, json.JSONDecodeError):
                    res = None
                if proc.returncode != 0 or not res or res.get("error") or "step_ms" not in res:
                    print(f"{model} {mode} round {rnd}: failed (exit {proc.returncode}, "
                          f"{(res or {}).get('error', 'no result')}); log {log}", file=sys.stderr)
                    continue
                got[mode].append(res)
        plain = statistics.median([x for r in got.get("plain", []) for x in r["step_ms"]] or [float("nan")])
        for mode in modes:
            steps = [x for r in got[mode] for x in r["step_ms"]]
            if not steps:
                table.append((model, mode, float("nan"), float("nan"), float("nan"), 0))
                continue
            med = statistics.median(steps)
            table.append((model, mode, med, med / plain, statistics.median(r["pass_s"] for r in got[mode]),
                          len(steps)))
    print(f"\nstack: {args.stack or '(baseline)'}, batch {args.batch_size}, {args.rounds} rounds, "
          f"logs and profiles in {work}")
    print(f"{'model':10} {'mode':9} {'step ms (median)':>17} {'× plain':>8} {'pass wall s':>12} {'steps':>6}")
    for model, mode, med, ratio, wall, n in table:
        print(f"{model:10} {mode:9} {med:17.2f} {ratio:8.2f} {wall:12.2f} {n:6d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
