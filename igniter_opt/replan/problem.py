"""The replanning problem: a running plan and the workloads it must serve from now on."""

from __future__ import annotations

import math
from dataclasses import dataclass

from igniter_opt.domain import LatencyBudget, Plan, PlanningProblem
from igniter_opt.errors import PlanError
from igniter_opt.perfmodel.model import PerformanceModel
from igniter_opt.placement import over_capacity_message


@dataclass(frozen=True)
class ReplanProblem:
    """``current``: the plan running now; ``problem``: the new workloads (names identify workloads),
    under the same profile and latency budget as ``current``."""

    current: Plan
    problem: PlanningProblem

    @property
    def perf_model(self) -> PerformanceModel:
        return self.problem.perf_model


def empty_plan(perf: PerformanceModel, budget: LatencyBudget = LatencyBudget.IGNITER,
               margin: float | None = None) -> Plan:
    """A plan with no GPUs: replanning from it is planning from scratch."""
    return Plan(profile=perf.name, planner="none", latency_budget=str(budget), gpus=(),
                price_per_gpu_hour=perf.hardware.price_per_gpu_hour, margin=margin)


def check_current_plan(current: Plan, perf: PerformanceModel, source: str = "the current plan") -> None:
    """The current plan must come from the profile it is replanned with: same name, same GPU type,
    every model profiled. Raises ``PlanError`` with the fix otherwise."""
    if current.profile and current.profile != perf.name:
        raise PlanError(
            f"{source} was made with profile '{current.profile}', not '{perf.name}'; replan with "
            f"--profile {current.profile}, or plan from scratch with 'igniter-opt solve --profile {perf.name}'"
        )
    gpu_type = str(perf.gpu.get("name", perf.name))
    other = sorted({g.gpu_type for g in current.gpus if g.gpu_type and g.gpu_type != gpu_type})
    if other:
        raise PlanError(f"{source} runs on GPU type '{other[0]}', but profile '{perf.name}' is of '{gpu_type}'; "
                        "replan with the profile of the GPUs it runs on")
    for g in current.gpus:
        for p in g.placements:
            if p.model not in perf.models:
                raise PlanError(f"{source}: {p.workload} on {g.gpu_id} runs model '{p.model}', which profile "
                                f"'{perf.name}' lacks (it has: {', '.join(perf.model_names)})")
            if not (p.batch >= 1 and 0 < p.share_pct <= 100 and math.isfinite(p.share_pct)):
                raise PlanError(f"{source}: {p.workload} on {g.gpu_id}: batch {p.batch}, share {p.share_pct}")
        too_much = over_capacity_message(g)
        if too_much is not None:
            raise PlanError(f"{source}: {too_much}")
    ids = [g.gpu_id for g in current.gpus]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise PlanError(f"{source}: GPU id '{dup[0]}' appears twice; GPU ids must be unique")
