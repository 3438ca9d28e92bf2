"""Planners: each module exposes ``solve(problem, options) -> Plan``; ``run_planner`` wraps them.

``run_planner`` validates the problem first and re-verifies the returned plan with the exact
performance model, so no plan leaves the library unchecked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from igniter_opt import checks
from igniter_opt.domain import Plan, PlanningProblem
from igniter_opt.errors import InputError
from igniter_opt.placement import Violation, verify_plan
from igniter_opt.planner import baselines, exact, greedy
from igniter_opt.solver import SolveOptions

SolveFn = Callable[[PlanningProblem, SolveOptions], Plan]

PLANNERS: dict[str, SolveFn] = {
    "greedy": greedy.solve,
    "exact": exact.solve,
    "ffd": baselines.solve_ffd,
    "gpulet": baselines.solve_gpulet,
}


@dataclass(frozen=True)
class PlanOutcome:
    """A plan and what the exact model says about it (empty ``violations``: feasible)."""

    plan: Plan
    violations: tuple[Violation, ...]


def planner_names() -> list[str]:
    return list(PLANNERS)


def run_planner(problem: PlanningProblem, planner: str, options: SolveOptions | None = None, *,
                checked: bool = False) -> PlanOutcome:
    """Check the problem, plan it, and re-verify the plan with the exact model (``checked``: the caller
    has run the problem checks, which are per workload, on every workload already). The time limit's
    clock starts before the checks (``SolveOptions.clock_start``), unless the caller started it."""
    try:
        solve = PLANNERS[planner]
    except KeyError:
        raise InputError(f"unknown planner '{planner}'; choose one of: {', '.join(PLANNERS)}") from None
    options = (options or SolveOptions()).clocked()  # the checks count against the time limit
    if not checked:
        checks.check_problem(problem, strict=True)
    # Every planner fills the predictions with the exact model (placement.assemble_plan);
    # verify_plan recomputes them from the plan itself, independently of the planner.
    plan = solve(problem, options)
    return PlanOutcome(plan, tuple(verify_plan(plan, problem)))
