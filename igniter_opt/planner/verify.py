"""Independent re-verification of a plan with the exact (nonlinear) performance model.

Everything is recomputed from the plan itself, never from a planner's internal state.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, replace

from igniter_opt.domain import GpuAssignment, LatencyBudget, Plan, PlanningProblem, Prediction
from igniter_opt.perfmodel.model import PerformanceModel
from igniter_opt.planner.budget import inference_limit_ms

# Relative slack for float noise only; anything larger is a real violation.
REL_TOL = 1e-9
SHARE_TOL_PCT = 1e-6


@dataclass(frozen=True)
class Violation:
    """One way a plan breaks a requirement; ``excess`` is how far, relative to the limit."""

    kind: str  # latency | throughput | share | coverage | model | batch
    gpu_id: str | None
    workload: str | None
    message: str
    excess: float = 0.0


def predict_plan(plan: Plan, perf: PerformanceModel) -> Plan:
    """A copy of ``plan`` with every placement's ``predicted`` block recomputed."""
    gpus = []
    for g in plan.gpus:
        preds = perf.predict_gpu([(p.model, p.batch, p.share_pct) for p in g.placements])
        placements = tuple(
            replace(p, predicted=Prediction(lat, thr)) for p, (lat, thr) in zip(g.placements, preds, strict=True)
        )
        gpus.append(GpuAssignment(g.gpu_id, g.gpu_type, placements))
    return replace(plan, gpus=tuple(gpus))


def verify_plan(plan: Plan, problem: PlanningProblem) -> list[Violation]:
    """Check ``plan`` against ``problem`` under the exact model. An empty list means feasible."""
    perf = problem.perf_model
    budget = problem.latency_budget
    out: list[Violation] = []
    served: dict[str, float] = defaultdict(float)
    for g in plan.gpus:
        total = g.total_share_pct
        if total > 100.0 + SHARE_TOL_PCT:
            out.append(Violation("share", g.gpu_id, None, f"{g.gpu_id}: shares sum to {total:g} % > 100 %",
                                 total / 100.0 - 1.0))
        unknown = [p for p in g.placements if p.model not in perf.models]
        for p in unknown:
            out.append(Violation("model", g.gpu_id, p.workload, f"{p.workload}: model '{p.model}' not in profile"))
        if unknown:
            continue
        preds = perf.predict_gpu([(p.model, p.batch, p.share_pct) for p in g.placements])
        for p, (lat, thr) in zip(g.placements, preds, strict=True):
            served[p.workload] += p.rate_rps
            if p.batch < 1:
                out.append(Violation("batch", g.gpu_id, p.workload, f"{p.workload}: batch {p.batch} < 1"))
                continue
            limit = inference_limit_ms(p.slo_ms, p.rate_rps, p.batch, budget, problem.margin)
            if lat > limit * (1 + REL_TOL):
                out.append(Violation(
                    "latency", g.gpu_id, p.workload,
                    f"{p.workload} on {g.gpu_id}: predicted {lat:.3f} ms > limit {limit:.3f} ms",
                    (lat - limit) / max(limit, 1e-9),
                ))
            if thr < p.rate_rps * (1 - REL_TOL):
                out.append(Violation(
                    "throughput", g.gpu_id, p.workload,
                    f"{p.workload} on {g.gpu_id}: predicted {thr:.1f} req/s < rate {p.rate_rps:.1f} req/s",
                    (p.rate_rps - thr) / p.rate_rps,
                ))
    for w in problem.workloads:
        got = served.get(w.name, 0.0)
        if not math.isclose(got, w.rate_rps, rel_tol=1e-6, abs_tol=1e-6):
            out.append(Violation("coverage", None, w.name,
                                 f"{w.name}: plan serves {got:g} req/s of {w.rate_rps:g} req/s",
                                 abs(w.rate_rps - got) / w.rate_rps))
    names = {w.name for w in problem.workloads}
    for extra in sorted(set(served) - names):
        out.append(Violation("coverage", None, extra, f"{extra}: in the plan but not a workload of the problem"))
    if budget is LatencyBudget.FULL and not 0 <= problem.margin < 1:
        out.append(Violation("batch", None, None, f"margin {problem.margin} outside [0, 1)"))
    return sorted(out, key=lambda v: -v.excess)
