"""A plain, unoptimised port of the paper's Algorithms 1 and 2.

It tries every open GPU for every demand and predicts one GPU at a time. Tests and the
``greedy_scale`` benchmark use it to check that the vectorised planner in ``greedy.py`` (over
the placement kernel) returns exactly the same plan. It decides feasibility with the kernel's one
test (``placement.violates``), so the two differ only in how they search.
"""

from __future__ import annotations

import numpy as np

from igniter_opt.domain import PlanningProblem, Workload
from igniter_opt.perfmodel.model import PerformanceModel
from igniter_opt.placement import Demand, Packing, gpu_of, lower_share_units, violates
from igniter_opt.planner.greedy import DEDICATED_LOAD_FACTOR, batch_limit, igniter_batch


def _meets(lat: float, thr: float, limit: float, rate: float) -> bool:
    return not bool(violates(np.array(lat), np.array(thr), np.array(limit), np.array(rate)))


def _alloc_gpu(perf: PerformanceModel, demands: list[Demand], members: list[int], units: list[int]) -> list[int] | None:
    units = list(units)
    cap = perf.max_units
    while True:
        if sum(units) > cap:
            return None
        preds = perf.predict_gpu(
            [(demands[i].workload.model, demands[i].batch, u * perf.unit_pct)
             for i, u in zip(members, units, strict=True)]
        )
        bad = False
        for j, (i, (lat, thr)) in enumerate(zip(members, preds, strict=True)):
            if not _meets(lat, thr, demands[i].limit_ms, demands[i].rate_rps):
                units[j] += 1
                bad = True
        if not bad:
            return units


def reference_place(perf: PerformanceModel, demands: list[Demand]) -> Packing:
    """Algorithm 1, exactly as written: same output as ``greedy.place``."""
    order = sorted(range(len(demands)), key=lambda i: -demands[i].lower_units)
    gpus: list[tuple[list[int], list[int]]] = []
    for i in order:
        best = None
        for g, (members, units) in enumerate(gpus):
            new = _alloc_gpu(perf, demands, members + [i], units + [demands[i].lower_units])
            if new is None:
                continue
            inc = sum(new) - sum(units)
            if best is None or inc < best[0]:
                best = (inc, g, new)
        if best is None:
            gpus.append(([i], [demands[i].lower_units]))
        else:
            _, g, new = best
            gpus[g] = (gpus[g][0] + [i], new)
    return Packing(tuple(demands), tuple(gpu_of(demands, m, u) for m, u in gpus))


def _replica_batch(perf: PerformanceModel, w: Workload, limit: float, upto: int) -> int:
    """Largest batch up to ``upto`` whose solo latency at 100 % meets ``limit``."""
    full = perf.max_units * perf.unit_pct
    return max(x for x in range(1, upto + 1) if _meets(perf.solo(w.model, x, full)[0], np.inf, limit, 0.0))


def reference_igniter_demands(problem: PlanningProblem, w: Workload) -> list[Demand]:
    """The igniter-budget initialisation of one workload, one scalar step at a time."""
    perf = problem.perf_model
    cap = perf.max_units
    limit = w.slo_ms / 2.0
    bmax = batch_limit(problem)

    def lower(rate: float, batch: int) -> int:
        u = lower_share_units(perf, w.model, batch, limit)
        if u is None:
            return -1
        while u <= cap:  # raise until it meets its limit and rate alone
            lat, thr = perf.solo(w.model, batch, u * perf.unit_pct)
            if _meets(lat, thr, limit, rate):
                break
            u += 1
        return u

    b = igniter_batch(perf, w, bmax)
    u = lower(w.rate_rps, b)
    if 0 < u <= cap:
        return [Demand(w, w.rate_rps, b, u, limit)]
    big = _replica_batch(perf, w, limit, bmax)
    replica_rate = DEDICATED_LOAD_FACTOR * perf.solo(w.model, big, cap * perf.unit_pct)[1]
    out: list[Demand] = []
    remaining = w.rate_rps
    while remaining > 1e-9:
        rest = Workload(w.name, w.model, w.slo_ms, remaining)
        b = igniter_batch(perf, rest, bmax)
        u = lower(remaining, b)
        if 0 < u <= cap:
            out.append(Demand(w, remaining, b, u, limit))
            break
        served = min(replica_rate, remaining)
        out.append(Demand(w, served, big, cap, limit, dedicated=True))
        remaining -= served
    return out
