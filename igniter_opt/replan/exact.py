"""Exact replanning: the exact planner's MIP with a cost per running placement that does not survive.

The demands are the greedy replanner's (the new workloads split as a plan from scratch splits them).
``planner.mip`` builds the program with a ``Migration``:

- GPU slots: first the running GPUs on which some running placement could be kept (in the
  current plan's order), then interchangeable slots for new GPUs (at least as many as the greedy
  replan opens, and enough for any plan with no more GPUs than the greedy replan);
- a keep option per running placement whose workload is still there with the same model and
  whose share is a whole number of the profile's share units (every plan igniter-opt makes): it is
  kept when a demand of its workload sits on the same GPU slot with the same batch and share;
- objective: price x open GPUs + C x (running placements - kept), then, with those GPUs and at
  least those kept placements, the fewest changed placements and then the least total share (so
  at C = 0 the cheapest plan, and of the cheapest the one that changes least);
- the MIP start: the greedy replan (which keeps every running placement that is still feasible).

The returned plan is the MIP's if its objective (then changes, then total share) beats the greedy
replan's, else
the greedy replan; GPU slots become ids: a running GPU keeps its id, new GPUs get ids the current
plan does not use. A time limit without an incumbent or a solver error falls back to the greedy
replan with the reason.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace

from igniter_opt.domain import GpuAssignment, Plan, SolverInfo
from igniter_opt.planner import greedy as paper
from igniter_opt.planner import mip
from igniter_opt.planner.budget import Demand
from igniter_opt.planner.verify import verify_plan
from igniter_opt.replan import greedy as rgreedy
from igniter_opt.replan.diff import fresh_gpu_ids
from igniter_opt.replan.problem import ReplanProblem
from igniter_opt.solver import SolveOptions, SolveReport, SolveStatus, relative_gap

log = logging.getLogger(__name__)

PLANNER_NAME = "exact"
# At migration cost 0 the MIP still prices a change at this fraction of a GPU / (running placements
# + 1): all changes together cost less than one GPU, so they only break ties between equal costs.
TIE_BREAK_FRACTION = 0.5
# Assignment binaries of the replanning MIP (the exact planner's default is 15 000). Replanning runs
# at every step under a short time limit: on the shipped trace (H100, 5 s a step) models of about
# 2 000 found better plans than models of 15 000, which HiGHS could not search in the time.
REPLAN_MAX_ASSIGN_VARS = 2_000
_UNIT_TOL = 1e-6


def _units(share_pct: float, unit_pct: float) -> tuple[int, bool]:
    """(share in whole units, rounding up; whether the share is exactly that many units)."""
    u = round(share_pct / unit_pct)
    if abs(u * unit_pct - share_pct) <= _UNIT_TOL:
        return u, True
    return math.ceil(share_pct / unit_pct - 1e-9), False


def build_migration(rp: ReplanProblem, start: rgreedy.GreedyReplan, migration_cost: float
                    ) -> tuple[mip.Migration, list[Demand], list[tuple[list[int], list[int]]], list[str]]:
    """The ``Migration``, the start (demands with the start's batches, GPUs as (members, units))
    and the ids of the running GPU slots."""
    perf = rp.perf_model
    demands = list(start.demands)
    by_name: dict[str, list[int]] = {}
    for i, d in enumerate(demands):
        by_name.setdefault(d.workload.name, []).append(i)
    # keep options, grouped per (running GPU, workload, batch, units)
    groups: dict[tuple[int, str, int, int], int] = {}
    for gi, ga in enumerate(rp.current.gpus):
        for p in ga.placements:
            ds = [i for i in by_name.get(p.workload, []) if demands[i].workload.model == p.model]
            u, whole = _units(p.share_pct, perf.unit_pct)
            if ds and whole:
                key = (gi, p.workload, p.batch, u)
                groups[key] = groups.get(key, 0) + 1
    slot_of: dict[int, int] = {}
    for gi, _, _, _ in sorted(groups):
        slot_of.setdefault(gi, len(slot_of))
    slot_ids = [rp.current.gpus[gi].gpu_id for gi in sorted(slot_of, key=slot_of.get)]  # type: ignore[arg-type]
    keeps = tuple(
        mip.KeepOption(slot_of[gi], tuple(by_name[w]), b, u, n) for (gi, w, b, u), n in sorted(groups.items())
    )
    # the start: each demand with the batch, units and limit it has in the greedy replan
    gpus: list[tuple[list[int], list[int]]] = []
    start_slots: list[int | None] = []
    pos_of_id = {ga.gpu_id: gi for gi, ga in enumerate(rp.current.gpus)}
    for gpu in start.gpus:
        members, units = [], []
        for s in gpu.slots:
            u = _units(s.share_pct_frozen, perf.unit_pct)[0] if s.frozen else s.units
            d = demands[s.demand]
            demands[s.demand] = replace(d, batch=s.batch, lower_units=u, limit_ms=rgreedy._limit(rp, d, s.batch))
            members.append(s.demand)
            units.append(u)
        gpus.append((members, units))
        gi = pos_of_id.get(gpu.gpu_id) if gpu.gpu_id is not None else None
        start_slots.append(slot_of.get(gi) if gi is not None else None)
    fresh = max(sum(x is None for x in start_slots), len(start.gpus) - len(slot_of), 0)
    n_old = len(rp.current.placements())
    if migration_cost <= 0:  # changes only break ties between equally cheap plans
        migration_cost = TIE_BREAK_FRACTION * perf.hardware.price_per_gpu_hour / (n_old + 1)
    migration = mip.Migration(
        fixed_slots=len(slot_of), fresh_slots=fresh, keeps=keeps, cost=migration_cost,
        old_placements=n_old, start_slots=tuple(start_slots),
    )
    return migration, demands, gpus, slot_ids


def extract_plan(m: object, rp: ReplanProblem, slot_ids: list[str], info: SolverInfo) -> Plan:
    """The loaded solution as a Plan: running slots keep their GPU's id, new slots get fresh ids."""
    data: mip.MipData = m.data  # type: ignore[attr-defined]
    by_slot = mip.extract_slots(m)  # type: ignore[arg-type]
    slots = sorted(by_slot)
    demands, gpus = mip.assignment_demands(data, [by_slot[g] for g in slots])
    plan = paper.build_plan(rp.problem, demands, gpus, PLANNER_NAME, info)
    fresh = iter(fresh_gpu_ids({g.gpu_id for g in rp.current.gpus}, sum(g >= data.fixed_slots for g in slots)))
    named = tuple(
        GpuAssignment(slot_ids[g] if g < data.fixed_slots else next(fresh), ga.gpu_type, ga.placements)
        for g, ga in zip(slots, plan.gpus, strict=True)
    )
    return replace(plan, gpus=named)


def solve(rp: ReplanProblem, options: SolveOptions | None = None) -> Plan:
    """Replan exactly (see the module docstring)."""
    options = options or SolveOptions()
    t0 = time.perf_counter()
    mip._require_highs()
    cost_c = options.migration_cost
    start = rgreedy.replan_greedy(rp, cost_c)
    gplan = rgreedy.to_plan(rp, start, PLANNER_NAME, SolverInfo(status=str(SolveStatus.HEURISTIC)))
    g_obj, g_changes = rgreedy.migration_objective(gplan, rp.current, cost_c)
    n_old = len(rp.current.placements())
    if not start.demands:  # nothing to serve: every GPU is released
        info = SolverInfo(status=str(SolveStatus.OPTIMAL), objective=g_obj, bound=g_obj, gap=0.0,
                          wall_s=time.perf_counter() - t0, message="no workloads: every placement stopped")
        return replace(gplan, solver=info)
    migration, demands, gpus, slot_ids = build_migration(rp, start, cost_c)
    data = mip.prepare(rp.problem, greedy_result=(demands, gpus), migration=migration,
                       max_assign_vars=REPLAN_MAX_ASSIGN_VARS)
    m = mip.build_model(rp.problem, data)
    remaining = max(1.0, options.time_limit_s - (time.perf_counter() - t0))
    report = mip.solve_model(m, replace(options, time_limit_s=remaining))
    wall = time.perf_counter() - t0

    bound = data.lower_bound_gpus() * data.price
    if report.bound is not None and not data.configs_capped:
        bound = max(bound, report.bound)
    slots = f"{data.fixed_slots} running + {data.num_gpus - data.fixed_slots} new GPU slot(s)"
    notes = [f"HiGHS {report.termination_raw}", f"{slots}, {len(data.keeps)} keep option(s)"]
    if data.configs_capped:
        notes.append("configurations per demand capped for size (optimal within the kept ones)")
    if report.message:
        notes.append(report.message)

    def info(plan: Plan, objective: float, changes: int, message: str) -> SolverInfo:
        status = report.status if report.status.has_solution else SolveStatus.FEASIBLE
        if status is SolveStatus.OPTIMAL and objective > bound + options.mip_rel_gap * abs(objective) + 1e-6:
            status = SolveStatus.FEASIBLE
        head = (f"{message}; {changes} of {n_old} running placement(s) changed, "
                f"objective {plan.cost_per_hour:g}/h + {cost_c:g} x {changes}")
        return SolverInfo(status=str(status), objective=objective, bound=bound,
                          gap=relative_gap(objective, bound), wall_s=wall, build_s=report.build_s,
                          solve_s=report.solve_s, message="; ".join([head, *notes]))

    def fallback(message: str) -> Plan:
        return replace(gplan, solver=info(gplan, g_obj, g_changes, message))

    if not report.status.has_solution:
        return fallback(_no_solution_reason(report))
    plan = extract_plan(m, rp, slot_ids, SolverInfo(status=str(report.status)))
    violations = verify_plan(plan, rp.problem)
    if violations:
        log.error("DEFECT: the exact replan violates the exact model: %s", violations[0].message)
        return fallback(f"returned the greedy replan: the MIP plan violates the exact model "
                        f"({violations[0].message}); please report it")
    obj, changes = rgreedy.migration_objective(plan, rp.current, cost_c)
    if (round(obj, 9), changes, round(plan.total_share_pct, 6)) >= (
            round(g_obj, 9), g_changes, round(gplan.total_share_pct, 6)):
        return fallback("returned the greedy replan: the exact replanner found nothing better")
    if round(obj, 9) < round(g_obj, 9):
        better = f"better than the greedy replan (objective {g_obj:g})"
    elif changes < g_changes:
        better = f"as cheap as the greedy replan, {g_changes - changes} change(s) fewer"
    else:
        better = f"as cheap as the greedy replan, {gplan.total_share_pct - plan.total_share_pct:.4g} % less share"
    return replace(plan, solver=info(plan, obj, changes, better))


def _no_solution_reason(report: SolveReport) -> str:
    if report.status is SolveStatus.INFEASIBLE:
        log.error("the replanning MIP was declared infeasible although its start satisfies it")
        return "returned the greedy replan: the MIP was declared infeasible (a defect; please report it)"
    return f"returned the greedy replan: the solver ended with '{report.status}' and no incumbent"
