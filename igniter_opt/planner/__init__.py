"""Planners: each module exposes ``solve(problem, options) -> Plan``; ``run_planner`` wraps them.

``run_planner`` validates the problem first and re-verifies the returned plan with the exact
performance model, so no plan leaves the library unchecked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from igniter_opt.checks import check_problem
from igniter_opt.domain import Plan, PlanningProblem
from igniter_opt.errors import InputError
from igniter_opt.planner import greedy
from igniter_opt.planner.verify import Violation, predict_plan, verify_plan
from igniter_opt.solver import SolveOptions

SolveFn = Callable[[PlanningProblem, SolveOptions], Plan]

PLANNERS: dict[str, SolveFn] = {
    "greedy": greedy.solve,
}


@dataclass(frozen=True)
class PlanOutcome:
    """A plan and what the exact model says about it (empty ``violations``: feasible)."""

    plan: Plan
    violations: tuple[Violation, ...]


def planner_names() -> list[str]:
    return list(PLANNERS)


def run_planner(problem: PlanningProblem, planner: str, options: SolveOptions | None = None) -> PlanOutcome:
    """Check the problem, plan it, and re-verify the plan with the exact model."""
    try:
        solve = PLANNERS[planner]
    except KeyError:
        raise InputError(f"unknown planner '{planner}'; choose one of: {', '.join(PLANNERS)}") from None
    check_problem(problem, strict=True)
    plan = solve(problem, options or SolveOptions())
    plan = predict_plan(plan, problem.perf_model)
    return PlanOutcome(plan, tuple(verify_plan(plan, problem)))
