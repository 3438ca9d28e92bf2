"""Turn a packing into a Plan, with every prediction computed from the plan's own configurations."""

from __future__ import annotations

from dataclasses import replace

from igniter_opt.domain import GpuAssignment, LatencyBudget, Placement, Plan, PlanningProblem, Prediction
from igniter_opt.placement.feasibility import (
    placement_queue_delay_ms,
    predict_gpu,
    request_predictions,
    with_request_predictions,
)
from igniter_opt.placement.packing import GpuPacking, Packing
from igniter_opt.solver import SolveOutcome


def _placements(problem: PlanningProblem, packing: Packing, gpu: GpuPacking) -> tuple[Placement, ...]:
    perf = problem.perf_model
    budget, margin = problem.latency_budget, problem.margin
    bare = []
    for s in gpu.slots:
        d = packing.demands[s.demand]
        bare.append(Placement(workload=d.workload.name, model=d.workload.model, slo_ms=d.workload.slo_ms,
                              rate_rps=d.rate_rps, batch=s.batch, share_pct=s.share_pct(perf.unit_pct),
                              queue_delay_ms=s.queue_delay_ms))
    preds = predict_gpu(perf, bare)
    out = [replace(p, predicted=Prediction(lat, thr)) for p, (lat, thr) in zip(bare, preds, strict=True)]
    return tuple(replace(p, queue_delay_ms=round(placement_queue_delay_ms(p, budget, margin), 6)) for p in out)


def assemble_plan(problem: PlanningProblem, packing: Packing, planner: str, solver: SolveOutcome,
                  gpu_ids: list[str] | None = None) -> Plan:
    """A Plan of ``packing``: placements in slot order, predictions filled in, the queue delay each
    server runs with, GPUs named by ``gpu_ids`` (default: a packing GPU's own id, else gpu0, gpu1, ...)."""
    perf = problem.perf_model
    gpu_type = str(perf.gpu.get("name", perf.name))
    per_gpu: list[list[Placement]] = [list(_placements(problem, packing, gpu)) for gpu in packing.gpus]
    budget = problem.latency_budget
    if perf.serving is not None:
        per_gpu = with_request_predictions(
            per_gpu, request_predictions(perf, perf.serving, per_gpu, budget, problem.margin))
    gpus = []
    for n, (gpu, ps) in enumerate(zip(packing.gpus, per_gpu, strict=True)):
        gid = gpu_ids[n] if gpu_ids is not None else (gpu.gpu_id if gpu.gpu_id is not None else f"gpu{n}")
        gpus.append(GpuAssignment(gpu_id=gid, gpu_type=gpu_type, placements=tuple(ps)))
    return Plan(
        profile=perf.name,
        planner=planner,
        latency_budget=str(budget),
        gpus=tuple(gpus),
        price_per_gpu_hour=perf.hardware.price_per_gpu_hour,
        solver=solver,
        margin=problem.margin if budget is LatencyBudget.FULL else None,
        attainment=problem.attainment if budget is LatencyBudget.TAIL else None,
        serving=perf.serving,
        **perf.serving_plan_fields(),
    )
