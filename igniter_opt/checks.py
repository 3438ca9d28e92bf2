"""Validate a planning problem before any planner runs: one ``check_<issue>`` per problem."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from igniter_opt.domain import PlanningProblem
from igniter_opt.errors import ProblemError
from igniter_opt.placement import lower_share_units, violates
from igniter_opt.placement.serving import serving_model_for, unreachable_slo_error


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
    """An SLO that no configuration meets alone on a whole GPU can never be met.

    igniter and full: batch 1 at 100 %; tail: the best batch and queue delay at 100 %.
    """
    perf = problem.perf_model
    rule = serving_model_for(problem)
    out = []
    for w in problem.workloads:
        if w.model not in perf.models:
            continue
        best = rule.min_slo_ms(perf, w.model, w.rate_rps)
        if rule.budget.value == "tail":
            reachable = bool(np.isfinite(best)) and best <= w.slo_ms
        else:
            limit = rule.limit(w.slo_ms, w.rate_rps, 1)
            lat, _ = perf.solo(w.model, 1, perf.max_units * perf.unit_pct)
            reachable = (lower_share_units(perf, w.model, 1, limit) is not None
                         and not violates(np.array(lat), np.array(np.inf), np.array(limit), np.array(0.0)))
        if not reachable:
            out.append(Issue(w.name, str(unreachable_slo_error(problem, w))))
    return out


CHECKS = (check_models_profiled, check_slo_reachable)


def check_problem(problem: PlanningProblem, *, strict: bool = True) -> list[Issue]:
    """Run every check; with ``strict`` the first fatal issue raises ``ProblemError``."""
    issues = [issue for check in CHECKS for issue in check(problem)]
    if strict:
        fatal = [i for i in issues if i.fatal]
        if fatal:
            more = f" (and {len(fatal) - 1} more)" if len(fatal) > 1 else ""
            raise ProblemError(fatal[0].message + more)
    return issues
