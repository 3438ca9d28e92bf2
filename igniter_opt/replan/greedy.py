"""Greedy replanning: keep every placement that still works, place the rest with the paper's algorithm.

1. Demands. The new workloads are split exactly as a plan from scratch splits them
   (``planner.greedy.initial_demands``), so a workload's pieces and their rates do not depend on
   history.
2. Keep. A demand may take over a running placement of its workload (same name and model) whose
   share, batch and queue delay still meet the demand's latency limit and rate on its GPU
   (``placement.violates``); demands go in decreasing rate, each taking the feasible placement
   with the least predicted throughput (best fit). A kept placement is a frozen slot: its server
   runs on, only the rate sent to it changes. Each GPU's kept set is predicted again without the
   placements that left; should one of them violate, the worst is given up and placed again.
3. Place. The other demands, largest lower-bound share first, go through the paper's Algorithm 1
   (``placement.place``) over the open GPUs in plan order (current GPUs that kept something, then
   new ones): AllocGPU raises the shares of the violating placements made in this replan; a GPU
   where a frozen placement would violate is infeasible. Current GPUs left empty are released.
4. Consolidate (an extension of the paper, driven by the migration cost C). While some GPU can be
   emptied, that is its placements fit on the other open GPUs by step 3 without opening one, and
   C times the running placements it moves is below the price of a GPU, empty it (GPUs with the
   least total share are tried first). With C at or above the price nothing is ever moved.

5. Re-split (two more candidates). A workload whose rate grew past what its running servers carry
   keeps them, each at the rate it serves now or at the most it carries next to its neighbours
   (``most_rate``; one candidate each: the first leaves room for a new co-runner's interference),
   so that its server runs on and only the load sent to it changes; the rest of its rate becomes new
   demands, split as from scratch and placed by step 3 (then step 4). A re-split is a candidate only
   within ``RESPLIT_SHARE_SLACK`` of the others' least total share: kept servers never shrink, and
   without that limit the share they hold piles up over a day of steps. Steps 1-2 instead re-place such a workload whole
   (its running server is resized or moved), which restarts it.

Steps 1-4 never shrink a running placement, so when rates fall a GPU can only be released once
its placements fit elsewhere next to running ones at their (now too large) shares, which is rare.
So the greedy replanner also plans from scratch (the paper's algorithm on the new rates, GPUs
renamed after the running ones to keep what happens to coincide, ``diff.relabel_gpus``) and
returns whichever candidate has the lowest objective: cost per hour + C x running placements not
kept; ties go to fewer changed placements, then less total share, then the incremental plan, then
the re-split one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np

from igniter_opt.domain import Placement, Plan
from igniter_opt.placement import Demand, GpuPacking, Packing, Slot, assemble_plan, violates
from igniter_opt.placement.alloc import ConfigTerms, slot_constants
from igniter_opt.placement.feasibility import over_capacity
from igniter_opt.placement.place import OpenGpus, place_demands
from igniter_opt.placement.serving import serving_model_for
from igniter_opt.planner import greedy as paper
from igniter_opt.replan.diff import diff_plans, fresh_gpu_ids, relabel_gpus
from igniter_opt.replan.problem import ReplanProblem
from igniter_opt.solver import SolveOptions, SolveOutcome, SolveStatus

PLANNER_NAME = "greedy"


@dataclass(frozen=True)
class GreedyReplan:
    """The outcome before it becomes a Plan: a packing whose GPUs carry the running GPU's id (None: new)."""

    packing: Packing
    moved_by_consolidation: int
    from_scratch: bool = False
    resplit: bool = False


def slot_limit(rp: ReplanProblem, d: Demand, batch: int, queue_delay_ms: float | None) -> float:
    """The latency limit of demand ``d`` served at ``batch`` with ``queue_delay_ms``."""
    return serving_model_for(rp.problem).limit(d.workload.slo_ms, d.rate_rps, batch, queue_delay_ms)


