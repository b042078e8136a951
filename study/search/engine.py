"""The search itself: rounds of child runs, the budget, resume, the final check; see study.search."""
from __future__ import annotations

import math
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Callable

from optimizations.base import parse_stack
from study.advice import diagnose, evidence_of, order_candidates
from study.core.machine import Env
from study.core.config import RunConfig
from study.core.faults import one_line
from study.core.machine_load import BUSY_SHARE, is_busy
from study.models.facts import ModelFacts
from study.core.recorder import Recorder
from study.core.records import StageResult, aggregate
from study.core.stats import crosswise
from study.search.notes import ResultNote, RoundNote, RunNote, finished_runs
from study.search.rules import (BUSY, CUT, DROPPED, FAILED, INCUMBENT_EVERY, NOT_RETRIED, RACE_DROP, RETRY_BELOW,
                                RACING, Outcome, Strategy,
                                decide, fan_sequences, fit_round, not_retried, paired_ratios, pass_wave, round_cost,
                                speedup_interval, trimmed)
from study.search.budget import Budget
from study.search.fanout import Measure, RayNodes, Serial
from study.search.measure import measure_child
from study.search.moves import apply, pair_moves, single_moves



@dataclass
class Run:
    """One child run of the search."""

    round: int
    pass_index: int
    role: str  # incumbent | candidate | baseline | best (the last two: the final check)
    spec: str
    slot: int
    row: StageResult
    seconds: float
    node: int = 0  # which of the search's nodes measured it (0: this machine)

    @property
    def ok(self) -> bool:
        """A run to compare: it finished, measured a speed, and its loss stayed finite."""
        return self.row.status == "ok" and self.row.throughput > 0 and self.row.diverged_step < 0

    @property
    def busy(self) -> bool:
        """Others used much of the machine while it ran: its speed is theirs as much as its own."""
        return is_busy(self.row.foreign_cpu_share)


@dataclass
class SearchResult:
    stack: list[str]
    speedup: float
    low: float
    high: float
    rounds: int
    stopped: str
    seconds: float
    outcomes: list[Outcome]




