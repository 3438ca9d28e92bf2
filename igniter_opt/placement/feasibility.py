"""The one feasibility test, with one tolerance, and a plan's re-verification from the plan itself.

A placement is feasible when its predicted batch latency is within its serving model's limit and
its predicted throughput at least its rate (``violates``); a GPU when its shares sum to at most
100 % and every placement on it is feasible next to the others. Every planner, the verifier, the
predictor and the trace evaluator decide with these functions and nothing else.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from igniter_opt.domain import (
    DEFAULT_ATTAINMENT,
    DEFAULT_MARGIN,
    GpuAssignment,
    LatencyBudget,
    Placement,
    Plan,
    PlanningProblem,
    Prediction,
    ServingParams,
    Workload,
)
from igniter_opt.errors import PlanError
from igniter_opt.perfmodel.model import PerformanceModel
from igniter_opt.placement.serving import ServingModel, default_queue_delay_ms, serving_model_for

# Relative slack on a limit or a rate, for float noise only; anything larger is a violation.
REL_TOL = 1e-9
# Shares summing to 100 % plus this (percentage points) still fit: float noise of plan files.
SHARE_TOL_PCT = 1e-6


def tolerant_bounds(limit: np.ndarray | float, rate: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """The one tolerance policy: the latency and throughput a placement must stay within, ``limit``
    and ``rate`` widened by ``REL_TOL``. A limit the serving model cannot give (NaN: outside what it
    knows) becomes -inf: nothing meets it."""
    limit = np.asarray(limit, float)
    return np.where(np.isnan(limit), -np.inf, limit * (1.0 + REL_TOL)), np.asarray(rate, float) * (1.0 - REL_TOL)


def exceeds(lat: np.ndarray | float, thr: np.ndarray | float, latency_bound: np.ndarray,
            rate_bound: np.ndarray) -> np.ndarray:
    """True where a placement's latency is above its bound or its throughput below its bound
    (bounds from ``tolerant_bounds``; the hot loops keep them precomputed)."""
    return (lat > latency_bound) | (thr < rate_bound)


def violates(lat: np.ndarray | float, thr: np.ndarray | float, limit: np.ndarray | float,
             rate: np.ndarray | float) -> np.ndarray:
    """True where a placement misses its latency limit or its rate (vectorised, scalars broadcast): the one test."""
    return exceeds(lat, thr, *tolerant_bounds(limit, rate))


def over_capacity(total_share_pct: float | np.ndarray) -> bool | np.ndarray:
    """True where a GPU's shares sum to more than 100 %."""
    return total_share_pct > 100.0 + SHARE_TOL_PCT


def over_capacity_message(g: GpuAssignment) -> str | None:
    """The one message for a GPU whose shares sum to more than 100 % (None when they fit): what
    every command that reads a plan (verify, predict, apply, replan) says about it."""
    total = g.total_share_pct
    if not over_capacity(total):
        return None
    shares = " + ".join(f"{p.workload} {p.share_pct:.2f}" for p in g.placements)
    return (f"{g.gpu_id}: shares sum to {total:.2f} % > 100 % ({shares}); lower a share or move a placement "
            "to another GPU")


@dataclass(frozen=True)
class Violation:
    """One way a plan breaks a requirement; ``excess`` is how far, relative to the limit."""

    kind: str  # latency | throughput | share | coverage | model | batch
    gpu_id: str | None
    workload: str | None
    message: str
    excess: float = 0.0


def placement_queue_delay_ms(p: Placement, budget: LatencyBudget, margin: float) -> float:
    """The queue delay a placement runs with: its own, else the one ``apply`` configures."""
    if p.queue_delay_ms is not None:
        return p.queue_delay_ms
    lat = p.predicted.latency_ms if p.predicted is not None else None
    return default_queue_delay_ms(p.slo_ms, p.rate_rps, p.batch, budget, margin, lat)


def predict_gpu(perf: PerformanceModel, placements: Sequence[Placement]) -> list[tuple[float, float]]:
    """(latency_ms, throughput_rps) of each placement of one GPU, next to the others."""
    return perf.predict_gpu([(p.model, p.batch, p.share_pct) for p in placements])


