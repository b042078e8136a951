"""Fanning --stack auto out over N nodes: search wall time and answer.

The real search engine (study.search.AutoSearch) runs on simulated machines (benchmarks/simulated_machines.py)
once on one node and once fanned out over N simulated nodes (benchmarks.simulated_search.SimulatedCluster:
each block of a pass, the incumbent around a share of the candidates, on the node that comes free
first, the pass over when its slowest block is). Per machine and N: the search's simulated wall time
and its ratio to one node, the median round's wall time and ratio, runs, and whether the answer is
the one-node answer. Quiet machines without noise first, where the answer must not change, then the
same machines with noise and bursts (each node draws its own), where "best found" compares both with
the exhaustive best.

    .venv/bin/python benchmarks/search_fanout.py --nodes 1,2,4,8 --random 20
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
from benchmarks.simulated_search import exhaustive, run_search  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", default="1,2,4,8", help="node counts to compare (the first is the reference)")
    ap.add_argument("--random", type=int, default=10, help="random machines besides the three measured ones")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    counts = [int(n) for n in args.nodes.split(",")]
    rng = random.Random(args.seed)
    machines = measured_profiles() + [random_profile(rng, i) for i in range(args.random)]
    print(f"{len(machines)} machines, nodes {counts}, --repeats {args.repeats}")
    for label, shape in (("quiet, no noise", lambda p: p.with_(noise=0.0, bursts=None)),
                         ("noise and bursts", lambda p: p.with_(bursts=SHARED))):
        rows: dict[int, list] = {n: [] for n in counts}
        for i, p in enumerate(machines):
            p = shape(p)
            best = exhaustive(p, args.repeats)
            for n in counts:
                with tempfile.TemporaryDirectory() as d:
                    rows[n].append(run_search(p, args.seed + i, Path(d), repeats=args.repeats, best=best, nodes=n))
        ref = rows[counts[0]]
        print(f"\n{label}:\n")
        print("| nodes | search minutes (median) | × one node (median) | × one node (best) | rounds (median) "
              "| minutes a round (median) | runs (median) | same answer as one node | best found (≤ 5 %) |")
        print("|---|---|---|---|---|---|---|---|---|")
        for n in counts:
            trials = rows[n]
            speed = [r.seconds / t.seconds for r, t in zip(ref, trials)]
            per_round = [t.seconds / max(t.rounds, 1) / 60 for t in trials]
            same = sum(set(t.stack) == set(r.stack) for r, t in zip(ref, trials))  # the same toggles, in any order
            found = sum(t.found for t in trials)
            print(f"| {n} | {statistics.median(t.seconds for t in trials) / 60:.1f} | {statistics.median(speed):.2f}× "
                  f"| {max(speed):.2f}× | {statistics.median(t.rounds for t in trials):.0f} "
                  f"| {statistics.median(per_round):.1f} | {statistics.median(t.runs for t in trials):.0f} "
                  f"| {same}/{len(trials)} | {found}/{len(trials)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
