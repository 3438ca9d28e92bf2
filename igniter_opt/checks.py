"""Validate a planning problem before any planner runs: one ``check_<issue>`` per problem."""

from __future__ import annotations

from dataclasses import dataclass

from igniter_opt.domain import LatencyBudget, PlanningProblem
from igniter_opt.errors import ProblemError
from igniter_opt.planner.budget import inference_limit_ms, lower_share_units, min_feasible_slo_ms


@dataclass(frozen=True)
class Issue:
    workload: str | None
    message: str
    fatal: bool = True


def check_models_profiled(problem: PlanningProblem) -> list[Issue]:
    perf = problem.perf_model
    return [
        Issue(w.name, f"workload '{w.name}': model '{w.model}' is not in profile '{perf.name}' "
                      f"(it has: {', '.join(perf.model_names)}); profile it or fix the workloads file")
        for w in problem.workloads
        if w.model not in perf.models
    ]


def check_slo_reachable(problem: PlanningProblem) -> list[Issue]:
    """An SLO that batch 1 at 100 % cannot meet alone can never be met."""
    perf = problem.perf_model
    out = []
    for w in problem.workloads:
        if w.model not in perf.models:
            continue
        limit = inference_limit_ms(w.slo_ms, w.rate_rps, 1, problem.latency_budget, problem.margin)
        lat, _ = perf.solo(w.model, 1, 100.0)
        if lower_share_units(perf, w.model, 1, limit) is None or lat > limit:
            best = min_feasible_slo_ms(perf, w, problem.latency_budget, problem.margin)
            out.append(Issue(
                w.name,
                f"workload '{w.name}' ({w.model}): SLO {w.slo_ms:g} ms cannot be met even alone at 100 % "
                f"under the '{problem.latency_budget}' budget; the smallest SLO that works is {best:.2f} ms",
            ))
    return out


def check_margin(problem: PlanningProblem) -> list[Issue]:
    if problem.latency_budget is LatencyBudget.FULL and not 0 <= problem.margin < 1:
        return [Issue(None, f"margin {problem.margin} must be in [0, 1)")]
    return []


CHECKS = (check_models_profiled, check_slo_reachable, check_margin)


def check_problem(problem: PlanningProblem, *, strict: bool = True) -> list[Issue]:
    """Run every check; with ``strict`` the first fatal issue raises ``ProblemError``."""
    issues = [issue for check in CHECKS for issue in check(problem)]
    if strict:
        fatal = [i for i in issues if i.fatal]
        if fatal:
            more = f" (and {len(fatal) - 1} more)" if len(fatal) > 1 else ""
            raise ProblemError(fatal[0].message + more)
    return issues
