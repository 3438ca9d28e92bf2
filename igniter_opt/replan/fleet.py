"""Replanning a plan over a fleet of GPU types (issue 15): new rates, as few running servers changed as possible.

A running workload stays on the GPU type it runs on: moving it to another type starts a new server
anyway, and its type was chosen when the fleet was planned. A new workload goes to the type where it
costs least alone (price x the share its single-type plan needs), the fleet greedy's own rule; a
running one whose type can no longer serve it is moved the same way. Then each type's part is
replanned by the single-type replanner (``run_replanner``) from what runs on that type now, under
the running part's budget and serving model; a type with nothing running yet is planned from an
empty plan. The time limit is shared among the parts. A part over its type's count limit is an error
that says how many GPUs of which type the workloads given to it need.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

from igniter_opt.domain import DEFAULT_ATTAINMENT, DEFAULT_MARGIN, LatencyBudget, Plan, Workload
from igniter_opt.errors import PlanError, ProblemError
from igniter_opt.fleet import Fleet
from igniter_opt.placement import plan_problem
from igniter_opt.planner.fleet import FleetPart, FleetPlan, PartPlans, solo_costs, unservable_error
from igniter_opt.problems import BudgetChoice, make_problem
from igniter_opt.replan import ReplanOutcome, ReplanProblem, diff_plans, empty_plan, run_replanner
from igniter_opt.solver import SolveOptions


@dataclass(frozen=True)
class FleetReplan:
    """The new fleet plan and, per type it touches, the single-type replan (its plan, violations, diff)."""

    plan: FleetPlan
    outcomes: dict[str, ReplanOutcome]
    old_cost_per_hour: float  # the running plan's, at the fleet's prices


def current_types(fleet: Fleet, running: dict[str, Plan]) -> dict[str, int]:
    """Per running workload, the index of the fleet type it runs on; ``running`` maps a fleet type's name
    to the plan running on it. A running part whose type is not in the fleet is an error."""
    out: dict[str, int] = {}
    names = fleet.type_names()
    for name, plan in running.items():
        if name not in names:
            raise PlanError(f"the current plan runs on GPU type '{name}', which the fleet ({', '.join(names)}) "
                            "lacks; add it to --fleet")
        for _, p in plan.placements():
            out.setdefault(p.workload, names.index(name))
    return out


def _budget_of(running: dict[str, Plan]) -> BudgetChoice:
    """The budget every part is replanned under: the running parts' (they were planned together)."""
    plans = list(running.values())
    budgets = {p.latency_budget for p in plans}
    if len(budgets) > 1:
        raise PlanError(f"the current fleet plan's parts were made under different budgets "
                        f"({', '.join(sorted(budgets))}); replan each part on its own with 'igniter-opt replan'")
    first = plans[0]
    budget = LatencyBudget(first.latency_budget)
    # igniter and full plans may have been made with a serving overhead and utilization cap: keep them
    serial = budget is not LatencyBudget.TAIL and first.serving_overhead_ms is not None
    util = first.serving_max_utilization
    return BudgetChoice(budget, margin=first.margin if first.margin is not None else DEFAULT_MARGIN,
                        attainment=first.attainment if first.attainment is not None else DEFAULT_ATTAINMENT,
                        serving_overhead_ms=first.serving_overhead_ms if serial else None,
                        max_utilization=util if serial and util is not None and util < 1.0 else None)


def replan_fleet(running: dict[str, Plan], ws: tuple[Workload, ...], fleet: Fleet, planner: str = "greedy",
                 options: SolveOptions | None = None) -> FleetReplan:
    """Replan ``running`` (fleet type name -> plan running on it) for workloads ``ws`` (see the module docstring)."""
    t0 = time.perf_counter()
    options = options or SolveOptions()
    if not running:
        raise PlanError("the current plan has no parts: plan from scratch with 'igniter-opt solve --fleet'")
    choice = _budget_of(running)
    where = current_types(fleet, running)
    costs = solo_costs(fleet, ws, PartPlans(fleet, choice, "greedy", options))
    if any(all(math.isinf(c) for c in row) for row in costs):
        raise unservable_error(fleet, ws, costs)
    types = []
    for w, row in zip(ws, costs, strict=True):
        t = where.get(w.name)
        if t is None or math.isinf(row[t]):
            t = min(range(len(row)), key=lambda u: (row[u], u))
        types.append(t)
    touched = [t for t, ft in enumerate(fleet.types) if ft.name in running or t in types]
    deadline = t0 + options.time_limit_s
    parts, outcomes = [], {}
    for i, t in enumerate(touched):
        ft, perf = fleet.types[t], fleet.models[t]
        members = tuple(w for w, u in zip(ws, types, strict=True) if u == t)
        share = max(1.0, (deadline - time.perf_counter()) / (len(touched) - i))
        mine = options.within(share)
        if ft.name in running:
            current = running[ft.name]
            problem = plan_problem(current, perf, members)
        else:
            problem = make_problem(members, perf, choice)
            current = empty_plan(problem.perf_model, problem.latency_budget, choice.margin)
        current = replace(current, price_per_gpu_hour=ft.price_per_gpu_hour)
        outcome = run_replanner(ReplanProblem(current, problem), planner, mine)
        plan = replace(outcome.plan, price_per_gpu_hour=ft.price_per_gpu_hour)
        outcomes[ft.name] = ReplanOutcome(plan, outcome.violations, diff_plans(current, plan))
        if outcome.violations:
            raise ProblemError(f"the {planner} replan of {ft.name} violates the model: {outcome.violations[0].message}")
        if ft.max_count is not None and plan.num_gpus > ft.max_count:
            raise ProblemError(f"the workloads on {ft.name} need {plan.num_gpus} GPUs of it after the replan (limit "
                               f"{ft.max_count}); raise the limit, or plan the fleet again with 'igniter-opt solve "
                               "--fleet' (a replan keeps running workloads on their type)")
        if plan.num_gpus:
            parts.append(FleetPart(ft, plan))
    old_cost = sum(p.num_gpus * fleet.types[fleet.type_names().index(n)].price_per_gpu_hour for n, p in running.items())
    return FleetReplan(FleetPlan(tuple(parts), f"replan-{planner}", time.perf_counter() - t0), outcomes, old_cost)


__all__ = ["FleetReplan", "current_types", "replan_fleet"]
