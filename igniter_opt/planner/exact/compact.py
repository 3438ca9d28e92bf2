"""The exact planner by the compact model: one MIP over (demand, GPU slot, configuration).

Used where it proves optimality fast (small instances in which no workload is split, see
``planner.exact.choose_formulation``). The model is built *loosened* (``build_model(loosened=True)``):
its budgets are widened by a hair, so HiGHS's bound is a bound of the problem, not of a tightened
model; its plan is then re-judged by the kernel (``verify_plan``) like every plan. HiGHS with its
presolve and a start was seen to report an objective that the solution it handed back does not
have; the objective is recomputed from the loaded solution and, where they differ, the model is
solved again without presolve (``solve_checked``).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from igniter_opt.domain import Plan, PlanningProblem
from igniter_opt.placement import Packing, assemble_plan, verify_plan
from igniter_opt.planner.exact.claims import Evidence, progress_line
from igniter_opt.planner.exact.data import MipData, prepare
from igniter_opt.planner.exact.extract import choose_plan, extract_packing
from igniter_opt.planner.exact.highs import solve_model
from igniter_opt.planner.exact.model import build_model
from igniter_opt.planner.exact.pieces import compact_scope_text
from igniter_opt.solver import SolveOptions, SolveOutcome, SolveStatus

if TYPE_CHECKING:
    from pyomo.environ import ConcreteModel

FORMULATION = "compact MIP"
# Seconds kept at the end of the limit for reading the solution back and verifying it.
EXTRACT_RESERVE_S = 0.5


def loaded_cost(m: ConcreteModel) -> float | None:
    """The GPU cost of the solution loaded into ``m``, recomputed from its variables."""
    total = 0.0
    for g in m.GPUS:
        v = m.open[g].value
        if v is None:
            return None
        total += round(v)
    return total * m.data.price


def solve_checked(m: ConcreteModel, options: SolveOptions, deadline: float) -> tuple[SolveOutcome, list[str], bool]:
    """HiGHS on ``m``; (outcome, notes, whether its objective matches the loaded solution)."""
    report = solve_model(m, replace(options, time_limit_s=max(0.5, deadline - time.perf_counter())))
    if not report.status.has_solution or report.objective is None:
        return report, [], True
    cost = loaded_cost(m)
    if cost is not None and math.isclose(cost, report.objective, rel_tol=1e-9, abs_tol=1e-6):
        return report, [], True
    notes = [f"HiGHS reported GPU cost {report.objective:g} for a solution of cost {cost}; re-solved without presolve"]
    retry = solve_model(m, replace(options, time_limit_s=max(0.5, deadline - time.perf_counter())), presolve=False)
    again = loaded_cost(m) if retry.status.has_solution else None
    ok = retry.objective is None or (again is not None and math.isclose(again, retry.objective, abs_tol=1e-6))
    if not ok:
        notes.append("HiGHS contradicted itself again: its bound is not used")
    return retry, notes, ok


def _message(start: Plan, plan: Plan, from_solver: bool, why: str) -> str:
    if not from_solver:
        return why
    saved = start.num_gpus - plan.num_gpus
    if saved > 0:
        return f"{saved} GPU(s) fewer than greedy ({start.num_gpus})"
    return f"same GPUs as greedy, {start.total_share_pct - plan.total_share_pct:g} % less share"


def bound_gpus(data: MipData, report: SolveOutcome, consistent: bool) -> int:
    """Share and clique bounds, and HiGHS's bound of the loosened model when every candidate was
    in it (capped candidates bound the capped model only) and HiGHS did not contradict itself."""
    gpus = data.lower_bound_gpus()
    if report.bound is not None and consistent and not data.configs_capped:
        gpus = max(gpus, math.ceil(report.bound / data.price - 1e-6))
    return gpus


def solve_compact(problem: PlanningProblem, options: SolveOptions, t0: float, start: Packing
                  ) -> tuple[Plan, Evidence, SolveStatus | None]:
    """The plan, its evidence, and the solver's status when it gave no plan of its own."""
    deadline = t0 + options.time_limit_s - EXTRACT_RESERVE_S
    data = prepare(problem, start=start)
    m = build_model(data, loosened=True)
    trivial = math.ceil(sum(d.min_units for d in data.demands) / data.cap_units - 1e-9)
    if options.progress is not None:
        options.progress(progress_line(time.perf_counter() - t0, 0, data.lower_bound_gpus(),
                                       data.start_plan.num_gpus, None).replace(", 0 columns", ", compact MIP"))
    report, notes, consistent = solve_checked(m, options, deadline)
    gpus = bound_gpus(data, report, consistent)
    start_plan = data.start_plan
    choice = choose_plan(
        report, start_plan, "greedy plan",
        lambda: assemble_plan(problem, extract_packing(m), "exact", SolveOutcome(report.status)),
        lambda plan: verify_plan(plan, problem),
        lambda plan: (round(plan.cost_per_hour, 9), round(plan.total_share_pct, 6)),
        start_proved=start_plan.num_gpus <= gpus,
    )
    if report.objective is not None and report.bound is not None:
        notes.append(f"HiGHS's loosened model: GPU cost {report.objective:g}, its bound {report.bound:.6g}")
    if report.share_pct is not None:
        sb = report.share_bound_pct
        notes.append(f"share {report.share_pct:g} %" + (f" >= bound {sb:.6g} %" if sb is not None else ""))
    if data.configs_capped:
        notes.append("configurations per demand capped for size: HiGHS's bound bounds the capped model, not used")
    if report.message:
        notes.append(report.message)
    ev = Evidence(gpus, trivial,
                  compact_scope_text(problem, len(start.demands) != len(problem.workloads)),
                  _message(start_plan, choice.plan, choice.from_solver, choice.message),
                  FORMULATION, notes, report.termination_raw, report.solver_name or "highs",
                  build_s=report.build_s, solve_s=report.solve_s, share_pct=report.share_pct,
                  share_bound_pct=report.share_bound_pct)
    failed = None if report.status.has_solution else report.status
    if options.progress is not None:
        options.progress(progress_line(time.perf_counter() - t0, 0, gpus, choice.plan.num_gpus, None)
                         .replace(", 0 columns", ", compact MIP"))
    return choice.plan, ev, failed