def _slot_checks(rp: ReplanProblem, demands: tuple[Demand, ...], slots: list[Slot]) -> tuple[np.ndarray, np.ndarray]:
    """Per slot of one GPU: whether it violates its limit or rate, and by how much (relative)."""
    perf = rp.perf_model
    preds = perf.predict_gpu([(demands[s.demand].workload.model, s.batch, s.share_pct(perf.unit_pct)) for s in slots])
    lat, thr = np.array(preds).T
    limit = np.array([slot_limit(rp, demands[s.demand], s.batch, s.queue_delay_ms) for s in slots])
    rate = np.array([demands[s.demand].rate_rps for s in slots])
    excess = np.maximum((lat - limit) / np.maximum(np.abs(limit), 1e-9), (rate - thr) / rate)
    return violates(lat, thr, limit, rate), excess


class _SlotTables:
    """What placing needs of one demand tuple and of each slot (configuration, units, constants), computed
    once: consolidation places the same demands and slots again for every GPU it tries to empty, and
    recomputing them took 21 of the 24 s of a 1000-workload replan (H100, rates x 1.2)."""

    def __init__(self, rp: ReplanProblem, demands: tuple[Demand, ...], gpus: list[GpuPacking]) -> None:
        perf = rp.perf_model
        self.rp, self.demands = rp, demands
        batches = [d.batch for d in demands] + [s.batch for g in gpus for s in g.slots]
        self.terms = ConfigTerms(perf, max(batches, default=1), perf.max_units)
        self.midx = np.array([perf.model_index(d.workload.model) for d in demands], np.intp)
        limits = np.array([slot_limit(rp, d, d.batch, d.queue_delay_ms) for d in demands])
        self.const = slot_constants(perf, self.midx, np.array([d.batch for d in demands]), limits,
                                    np.array([d.rate_rps for d in demands]))
        self.cfg = np.array([self.terms.index(int(m), d.batch, d.lower_units)
                             for m, d in zip(self.midx, demands, strict=True)], np.int64)
        self._slots: dict[Slot, tuple[int, float, np.ndarray]] = {}

    def covers(self, demands: tuple[Demand, ...], gpus: list[GpuPacking]) -> bool:
        """Whether these tables are of ``demands`` and every slot's batch is within their terms."""
        return demands is self.demands and all(s.batch < self.terms.n_batches for g in gpus for s in g.slots)

    def slot(self, s: Slot) -> tuple[int, float, np.ndarray]:
        """Slot ``s``'s configuration index, units and constants (a frozen slot at its exact share)."""
        got = self._slots.get(s)
        if got is None:
            rp = self.rp
            perf = rp.perf_model
            m = int(self.midx[s.demand])
            d = self.demands[s.demand]
            k = slot_constants(perf, np.array([m]), np.array([s.batch]),
                               np.array([slot_limit(rp, d, s.batch, s.queue_delay_ms)]), np.array([d.rate_rps]))[0]
            if s.frozen:
                share_pct = s.share_pct(perf.unit_pct)
                got = self.terms.add_fixed(m, s.batch, share_pct), share_pct / perf.unit_pct, k
            else:
                got = self.terms.index(m, s.batch, s.units), float(s.units), k
            self._slots[s] = got
        return got

    def open_gpus(self, gpus: list[GpuPacking]) -> OpenGpus:
        """Open GPUs holding ``gpus`` (frozen slots at their exact shares)."""
        table = OpenGpus(self.terms)
        for gpu in gpus:
            if gpu.slots:
                c, u, k = zip(*(self.slot(s) for s in gpu.slots), strict=True)
                table.open_gpu_with(list(gpu.slots), list(c), list(u), list(k), gpu.gpu_id)
        return table


def place(rp: ReplanProblem, demands: tuple[Demand, ...], gpus: list[GpuPacking], todo: list[int],
          *, may_open: bool = True, tables: _SlotTables | None = None) -> list[GpuPacking] | None:
    """Algorithm 1 for the demands ``todo`` onto ``gpus`` (largest lower bound first, stable);
    None when ``may_open`` is off and a demand fits nowhere. ``tables``: made before for these
    ``demands`` (``_SlotTables``), used where they cover ``gpus``."""
    if tables is None or not tables.covers(demands, gpus):
        tables = _SlotTables(rp, demands, gpus)
    table = tables.open_gpus(gpus)
    order = sorted(todo, key=lambda i: -demands[i].lower_units)
    if not place_demands(table, demands, order, tables.const, tables.cfg, rp.perf_model.max_units,
                         may_open=may_open):
        return None
    return list(table.packing_gpus())


