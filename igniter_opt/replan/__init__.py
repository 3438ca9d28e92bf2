"""Replanning: move from a running plan to one for new rates, changing as few servers as possible.

Each replanner module exposes ``solve(problem: ReplanProblem, options: SolveOptions) -> Plan``
(``options.migration_cost`` prices a running placement that does not survive);
``run_replanner`` checks the inputs, runs one, re-verifies its plan with the exact model and
diffs it against the current plan. ``diff`` holds the importable ``PlanDiff`` (JSON schema
``igniter-opt/diff/v1``); ``trace`` replays a rate trace step by step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from igniter_opt.checks import check_problem
from igniter_opt.domain import Plan
from igniter_opt.errors import InputError
from igniter_opt.placement import Violation, verify_plan
from igniter_opt.replan import columns, exact, greedy
from igniter_opt.replan.diff import ChangeKind, PlacementChange, PlanDiff, diff_plans, relabel_gpus
from igniter_opt.replan.problem import ReplanProblem, check_current_plan, empty_plan
from igniter_opt.solver import SolveOptions

__all__ = [
    "REPLANNERS", "SCRATCH_PLANNER", "ChangeKind", "PlacementChange", "PlanDiff", "ReplanOutcome", "ReplanProblem",
    "check_current_plan", "diff_plans", "empty_plan", "relabel_gpus", "run_replanner",
]

ReplanFn = Callable[[ReplanProblem, SolveOptions], Plan]

REPLANNERS: dict[str, ReplanFn] = {
    "greedy": greedy.solve,
    "exact": exact.solve,
    "columns": columns.solve,
}
# The planner that plans from scratch where a replanner's job needs one (a trace's resolve and peak
# strategies): the columns replanner's machinery is the exact planner's.
SCRATCH_PLANNER = {"greedy": "greedy", "exact": "exact", "columns": "exact"}


@dataclass(frozen=True)
class ReplanOutcome:
    """The new plan, what the exact model says about it, and its diff against the current plan."""

    plan: Plan
    violations: tuple[Violation, ...]
    diff: PlanDiff


def run_replanner(problem: ReplanProblem, planner: str, options: SolveOptions | None = None) -> ReplanOutcome:
    """Check the inputs, replan, re-verify the plan with the exact model and diff it."""
    try:
        solve = REPLANNERS[planner]
    except KeyError:
        raise InputError(f"unknown replanner '{planner}'; choose one of: {', '.join(REPLANNERS)}") from None
    options = (options or SolveOptions()).clocked()  # the checks count against the time limit
    if options.migration_cost < 0:
        raise InputError(f"the migration cost must be >= 0, got {options.migration_cost:g}")
    check_current_plan(problem.current, problem.perf_model)
    if problem.problem.workloads:
        check_problem(problem.problem, strict=True)
    plan = solve(problem, options)
    return ReplanOutcome(plan, tuple(verify_plan(plan, problem.problem)), diff_plans(problem.current, plan))
