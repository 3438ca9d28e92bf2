"""A plain, unoptimised port of the paper's Algorithms 1 and 2.

It tries every open GPU for every demand and predicts one GPU at a time. Tests and the
``greedy_scale`` benchmark use it to check that the vectorised planner in ``greedy.py`` returns
exactly the same plan.
"""

from __future__ import annotations

from igniter_opt.domain import Workload
from igniter_opt.perfmodel.model import PerformanceModel
from igniter_opt.planner.budget import Demand, igniter_batch, lower_share_units, max_units


def _alloc_gpu(perf: PerformanceModel, demands: list[Demand], members: list[int], units: list[int]) -> list[int] | None:
    units = list(units)
    cap = max_units(perf)
    while True:
        if sum(units) > cap:
            return None
        preds = perf.predict_gpu(
            [(demands[i].workload.model, demands[i].batch, u * perf.unit_pct) for i, u in zip(members, units, strict=True)]
        )
        bad = False
        for j, (i, (lat, thr)) in enumerate(zip(members, preds, strict=True)):
            if lat > demands[i].limit_ms or thr < demands[i].rate_rps:
                units[j] += 1
                bad = True
        if not bad:
            return units


def reference_place(perf: PerformanceModel, demands: list[Demand]) -> list[tuple[list[int], list[int]]]:
    """Algorithm 1, exactly as written: same output format as ``greedy.place``."""
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
    return gpus


_REPLICA_BATCH: dict[tuple[int, str, float], int] = {}


def _replica_batch(perf: PerformanceModel, w: Workload, limit: float) -> int:
    """Largest batch up to 1024 whose solo latency at 100 % meets ``limit`` (memoised)."""
    key = (id(perf), w.model, limit)
    if key not in _REPLICA_BATCH:
        full = max_units(perf) * perf.unit_pct
        _REPLICA_BATCH[key] = max(x for x in range(1, 1025) if perf.solo(w.model, x, full)[0] <= limit)
    return _REPLICA_BATCH[key]


def reference_igniter_demands(perf: PerformanceModel, w: Workload) -> list[Demand]:
    """The igniter-budget initialisation of one workload, one scalar step at a time."""
    cap = max_units(perf)
    limit = w.slo_ms / 2.0

    def lower(rate: float, batch: int) -> int:
        u = lower_share_units(perf, w.model, batch, limit)
        if u is None:
            return -1
        while u <= cap:  # raise until it meets its limit and rate alone
            lat, thr = perf.solo(w.model, batch, u * perf.unit_pct)
            if lat <= limit and thr >= rate:
                break
            u += 1
        return u

    b = igniter_batch(perf, w)
    u = lower(w.rate_rps, b)
    if 0 < u <= cap:
        return [Demand(w, w.rate_rps, b, u, limit)]
    big = _replica_batch(perf, w, limit)
    replica_rate = 0.9 * perf.solo(w.model, big, cap * perf.unit_pct)[1]
    out: list[Demand] = []
    remaining = w.rate_rps
    while remaining > 1e-9:
        rest = Workload(w.name, w.model, w.slo_ms, remaining)
        b = igniter_batch(perf, rest)
        u = lower(remaining, b)
        if 0 < u <= cap:
            out.append(Demand(w, remaining, b, u, limit))
            break
        served = min(replica_rate, remaining)
        out.append(Demand(w, served, big, cap, limit, dedicated=True))
        remaining -= served
    return out