def _running_candidates(rp: ReplanProblem,
                        model_of: dict[str, str]) -> dict[str, list[tuple[int, int, Placement, float, float]]]:
    """Per workload: its running placements (GPU, slot, placement, latency, throughput), each predicted
    next to the neighbours that may stay (same workload and model)."""
    perf = rp.perf_model
    cands: dict[str, list[tuple[int, int, Placement, float, float]]] = {}
    for g, ga in enumerate(rp.current.gpus):
        stay = [(s, p) for s, p in enumerate(ga.placements) if model_of.get(p.workload) == p.model]
        preds = perf.predict_gpu([(p.model, p.batch, p.share_pct) for _, p in stay])
        for (s, p), (lat, thr) in zip(stay, preds, strict=True):
            cands.setdefault(p.workload, []).append((g, s, p, lat, thr))
    return cands


def _keep(rp: ReplanProblem, demands: tuple[Demand, ...]) -> tuple[list[GpuPacking], list[int]]:
    """Step 2: match demands to running placements. Returns the current GPUs with their kept (frozen)
    slots, in current plan order (possibly empty), and the demands left to place."""
    perf = rp.perf_model
    by_name: dict[str, list[int]] = {}
    for i, d in enumerate(demands):
        by_name.setdefault(d.workload.name, []).append(i)
    cands = _running_candidates(rp, {d.workload.name: d.workload.model for d in demands})
    kept: list[list[Slot]] = [[] for _ in rp.current.gpus]
    todo: list[int] = []
    for name, idx in by_name.items():
        free = list(cands.get(name, []))
        for i in sorted(idx, key=lambda i: -demands[i].rate_rps):
            d = demands[i]
            ok = [c for c in free if not violates(np.array(c[3]), np.array(c[4]),
                                                  np.array(slot_limit(rp, d, c[2].batch, c[2].queue_delay_ms)),
                                                  np.array(d.rate_rps))]
            if not ok:
                todo.append(i)
                continue
            chosen = min(ok, key=lambda c: (c[4], c[0], c[1]))
            free.remove(chosen)
            g, _, p, _, _ = chosen
            kept[g].append(Slot(i, round(p.share_pct / perf.unit_pct), p.batch, p.queue_delay_ms, p.share_pct))
    todo += _hold_on_their_own(rp, demands, kept)
    return [GpuPacking(tuple(s), ga.gpu_id) for s, ga in zip(kept, rp.current.gpus, strict=True)], sorted(todo)


# A re-split candidate may use at most this much more total share than the best other candidate. On the
# shipped trace (H100, hourly steps, greedy) no limit cost 146 GPU-hours at C = 0.25 against 101 without
# re-splits (it trades restarts for share that stays); 5 % gave 100 GPU-hours and 77 restarts against 91.
RESPLIT_SHARE_SLACK = 0.05
# Rates tried, as fractions of a running placement's predicted throughput, for the most it can carry.
RATE_STEPS = np.linspace(1.0, 0.025, 40)


def most_rate(rp: ReplanProblem, p: Placement, lat: float, thr: float, slo_ms: float) -> float:
    """The largest rate (of ``RATE_STEPS`` x its throughput) at which running placement ``p``, predicted at
    ``lat`` and ``thr`` next to its neighbours, meets its workload's latency limit at that rate; 0 if none.
    (Under ``full`` and ``tail`` the limit depends on the rate, not monotonically, so rates are tried.)"""
    rule = serving_model_for(rp.problem)
    for r in thr * RATE_STEPS:
        if not violates(np.array(lat), np.array(thr), np.array(rule.limit(slo_ms, r, p.batch, p.queue_delay_ms)),
                        np.array(r)):
            return float(r)
    return 0.0


