"""Greedy replanning: keep every placement that still works, place the rest with the paper's algorithm.

1. Demands. The new workloads are split exactly as a plan from scratch splits them
   (``planner.greedy.initial_demands``: the paper's batch and lower-bound share, dedicated replicas
   for a workload too large for one GPU), so a workload's pieces and their rates do not depend on
   history.
2. Keep. A demand may take over a running placement of its workload (same name and model) whose
   share and batch still meet the demand's latency limit and rate on its GPU; demands go in
   decreasing rate, each taking the feasible placement with the least predicted throughput (best
   fit). A kept placement keeps its GPU, share and batch: its server runs on, only the rate sent to
   it changes. Each GPU's kept set is predicted again without the placements that left; should one
   of them violate (it cannot when the model is monotone in its neighbours, but the check is cheap)
   the worst is given up and placed again.
3. Place. The other demands, largest lower-bound share first, go through the paper's Algorithm 1
   over the open GPUs in plan order (current GPUs that kept something, then new ones): AllocGPU
   raises, one share unit at a time, the shares of the violating placements made in this replan;
   a GPU where a kept placement would violate is infeasible (a running server's share cannot
   change). The feasible GPU whose total share grows least wins (first on ties); if none, a GPU
   with a fresh id opens. Current GPUs left empty are released.
4. Consolidate (an extension of the paper, driven by the migration cost C). While some GPU can be
   emptied, that is its placements fit on the other open GPUs by step 3 without opening one, and
   C times the running placements it moves is below the price of a GPU, empty it (GPUs with the
   least total share are tried first). With C at or above the price nothing is ever moved.

Steps 1-4 never shrink a running placement, so when rates fall a GPU can only be released once
its placements fit elsewhere next to running ones at their (now too large) shares, which is rare.
So the greedy replanner also plans from scratch (the paper's algorithm on the new rates, GPUs
renamed after the running ones to keep what happens to coincide, ``diff.relabel_gpus``) and
returns whichever of the two has the lower objective: cost per hour + C x running placements not
kept; ties go to fewer changed placements, then less total share, then the incremental plan. At
C = 0 that is the cheaper of the two plans, and of two equally cheap ones the one that changes less.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace

from igniter_opt.domain import GpuAssignment, LatencyBudget, Placement, Plan, Prediction, SolverInfo
from igniter_opt.perfmodel.model import PerformanceModel
from igniter_opt.planner import greedy as paper
from igniter_opt.planner.budget import Demand, inference_limit_ms
from igniter_opt.replan.diff import diff_plans, fresh_gpu_ids, relabel_gpus
from igniter_opt.replan.problem import ReplanProblem
from igniter_opt.solver import SolveOptions, SolveStatus

PLANNER_NAME = "greedy"
# Shares summing to 100 % plus this (percentage points) still fit: float noise of plan files.
SHARE_TOL_PCT = 1e-6


@dataclass
class Slot:
    """One placement while replanning. A ``frozen`` slot is a running server kept as it is: its
    share (``share_pct``, possibly not a whole number of units) and batch never change. Other
    slots hold ``units`` share units that AllocGPU may raise."""

    demand: int
    batch: int
    units: int
    frozen: bool = False
    share_pct_frozen: float = 0.0

    def share_pct(self, perf: PerformanceModel) -> float:
        return self.share_pct_frozen if self.frozen else self.units * perf.unit_pct


@dataclass
class GpuState:
    gpu_id: str | None  # None: a GPU opened in this replan, named at the end
    slots: list[Slot] = field(default_factory=list)

    def share_pct(self, perf: PerformanceModel) -> float:
        return sum(s.share_pct(perf) for s in self.slots)


@dataclass(frozen=True)
class GreedyReplan:
    """The outcome before it becomes a Plan: demands and GPUs (current ones first, then new)."""

    demands: tuple[Demand, ...]
    gpus: tuple[GpuState, ...]
    moved_by_consolidation: int
    from_scratch: bool = False


def _limit(rp: ReplanProblem, d: Demand, batch: int) -> float:
    p = rp.problem
    return inference_limit_ms(d.workload.slo_ms, d.rate_rps, batch, p.latency_budget, p.margin)


def _violations(rp: ReplanProblem, demands: list[Demand], slots: list[Slot]) -> list[float]:
    """Per slot: how far it misses its latency limit or rate, relative (<= 0: it meets both)."""
    perf = rp.perf_model
    preds = perf.predict_gpu([(demands[s.demand].workload.model, s.batch, s.share_pct(perf)) for s in slots])
    out = []
    for s, (lat, thr) in zip(slots, preds, strict=True):
        d = demands[s.demand]
        limit = _limit(rp, d, s.batch)
        out.append(max((lat - limit) / max(limit, 1e-9), (d.rate_rps - thr) / d.rate_rps))
    return out


def alloc_gpu(rp: ReplanProblem, demands: list[Demand], slots: list[Slot]) -> list[Slot] | None:
    """Algorithm 2 with frozen slots: raise every violating unfrozen slot by one unit until none
    violates (the new slots) or the shares exceed 100 % or a frozen slot violates (None)."""
    perf = rp.perf_model
    slots = [copy.copy(s) for s in slots]
    while True:
        if sum(s.share_pct(perf) for s in slots) > 100.0 + SHARE_TOL_PCT:
            return None
        viol = [v > 0 for v in _violations(rp, demands, slots)]
        if not any(viol):
            return slots
        if any(v and s.frozen for s, v in zip(slots, viol, strict=True)):
            return None
        for s, v in zip(slots, viol, strict=True):
            if v:
                s.units += 1


def place(rp: ReplanProblem, demands: list[Demand], gpus: list[GpuState], todo: list[int],
          *, may_open: bool = True) -> bool:
    """Algorithm 1 for the demands ``todo`` onto ``gpus`` (changed in place). Returns False, with
    ``gpus`` partly changed, when ``may_open`` is off and a demand fits nowhere."""
    perf = rp.perf_model
    order = sorted(todo, key=lambda i: -demands[i].lower_units)  # stable: input order on ties
    for i in order:
        d = demands[i]
        need = d.lower_units * perf.unit_pct
        best: tuple[float, int, list[Slot]] | None = None
        for g, gpu in enumerate(gpus):
            used = gpu.share_pct(perf)
            if not gpu.slots or used + need > 100.0 + SHARE_TOL_PCT:
                continue
            new = alloc_gpu(rp, demands, [*gpu.slots, Slot(i, d.batch, d.lower_units)])
            if new is None:
                continue
            inc = sum(s.share_pct(perf) for s in new) - used
            if best is None or inc < best[0] - SHARE_TOL_PCT:
                best = (inc, g, new)
        if best is not None:
            gpus[best[1]].slots = best[2]
        elif may_open:
            gpus.append(GpuState(None, [Slot(i, d.batch, d.lower_units)]))
        else:
            return False
    return True


def _keep(rp: ReplanProblem, demands: list[Demand]) -> tuple[list[GpuState], list[int]]:
    """Step 2: match demands to running placements. Returns the current GPUs with their kept slots
    (in current plan order, possibly empty) and the demands left to place."""
    perf = rp.perf_model
    current = rp.current
    by_name: dict[str, list[int]] = {}
    for i, d in enumerate(demands):
        by_name.setdefault(d.workload.name, []).append(i)
    model_of = {d.workload.name: d.workload.model for d in demands}
    # Predict each running placement next to the neighbours that may stay (same workload and model).
    cands: dict[str, list[tuple[int, int, Placement, float, float]]] = {}
    for g, ga in enumerate(current.gpus):
        stay = [(s, p) for s, p in enumerate(ga.placements) if model_of.get(p.workload) == p.model]
        preds = perf.predict_gpu([(p.model, p.batch, p.share_pct) for _, p in stay])
        for (s, p), (lat, thr) in zip(stay, preds, strict=True):
            cands.setdefault(p.workload, []).append((g, s, p, lat, thr))
    gpus = [GpuState(ga.gpu_id) for ga in current.gpus]
    todo: list[int] = []
    for name, idx in by_name.items():
        free = list(cands.get(name, []))
        for i in sorted(idx, key=lambda i: -demands[i].rate_rps):
            d = demands[i]
            ok = [c for c in free if c[3] <= _limit(rp, d, c[2].batch) and c[4] >= d.rate_rps]
            if not ok:
                todo.append(i)
                continue
            chosen = min(ok, key=lambda c: (c[4], c[0], c[1]))
            free.remove(chosen)
            g, _, p, _, _ = chosen
            units = round(p.share_pct / perf.unit_pct)
            gpus[g].slots.append(Slot(i, p.batch, units, frozen=True, share_pct_frozen=p.share_pct))
    # A kept set must hold on its own: give up the worst violator until it does.
    for gpu in gpus:
        while gpu.slots:
            if sum(s.share_pct(perf) for s in gpu.slots) <= 100.0 + SHARE_TOL_PCT:
                viol = _violations(rp, demands, gpu.slots)
                worst = max(range(len(viol)), key=lambda j: viol[j])
                if viol[worst] <= 0:
                    break
            else:
                worst = max(range(len(gpu.slots)), key=lambda j: gpu.slots[j].share_pct(perf))
            todo.append(gpu.slots.pop(worst).demand)
    return gpus, sorted(todo)


def _consolidate(rp: ReplanProblem, demands: list[Demand], gpus: list[GpuState], migration_cost: float) -> int:
    """Step 4: empty GPUs while that is cheaper than keeping them. Returns the running placements moved."""
    perf = rp.perf_model
    price = perf.hardware.price_per_gpu_hour
    moved = 0
    changed = True
    while changed:
        changed = False
        for g in sorted(range(len(gpus)), key=lambda g: (gpus[g].share_pct(perf), g)):
            running = sum(1 for s in gpus[g].slots if s.frozen)
            if migration_cost * running >= price or len(gpus) < 2:
                continue
            others = copy.deepcopy([x for k, x in enumerate(gpus) if k != g])
            # moved placements start over from the paper's initial configuration
            if place(rp, demands, others, [s.demand for s in gpus[g].slots], may_open=False):
                gpus[:] = others
                moved += running
                changed = True
                break
    return moved


def _from_scratch(rp: ReplanProblem, demands: list[Demand]) -> GreedyReplan:
    """The paper's plan for the new rates, its GPUs renamed after the running ones."""
    gpus = [GpuState(None, [Slot(i, demands[i].batch, u) for i, u in zip(members, units, strict=True)])
            for members, units in paper.place(rp.perf_model, demands)]
    result = GreedyReplan(tuple(demands), tuple(gpus), 0, from_scratch=True)
    named = relabel_gpus(to_plan(rp, result, PLANNER_NAME, SolverInfo(status="heuristic")), rp.current)
    running = {g.gpu_id for g in rp.current.gpus}
    for gpu, ga in zip(gpus, named.gpus, strict=True):
        gpu.gpu_id = ga.gpu_id if ga.gpu_id in running else None
    return result


