"""Exact replanning: the exact planner's MIP with a cost per running placement that does not survive.

The demands are the greedy replan's: the new workloads split as a plan from scratch splits them, or,
where the greedy replanner's re-split candidate won, each grown workload's running servers as pieces
and the rest split as from scratch. The bound is over plans with those pieces, and the message says
which.
``planner.exact`` builds the program with a ``Migration``:

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

import math
import time
from dataclasses import replace

from igniter_opt.domain import Plan
from igniter_opt.placement import GpuPacking, Packing, Slot, assemble_plan, verify_plan
from igniter_opt.planner import exact as mip
from igniter_opt.replan import greedy as rgreedy
from igniter_opt.replan.diff import fresh_gpu_ids
from igniter_opt.replan.problem import ReplanProblem
from igniter_opt.solver import SolveOptions, SolveOutcome, SolveStatus, bound_status, relative_gap

PLANNER_NAME = "exact"
# At migration cost 0 the MIP still prices a change at this fraction of a GPU / (running placements
# + 1): all changes together cost less than one GPU, so they only break ties between equal costs.
TIE_BREAK_FRACTION = 0.5
# Assignment binaries of the replanning MIP (the exact planner's default is 15 000). Replanning runs
# at every step under a short time limit: on the shipped trace (H100, 5 s a step) models of about
# 2 000 found better plans than models of 15 000, which HiGHS could not search in the time.
REPLAN_MAX_ASSIGN_VARS = 2_000
_UNIT_TOL = 1e-6


def share_units(share_pct: float, unit_pct: float) -> tuple[int, bool]:
    """(share in whole units, rounding up; whether the share is exactly that many units)."""
    u = round(share_pct / unit_pct)
    if abs(u * unit_pct - share_pct) <= _UNIT_TOL:
        return u, True
    return math.ceil(share_pct / unit_pct - 1e-9), False


def _keep_options(rp: ReplanProblem, by_name: dict[str, list[int]], models: list[str]
                  ) -> tuple[tuple[mip.KeepOption, ...], dict[int, int]]:
    """Keep options grouped per (running GPU, workload, batch, units, queue delay), and the slot of
    each running GPU that has one."""
    unit = rp.perf_model.unit_pct
    groups: dict[tuple[int, str, int, int, float], int] = {}
    delays: dict[tuple[int, str, int, int, float], float | None] = {}
    for gi, ga in enumerate(rp.current.gpus):
        for p in ga.placements:
            ds = [i for i in by_name.get(p.workload, []) if models[i] == p.model]
            u, whole = share_units(p.share_pct, unit)
            if ds and whole:
                key = (gi, p.workload, p.batch, u, -1.0 if p.queue_delay_ms is None else p.queue_delay_ms)
                groups[key] = groups.get(key, 0) + 1
                delays[key] = p.queue_delay_ms
    slot_of: dict[int, int] = {}
    for key in sorted(groups):
        slot_of.setdefault(key[0], len(slot_of))
    keeps = tuple(mip.KeepOption(slot_of[k[0]], tuple(by_name[k[1]]), k[2], k[3], n, delays[k])
                  for k, n in sorted(groups.items()))
    return keeps, slot_of


def build_migration(rp: ReplanProblem, start: rgreedy.GreedyReplan, migration_cost: float
                    ) -> tuple[mip.Migration, Packing, list[str]]:
    """The ``Migration``, the start (each demand with the start's batch, units and delay; frozen
    slots rounded up to whole units) and the ids of the running GPU slots."""
    perf = rp.perf_model
    demands = list(start.packing.demands)
    by_name: dict[str, list[int]] = {}
    for i, d in enumerate(demands):
        by_name.setdefault(d.workload.name, []).append(i)
    keeps, slot_of = _keep_options(rp, by_name, [d.workload.model for d in demands])
    slot_ids = [rp.current.gpus[gi].gpu_id for gi in sorted(slot_of, key=slot_of.__getitem__)]
    gpus: list[GpuPacking] = []
    start_slots: list[int | None] = []
    pos_of_id = {ga.gpu_id: gi for gi, ga in enumerate(rp.current.gpus)}
    for gpu in start.packing.gpus:
        slots = []
        for s in gpu.slots:
            u = share_units(s.share_pct(perf.unit_pct), perf.unit_pct)[0] if s.frozen else s.units
            d = demands[s.demand]
            demands[s.demand] = replace(d, batch=s.batch, lower_units=u, queue_delay_ms=s.queue_delay_ms,
                                        limit_ms=rgreedy.slot_limit(rp, d, s.batch, s.queue_delay_ms))
            slots.append(Slot(s.demand, u, s.batch, s.queue_delay_ms))
        gpus.append(GpuPacking(tuple(slots)))
        gi = pos_of_id.get(gpu.gpu_id) if gpu.gpu_id is not None else None
        start_slots.append(slot_of.get(gi) if gi is not None else None)
    fresh = max(sum(x is None for x in start_slots), len(start.packing.gpus) - len(slot_of), 0)
    n_old = len(rp.current.placements())
    if migration_cost <= 0:  # changes only break ties between equally cheap plans
        migration_cost = TIE_BREAK_FRACTION * perf.hardware.price_per_gpu_hour / (n_old + 1)
    migration = mip.Migration(fixed_slots=len(slot_of), fresh_slots=fresh, keeps=keeps, cost=migration_cost,
                              old_placements=n_old, start_slots=tuple(start_slots))
    return migration, Packing(tuple(demands), tuple(gpus)), slot_ids


def extract_plan(m: object, rp: ReplanProblem, slot_ids: list[str], info: SolveOutcome) -> Plan:
    """The loaded solution as a Plan: running slots keep their GPU's id, new slots get fresh ids."""
    data: mip.MipData = m.data  # type: ignore[attr-defined]
    by_slot = mip.extract_slots(m)
    slots = sorted(by_slot)
    packing = mip.assignment_packing(data, by_slot, slots)
    fresh = iter(fresh_gpu_ids({g.gpu_id for g in rp.current.gpus}, sum(g >= data.fixed_slots for g in slots)))
    ids = [slot_ids[g] if g < data.fixed_slots else next(fresh) for g in slots]
    return assemble_plan(rp.problem, packing, PLANNER_NAME, info, gpu_ids=ids)