def _resplit(rp: ReplanProblem, migration_cost: float, to_capacity: bool) -> GreedyReplan | None:
    """Step 5: running servers kept at up to their capacity (``to_capacity``; else at up to the rate they
    serve now, which leaves room for new co-runners' interference), the rest of each workload's rate as
    new demands; None when no workload has a running server to keep."""
    from igniter_opt.domain import PlanningProblem

    perf = rp.perf_model
    problem = rp.problem
    rule = serving_model_for(problem)
    cands = _running_candidates(rp, {w.name: w.model for w in problem.workloads})
    demands: list[Demand] = []
    kept: list[list[Slot]] = [[] for _ in rp.current.gpus]
    todo: list[int] = []
    for w in problem.workloads:
        left = w.rate_rps
        for g, _, p, lat, thr in sorted(cands.get(w.name, []), key=lambda c: (-c[4], c[0], c[1])):
            most = most_rate(rp, p, lat, thr, w.slo_ms) if to_capacity else p.rate_rps
            r = min(most, left) if left > 0 and math.isfinite(most) else 0.0
            if r <= 0:
                continue
            limit = rule.limit(w.slo_ms, r, p.batch, p.queue_delay_ms)
            demands.append(Demand(w, r, p.batch, round(p.share_pct / perf.unit_pct), limit,
                                  queue_delay_ms=p.queue_delay_ms))
            kept[g].append(Slot(len(demands) - 1, round(p.share_pct / perf.unit_pct), p.batch, p.queue_delay_ms,
                                p.share_pct))
            left -= r
        if left > 1e-9 * w.rate_rps:
            rest = paper.initial_demands(PlanningProblem((replace(w, rate_rps=left),), perf, problem.latency_budget,
                                                         problem.margin, problem.attainment, problem.max_batch))
            todo += range(len(demands), len(demands) + len(rest))
            demands += [replace(d, workload=w) for d in rest]
    if not any(kept):
        return None
    ds = tuple(demands)
    todo += _hold_on_their_own(rp, ds, kept)
    gpus = place(rp, ds, [GpuPacking(tuple(sl), ga.gpu_id) for sl, ga in zip(kept, rp.current.gpus, strict=True)
                          if sl], sorted(todo))
    assert gpus is not None
    gpus, moved = _consolidate(rp, ds, gpus, migration_cost)
    return GreedyReplan(Packing(ds, tuple(gpus)), moved, resplit=True)


def _hold_on_their_own(rp: ReplanProblem, demands: tuple[Demand, ...], kept: list[list[Slot]]) -> list[int]:
    """Each GPU's kept slots must hold on their own: give up the worst violator (the largest share while
    over capacity) until they do. Changes ``kept`` in place; returns the demands given up."""
    unit = rp.perf_model.unit_pct
    given_up = []
    for slots in kept:
        while slots:
            if not over_capacity(sum(s.share_pct(unit) for s in slots)):
                bad, excess = _slot_checks(rp, demands, slots)
                if not bad.any():
                    break
                worst = int(np.argmax(excess))
            else:
                worst = max(range(len(slots)), key=lambda j: slots[j].share_pct(unit))
            given_up.append(slots.pop(worst).demand)
    return given_up


def _consolidate(rp: ReplanProblem, demands: tuple[Demand, ...], gpus: list[GpuPacking], migration_cost: float
                 ) -> tuple[list[GpuPacking], int]:
    """Step 4: empty GPUs while that is cheaper than keeping them. Returns the GPUs and the running placements moved."""
    perf = rp.perf_model
    price = perf.hardware.price_per_gpu_hour
    moved = 0
    tables = _SlotTables(rp, demands, gpus)
    changed = True
    while changed:
        changed = False
        for g in sorted(range(len(gpus)), key=lambda g: (sum(s.share_pct(perf.unit_pct) for s in gpus[g].slots), g)):
            running = sum(1 for s in gpus[g].slots if s.frozen)
            if migration_cost * running >= price or len(gpus) < 2:
                continue
            # moved placements start over from the paper's initial configuration
            others = place(rp, demands, [x for k, x in enumerate(gpus) if k != g],
                           [s.demand for s in gpus[g].slots], may_open=False, tables=tables)
            if others is not None:
                gpus = others
                moved += running
                changed = True
                break
    return gpus, moved


def _from_scratch(rp: ReplanProblem, demands: tuple[Demand, ...]) -> GreedyReplan:
    """The paper's plan for the new rates, its GPUs renamed after the running ones."""
    packing = paper.place(rp.perf_model, list(demands))
    named = relabel_gpus(to_plan(rp, GreedyReplan(packing, 0), PLANNER_NAME, SolveOutcome(SolveStatus.HEURISTIC)),
                         rp.current)
    running = {g.gpu_id for g in rp.current.gpus}
    gpus = tuple(replace(gpu, gpu_id=ga.gpu_id if ga.gpu_id in running else None)
                 for gpu, ga in zip(packing.gpus, named.gpus, strict=True))
    return GreedyReplan(Packing(packing.demands, gpus), 0, from_scratch=True)


