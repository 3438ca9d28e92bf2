"""The placement kernel: the one place that decides whether placements fit and meet their SLOs.

- ``packing``: the data shapes planners hand to the kernel (``Demand``, ``Slot``, ``GpuPacking``,
  ``Packing``).
- ``serving``: the pluggable serving models (what "meets its SLO" means: ``igniter``, ``full``,
  ``tail``) and the queue delay a server runs with.
- ``feasibility``: the one feasibility test with one tolerance, plan prediction and verification.
- ``bounds``: share units and the solo lower bound.
- ``alloc``: AllocGPU (the paper's Algorithm 2) vectorised over GPUs, with frozen slots.
- ``place``: Algorithm 1 over open GPUs (used by the greedy planner and the greedy replanner).
- ``assemble``: a packing as a Plan.
- ``queueing``: each request's latency under random arrivals (batch formation, queueing, service).

Model equations are evaluated only through ``PerformanceModel``.
"""

from igniter_opt.placement.assemble import assemble_plan
from igniter_opt.placement.bounds import (
    lower_share_units,
    lower_share_units_array,
    max_units,
    solo_feasible_units,
)
from igniter_opt.placement.feasibility import (
    REL_TOL,
    SHARE_TOL_PCT,
    Violation,
    over_capacity,
    over_capacity_message,
    plan_problem,
    predict_plan,
    verify_plan,
    violates,
)
from igniter_opt.placement.packing import Demand, GpuPacking, Packing, Slot, gpu_of
from igniter_opt.placement.serving import ServingModel, default_queue_delay_ms, serving_model_for

__all__ = [
    "REL_TOL", "SHARE_TOL_PCT", "Demand", "GpuPacking", "Packing", "ServingModel", "Slot", "Violation",
    "assemble_plan", "default_queue_delay_ms", "gpu_of", "lower_share_units", "lower_share_units_array",
    "max_units", "over_capacity", "over_capacity_message", "plan_problem", "predict_plan", "serving_model_for",
    "solo_feasible_units", "verify_plan", "violates",
]
