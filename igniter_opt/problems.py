"""Building a planning problem from what a user gives: workloads, a profile and a latency budget."""

from __future__ import annotations

import os
from dataclasses import dataclass

from igniter_opt.domain import DEFAULT_ATTAINMENT, DEFAULT_MARGIN, LatencyBudget, PlanningProblem, Workload
from igniter_opt.perfmodel import PerformanceModel, load_profile
from igniter_opt.placement.serving import configure_serving


@dataclass(frozen=True)
class BudgetChoice:
    """How the SLO is to be met: the budget and its parameters, as the user chose them."""

    budget: LatencyBudget = LatencyBudget.IGNITER
    margin: float = DEFAULT_MARGIN
    attainment: float = DEFAULT_ATTAINMENT
    serving_overhead_ms: float | None = None
    max_utilization: float | None = None
    max_batch: int | None = None


def make_problem(workloads: tuple[Workload, ...], profile: str | os.PathLike[str] | PerformanceModel,
                 choice: BudgetChoice) -> PlanningProblem:
    """The problem of planning ``workloads`` on the profile's GPU type under ``choice``."""
    perf = profile if isinstance(profile, PerformanceModel) else load_profile(profile)
    perf = configure_serving(perf, choice.budget, choice.serving_overhead_ms, choice.max_utilization)
    return PlanningProblem(workloads, perf, choice.budget, choice.margin, choice.attainment, choice.max_batch)