def request_predictions(perf: PerformanceModel, serving: ServingParams,
                        gpus: Sequence[Sequence[Placement]], budget: LatencyBudget,
                        margin: float) -> list[list[tuple[float, float, float]]]:
    """(p50_ms, p99_ms, within_slo) of the requests of each placement of each GPU, under random arrivals.

    A batch's service time is its GPU time next to the others on its GPU (the paper's latency,
    whatever overhead the plan was made with) plus the measured per-batch serving overhead.
    Placements without a known SLO or rate get NaN. All GPUs go through the queueing model at
    once (a plan of a thousand GPUs would otherwise pay its per-call cost a thousand times).
    """
    from igniter_opt.placement import queueing

    bare = perf.with_serving_overhead(None)
    flat = [(g, i, p, lat) for g, ps in enumerate(gpus)
            for i, (p, (lat, _)) in enumerate(zip(ps, predict_gpu(bare, ps), strict=True))]
    out = [[(math.nan, math.nan, math.nan)] * len(ps) for ps in gpus]
    known = [x for x in flat if math.isfinite(x[2].rate_rps) and x[2].rate_rps > 0
             and math.isfinite(x[2].slo_ms) and math.isfinite(x[3])]
    if not known:
        return out
    rate = np.array([p.rate_rps for _, _, p, _ in known], float)
    batch = np.array([p.batch for _, _, p, _ in known], float)
    delay = np.array([placement_queue_delay_ms(p, budget, margin) for _, _, p, _ in known], float)
    service = np.array([t + serving.batch_overhead_ms(p.batch, p.model) for _, _, p, t in known], float)
    slo = np.array([p.slo_ms for _, _, p, _ in known], float)
    p50, p99, within = queueing.request_latency(rate, batch, delay, service, slo,
                                                queueing.QueueingParams.from_serving(serving))
    for j, (g, i, _, _) in enumerate(known):
        out[g][i] = (float(p50[j]), float(p99[j]), float(within[j]))
    return out


def with_request_predictions(gpus: Sequence[Sequence[Placement]],
                             reqs: list[list[tuple[float, float, float]]]) -> list[list[Placement]]:
    """``gpus`` with each placement's ``predicted`` block given its request quantiles (placements
    must already carry a prediction)."""
    return [[_with_request_quantiles(p, *r) for p, r in zip(ps, rs, strict=True)]
            for ps, rs in zip(gpus, reqs, strict=True)]


def _with_request_quantiles(p: Placement, p50_ms: float, p99_ms: float, within_slo: float) -> Placement:
    if p.predicted is None:
        raise PlanError(f"{p.workload}: request quantiles need the placement's batch prediction first")
    return replace(p, predicted=replace(p.predicted, p50_ms=p50_ms, p99_ms=p99_ms, within_slo=within_slo))


def predict_plan(plan: Plan, perf: PerformanceModel, serving: ServingParams | None = None) -> Plan:
    """A copy of ``plan`` with every ``predicted`` block recomputed from the plan itself.

    With ``serving`` (the serving stack's measurements), each placement also gets the per-request
    p50, p99 and fraction within its SLO, and a placement without a queue delay gets the one
    ``apply`` would configure for it.
    """
    budget = LatencyBudget(plan.latency_budget)
    margin = plan.margin or 0.0
    per_gpu = []
    for g in plan.gpus:
        preds = predict_gpu(perf, g.placements)
        placements = [replace(p, predicted=Prediction(lat, thr))
                      for p, (lat, thr) in zip(g.placements, preds, strict=True)]
        if serving is not None:
            placements = [replace(p, queue_delay_ms=placement_queue_delay_ms(p, budget, margin)) for p in placements]
        per_gpu.append(placements)
    if serving is not None:
        per_gpu = with_request_predictions(per_gpu, request_predictions(perf, serving, per_gpu, budget, margin))
    gpus = tuple(GpuAssignment(g.gpu_id, g.gpu_type, tuple(ps)) for g, ps in zip(plan.gpus, per_gpu, strict=True))
    return replace(plan, gpus=gpus, serving=serving if serving is not None else plan.serving)


def _placement_violations(g: GpuAssignment, p: Placement, lat: float, thr: float, limit: float) -> list[Violation]:
    out = []
    if violates(np.array(lat), np.array(thr), np.array(limit), np.array(p.rate_rps)):
        if math.isnan(limit):
            out.append(Violation("latency", g.gpu_id, p.workload,
                                 f"{p.workload} on {g.gpu_id}: batch {p.batch} "
                                 f"with a {p.queue_delay_ms:g} ms queue delay "
                                 f"at {p.rate_rps:g} req/s is outside what the serving model predicts", 1.0))
        elif not lat <= limit * (1 + REL_TOL):
            out.append(Violation("latency", g.gpu_id, p.workload,
                                 f"{p.workload} on {g.gpu_id}: predicted {lat:.3f} ms > limit {limit:.3f} ms",
                                 (lat - limit) / max(abs(limit), 1e-9) if math.isfinite(limit) else 1.0))
        if thr < p.rate_rps * (1 - REL_TOL):
            out.append(Violation("throughput", g.gpu_id, p.workload,
                                 f"{p.workload} on {g.gpu_id}: predicted {thr:.1f} req/s < rate {p.rate_rps:.1f} req/s",
                                 (p.rate_rps - thr) / p.rate_rps))
    return out