def replan_greedy(rp: ReplanProblem, migration_cost: float) -> GreedyReplan:
    """Steps 1-4 of the module docstring, or the plan from scratch if its objective is lower."""
    demands = paper.initial_demands(rp.problem) if rp.problem.workloads else []
    current, todo = _keep(rp, demands)
    gpus = [g for g in current if g.slots]  # emptied current GPUs are released
    place(rp, demands, gpus, todo)
    moved = _consolidate(rp, demands, gpus, migration_cost)
    best = GreedyReplan(tuple(demands), tuple(gpus), moved)
    if rp.current.gpus and demands:
        scratch = _from_scratch(rp, demands)

        def key(r: GreedyReplan) -> tuple[float, int, float]:
            plan = to_plan(rp, r, PLANNER_NAME, SolverInfo(status="heuristic"))
            objective, changes = migration_objective(plan, rp.current, migration_cost)
            return round(objective, 9), changes, round(plan.total_share_pct, 6)

        if key(scratch) < key(best):
            best = scratch
    return best


def to_plan(rp: ReplanProblem, result: GreedyReplan, planner: str, solver: SolverInfo) -> Plan:
    """A Plan from replanned GPUs: kept GPUs keep their ids, new ones get ids unused by the current plan."""
    perf = rp.perf_model
    gpu_type = str(perf.gpu.get("name", perf.name))
    fresh = iter(fresh_gpu_ids({g.gpu_id for g in rp.current.gpus}, sum(g.gpu_id is None for g in result.gpus)))
    out = []
    for gpu in result.gpus:
        slots = [(result.demands[s.demand].workload.model, s.batch, s.share_pct(perf)) for s in gpu.slots]
        preds = perf.predict_gpu(slots)
        placements = tuple(
            Placement(
                workload=result.demands[s.demand].workload.name,
                model=result.demands[s.demand].workload.model,
                slo_ms=result.demands[s.demand].workload.slo_ms,
                rate_rps=result.demands[s.demand].rate_rps,
                batch=s.batch,
                share_pct=s.share_pct_frozen if s.frozen else round(s.units * perf.unit_pct, 6),
                predicted=Prediction(lat, thr),
            )
            for s, (lat, thr) in zip(gpu.slots, preds, strict=True)
        )
        out.append(GpuAssignment(gpu.gpu_id if gpu.gpu_id is not None else next(fresh), gpu_type, placements))
    p = rp.problem
    return Plan(
        profile=perf.name, planner=planner, latency_budget=str(p.latency_budget), gpus=tuple(out),
        price_per_gpu_hour=perf.hardware.price_per_gpu_hour, solver=solver,
        margin=p.margin if p.latency_budget is LatencyBudget.FULL else None,
        **perf.serving_plan_fields(),
    )