def replan_greedy(rp: ReplanProblem, migration_cost: float) -> GreedyReplan:
    """Steps 1-4 of the module docstring, or the plan from scratch if its objective is lower."""
    demands = tuple(paper.initial_demands(rp.problem)) if rp.problem.workloads else ()
    current, todo = _keep(rp, demands)
    gpus = place(rp, demands, [g for g in current if g.slots], todo)  # emptied current GPUs are released
    assert gpus is not None
    gpus, moved = _consolidate(rp, demands, gpus, migration_cost)
    best = GreedyReplan(Packing(demands, tuple(gpus)), moved)
    if rp.current.gpus and demands:

        def judged(r: GreedyReplan) -> tuple[GreedyReplan, Plan]:
            return r, to_plan(rp, r, PLANNER_NAME, SolveOutcome(SolveStatus.HEURISTIC))

        def key(candidate: tuple[GreedyReplan, Plan]) -> tuple[float, int, float]:
            return replan_rank(candidate[1], rp.current, migration_cost)

        base = [judged(best), judged(_from_scratch(rp, demands))]
        # a re-split keeps servers whose shares never shrink: over a day its extra share piles up, so it
        # may use at most RESPLIT_SHARE_SLACK more than the best of the others (benchmarks/replan_trace.py)
        floor = min(plan.total_share_pct for _, plan in base)
        splits = [judged(r) for r in (_resplit(rp, migration_cost, False), _resplit(rp, migration_cost, True))
                  if r is not None]
        splits = [c for c in splits if c[1].total_share_pct <= floor * (1 + RESPLIT_SHARE_SLACK) + 1e-9]
        best = min([*base, *splits], key=key)[0]  # min keeps the first of equals
    return best


def to_plan(rp: ReplanProblem, result: GreedyReplan, planner: str, solver: SolveOutcome) -> Plan:
    """A Plan from replanned GPUs: kept GPUs keep their ids, new ones get ids unused by the current plan."""
    gpus = result.packing.gpus
    fresh = iter(fresh_gpu_ids({g.gpu_id for g in rp.current.gpus}, sum(g.gpu_id is None for g in gpus)))
    ids = [g.gpu_id if g.gpu_id is not None else next(fresh) for g in gpus]
    return assemble_plan(rp.problem, result.packing, planner, solver, gpu_ids=ids)


def migration_objective(plan: Plan, current: Plan, migration_cost: float) -> tuple[float, int]:
    """(cost per hour + C x current placements not kept, that count): what replanning minimises."""
    changes = diff_plans(current, plan).old_not_kept
    return plan.cost_per_hour + migration_cost * changes, changes


def replan_rank(plan: Plan, current: Plan, migration_cost: float) -> tuple[float, int, float]:
    """How replanners rank candidate plans, the least first: the objective (``migration_objective``),
    then fewer changes, then less total share (rounded, so float noise does not decide)."""
    objective, changes = migration_objective(plan, current, migration_cost)
    return round(objective, 9), changes, round(plan.total_share_pct, 6)


def solve(rp: ReplanProblem, options: SolveOptions | None = None) -> Plan:
    """Replan greedily (see the module docstring); the migration cost drives consolidation only."""
    options = options or SolveOptions()
    t0 = time.perf_counter()
    result = replan_greedy(rp, options.migration_cost)
    wall = time.perf_counter() - t0
    plan = to_plan(rp, result, PLANNER_NAME, SolveOutcome(SolveStatus.HEURISTIC, wall_s=wall))
    objective, changes = migration_objective(plan, rp.current, options.migration_cost)
    msg = (f"replanned: {changes} of {len(rp.current.placements())} running placement(s) changed, "
           f"objective {plan.cost_per_hour:g}/h + {options.migration_cost:g} x {changes}")
    if result.moved_by_consolidation:
        msg += f"; {result.moved_by_consolidation} moved to release GPUs"
    if result.from_scratch:
        msg += "; the plan from scratch beat keeping the running placements"
    if result.resplit:
        msg += "; re-split: running servers kept, the rest of their workloads' rates on new servers"
    return replace(plan, solver=replace(plan.solver, objective=objective, message=msg))