def _gpu_violations(g: GpuAssignment, problem: PlanningProblem, rule: ServingModel,
                    served: dict[str, float]) -> list[Violation]:
    perf = problem.perf_model
    out: list[Violation] = []
    too_much = over_capacity_message(g)
    if too_much is not None:
        out.append(Violation("share", g.gpu_id, None, too_much, g.total_share_pct / 100.0 - 1.0))
    unknown = [p for p in g.placements if p.model not in perf.models]
    for p in unknown:
        out.append(Violation("model", g.gpu_id, p.workload, f"{p.workload}: model '{p.model}' not in profile"))
    if unknown:
        return out
    max_batch = problem.batch_limit
    for p, (lat, thr) in zip(g.placements, predict_gpu(perf, g.placements), strict=True):
        served[p.workload] += p.rate_rps
        if p.batch < 1 or (max_batch is not None and p.batch > max_batch):
            out.append(Violation("batch", g.gpu_id, p.workload,
                                 f"{p.workload} on {g.gpu_id}: batch {p.batch} outside 1..{max_batch} (the batches "
                                 "the profile measured; --max-batch N to extrapolate)"))
            continue
        delay = placement_queue_delay_ms(p, problem.latency_budget, problem.margin)
        limit = rule.limit(p.slo_ms, p.rate_rps, p.batch, delay)
        out.extend(_placement_violations(g, p, lat, thr, limit))
    return out


def plan_problem(plan: Plan, perf: PerformanceModel, workloads: tuple[Workload, ...] | None = None) -> PlanningProblem:
    """The problem a plan describes: its workloads (or ``workloads``; per workload, its model and
    SLO and the sum of its placements' rates), under the plan's own budget, margin, attainment and
    serving model (the overhead and utilization it was made with, its serving measurements)."""
    if workloads is None:
        found: dict[str, Workload] = {}
        for _, p in plan.placements():
            w = found.get(p.workload)
            found[p.workload] = Workload(p.workload, p.model, p.slo_ms, p.rate_rps + (w.rate_rps if w else 0.0))
        workloads = tuple(found.values())
    perf = perf.with_serving_overhead(plan.serving_overhead_ms, plan.serving_max_utilization,
                                      plan.serving_overhead_per_request_ms, plan.serving_model_overheads)
    if plan.serving is not None:
        perf = perf.with_serving(plan.serving)
    return PlanningProblem(workloads, perf, LatencyBudget(plan.latency_budget),
                           plan.margin if plan.margin is not None else DEFAULT_MARGIN,
                           plan.attainment if plan.attainment is not None else DEFAULT_ATTAINMENT)


def verify_plan(plan: Plan, problem: PlanningProblem) -> list[Violation]:
    """Check ``plan`` against ``problem`` under the exact model; an empty list means feasible.

    Everything is recomputed from the plan itself (never from a planner's internal state):
    shares per GPU, each placement's latency against its serving model's limit and throughput
    against its rate next to its co-runners, batches within the profile's, and that every
    workload's rate is served exactly once. Sorted worst first.
    """
    rule = serving_model_for(problem)
    served: dict[str, float] = defaultdict(float)
    out = [v for g in plan.gpus for v in _gpu_violations(g, problem, rule, served)]
    for w in problem.workloads:
        got = served.get(w.name, 0.0)
        if not math.isclose(got, w.rate_rps, rel_tol=1e-6, abs_tol=1e-6):
            out.append(Violation("coverage", None, w.name,
                                 f"{w.name}: plan serves {got:g} req/s of {w.rate_rps:g} req/s",
                                 abs(w.rate_rps - got) / w.rate_rps))
    names = {w.name for w in problem.workloads}
    for extra in sorted(set(served) - names):
        out.append(Violation("coverage", None, extra, f"{extra}: in the plan but not a workload of the problem"))
    return sorted(out, key=lambda v: -v.excess)
