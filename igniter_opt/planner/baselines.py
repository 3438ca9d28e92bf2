"""Baselines the paper compares against, judged with this project's exact model.

``ffd`` (the paper's FFD+): first-fit decreasing by the lower-bound share, blind to
interference: every demand keeps its solo lower-bound share and batch.

``gpulet`` (the paper's gpu-lets+): each demand's share is rounded up to the smallest of
{10, 20, 40, 50, 60, 80, 100} % at least its lower bound; at most two demands per GPU; best fit
(the open GPU left with the least free share), else a new GPU.

Both start from the same demands as the greedy planner (same batches, same split of workloads
too large for one GPU). Neither checks interference, so their plans may miss SLOs under the
exact model; ``run_planner`` reports those violations, they are never hidden.
"""

from __future__ import annotations

import math
import time

from igniter_opt.domain import Plan, PlanningProblem
from igniter_opt.placement import Demand, Packing, assemble_plan, gpu_of
from igniter_opt.planner import greedy
from igniter_opt.solver import SolveOptions, SolveOutcome, SolveStatus

GPULET_SHARES_PCT = (10, 20, 40, 50, 60, 80, 100)
GPULET_MAX_PER_GPU = 2


def _info(problem: PlanningProblem, n_gpus: int, t0: float) -> SolveOutcome:
    return SolveOutcome(SolveStatus.HEURISTIC,
                      objective=n_gpus * problem.perf_model.hardware.price_per_gpu_hour,
                      wall_s=time.perf_counter() - t0)


BinPacking = list[tuple[list[int], list[int]]]  # per bin: (item indices, their sizes)


def first_fit_decreasing(demands: list[Demand], units: list[int], cap: int, max_per_gpu: int | None = None,
                         best_fit: bool = False) -> BinPacking:
    """Pack items of ``units`` (largest first, stable) into bins of ``cap`` units: plain bin
    packing, blind to interference (``demands`` is not read).

    First fit: the first open bin with room; best fit: the one left with the least room.
    """
    del demands
    order = sorted(range(len(units)), key=lambda i: -units[i])
    gpus: list[tuple[list[int], list[int]]] = []
    free: list[int] = []
    for i in order:
        u = units[i]
        cands = [g for g in range(len(gpus)) if free[g] >= u
                 and (max_per_gpu is None or len(gpus[g][0]) < max_per_gpu)]
        if cands:
            g = min(cands, key=lambda g: (free[g] - u, g)) if best_fit else cands[0]
            gpus[g][0].append(i)
            gpus[g][1].append(u)
            free[g] -= u
        else:
            gpus.append(([i], [u]))
            free.append(cap - u)
    return gpus


def _packing(demands: list[Demand], bins: BinPacking) -> Packing:
    return Packing(tuple(demands), tuple(gpu_of(demands, m, us) for m, us in bins))


def solve_ffd(problem: PlanningProblem, options: SolveOptions | None = None) -> Plan:
    """First-fit decreasing by lower-bound share, interference-blind (the paper's FFD+)."""
    del options
    t0 = time.perf_counter()
    demands = greedy.initial_demands(problem)
    packing = _packing(demands, first_fit_decreasing(demands, [d.lower_units for d in demands],
                                                     problem.perf_model.max_units))
    return assemble_plan(problem, packing, "ffd", _info(problem, packing.num_gpus, t0))


def gpulet_units(unit_pct: float, lower_units: int, cap: int) -> int:
    """The smallest gpu-let share (in units) covering ``lower_units``; 100 % if none does."""
    need = lower_units * unit_pct
    for s in GPULET_SHARES_PCT:
        if s + 1e-9 >= need:
            return min(cap, math.ceil(s / unit_pct - 1e-9))
    return cap


def solve_gpulet(problem: PlanningProblem, options: SolveOptions | None = None) -> Plan:
    """gpu-lets+: shares from {10, 20, 40, 50, 60, 80, 100} %, at most two per GPU, best fit."""
    del options
    t0 = time.perf_counter()
    perf = problem.perf_model
    demands = greedy.initial_demands(problem)
    cap = perf.max_units
    units = [gpulet_units(perf.unit_pct, d.lower_units, cap) for d in demands]
    packing = _packing(demands, first_fit_decreasing(demands, units, cap, max_per_gpu=GPULET_MAX_PER_GPU,
                                                     best_fit=True))
    return assemble_plan(problem, packing, "gpulet", _info(problem, packing.num_gpus, t0))
