"""The exact planner: a mixed-integer program over candidate (batch, queue delay, share)
configurations, built, solved and read back in separate stages.

- ``configs``: each demand's candidate configurations with their GPU-time budgets, and dominance.
- ``data``: ``prepare``, from a problem (and a start) to ``MipData`` in named steps.
- ``model``: ``build_model``, one ``add_<family>_constraints`` per constraint family.
- ``highs``: ``solve_model``, HiGHS with a watchdog; outcomes mapped to ``SolveStatus``.
- ``extract``: the solution as a packing, and the one fallback policy.

Demands are the greedy planner's (a workload too large for one GPU is split the same way); the
greedy plan is the MIP start and the plan to beat. Replanning (``igniter_opt.replan.exact``)
passes a ``Migration``: the first GPU slots stand for the running GPUs, each running placement
that could survive becomes a ``KeepOption``, and the objective adds the migration cost per
running placement not kept.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from igniter_opt.domain import Plan, PlanningProblem
from igniter_opt.placement import assemble_plan, verify_plan
from igniter_opt.planner.exact.configs import Config, ConfigTable, batch_range, config_table
from igniter_opt.planner.exact.data import (
    DEFAULT_MAX_ASSIGN_VARS,
    KeepOption,
    MipData,
    MipDemand,
    Migration,
    prepare,
    slot_allowed,
)
from igniter_opt.planner.exact.extract import assignment_packing, choose_plan, extract_packing, extract_slots
from igniter_opt.planner.exact.model import INSTALL_HINT, build_model, set_warm_start
from igniter_opt.planner.exact.highs import require_highs, solve_model
from igniter_opt.solver import SolveOptions, SolveOutcome, SolveStatus, relative_gap

if TYPE_CHECKING:
    from pyomo.environ import ConcreteModel

PLANNER_NAME = "exact"

__all__ = [
    "DEFAULT_MAX_ASSIGN_VARS", "INSTALL_HINT", "PLANNER_NAME", "Config", "ConfigTable", "KeepOption", "Migration",
    "MipData", "MipDemand", "assignment_packing", "batch_range", "build_model", "config_table", "cost_bound",
    "extract_packing", "extract_slots", "prepare", "require_highs", "set_warm_start", "slot_allowed", "solve",
    "solve_model",
]


def cost_bound(data: MipData, report: SolveOutcome | None) -> float:
    """A certified lower bound on the plan cost: the share bound ceil(sum of smallest shares / 100 %),
    the largest conflict clique, and the solver's bound (GPU counts are integers). The solver's
    bound is used only when every candidate configuration was in the model: with the candidates
    capped for size it bounds the capped model, not the problem."""
    gpus = data.lower_bound_gpus()
    if report is not None and report.bound is not None and not data.configs_capped:
        gpus = max(gpus, math.ceil(report.bound / data.price - 1e-6))
    return gpus * data.price


def solve(problem: PlanningProblem, options: SolveOptions | None = None) -> Plan:
    """Plan ``problem`` exactly (within the candidate configurations) with a proven bound."""
    options = options or SolveOptions()
    t0 = time.perf_counter()
    require_highs()
    data = prepare(problem)
    m = build_model(data)
    remaining = max(1.0, options.time_limit_s - (time.perf_counter() - t0))
    report = solve_model(m, replace(options, time_limit_s=remaining))
    return finish(problem, data, m, report, time.perf_counter() - t0)


def _notes(data: MipData, report: SolveOutcome) -> list[str]:
    notes = [f"HiGHS {report.termination_raw}"]
    if report.objective is not None and report.bound is not None:
        notes.append(f"HiGHS's model: GPU cost {report.objective:g} >= its bound {report.bound:.6g}")
    if report.share_pct is not None:
        sb = report.share_bound_pct
        notes.append(f"share {report.share_pct:g} %" + (f" >= bound {sb:.6g} %" if sb is not None else ""))
    if data.configs_capped:
        notes.append("configurations per demand capped for size (optimal within the kept ones)")
    if report.message:
        notes.append(report.message)
    return notes


def finish(problem: PlanningProblem, data: MipData, m: ConcreteModel, report: SolveOutcome, wall_s: float) -> Plan:
    """Choose between the MIP's plan and the start, fill the solver block, verify."""
    start = data.start_plan
    bound = cost_bound(data, report)
    notes = _notes(data, report)
    choice = choose_plan(
        report, start, "greedy plan",
        lambda: assemble_plan(problem, extract_packing(m), PLANNER_NAME, SolveOutcome(report.status)),
        lambda plan: verify_plan(plan, problem),
        lambda plan: (round(plan.cost_per_hour, 9), round(plan.total_share_pct, 6)),
        start_proved=report.status is SolveStatus.OPTIMAL and bound >= start.cost_per_hour - 1e-9,
    )
    plan = choice.plan
    message = choice.message
    if choice.from_solver:
        saved = start.num_gpus - plan.num_gpus
        message = (f"{saved} GPU(s) fewer than greedy ({start.num_gpus})" if saved > 0 else
                   f"same GPUs as greedy, {start.total_share_pct - plan.total_share_pct:g} % less share")
    status = report.status
    cost = plan.cost_per_hour
    if status is SolveStatus.OPTIMAL and cost > bound + 1e-9:
        status = SolveStatus.FEASIBLE  # optimal for the capped model only
        notes.append("optimal within the kept configurations, not proven for the problem")
    info = SolveOutcome(status, objective=cost, bound=bound, gap=relative_gap(cost, bound), wall_s=wall_s,
                        build_s=report.build_s, solve_s=report.solve_s, message="; ".join([message, *notes]),
                        termination_raw=report.termination_raw, solver_name=report.solver_name,
                        share_pct=report.share_pct, share_bound_pct=report.share_bound_pct)
    return replace(plan, planner=PLANNER_NAME, solver=info)
