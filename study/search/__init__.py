"""`--stack auto`: forward selection of toggles with racing, each candidate measured beside the best stack.

Round k measures the incumbent (the best stack so far; in round 1 the baseline) and every move on
top of it: each remaining candidate (study.advice.candidates: applicable here, useful values, no
conflicts), each other value of a toggle already in the stack (a swap) and each toggle in the place
of a kept one it conflicts with (hogwild=2 for ddp=2), in `--repeats` passes.
Within a pass the incumbent runs first and again after every INCUMBENT_EVERY candidates, and each
candidate's samples/s is divided by the incumbent runs around it: load from other tenants of a
shared machine drifts over minutes and cancels out of a ratio taken seconds apart. The paired ratios
of the passes give a speed-up and a 95 % t-interval (on log ratios), without a ratio 1.5× off its
candidate's median (a run a burst of load caught alone).

The rules (study.search.rules, Strategy RACING): after the `--repeats` passes, a candidate whose
interval still straddles 1.0 with a point above it, and that could beat the best one proven, is
measured again, pass by pass, up to 3× `--repeats`. A round keeps the fastest candidate whose interval
lies above 1.0 and that gains at least 2 %. Where none does, the round's moves are tried in pairs (up
to 20, ranked by the product of their measured speed-ups): a pair that only pays together, or a
loader and a compute toggle on a data-bound step, is where one move at a time gets stuck. The search
stops when no move or pair helps, when no candidate is left, or when the budget cannot pay for
another round. Candidates are measured in the order the incumbent's figures advise
(study.advice.order_candidates), so a budget that cannot pay for all of them cuts the least
promising, and the table says so. To spend the budget on candidates that can still win:
- a candidate below RACE_DROP of the incumbent in its first two runs is not measured again that round
  (it comes back in later rounds, on another incumbent);
- one that failed is not retried.
A "nothing helps" answer carries the upper end of the best candidate's interval: how much faster a
stack could still be, as measured. Strategy GREEDY is the search as it was (one run to drop, no
swaps, pairs or readmission); benchmarks/search_quality.py sets the two side by side on simulated
machines (benchmarks.simulated_search, benchmarks.simulated_machines).

Every child run is appended to results.jsonl as it finishes (kind "search-repeat"), each round's
table as rows of kind "search", the outcome as one row of kind "search-result"; the ladder sees none
of them (it reads kind "stage"). Ctrl-C or a crash keeps every finished run; `--resume` replays the
search, reusing each finished run (the same round, pass, place and config), so it picks up where it
stopped; the time those runs took still counts against the budget.

The budget covers the whole study: the search stops starting runs in time to leave room for the
final check (the best stack beside the baseline, side by side, for its speed-up) and the ladder of
the chosen stack, which the CLI then runs as a normal study so reports and pictures work on it.
"""
from study.search.console import outcome_line, search_stack
from study.search.engine import AutoSearch, Run, SearchResult
from study.search.measure import measure_child
from study.search.rules import (BUSY, CUT, DROPPED, FAILED, FASTER, GREEDY, INCUMBENT_EVERY, KEPT, NO_GAIN, NOT_RETRIED,
                                OUTLIER, RACE_DROP, RACING, RETRY_BELOW, SLOWER, STRATEGIES, Outcome, Strategy, decide,
                                fit_round, judge, not_retried, paired_ratios, pass_sequence, round_cost,
                                speedup_interval, trimmed)

__all__ = ["AutoSearch", "BUSY", "CUT", "DROPPED", "FAILED", "FASTER", "GREEDY", "INCUMBENT_EVERY", "KEPT", "NO_GAIN",
           "NOT_RETRIED", "OUTLIER", "Outcome", "RACE_DROP", "RACING", "RETRY_BELOW", "Run", "SLOWER", "STRATEGIES",
           "SearchResult", "Strategy", "decide", "fit_round", "judge", "measure_child", "not_retried", "outcome_line",
           "paired_ratios", "pass_sequence", "round_cost", "search_stack", "speedup_interval", "trimmed"]
