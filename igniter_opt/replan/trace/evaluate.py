"""Judging a step's plan against the trace's actual rates, through the placement kernel."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from igniter_opt.domain import Placement, Plan
from igniter_opt.perfmodel.model import PerformanceModel
from igniter_opt.placement import violates
from igniter_opt.placement.feasibility import predict_gpu
from igniter_opt.placement.serving import ServingModel

log = logging.getLogger(__name__)



# ---- evaluation --------------------------------------------------------------------------------
def predicted_misses(plan: Plan, rule: ServingModel, perf: PerformanceModel,
                     samples: Sequence[dict[str, float]]) -> int:
    """(workload, sample) pairs at which ``plan`` misses the workload's latency limit or rate.

    Each sample is the actual rate of every workload; a workload's placements share its actual rate
    in proportion to their planned rates, and each is judged by the kernel's test at that rate
    (its serving model's limit at the placement's batch and queue delay). A workload with a rate
    and no placement misses.
    """
    preds: dict[str, list[tuple[Placement, float, float]]] = {}
    for g in plan.gpus:
        for p, (lat, thr) in zip(g.placements, predict_gpu(perf, g.placements), strict=True):
            preds.setdefault(p.workload, []).append((p, lat, thr))
    misses = 0
    for sample in samples:
        for name, rate in sample.items():
            if rate <= 0:
                continue
            placed = preds.get(name)
            if not placed:
                misses += 1
                continue
            planned = sum(p.rate_rps for p, _, _ in placed)
            for p, lat, thr in placed:
                r = rate * (p.rate_rps / planned)
                if r > 0 and violates(np.array(lat), np.array(thr),
                                      np.array(rule.limit(p.slo_ms, r, p.batch, p.queue_delay_ms)), np.array(r)):
                    misses += 1
                    break
    return misses


