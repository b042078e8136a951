"""How good is --stack auto: the search's answer on simulated machines against the exhaustive best.

Each machine (benchmarks/simulated_machines.py: three shaped on measured or published figures, the rest
random) is searched by the real engine (study.search.AutoSearch, the registry's candidates and cost
hints) through a simulated clock and noisy runs, once per strategy, and every stack the registry
allows is priced noise-free for the truth. Per strategy: how often its stack is within 5 % of the
exhaustive best, how far its stack lands from it (true samples/s ratio), what it spends (simulated
minutes, runs, share of measuring every stack `--repeats` times), and how often it says "nothing
helps" with an interval that rules out what the best stack gains. Quiet machines, then the same
machines with bursts of load from a busy neighbour.

    .venv/bin/python benchmarks/search_quality.py --machines 100
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.simulated_machines import SHARED, measured_profiles, random_profile  # noqa: E402
from dataclasses import replace  # noqa: E402

from study.search.rules import RACING, STRATEGIES  # noqa: E402
from benchmarks.simulated_search import exhaustive, run_search  # noqa: E402


# Racing with one of its parts off, to tell what each part buys (--strategies no-pairs,...).
ABLATIONS = {"no-race": replace(RACING, name="no-race", race=1), "no-confirm": replace(RACING, name="no-confirm",
             confirm_drop=False), "no-swaps": replace(RACING, name="no-swaps", swaps=False, readmit=False),
             "no-pairs": replace(RACING, name="no-pairs", pairs=0)}


def row(name: str, trials, seconds_of_exhaustive) -> list[str]:
    n = len(trials)
    found = sum(t.found for t in trials)
    ratios = sorted(t.ratio for t in trials)
    shares = [t.seconds / seconds_of_exhaustive[t.profile] for t in trials]
    wrong = sum(t.wrong_nothing for t in trials)
    return [name, f"{100 * found / n:.0f} % ({found}/{n})", f"{statistics.median(ratios):.3f}",
            f"{ratios[max(int(0.1 * n) - 1, 0)]:.3f}", f"{ratios[0]:.3f}",
            f"{statistics.median(t.seconds for t in trials) / 60:.0f}",
            f"{statistics.median(shares):.2f}", f"{max(shares):.2f}",
            f"{statistics.median(t.runs for t in trials):.0f}", str(wrong), f"{statistics.fmean(t.idle for t in trials):.2f}"]


HEAD = ["search", "best found (≤ 5 %)", "ratio median", "ratio p10", "ratio worst", "minutes (median)",
        "cost / exhaustive (median)", "cost / exhaustive (max)", "runs (median)", "wrong \"nothing helps\"",
        "idle toggles per answer"]


def table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--machines", type=int, default=100, help="random machines beside the three measured ones")
    ap.add_argument("--repeats", type=int, default=3, help="--repeats of each search (runs per candidate)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help=f"of {', '.join({**STRATEGIES, **ABLATIONS})}")
    ap.add_argument("--misses", action="store_true", help="list every machine a strategy missed")
    ap.add_argument("--settings", default="quiet,bursts", help="quiet, bursts or both")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    profiles = measured_profiles() + [random_profile(rng, i) for i in range(args.machines)]
    truth = {p.name: exhaustive(p, args.repeats) for p in profiles}
    cost = {name: ex.seconds for name, ex in truth.items()}
    strategies = [s for s in args.strategies.split(",") if s]
    with tempfile.TemporaryDirectory() as tmp:
        for label, bursts in (("quiet", None), ("bursts", SHARED)):
            if label not in args.settings.split(","):
                continue
            rows = []
            for strategy in strategies:
                trials = []
                for i, p in enumerate(profiles):
                    trials.append(run_search(p.with_(bursts=bursts), args.seed * 100_003 + i,
                                             Path(tmp) / label / strategy / str(i), repeats=args.repeats,
                                             best=truth[p.name], strategy={**STRATEGIES, **ABLATIONS}[strategy]))
                rows.append(row(strategy, trials, cost))
                if args.misses:
                    for t in trials:
                        if not t.found or t.wrong_nothing:
                            print(f"  {label} {strategy} {t.profile}: {'+'.join(t.stack) or 'baseline'} "
                                  f"{t.speedup:.2f}× (claimed {t.claimed[0]:.2f} [{t.claimed[1]:.2f}–{t.claimed[2]:.2f}]) "
                                  f"vs best {'+'.join(t.best.best)} {t.best.best_speedup:.2f}×; {t.stopped}")
            exh = [[ "exhaustive", f"100 % ({len(profiles)}/{len(profiles)})", "1.000", "1.000", "1.000",
                    f"{statistics.median(c for c in cost.values()) / 60:.0f}", "1.00", "1.00",
                    f"{statistics.median(ex.runs for ex in truth.values()):.0f}", "0", "0"]]
            print(f"\n{label}: {len(profiles)} machines ({len(profiles) - args.machines} measured or published, "
                  f"{args.machines} random), --repeats {args.repeats}"
                  + ("" if bursts is None else f", bursts {bursts.per_hour:g}/h of mean {bursts.mean_s:g} s, "
                                                f"{bursts.low:g}-{bursts.high:g}× slower"))
            print(table(rows + exh))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
