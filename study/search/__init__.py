"""`--stack auto`: greedy forward selection of toggles, each candidate measured beside the best stack.

Round k measures the incumbent (the best stack so far; in round 1 the baseline) and every remaining
candidate on top of it (study.advice.candidates: applicable here, useful values, no conflicts), in
`--repeats` passes. Within a pass the incumbent runs first and again after every INCUMBENT_EVERY
candidates, and each candidate's samples/s is divided by the incumbent runs around it: load from
other tenants of a shared machine drifts over minutes and cancels out of a ratio taken seconds
apart. The paired ratios of the passes give a speed-up and a 95 % t-interval (on log ratios).

The stopping rule (decide): a round keeps the fastest candidate whose interval lies above 1.0; the
search stops when no candidate's does, when no candidate is left, or when the budget cannot pay for
another round. Candidates are measured in the order the incumbent's figures advise
(study.advice.order_candidates), so a budget that cannot pay for all of them cuts the least
promising, and the table says so. To spend the budget on candidates that can still win:
- a candidate below RACE_DROP of the incumbent in the first pass is not measured again that round;
- one that failed, or measured clearly slower (interval below RETRY_BELOW), is not retried.

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
from study.search.engine import AutoSearch, Run, SearchResult, measure_child
from study.search.rules import (CUT, DROPPED, FAILED, FASTER, GREEDY, INCUMBENT_EVERY, KEPT, NO_GAIN, NOT_RETRIED,
                                OUTLIER, RACE_DROP, RACING, RETRY_BELOW, SLOWER, STRATEGIES, Outcome, Strategy, decide,
                                fit_round, judge, not_retried, paired_ratios, pass_sequence, round_cost,
                                speedup_interval, trimmed)

__all__ = ["AutoSearch", "CUT", "DROPPED", "FAILED", "FASTER", "GREEDY", "INCUMBENT_EVERY", "KEPT", "NO_GAIN",
           "NOT_RETRIED", "OUTLIER", "Outcome", "RACE_DROP", "RACING", "RETRY_BELOW", "Run", "SLOWER", "STRATEGIES",
           "SearchResult", "Strategy", "decide", "fit_round", "judge", "measure_child", "not_retried", "outcome_line",
           "paired_ratios", "pass_sequence", "round_cost", "search_stack", "speedup_interval", "trimmed"]