class AutoSearch:
    """Runs the rounds; `measure(spec, pass_index, tag)` runs one child (injectable for tests) and
    `clock` reads wall time (injectable: the budget logic is tested without waiting)."""

    def __init__(self, cfg: RunConfig, env: Env, *, measure: Measure | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 on_pass: Callable[[str], None] | None = None,
                 on_outcome: Callable[[Outcome], None] | None = None, strategy: Strategy = RACING,
                 model: ModelFacts | None = None, nodes: Serial | RayNodes | None = None,
                 recorder: Recorder | None = None) -> None:
        self.cfg, self.env = cfg, env
        self.model = model  # the preflight's facts: moves whose toggles cannot take the model are never tried
        self.strategy = strategy
        self.passes = cfg.repeats
        self.recorder = recorder or Recorder(cfg.report_dir)  # the study's one writer of results.jsonl
        # Children write under reports/<run>/search/ and profiles/<run>/search/, never resume from a
        # checkpoint, and none of it reaches the ladder's records.csv.
        self.child_cfg = cfg.replace(stack=(), run_name="search", reports_root=str(cfg.report_dir),
                                     profiles_root=str(cfg.profile_dir), resume=False)
        self.measure = measure or measure_child
        # where runs happen: this machine, or every node of a cluster at once (a block of each pass per node)
        self.nodes = nodes or Serial(self.measure)
        self.lock = threading.RLock()  # the blocks of a pass record their runs from threads of their own
        self.halted = False  # a block of this wave found the round's incumbent failing
        self.on_pass = on_pass or (lambda text: None)
        self.on_outcome = on_outcome or (lambda o: None)
        self.budget = Budget(cfg, env.device_type, clock)
        self.finished = finished_runs(self.recorder.rows()) if cfg.resume else {}  # runs of an interrupted study
        self.fresh: dict[str, Run] = {}  # runs of this session, by key
        self.check_pairs, self.check_base_tp, self.check_best_tp, self.check_busy = 0, 0.0, 0.0, 0

    # -- child runs ------------------------------------------------------------------------------
    def fits(self, stack: tuple[str, ...]) -> bool:
        """Whether every toggle of `stack` can apply to the model (unknown facts: it may)."""
        return self.model is None or all(t.fits(self.model)[0] for t in parse_stack(list(stack)))

    def prepare(self, rnd: int, pass_index: int, role: str, spec: str, slot: int, stack: tuple[str, ...]):
        """(stage spec, key) of one run; the key names it in results.jsonl, for --resume."""
        from study.runner.ladder import planned, slug

        name = f"r{rnd}-{slug(spec) if role == 'candidate' else role}"
        sspec = planned(self.child_cfg, self.env, rnd, name, parse_stack(list(stack)) if stack else []).spec
        return sspec, f"{rnd}|{pass_index}|{role}|{spec}|{slot}|{sspec.config.hash()}"

    def one(self, rnd: int, pass_index: int, role: str, spec: str, slot: int, stack: tuple[str, ...],
            node: int = 0) -> Run:
        with self.lock:
            sspec, key = self.prepare(rnd, pass_index, role, spec, slot, stack)
            if key in self.fresh:  # the round's first incumbent run, measured early to price the round
                return self.fresh[key]
            reused = self.finished.get(key)
            if reused:
                self.budget.reused_s += reused[1]
            else:
                self.on_pass(f"search round {rnd}: {'+'.join(stack) or 'baseline'} ({role}), "
                             f"run {pass_index + 1}/{self.passes}")
        if reused:
            row, seconds = reused
        else:
            row, seconds, where = self.nodes.measure(node, sspec, pass_index, f"p{pass_index}s{slot}")
            row.run, row.kind, row.name, row.stack, row.repeat = \
                self.cfg.run_name, "search-repeat", sspec.name, list(stack), pass_index
            row.notes = {**row.notes, **RunNote(key=key, round=rnd, pass_=pass_index, role=role, candidate=spec,
                                                  slot=slot, seconds=round(seconds, 2), node=where).as_notes()}
            with self.lock:
                self.recorder.add(row)
        with self.lock:
            self.budget.costs.setdefault(stack, []).append(seconds)
            self.fresh[key] = Run(rnd, pass_index, role, spec, slot, row, seconds, node)
            return self.fresh[key]

    def affordable(self, rnd: int, pass_index: int, role: str, spec: str, slot: int, stack: tuple[str, ...],
                   incumbent: tuple[str, ...]) -> bool:
        """Whether this run may start: it finished before (free), or it ends within the budget with
        room left for what follows the search."""
        key = self.prepare(rnd, pass_index, role, spec, slot, stack)[1]
        if key in self.finished or key in self.fresh:
            return True
        cost = self.budget.run_cost(stack, first=not self.budget.costs.get(stack))
        return self.budget.elapsed() + cost <= self.budget.budget_s - self.budget.reserve(incumbent)

    # -- records ---------------------------------------------------------------------------------
    def record(self, name: str, stack: tuple[str, ...], rnd: int, status: str, note: RoundNote | ResultNote,
               throughput: float = 0.0, reason: str = "") -> None:
        self.recorder.add(StageResult(
            run=self.cfg.run_name, stage=rnd, name=name, kind=note.KIND, stack=list(stack), status=status,
            reason=reason, task=self.cfg.task, model=self.cfg.model, dataset=self.cfg.dataset,
            batch_size=self.cfg.batch_size, repeats=self.passes, throughput=throughput, notes=note.as_notes(),
            started=time.time(), finished=time.time()))

    def record_outcome(self, o: Outcome, incumbent: tuple[str, ...], inc_tp: float) -> None:
        from study.runner.ladder import slug

        status = {FAILED: "failed", CUT: "skipped", NOT_RETRIED: "skipped"}.get(o.decision, "ok")
        self.record(f"r{o.round}-{slug(o.spec)}", o.stack, o.round, status, RoundNote(
            round=o.round, role="candidate", candidate=o.spec, incumbent=list(incumbent), incumbent_throughput=inc_tp,
            speedup=o.speedup, speedup_low=o.low, speedup_high=o.high, pairs=len(o.ratios), runs=o.runs,
            seconds=round(o.seconds, 1), decision=o.decision, detail=o.detail), throughput=o.throughput, reason=o.detail)
        self.on_outcome(o)

    # -- rounds ----------------------------------------------------------------------------------
    def run(self) -> SearchResult:
        stack: tuple[str, ...] = ()
        outcomes: list[Outcome] = []
        left_out: dict[str, Outcome] = {}
        incumbent_rows: list[StageResult] = []
        rnd, stopped = 0, ""
        pairs: list[str] = []  # the next round's moves where the last one was stuck (Strategy.pairs)
        while True:
            if pairs:
                specs, skipped = pairs, []
            else:
                specs = [m for m in single_moves(self.env, stack, self.strategy.swaps) if self.fits(apply(stack, m))]
                skipped = [s for s in specs if s in left_out]
                specs = [s for s in specs if s not in left_out]
            if not specs:
                stopped = "no candidate left to try"
                break
            if not self.budget.costs.get(stack):  # the round's first run, whatever the budget: it prices the rest
                self.one(rnd + 1, 0, "incumbent", "", 0, stack)
            findings = diagnose(evidence_of(aggregate(incumbent_rows))) if incumbent_rows else []
            order = specs if pairs else order_candidates(specs, findings)
            first, rest = (lambda s: self.budget.run_cost(apply(stack, s), True)), (lambda s: self.budget.run_cost(apply(stack, s), False))
            # n nodes measure a round's blocks at once: its wall time is about 1/n of the serial one
            chosen, cut = fit_round(order, first, rest, self.budget.run_cost(stack, False), self.passes,
                                    self.budget.seconds_left(stack) * self.nodes.count)
            if not chosen:
                need = min(round_cost([s], first, rest, self.budget.run_cost(stack, False), self.passes) for s in order)
                stopped = (f"budget spent: the cheapest candidate needs about {need / 60:.1f} min with its incumbent "
                           f"runs, {max(self.budget.seconds_left(stack), 0) / 60:.1f} min are left after the ladder's share"
                           + ("" if rnd else "; raise --budget-minutes"))
                break
            rnd += 1
            round_out, runs = self.run_round(rnd, stack, chosen)
            round_out += [Outcome(rnd, s, apply(stack, s), decision=CUT, detail="the budget left could not pay for it")
                          for s in cut]
            round_out += [Outcome(rnd, s, apply(stack, s), decision=NOT_RETRIED,
                                  detail=f"{left_out[s].decision} in round {left_out[s].round}") for s in skipped]
            winner = decide(round_out, self.strategy.min_gain)
            inc = [r for r in runs if r.role == "incumbent"]
            inc_ok = [r.row for r in inc if r.ok]
            inc_tp = statistics.median(r.throughput for r in inc_ok) if inc_ok else 0.0
            self.record(f"r{rnd}-incumbent", stack, rnd, "ok" if inc_ok else "failed",
                        RoundNote(round=rnd, role="incumbent", incumbent=list(stack), runs=len(inc),
                                  seconds=round(sum(r.seconds for r in inc), 1)),
                        throughput=inc_tp, reason="" if inc_ok else (inc[0].row.error if inc else ""))
            for o in round_out:
                self.record_outcome(o, stack, inc_tp)
                if not_retried(o) and (o.decision == FAILED or not self.strategy.readmit):
                    left_out.setdefault(o.spec, o)
            outcomes += round_out
            if not inc_ok:
                stopped = "the incumbent failed: " + one_line(inc[0].row.error if inc else "")
                break
            if winner is None:
                budget = any(o.decision == CUT or CUT in o.detail for o in round_out)
                if not pairs and self.strategy.pairs:
                    measured = {o.spec: o.speedup for o in round_out if o.ratios and o.decision != FAILED}
                    pairs = pair_moves(stack, measured, self.strategy.pairs)
                    if pairs:
                        continue
                busy = [o for o in round_out if o.decision == BUSY]
                if busy and len(busy) == len([o for o in round_out if o.decision not in (FAILED, NOT_RETRIED)]):
                    stopped = (f"the machine stayed too busy to answer: others used {BUSY_SHARE:.0%} or more of the CPU "
                               f"during every run of round {rnd}; rerun the search on a quieter machine")
                    break
                stopped = ("no measured candidate helped beyond noise" + (", nor a pair of them" if pairs else "")
                           + ("; the budget cut some" if budget else "")
                           + (f"; {len(busy)} met a busy machine in every run" if busy else ""))
                break
            pairs = []
            incumbent_rows = [r.row for r in runs if r.role == "candidate" and r.spec == winner and r.ok]
            stack = apply(stack, winner)
        measured = [r for r in self.fresh.values() if r.role in ("incumbent", "candidate")]
        if any(r.busy for r in measured) and not stopped.startswith("the machine stayed too busy"):
            stopped += (f"; others used {BUSY_SHARE:.0%} or more of the CPU during {sum(r.busy for r in measured)} "
                        f"of its {len(measured)} runs, which decided nothing")
        speedup, lo, hi = self.final_check(rnd + 1, stack) if stack else (1.0, 1.0, 1.0)
        if not stack and self.strategy.honest_nothing:
            # "Nothing helps" is only as sure as the best candidate's interval: its upper end is how much
            # faster a stack could still be, as measured.
            hi = max([o.high for o in outcomes if math.isfinite(o.high) and o.decision != FAILED], default=1.0)
            hi = max(hi, 1.0)
        result = SearchResult(list(stack), speedup, lo, hi, rnd, stopped, self.budget.elapsed(), outcomes)
        self.record("search-result", stack, rnd, "ok", ResultNote(
            rounds=rnd, stopped=stopped, seconds=round(result.seconds, 1), budget_s=self.budget.budget_s, speedup=speedup,
            speedup_low=lo, speedup_high=hi, pairs=self.check_pairs, baseline_throughput=self.check_base_tp,
            best_throughput=self.check_best_tp, busy_pairs=self.check_busy, race_drop=RACE_DROP, retry_below=RETRY_BELOW,
            incumbent_every=INCUMBENT_EVERY, strategy=self.strategy.name), throughput=self.check_best_tp)
        return result

    def contenders(self, outcomes: dict[str, Outcome], active: list[str]) -> list[str]:
        """Candidates measured again after the round's --repeats passes (Strategy.race): those whose
        interval still straddles 1.0 with a point estimate above it, and that could beat the fastest
        candidate already proven faster."""
        est = {s: speedup_interval(self.ratios_of(outcomes[s])) for s in active}
        bar = max((m for m, lo, _ in est.values() if lo > 1.0 and m >= 1.0 + self.strategy.min_gain), default=1.0)
        return [s for s in active if est[s][1] <= 1.0 < est[s][0] and est[s][2] > bar]

    def ratios_of(self, o: Outcome) -> list[float]:
        return trimmed(o.ratios, self.strategy.robust) if self.strategy.robust else o.ratios

    def run_round(self, rnd: int, stack: tuple[str, ...], chosen: list[str]) -> tuple[list[Outcome], list[Run]]:
        """Measure the incumbent and `chosen` in `passes` passes (and, racing, more passes of the
        contenders); the outcomes before `decide`."""
        active = list(chosen)
        runs: list[Run] = []
        outcomes = {s: Outcome(rnd, s, apply(stack, s)) for s in chosen}
        stop = ""
        p = 0
        seen = 2 if self.strategy.confirm_drop else 1  # runs below RACE_DROP that drop a candidate
        while p < self.passes * self.strategy.race:
            if p >= self.passes:
                active = self.contenders(outcomes, active)
                if not active:
                    break
            # one block per node (one block on one machine): the blocks of a wave of passes at the same time
            wave = pass_wave(p, self.passes, seen, self.nodes.count)
            cost = (lambda s: self.budget.run_cost(apply(stack, s), not self.budget.costs.get(apply(stack, s)))) \
                if self.nodes.count > 1 else None
            plans = [(q, plan) for q in wave for plan in fan_sequences(active, q, self.nodes.count, cost=cost)]
            self.halted = False
            blocks = [lambda node, q=q, plan=plan: self.run_block(rnd, q, stack, plan, node, outcomes, active)
                      for q, plan in plans]
            done = self.nodes.run(blocks)
            whole = {q: [t for (bq, _), (seq, _, _) in zip(plans, done) if bq == q for r, _, t in seq
                         if r == "incumbent" and t] for q in wave} if self.nodes.count > 1 else {}
            for (q, _), (seq, stopped, block_runs) in zip(plans, done):
                runs += block_runs
                # pairs of one node only: a block's candidates divided by its own incumbent runs
                for spec, ratios in paired_ratios(seq, pass_runs=whole.get(q)).items():
                    outcomes[spec].ratios += ratios
                stop = FAILED if FAILED in (stop, stopped) else (stop or stopped)
            if stop:
                break
            if seen - 1 in wave and self.passes > 1:
                for spec in list(active):
                    first = outcomes[spec].ratios[:seen]
                    if len(first) == seen and max(first) < RACE_DROP:
                        outcomes[spec].decision = DROPPED
                        outcomes[spec].detail = (f"{first[0]:.2f}× the incumbent in its first run" if seen == 1 else
                                                 f"{max(first):.2f}× the incumbent at best in two runs") \
                            + "; not measured again"
                        active.remove(spec)
            if not active:
                break
            p = wave[-1] + 1
        for spec, o in outcomes.items():
            mine = [r for r in runs if r.role == "candidate" and r.spec == spec and r.ok]
            if mine:
                o.throughput = statistics.median(r.row.throughput for r in mine)
            if o.ratios:
                ref = next((r for r in runs if r.role == "incumbent" and r.ok and r.pass_index == mine[0].pass_index
                            and r.node == mine[0].node), None) if mine else None
                one = len(o.ratios) == 1 and ref is not None
                single = crosswise(mine[0].row, ref.row, o.ratios[0])[1:] if one else None
                o.speedup, o.low, o.high = speedup_interval(self.ratios_of(o), single)
            if o.ratios and o.busy_runs:
                o.detail = "; ".join(filter(None, [o.detail, f"{o.busy_runs} of its {o.runs} runs met a busy machine "
                                                                 f"and are left out"]))
            if not o.ratios and o.busy_runs and o.decision not in (FAILED, DROPPED):
                o.decision, o.detail = BUSY, (f"{o.busy_runs} of its {o.runs} runs met a busy machine (others used "
                                              f"{BUSY_SHARE:.0%} or more of the CPU): no evidence either way")
            if stop == CUT and o.decision not in (FAILED, DROPPED) and o.runs < self.passes:
                o.detail = f"{CUT} after {o.runs} of {self.passes} runs"
                if not o.ratios:
                    o.decision = CUT
        return list(outcomes.values()), runs

    def run_block(self, rnd: int, p: int, stack: tuple[str, ...], plan: list[tuple[str, str, int]], node: int,
                  outcomes: dict[str, Outcome], active: list[str]) -> tuple[list, str, list[Run]]:
        """One block of pass `p` on one node, run after run: (role, spec, samples/s or None) in its order,
        why it stopped early ("" when it did not), its runs."""
        seq: list[tuple[str, str, float | None]] = []
        runs: list[Run] = []
        for role, spec, slot in plan:
            this = apply(stack, spec)
            if self.halted:  # another block found the incumbent failing: nothing of this round compares
                return seq, FAILED, runs
            if role == "candidate" and outcomes[spec].decision == FAILED:
                continue  # it failed in another pass of this wave: it is not retried
            if not self.affordable(rnd, p, role, spec, slot, this, stack):
                return seq, CUT, runs
            run = self.one(rnd, p, role, spec, slot, this, node)
            runs.append(run)
            # a busy run is no evidence: it neither drops, nor refutes, nor proves a candidate
            seq.append((role, spec, run.row.throughput if run.ok and not run.busy else None))
            if role == "incumbent" and not run.ok and p == 0 and len(runs) == 1:
                self.halted = True
                return seq, FAILED, runs  # nothing can be compared with a stack that does not run
            if role == "candidate":
                with self.lock:
                    o = outcomes[spec]
                    o.runs += 1
                    o.seconds += run.seconds
                    o.busy_runs += run.busy
                    if not run.ok:
                        why = (f"loss diverged at step {run.row.diverged_step}" if run.row.diverged_step >= 0
                               else one_line(run.row.error))
                        o.decision, o.detail = FAILED, why
                        active.remove(spec)
        return seq, "", runs

    def final_check(self, rnd: int, stack: tuple[str, ...]) -> tuple[float, float, float]:
        """The best stack beside the baseline, in alternating order, for the speed-up the verdict quotes;
        on n nodes n passes at once, each pair on one node."""
        def pair(p: int, node: int) -> dict[str, Run]:
            order = [("baseline", ()), ("best", stack)]
            return {role: self.one(rnd, p, role, "", 0, st, node) for role, st in (order if p % 2 == 0 else order[::-1])}

        got_all = self.nodes.run([lambda node, p=p: pair(p, node) for p in range(self.passes)])
        ratios, base_tp, best_tp = [], [], []
        single = None
        done = [got for got in got_all if got["baseline"].ok and got["best"].ok]
        busy = [got for got in done if got["baseline"].busy or got["best"].busy]
        # a busy pair is what the neighbours did as much as the stack: left out while a quiet one exists
        for got in [g for g in done if g not in busy] or busy:
            b, s = got["baseline"], got["best"]
            ratios.append(s.row.throughput / b.row.throughput)
            base_tp.append(b.row.throughput)
            best_tp.append(s.row.throughput)
            single = single or crosswise(s.row, b.row, ratios[-1])[1:]
        self.check_busy = len(busy)
        self.check_pairs = len(ratios)
        self.check_base_tp = statistics.median(base_tp) if base_tp else 0.0
        self.check_best_tp = statistics.median(best_tp) if best_tp else 0.0
        return speedup_interval(ratios, single)