def migration_objective(plan: Plan, current: Plan, migration_cost: float) -> tuple[float, int]:
    """(cost per hour + C x current placements not kept, that count): what replanning minimises."""
    changes = diff_plans(current, plan).old_not_kept
    return plan.cost_per_hour + migration_cost * changes, changes


def solve(rp: ReplanProblem, options: SolveOptions | None = None) -> Plan:
    """Replan greedily (see the module docstring); the migration cost drives consolidation only."""
    options = options or SolveOptions()
    t0 = time.perf_counter()
    result = replan_greedy(rp, options.migration_cost)
    wall = time.perf_counter() - t0
    plan = to_plan(rp, result, PLANNER_NAME, SolverInfo(status=str(SolveStatus.HEURISTIC), wall_s=wall))
    objective, changes = migration_objective(plan, rp.current, options.migration_cost)
    msg = (f"replanned: {changes} of {len(rp.current.placements())} running placement(s) changed, "
           f"objective {plan.cost_per_hour:g}/h + {options.migration_cost:g} x {changes}")
    if result.moved_by_consolidation:
        msg += f"; {result.moved_by_consolidation} moved to release GPUs"
    if result.from_scratch:
        msg += "; the plan from scratch beat keeping the running placements"
    return replace(plan, solver=replace(plan.solver, objective=objective, message=msg))
