"""Run several planners on one problem and tabulate what each costs and what the exact model says."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from igniter_opt.domain import Plan, PlanningProblem
from igniter_opt.errors import InputError
from igniter_opt.planner import PLANNERS, PlanOutcome, run_planner
from igniter_opt.solver import SolveOptions


@dataclass(frozen=True)
class ComparisonRow:
    """One planner's result on the problem (cost per hour, shares in %, times in s)."""

    planner: str
    status: str
    gpus: int
    cost_per_hour: float
    total_share_pct: float
    slo_misses: int  # workloads with at least one placement predicted to miss latency or rate
    violations: int  # every violation (latency, throughput, share, coverage)
    bound: float | None
    gap: float | None
    wall_s: float
    message: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def parse_planners(spec: str) -> list[str]:
    """'greedy,exact' -> ['greedy', 'exact'], each checked against the registry."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise InputError("--planners is empty; give a comma-separated list, e.g. greedy,exact")
    unknown = [n for n in names if n not in PLANNERS]
    if unknown:
        raise InputError(f"unknown planner(s) {', '.join(unknown)}; choose from: {', '.join(PLANNERS)}")
    return list(dict.fromkeys(names))


def _row(name: str, outcome: PlanOutcome, wall_s: float) -> ComparisonRow:
    plan: Plan = outcome.plan
    s = plan.solver
    missed = {v.workload for v in outcome.violations if v.kind in ("latency", "throughput")}
    return ComparisonRow(
        planner=name, status=s.status, gpus=plan.num_gpus, cost_per_hour=plan.cost_per_hour,
        total_share_pct=round(plan.total_share_pct, 6), slo_misses=len(missed),
        violations=len(outcome.violations), bound=s.bound, gap=s.gap, wall_s=wall_s, message=s.message,
    )


def compare_planners(
    problem: PlanningProblem, planners: list[str], options: SolveOptions | None = None
) -> tuple[list[ComparisonRow], dict[str, PlanOutcome]]:
    """Run each planner through ``run_planner`` (checked and re-verified) and summarise it."""
    rows, outcomes = [], {}
    for name in planners:
        t0 = time.perf_counter()
        outcome = run_planner(problem, name, options)
        wall = time.perf_counter() - t0
        outcomes[name] = outcome
        rows.append(_row(name, outcome, wall))
    return rows, outcomes