def solve(rp: ReplanProblem, options: SolveOptions | None = None) -> Plan:
    """Replan exactly (see the module docstring)."""
    options = options or SolveOptions()
    t0 = options.started()
    missing = mip.highs_or_fallback(options)
    cost_c = options.migration_cost
    start = rgreedy.replan_greedy(rp, cost_c)
    gplan = rgreedy.to_plan(rp, start, PLANNER_NAME, SolveOutcome(SolveStatus.HEURISTIC))
    g_obj = rgreedy.migration_objective(gplan, rp.current, cost_c)[0]
    if missing is not None:
        return mip.greedy_instead(gplan, PLANNER_NAME, missing, g_obj, time.perf_counter() - t0)
    n_old = len(rp.current.placements())
    if not start.packing.demands:  # nothing to serve: every GPU is released
        info = SolveOutcome(SolveStatus.OPTIMAL, objective=g_obj, bound=g_obj, gap=0.0,
                            wall_s=time.perf_counter() - t0, message="no workloads: every placement stopped")
        return replace(gplan, solver=info)
    migration, packing, slot_ids = build_migration(rp, start, cost_c)
    data = mip.prepare(rp.problem, start=packing, migration=migration, max_assign_vars=REPLAN_MAX_ASSIGN_VARS)
    m = mip.build_model(data, loosened=True)  # its bound then bounds the problem; plans are verified
    remaining = max(1.0, options.time_limit_s - (time.perf_counter() - t0))
    report = mip.solve_model(m, replace(options, time_limit_s=remaining))
    wall = time.perf_counter() - t0

    bound = data.lower_bound_gpus() * data.price
    if report.bound is not None and not data.configs_capped:
        bound = max(bound, report.bound)
    slots = f"{data.fixed_slots} running + {data.num_gpus - data.fixed_slots} new GPU slot(s)"
    pieces = ("bound over plans serving each workload by the greedy re-split's pieces (running servers kept, the "
              "rest split as from scratch)" if start.resplit else
              "bound over plans serving each workload split as a plan from scratch splits it")
    notes = [f"HiGHS {report.termination_raw}", f"{slots}, {len(data.keeps)} keep option(s)", pieces]
    if data.configs_capped:
        notes.append("configurations per demand capped for size (optimal within the kept ones)")
    if report.message:
        notes.append(report.message)

    def key(plan: Plan) -> tuple[float, int, float]:
        return rgreedy.replan_rank(plan, rp.current, cost_c)

    choice = mip.choose_plan(report, gplan, "greedy replan",
                             lambda: extract_plan(m, rp, slot_ids, SolveOutcome(report.status)),
                             lambda plan: verify_plan(plan, rp.problem), key)
    plan = choice.plan
    obj, changes = rgreedy.migration_objective(plan, rp.current, cost_c)
    message = choice.message or _better_than(key(plan), key(gplan), gplan, plan)
    status = bound_status(obj, bound)
    head = (f"{message}; {changes} of {n_old} running placement(s) changed, "
            f"objective {plan.cost_per_hour:g}/h + {cost_c:g} x {changes}")
    info = SolveOutcome(status, objective=obj, bound=bound, gap=relative_gap(obj, bound), wall_s=wall,
                        build_s=report.build_s, solve_s=report.solve_s, message="; ".join([head, *notes]),
                        termination_raw=report.termination_raw, solver_name=report.solver_name)
    return replace(plan, solver=info)


def _better_than(key: tuple[float, int, float], g_key: tuple[float, int, float], gplan: Plan, plan: Plan) -> str:
    if key[0] < g_key[0]:
        return f"better than the greedy replan (objective {g_key[0]:g})"
    if key[1] < g_key[1]:
        return f"as cheap as the greedy replan, {g_key[1] - key[1]} change(s) fewer"
    return f"as cheap as the greedy replan, {gplan.total_share_pct - plan.total_share_pct:.4g} % less share"
